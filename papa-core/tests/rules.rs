//! Every rule against an f64 reference, on random populations of random sizes, in both the
//! contiguous and the slice-of-members form.

use papa_core::layout::{Layout, TensorKind, TensorSpec};
use papa_core::population::{Contiguous, Members, Population, PopulationMut};
use papa_core::rng::Rng;
use papa_core::rules::{
    average, draw_pairs, gradual, papa2, papa2_scratch_len, papa_all, Options, Weights, CHUNK,
};
use papa_core::Error;
use proptest::prelude::*;

/// |got - want| <= 1e-6 |want| for every entry (plus a floor for exact zeros).
fn assert_close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= 1e-6 * w.abs() + 1e-30,
            "entry {i}: got {g}, reference {w}"
        );
    }
}

/// A population of random size with entries in [-2, 2), N sometimes 0 or off the chunk grid.
fn population() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (
        1usize..7,
        prop_oneof![Just(0usize), 1usize..40, (CHUNK - 3)..(2 * CHUNK + 5)],
    )
        .prop_flat_map(|(p, n)| {
            (
                Just(p),
                Just(n),
                proptest::collection::vec(-2.0f32..2.0, p * n),
            )
        })
}

fn random_weights(p: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let raw: Vec<f64> = (0..p).map(|_| rng.uniform_f64() + 0.05).collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|w| (w / sum) as f32).collect()
}

fn reference_mean(buf: &[f32], p: usize, n: usize, w: &[f32]) -> Vec<f64> {
    (0..n)
        .map(|i| {
            (0..p)
                .map(|j| f64::from(w[j]) * f64::from(buf[j * n + i]))
                .sum()
        })
        .collect()
}

/// The mean with weights exactly 1/P (1/P rounded to f32 would not be the reference).
fn uniform_mean(buf: &[f32], p: usize, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| (0..p).map(|j| f64::from(buf[j * n + i])).sum::<f64>() / p as f64)
        .collect()
}

/// Splits a contiguous buffer into separately allocated members.
fn as_members(buf: &[f32], p: usize, n: usize) -> Vec<Vec<f32>> {
    (0..p).map(|j| buf[j * n..(j + 1) * n].to_vec()).collect()
}

fn flatten<Pop: Population>(pop: &Pop) -> Vec<f32> {
    (0..pop.members())
        .flat_map(|j| pop.member(j).to_vec())
        .collect()
}

