//! REPAIR arithmetic: streaming moments against a two-pass f64 reference, REPAIR end to end
//! on a real convolution and a real linear layer, BatchNorm folding, and every error case.

use papa_core::population::Contiguous;
use papa_core::repair::{
    accumulate, channel_stats, corrections, fold_batchnorm, fold_correction, goal_stats, Bias,
    ChannelStats, Correction, Moments,
};
use papa_core::rng::Rng;
use papa_core::rules::{average, Options, Weights};
use papa_core::Error;
use proptest::prelude::*;

/// Mean and biased variance of `values`, two passes in f64.
fn two_pass(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var)
}

/// Values of channel `c` of activations laid out [B, C, spatial], in f64.
fn channel_values(act: &[f32], c: usize, channels: usize, spatial: usize) -> Vec<f64> {
    act.chunks_exact(channels * spatial)
        .flat_map(|sample| &sample[c * spatial..(c + 1) * spatial])
        .map(|&x| f64::from(x))
        .collect()
}

fn close(got: f64, want: f64, rel: f64, floor: f64) -> bool {
    (got - want).abs() <= rel * want.abs() + floor
}

/// Activations with a large common offset, where a naive sum-of-squares variance would lose
/// most of its digits.
fn activations() -> impl Strategy<Value = (usize, usize, usize, Vec<f32>, Vec<usize>)> {
    (1usize..5, 1usize..10, 1usize..12, -1000.0f32..1000.0).prop_flat_map(
        |(channels, spatial, batch, offset)| {
            let values = proptest::collection::vec(-1.0f32..1.0, batch * channels * spatial)
                .prop_map(move |v| v.into_iter().map(|x| x + offset).collect::<Vec<_>>());
            let cuts = proptest::collection::vec(0..=batch, 0..4);
            (Just(channels), Just(spatial), Just(batch), values, cuts)
        },
    )
}

proptest! {
    #[test]
    fn accumulating_in_batches_equals_two_passes(
        (channels, spatial, batch, act, mut cuts) in activations()
    ) {
        cuts.push(0);
        cuts.push(batch);
        cuts.sort_unstable();
        let sample = channels * spatial;
        let mut stats = vec![Moments::EMPTY; channels];
        for pair in cuts.windows(2) {
            accumulate(&mut stats, &act[pair[0] * sample..pair[1] * sample], channels, spatial)
                .unwrap();
        }
        for (c, s) in stats.iter().enumerate() {
            let values = channel_values(&act, c, channels, spatial);
            prop_assert_eq!(s.count(), values.len() as u64);
            let (mean, var) = two_pass(&values);
            prop_assert!(close(s.mean(), mean, 1e-12, 1e-12), "mean {} vs {}", s.mean(), mean);
            prop_assert!(close(s.variance(), var, 1e-9, 1e-12), "var {} vs {}", s.variance(), var);
            prop_assert!(close(s.std(), var.sqrt(), 1e-9, 1e-9));
        }
    }

    #[test]
    fn merging_equals_one_pass(
        a in proptest::collection::vec(-5.0f32..5.0, 0..40),
        b in proptest::collection::vec(100.0f32..110.0, 0..40),
    ) {
        let mut merged = Moments::of(&a);
        merged.merge(&Moments::of(&b));
        let all: Vec<f32> = a.iter().chain(&b).copied().collect();
        let whole = Moments::of(&all);
        prop_assert_eq!(merged.count(), whole.count());
        prop_assert!(close(merged.mean(), whole.mean(), 1e-12, 1e-12));
        prop_assert!(close(merged.m2(), whole.m2(), 1e-9, 1e-9));
    }
}

#[test]
fn empty_moments() {
    let m = Moments::of(&[]);
    assert_eq!(m, Moments::EMPTY);
    assert_eq!(
        (m.count(), m.mean(), m.variance(), m.std()),
        (0, 0.0, 0.0, 0.0)
    );
    let mut x = Moments::of(&[2.0, 4.0]);
    x.merge(&Moments::EMPTY);
    assert_eq!(x, Moments::of(&[2.0, 4.0]));
    let mut e = Moments::EMPTY;
    e.merge(&x);
    assert_eq!(e, x);
}

// ---------------------------------------------------------------- REPAIR end to end

const BATCH: usize = 8;

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.uniform_f32() * 2.0 - 1.0) * scale)
        .collect()
}

/// A real 2-D convolution, 3x3, stride 1, padding 1: x [B, C_in, H, W], weight
/// [C_out, C_in, 3, 3] -> [B, C_out, H, W].
struct Conv {
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
}

impl Conv {
    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (h, w) = (self.h as isize, self.w as isize);
        let batch = x.len() / (self.c_in * self.h * self.w);
        let mut y = Vec::with_capacity(batch * self.c_out * self.h * self.w);
        for b in 0..batch {
            for o in 0..self.c_out {
                for i in 0..h {
                    for j in 0..w {
                        let mut acc = bias.map_or(0.0, |bias| f64::from(bias[o]));
                        for c in 0..self.c_in {
                            for di in 0..3isize {
                                for dj in 0..3isize {
                                    let (ii, jj) = (i + di - 1, j + dj - 1);
                                    if ii < 0 || jj < 0 || ii >= h || jj >= w {
                                        continue;
                                    }
                                    let xi = ((b * self.c_in + c) * self.h + ii as usize) * self.w
                                        + jj as usize;
                                    let wi =
                                        ((o * self.c_in + c) * 3 + di as usize) * 3 + dj as usize;
                                    acc += f64::from(x[xi]) * f64::from(weight[wi]);
                                }
                            }
                        }
                        y.push(acc as f32);
                    }
                }
            }
        }
        y
    }
}

/// A real linear layer: x [B, in], weight [out, in] -> [B, out].
fn linear(x: &[f32], weight: &[f32], bias: Option<&[f32]>, n_in: usize, n_out: usize) -> Vec<f32> {
    x.chunks_exact(n_in)
        .flat_map(|row| {
            (0..n_out).map(move |o| {
                let dot: f64 = row
                    .iter()
                    .zip(&weight[o * n_in..(o + 1) * n_in])
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                (dot + bias.map_or(0.0, |b| f64::from(b[o]))) as f32
            })
        })
        .collect()
}

/// Per-channel statistics of a layer's output on the calibration batch, accumulated in two
/// halves as a trainer would batch by batch.
fn measure(act: &[f32], channels: usize, spatial: usize) -> Vec<ChannelStats> {
    let half = act.len() / 2;
    let mut moments = vec![Moments::EMPTY; channels];
    accumulate(&mut moments, &act[..half], channels, spatial).unwrap();
    accumulate(&mut moments, &act[half..], channels, spatial).unwrap();
    let mut stats = vec![ChannelStats::default(); channels];
    channel_stats(&moments, &mut stats).unwrap();
    stats
}

/// Runs REPAIR on a child averaged from `parents` (each laid out [weight, bias?]) and checks,
/// in f64, that the repaired child's per-channel mean and std equal the goal within 1e-4
/// relative (the mean relative to |mean| + std, since a mean can be near 0).
fn check_repair(
    forward: impl Fn(&[f32], Option<&[f32]>) -> Vec<f32>,
    parents: &[f32],
    mix: &[f32],
    channels: usize,
    spatial: usize,
    has_bias: bool,
) {
    let p = mix.len();
    let pop = Contiguous::new(parents, p).unwrap();
    let n = parents.len() / p;
    let w_len = if has_bias { n - channels } else { n };
    let split = |member: &[f32]| -> (Vec<f32>, Option<Vec<f32>>) {
        (
            member[..w_len].to_vec(),
            has_bias.then(|| member[w_len..].to_vec()),
        )
    };

    let mut parent_stats = Vec::new();
    for member in parents.chunks_exact(n) {
        let (w, b) = split(member);
        parent_stats.extend(measure(&forward(&w, b.as_deref()), channels, spatial));
    }
    let mut goal = vec![ChannelStats::default(); channels];
    goal_stats(&parent_stats, mix, &mut goal).unwrap();

    let mut child = vec![0.0f32; n];
    average(&pop, Weights::Given(mix), &mut child, &Options::default()).unwrap();
    let (mut w, b) = split(&child);
    let before = measure(&forward(&w, b.as_deref()), channels, spatial);
    // Averaging independent parents shrinks the variance: there is something to repair.
    assert!(before.iter().zip(&goal).any(|(m, g)| m.std < 0.9 * g.std));

    let mut fix = vec![
        Correction {
            scale: 1.0,
            shift: 0.0
        };
        channels
    ];
    corrections(&goal, &before, &mut fix).unwrap();
    let mut bias = b.unwrap_or_else(|| vec![f32::NAN; channels]);
    let slot = if has_bias {
        Bias::Existing(&mut bias)
    } else {
        Bias::Create(&mut bias)
    };
    fold_correction(&mut w, slot, &fix).unwrap();

    let after = forward(&w, Some(&bias));
    for (c, g) in goal.iter().enumerate() {
        let (mean, var) = two_pass(&channel_values(&after, c, channels, spatial));
        let std = var.sqrt();
        assert!(
            close(mean, g.mean, 0.0, 1e-4 * (g.mean.abs() + g.std)),
            "channel {c} mean {mean} vs {}",
            g.mean
        );
        assert!(
            close(std, g.std, 1e-4, 0.0),
            "channel {c} std {std} vs {}",
            g.std
        );
    }
}