/// Runs `rule` on both forms of the same population and returns both results, flattened.
fn both_forms(
    buf: &[f32],
    p: usize,
    rule: impl Fn(&mut dyn PopulationMut) -> Result<(), Error>,
) -> (Vec<f32>, Vec<f32>) {
    let n = buf.len() / p;
    let mut contiguous = buf.to_vec();
    let mut c = Contiguous::new(&mut contiguous[..], p).unwrap();
    rule(&mut c).unwrap();
    let mut list = as_members(buf, p, n);
    let mut m = Members::new(&mut list[..]).unwrap();
    rule(&mut m).unwrap();
    (flatten(&c), flatten(&m))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 64 }))]

    #[test]
    fn average_matches_f64((p, n, buf) in population(), seed in any::<u64>(), uniform in any::<bool>()) {
        let w = if uniform { vec![1.0 / p as f32; p] } else { random_weights(p, seed) };
        let weights = if uniform { Weights::Uniform } else { Weights::Given(&w) };
        let want = if uniform {
            uniform_mean(&buf, p, n)
        } else {
            reference_mean(&buf, p, n, &w)
        };
        let mut out = vec![f32::NAN; n];
        average(&Contiguous::new(&buf[..], p).unwrap(), weights, &mut out, &Options::default()).unwrap();
        assert_close(&out, &want);
        let list = as_members(&buf, p, n);
        let mut out2 = vec![f32::NAN; n];
        average(&Members::new(&list[..]).unwrap(), weights, &mut out2, &Options::default()).unwrap();
        prop_assert_eq!(out, out2);
    }

    #[test]
    fn papa_all_matches_f64((p, n, buf) in population(), seed in any::<u64>()) {
        let w = random_weights(p, seed);
        let mean = reference_mean(&buf, p, n, &w);
        let (c, m) = both_forms(&buf, p, |pop| papa_all(pop, Weights::Given(&w), &Options::default()));
        let want: Vec<f64> = (0..p).flat_map(|_| mean.iter().copied()).collect();
        assert_close(&c, &want);
        prop_assert_eq!(c, m);
    }

    #[test]
    fn gradual_matches_f64((p, n, buf) in population(), seed in any::<u64>(), alpha in 0.0f32..=1.0, uniform in any::<bool>()) {
        // Uniform weights take the summing path of the fused pass, given weights the weighted one.
        let w = if uniform { vec![1.0 / p as f32; p] } else { random_weights(p, seed) };
        let weights = if uniform { Weights::Uniform } else { Weights::Given(&w) };
        let mean = if uniform { uniform_mean(&buf, p, n) } else { reference_mean(&buf, p, n, &w) };
        let (c, m) = both_forms(&buf, p, |pop| gradual(pop, weights, alpha, &Options::default()));
        let a = f64::from(alpha);
        let want: Vec<f64> = (0..p * n).map(|k| a * f64::from(buf[k]) + (1.0 - a) * mean[k % n.max(1)]).collect();
        assert_close(&c, &want);
        prop_assert_eq!(c, m);
    }

    #[test]
    fn papa2_matches_f64((p, n, buf) in population(), seed in any::<u64>()) {
        let mut pairs = vec![(0, 0); p];
        draw_pairs(&mut Rng::new(seed), p, &mut pairs).unwrap();
        let mut scratch = vec![0.0; papa2_scratch_len(p, n)];
        let (c, m) = both_forms(&buf, p, |pop| papa2(pop, &pairs, &mut scratch.clone(), &Options::default()));
        let want: Vec<f64> = (0..p * n)
            .map(|k| {
                let (a, b) = pairs[k / n.max(1)];
                (f64::from(buf[a * n + k % n.max(1)]) + f64::from(buf[b * n + k % n.max(1)])) / 2.0
            })
            .collect();
        assert_close(&c, &want);
        prop_assert_eq!(c, m);
        scratch.clear();
    }

    #[test]
    fn pairs_are_distinct_and_in_range(p in 1usize..12, seed in any::<u64>()) {
        let mut pairs = vec![(0, 0); p];
        draw_pairs(&mut Rng::new(seed), p, &mut pairs).unwrap();
        for (i, &(a, b)) in pairs.iter().enumerate() {
            prop_assert!(b < p && (a < b || p == 1));
            if p * (p - 1) / 2 >= p {
                prop_assert!(!pairs[..i].contains(&(a, b)), "pair repeated");
            }
        }
    }
}

/// Counters take the max under a layout while the other tensors follow the rule.
#[test]
fn layout_counters_take_the_max() {
    let shape_w = [2usize, 300];
    let tensors = [
        TensorSpec {
            name: "w",
            shape: &shape_w,
            offset: 0,
            kind: TensorKind::Weight,
        },
        TensorSpec {
            name: "steps",
            shape: &[],
            offset: 600,
            kind: TensorKind::Counter,
        },
        TensorSpec {
            name: "rv",
            shape: &[3],
            offset: 601,
            kind: TensorKind::BnRunningVar,
        },
    ];
    let layout = Layout::new(&tensors).unwrap();
    let opts = Options {
        layout: Some(layout),
        check_finite: true,
    };
    let n = layout.len();
    let p = 3;
    let mut rng = Rng::new(5);
    let mut buf: Vec<f32> = (0..p * n).map(|_| rng.uniform_f32()).collect();
    for (j, steps) in [7.0, 90.0, 12.0].into_iter().enumerate() {
        buf[j * n + 600] = steps;
    }
    let mean = reference_mean(&buf, p, n, &[1.0 / 3.0; 3]);

    let mut avg = buf.clone();
    papa_all(
        &mut Contiguous::new(&mut avg[..], p).unwrap(),
        Weights::Uniform,
        &opts,
    )
    .unwrap();
    let mut grad = buf.clone();
    gradual(
        &mut Contiguous::new(&mut grad[..], p).unwrap(),
        Weights::Uniform,
        0.5,
        &opts,
    )
    .unwrap();
    let mut child = buf.clone();
    let mut scratch = vec![0.0; papa2_scratch_len(p, n)];
    papa2(
        &mut Contiguous::new(&mut child[..], p).unwrap(),
        &[(0, 2), (0, 1), (1, 2)],
        &mut scratch,
        &opts,
    )
    .unwrap();
    for j in 0..p {
        assert_eq!(avg[j * n + 600], 90.0);
        assert_eq!(grad[j * n + 600], 90.0);
        for i in (0..600).chain(601..n) {
            let want = mean[i];
            assert!((f64::from(avg[j * n + i]) - want).abs() <= 1e-6 * want.abs());
            let want_g = 0.5 * f64::from(buf[j * n + i]) + 0.5 * want;
            assert!((f64::from(grad[j * n + i]) - want_g).abs() <= 1e-6 * want_g.abs());
        }
    }
    assert_eq!(
        [child[600], child[n + 600], child[2 * n + 600]],
        [12.0, 90.0, 90.0]
    );
}

#[test]
fn gradual_is_exact_where_the_pull_cancels_a_member() {
    // Member 0's pull nearly cancels it: a w0 + (1 - a) m = -a w0 eps, far smaller than
    // either term, where any rounding before the sum would lose the result's digits.
    let mut rng = Rng::new(5);
    let n = 100;
    let mut buf = vec![0.0f32; 2 * n];
    for _ in 0..50 {
        let alpha = 0.1 + 0.8 * rng.uniform_f32();
        let a = f64::from(alpha);
        for i in 0..n {
            let x = 4.0 * rng.uniform_f64() - 2.0;
            let eps = 10f64.powf(-7.0 + 5.0 * rng.uniform_f64());
            let m = -a * x * (1.0 + eps) / (1.0 - a);
            buf[i] = x as f32;
            buf[n + i] = (2.0 * m - f64::from(buf[i])) as f32;
        }
        let mean: Vec<f64> = (0..n)
            .map(|i| (f64::from(buf[i]) + f64::from(buf[n + i])) / 2.0)
            .collect();
        let want: Vec<f64> = (0..2 * n)
            .map(|k| a * f64::from(buf[k]) + (1.0 - a) * mean[k % n])
            .collect();
        let mut got = buf.clone();
        let mut pop = Contiguous::new(&mut got[..], 2).unwrap();
        gradual(&mut pop, Weights::Uniform, alpha, &Options::default()).unwrap();
        assert_close(&got, &want);
    }
}

#[test]
fn alpha_one_keeps_and_alpha_zero_averages() {
    let buf = [1.0f32, -3.0, 5.0, 7.0];
    let (kept, _) = both_forms(&buf, 2, |pop| {
        gradual(pop, Weights::Uniform, 1.0, &Options::default())
    });
    assert_eq!(kept, buf);
    let (averaged, _) = both_forms(&buf, 2, |pop| {
        gradual(pop, Weights::Uniform, 0.0, &Options::default())
    });
    assert_eq!(averaged, [3.0, 2.0, 3.0, 2.0]);
}

#[test]
fn pairs_with_one_or_two_members() {
    let mut pairs = [(9, 9); 2];
    draw_pairs(&mut Rng::new(0), 2, &mut pairs).unwrap();
    assert_eq!(pairs, [(0, 1), (0, 1)]);
    let mut single = [(9, 9)];
    draw_pairs(&mut Rng::new(0), 1, &mut single).unwrap();
    assert_eq!(single, [(0, 0)]);
    assert_eq!(
        draw_pairs(&mut Rng::new(0), 0, &mut single),
        Err(Error::EmptyPopulation)
    );
}