fn conv_case(parents: usize, has_bias: bool, mix: &[f32], seed: u64) {
    let conv = Conv {
        c_in: 3,
        c_out: 4,
        h: 6,
        w: 6,
    };
    let mut rng = Rng::new(seed);
    let x = random(&mut rng, BATCH * conv.c_in * conv.h * conv.w, 1.0);
    let n = conv.c_out * conv.c_in * 9 + if has_bias { conv.c_out } else { 0 };
    let pop = random(&mut rng, parents * n, 0.5);
    let forward = |w: &[f32], b: Option<&[f32]>| conv.forward(&x, w, b);
    check_repair(forward, &pop, mix, conv.c_out, conv.h * conv.w, has_bias);
}

fn linear_case(has_bias: bool, mix: &[f32], seed: u64) {
    let (n_in, n_out) = (7, 5);
    let mut rng = Rng::new(seed);
    let x = random(&mut rng, 2 * BATCH * n_in, 1.0);
    let n = n_out * n_in + if has_bias { n_out } else { 0 };
    let pop = random(&mut rng, mix.len() * n, 0.5);
    let forward = |w: &[f32], b: Option<&[f32]>| linear(&x, w, b, n_in, n_out);
    check_repair(forward, &pop, mix, n_out, 1, has_bias);
}

#[test]
fn repair_conv_with_bias() {
    conv_case(3, true, &[0.5, 0.3, 0.2], 1);
    conv_case(2, true, &[0.5, 0.5], 2);
}

#[test]
fn repair_conv_creates_missing_bias() {
    conv_case(3, false, &[1.0 / 3.0; 3], 3);
    conv_case(2, false, &[0.25, 0.75], 4);
}

#[test]
fn repair_linear() {
    linear_case(true, &[0.5, 0.5], 5);
    linear_case(false, &[0.2, 0.3, 0.5], 6);
}

// ---------------------------------------------------------------- BatchNorm folding

#[test]
fn folded_batchnorm_matches_conv_then_batchnorm() {
    let conv = Conv {
        c_in: 3,
        c_out: 4,
        h: 6,
        w: 6,
    };
    let mut rng = Rng::new(11);
    let x = random(&mut rng, BATCH * 3 * 36, 1.0);
    let weight = random(&mut rng, 4 * 3 * 9, 0.5);
    let bias = random(&mut rng, 4, 0.5);
    let gamma: Vec<f32> = random(&mut rng, 4, 1.0).iter().map(|g| g + 1.5).collect();
    let beta = random(&mut rng, 4, 1.0);
    let mean = random(&mut rng, 4, 0.5);
    let var: Vec<f32> = random(&mut rng, 4, 1.0)
        .iter()
        .map(|v| v.abs() + 0.1)
        .collect();
    let eps = 1e-5f32;
    let bn = |y: &[f32]| -> Vec<f32> {
        y.iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = (i / 36) % 4;
                let k = f64::from(gamma[c]) / (f64::from(var[c]) + f64::from(eps)).sqrt();
                (k * (f64::from(v) - f64::from(mean[c])) + f64::from(beta[c])) as f32
            })
            .collect()
    };
    for has_bias in [true, false] {
        let old_bias = has_bias.then_some(&bias[..]);
        let want = bn(&conv.forward(&x, &weight, old_bias));
        let mut w = weight.clone();
        let mut b = if has_bias { bias.clone() } else { vec![7.0; 4] };
        let slot = if has_bias {
            Bias::Existing(&mut b)
        } else {
            Bias::Create(&mut b)
        };
        fold_batchnorm(&mut w, slot, &gamma, &beta, &mean, &var, eps).unwrap();
        let got = conv.forward(&x, &w, Some(&b));
        for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
            assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "{i}: {g} vs {r}");
        }
    }
}

// ---------------------------------------------------------------- errors

#[test]
fn accumulate_errors() {
    let mut stats = [Moments::EMPTY; 2];
    let act = [0.0f32; 8];
    assert_eq!(
        accumulate(&mut stats, &act, 0, 1),
        Err(Error::BadShape { what: "channels" })
    );
    assert_eq!(
        accumulate(&mut stats, &act, 2, 0),
        Err(Error::BadShape { what: "spatial" })
    );
    assert!(matches!(
        accumulate(&mut stats, &act, 2, 3),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        accumulate(&mut stats, &act, 2, usize::MAX),
        Err(Error::BadShape { .. })
    ));
    assert_eq!(
        accumulate(&mut stats[..1], &act, 2, 2),
        Err(Error::LengthMismatch {
            what: "stats",
            index: None,
            expected: 2,
            found: 1
        })
    );
    let mut bad = act;
    bad[6] = f32::NAN;
    assert_eq!(
        accumulate(&mut stats, &bad, 2, 2),
        Err(Error::NonFinite {
            member: 1,
            index: 2
        })
    );
    bad[6] = f32::INFINITY;
    assert!(accumulate(&mut stats, &bad, 2, 2).is_err());
    // Nothing was changed by the failures; an empty batch adds nothing.
    assert_eq!(stats, [Moments::EMPTY; 2]);
    accumulate(&mut stats, &[], 2, 2).unwrap();
    assert_eq!(stats, [Moments::EMPTY; 2]);
}

#[test]
fn channel_stats_errors() {
    let mut out = [ChannelStats::default(); 2];
    let m = Moments::of(&[1.0]);
    assert!(matches!(
        channel_stats(&[m], &mut out),
        Err(Error::LengthMismatch { what: "out", .. })
    ));
    assert_eq!(
        channel_stats(&[m, Moments::EMPTY], &mut out),
        Err(Error::Degenerate {
            what: "channel sample count",
            index: 1
        })
    );
}

fn stats(mean: f64, std: f64) -> ChannelStats {
    ChannelStats { mean, std }
}

#[test]
fn goal_stats_errors() {
    let parents = [stats(0.0, 1.0), stats(1.0, 1.0)];
    let mut out = [ChannelStats::default(); 1];
    assert_eq!(
        goal_stats(&parents, &[], &mut out),
        Err(Error::EmptyPopulation)
    );
    assert!(matches!(
        goal_stats(&parents, &[0.5, 0.6], &mut out),
        Err(Error::WeightsDoNotSumToOne { .. })
    ));
    assert!(matches!(
        goal_stats(&parents, &[1.5, -0.5], &mut out),
        Err(Error::NegativeWeight { index: 1, .. })
    ));
    assert_eq!(
        goal_stats(&parents, &[0.5, 0.5], &mut []),
        Err(Error::BadShape { what: "channels" })
    );
    assert!(matches!(
        goal_stats(&parents, &[1.0], &mut out),
        Err(Error::LengthMismatch {
            what: "parents",
            expected: 1,
            found: 2,
            ..
        })
    ));
    for bad in [
        stats(f64::NAN, 1.0),
        stats(0.0, -1.0),
        stats(0.0, f64::INFINITY),
    ] {
        assert!(matches!(
            goal_stats(&[parents[0], bad], &[0.5, 0.5], &mut out),
            Err(Error::InvalidValue { index: Some(1), .. })
        ));
    }
    goal_stats(&parents, &[0.25, 0.75], &mut out).unwrap();
    assert_eq!(out, [stats(0.75, 1.0)]);
}

#[test]
fn corrections_cases_and_errors() {
    let mut out = [Correction {
        scale: 0.0,
        shift: 0.0,
    }; 2];
    assert_eq!(
        corrections(&[], &[], &mut []),
        Err(Error::BadShape { what: "channels" })
    );
    let g = [stats(1.0, 2.0), stats(0.0, 0.0)];
    assert!(matches!(
        corrections(&g[..1], &g, &mut out),
        Err(Error::LengthMismatch { what: "goal", .. })
    ));
    assert!(matches!(
        corrections(&g, &g[..1], &mut out),
        Err(Error::LengthMismatch {
            what: "measured",
            ..
        })
    ));
    // A constant child channel whose goal is constant too: only the mean moves.
    corrections(&g, &[stats(0.0, 1.0), stats(3.0, 0.0)], &mut out).unwrap();
    assert_eq!(
        out,
        [
            Correction {
                scale: 2.0,
                shift: 1.0
            },
            Correction {
                scale: 1.0,
                shift: -3.0
            }
        ]
    );
    // A constant child channel that should vary cannot be repaired.
    assert_eq!(
        corrections(&[g[1], g[0]], &[stats(0.0, 1.0), stats(0.0, 0.0)], &mut out),
        Err(Error::Degenerate {
            what: "child channel std",
            index: 1
        })
    );
    // A subnormal child std overflows the scale.
    assert_eq!(
        corrections(
            &[g[0], stats(0.0, 1e300)],
            &[g[0], stats(0.0, 1e-300)],
            &mut out
        ),
        Err(Error::Degenerate {
            what: "child channel std",
            index: 1
        })
    );
    for bad in [stats(f64::NAN, 1.0), stats(0.0, -1.0)] {
        assert!(matches!(
            corrections(&[g[0], bad], &g, &mut out),
            Err(Error::InvalidValue {
                what: "goal channel stats",
                index: Some(1),
                ..
            })
        ));
        assert!(matches!(
            corrections(&g, &[g[0], bad], &mut out),
            Err(Error::InvalidValue {
                what: "measured channel stats",
                index: Some(1),
                ..
            })
        ));
    }
}