/// Every parent gets about the same share of children (the reference code's lexicographic
/// choice gives member 0 most of them).
#[test]
#[cfg_attr(
    miri,
    ignore = "a statistical check, not a memory-safety one; slow under Miri"
)]
fn pairs_are_uniform() {
    let p = 6;
    let mut counts = [0usize; 6];
    let mut rng = Rng::new(42);
    let mut pairs = [(0, 0); 6];
    let rounds = 20_000;
    for _ in 0..rounds {
        draw_pairs(&mut rng, p, &mut pairs).unwrap();
        for &(a, b) in &pairs {
            counts[a] += 1;
            counts[b] += 1;
        }
    }
    let expected = (rounds * p * 2 / p) as f64;
    for (j, &c) in counts.iter().enumerate() {
        assert!(
            (c as f64 - expected).abs() < 0.02 * expected,
            "member {j} parents {c}, expected {expected}"
        );
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut buf = [1.0f32, 2.0, 3.0, 4.0];
    let opts = Options::default();
    assert_eq!(
        Contiguous::new(&buf[..], 0).err(),
        Some(Error::EmptyPopulation)
    );
    assert!(matches!(
        Contiguous::new(&buf[..], 3),
        Err(Error::LengthMismatch { found: 4, .. })
    ));
    let empty: [&[f32]; 0] = [];
    assert_eq!(Members::new(&empty[..]).err(), Some(Error::EmptyPopulation));
    let ragged: [&[f32]; 2] = [&[1.0, 2.0], &[1.0]];
    assert_eq!(
        Members::new(&ragged[..]).err(),
        Some(Error::LengthMismatch {
            what: "member",
            index: Some(1),
            expected: 2,
            found: 1
        })
    );

    let mut pop = Contiguous::new(&mut buf[..], 2).unwrap();
    let mut out = [0.0f32; 3];
    assert!(matches!(
        average(&pop, Weights::Uniform, &mut out, &opts),
        Err(Error::LengthMismatch { what: "out", .. })
    ));
    assert_eq!(
        papa_all(&mut pop, Weights::Given(&[1.2, -0.2]), &opts),
        Err(Error::NegativeWeight {
            index: 1,
            value: -0.2
        })
    );
    assert!(matches!(
        papa_all(&mut pop, Weights::Given(&[0.5, 0.4]), &opts),
        Err(Error::WeightsDoNotSumToOne { .. })
    ));
    assert!(matches!(
        papa_all(&mut pop, Weights::Given(&[1.0]), &opts),
        Err(Error::LengthMismatch {
            what: "weights",
            ..
        })
    ));
    assert!(matches!(
        papa_all(&mut pop, Weights::Given(&[f32::NAN, 1.0]), &opts),
        Err(Error::NegativeWeight { index: 0, .. })
    ));
    assert_eq!(
        gradual(&mut pop, Weights::Uniform, 1.5, &opts),
        Err(Error::AlphaOutOfRange { alpha: 1.5 })
    );
    assert!(matches!(
        gradual(&mut pop, Weights::Uniform, f32::NAN, &opts),
        Err(Error::AlphaOutOfRange { .. })
    ));
    let mut scratch = [0.0f32; 4];
    assert_eq!(
        papa2(&mut pop, &[(0, 1), (1, 2)], &mut scratch, &opts),
        Err(Error::PairOutOfRange {
            child: 1,
            parent: 2,
            members: 2
        })
    );
    assert!(matches!(
        papa2(&mut pop, &[(0, 1)], &mut scratch, &opts),
        Err(Error::LengthMismatch { what: "pairs", .. })
    ));
    assert_eq!(
        papa2(&mut pop, &[(0, 1), (0, 1)], &mut scratch[..3], &opts),
        Err(Error::ScratchTooSmall {
            what: "papa2",
            needed: 4,
            found: 3
        })
    );
    let tensors = [TensorSpec {
        name: "w",
        shape: &[3],
        offset: 0,
        kind: TensorKind::Weight,
    }];
    let layout = Options {
        layout: Some(Layout::new(&tensors).unwrap()),
        check_finite: false,
    };
    assert!(matches!(
        papa_all(&mut pop, Weights::Uniform, &layout),
        Err(Error::LengthMismatch { what: "layout", .. })
    ));
    // Nothing above may have changed the population.
    assert_eq!(pop.into_inner(), &[1.0, 2.0, 3.0, 4.0]);

    let mut bad = [1.0f32, 2.0, f32::INFINITY, 4.0];
    let checked = Options {
        layout: None,
        check_finite: true,
    };
    let mut pop = Contiguous::new(&mut bad[..], 2).unwrap();
    assert_eq!(
        papa_all(&mut pop, Weights::Uniform, &checked),
        Err(Error::NonFinite {
            member: 1,
            index: 0
        })
    );
    assert_eq!(
        bad,
        [1.0, 2.0, f32::INFINITY, 4.0],
        "a failed check changes nothing"
    );

    let gap = [
        TensorSpec {
            name: "a",
            shape: &[2],
            offset: 0,
            kind: TensorKind::Weight,
        },
        TensorSpec {
            name: "b",
            shape: &[2],
            offset: 3,
            kind: TensorKind::Bias,
        },
    ];
    assert_eq!(
        Layout::new(&gap).err(),
        Some(Error::BadLayout { tensor: 1 })
    );
}