#[test]
fn fold_correction_errors_leave_the_layer_intact() {
    let id = Correction {
        scale: 1.0,
        shift: 0.0,
    };
    let mut w = [1.0f32; 6];
    let mut b = [0.5f32; 2];
    assert_eq!(
        fold_correction(&mut w, Bias::Existing(&mut b), &[]),
        Err(Error::BadShape { what: "channels" })
    );
    assert!(matches!(
        fold_correction(&mut w[..5], Bias::Existing(&mut b), &[id, id]),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        fold_correction(&mut [], Bias::Existing(&mut b), &[id, id]),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        fold_correction(&mut w, Bias::Create(&mut b[..1]), &[id, id]),
        Err(Error::LengthMismatch {
            what: "bias",
            expected: 2,
            found: 1,
            ..
        })
    ));
    let bad = Correction {
        scale: 2.0,
        shift: f64::NAN,
    };
    assert!(matches!(
        fold_correction(
            &mut w,
            Bias::Existing(&mut b),
            &[
                Correction {
                    scale: 2.0,
                    shift: 1.0
                },
                bad
            ]
        ),
        Err(Error::InvalidValue {
            what: "correction shift",
            index: Some(1),
            ..
        })
    ));
    let bad = Correction {
        scale: f64::INFINITY,
        shift: 0.0,
    };
    assert!(matches!(
        fold_correction(&mut w, Bias::Existing(&mut b), &[id, bad]),
        Err(Error::InvalidValue {
            what: "correction scale",
            index: Some(1),
            ..
        })
    ));
    assert_eq!((w, b), ([1.0; 6], [0.5; 2]));
}

#[test]
fn fold_batchnorm_errors_leave_the_layer_intact() {
    let mut w = [1.0f32; 4];
    let mut b = [0.5f32; 2];
    let (one, zero) = ([1.0f32; 2], [0.0f32; 2]);
    let mut fold = |gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f32| {
        fold_batchnorm(&mut w, Bias::Existing(&mut b), gamma, beta, mean, var, eps)
    };
    assert_eq!(
        fold(&[], &[], &[], &[], 0.0),
        Err(Error::BadShape { what: "channels" })
    );
    assert!(matches!(
        fold(&one, &one[..1], &zero, &one, 0.0),
        Err(Error::LengthMismatch { what: "beta", .. })
    ));
    assert!(matches!(
        fold(&one, &one, &zero[..1], &one, 0.0),
        Err(Error::LengthMismatch {
            what: "running_mean",
            ..
        })
    ));
    assert!(matches!(
        fold(&one, &one, &zero, &one[..1], 0.0),
        Err(Error::LengthMismatch {
            what: "running_var",
            ..
        })
    ));
    for eps in [-1e-5, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            fold(&one, &one, &zero, &one, eps),
            Err(Error::InvalidValue {
                what: "eps",
                index: None,
                ..
            })
        ));
    }
    assert!(matches!(
        fold(&[1.0, f32::NAN], &one, &zero, &one, 0.0),
        Err(Error::InvalidValue {
            what: "gamma",
            index: Some(1),
            ..
        })
    ));
    assert!(matches!(
        fold(&one, &[1.0, f32::NAN], &zero, &one, 0.0),
        Err(Error::InvalidValue {
            what: "beta",
            index: Some(1),
            ..
        })
    ));
    assert!(matches!(
        fold(&one, &one, &[0.0, f32::INFINITY], &one, 0.0),
        Err(Error::InvalidValue {
            what: "running_mean",
            index: Some(1),
            ..
        })
    ));
    assert!(matches!(
        fold(&one, &one, &zero, &[1.0, -1.0], 0.0),
        Err(Error::InvalidValue {
            what: "running_var",
            index: Some(1),
            ..
        })
    ));
    assert_eq!(
        fold(&one, &one, &zero, &[1.0, 0.0], 0.0),
        Err(Error::Degenerate {
            what: "running_var + eps",
            index: 1
        })
    );
    assert_eq!((w, b), ([1.0; 4], [0.5; 2]));
}
