//! SGD against an independent f64 transcription of `torch.optim.SGD`, and schedule shape.

// A list holding one trainable range is exactly what these calls mean.
#![allow(clippy::single_range_in_vec_init)]

use papa_core::rng::Rng;
use papa_core::LengthMismatch;
use papa_train::optim::{LrSchedule, OptimError, Sgd, DEFAULT_MIN_LR};

/// `torch.optim.SGD.step` for one tensor, transcribed from PyTorch's `_single_tensor_sgd`
/// (dampening 0), with the momentum buffer `None` until the first step.
fn torch_sgd(
    p: &mut [f64],
    g: &[f64],
    buf: &mut Option<Vec<f64>>,
    lr: f64,
    mu: f64,
    wd: f64,
    nesterov: bool,
) {
    let mut d: Vec<f64> = g.iter().zip(p.iter()).map(|(g, p)| g + wd * p).collect();
    if mu != 0.0 {
        let b = match buf {
            None => d.clone(),
            Some(b) => b.iter().zip(&d).map(|(b, d)| mu * b + d).collect(),
        };
        if nesterov {
            d = d.iter().zip(&b).map(|(d, b)| d + mu * b).collect();
        } else {
            d = b.clone();
        }
        *buf = Some(b);
    }
    for (p, d) in p.iter_mut().zip(&d) {
        *p -= lr * d;
    }
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform_f32() * 2.0 - 1.0).collect()
}

fn check_against_torch(sgd: Sgd) {
    let (members, n) = (3usize, 50usize);
    let trainable = [0..20, 30..45];
    let mut rng = Rng::new(42);
    let mut params = random(&mut rng, members * n);
    let initial = params.clone();
    let mut velocity = vec![0.0f32; members * n];
    // The reference, per member and per trainable range (each range is a "tensor").
    let mut ref_p: Vec<f64> = params.iter().map(|&v| f64::from(v)).collect();
    let mut bufs: Vec<Option<Vec<f64>>> = vec![None; members * trainable.len()];
    for step in 0..8 {
        let grads = random(&mut rng, members * n);
        let lr = 0.1 / (step + 1) as f32;
        sgd.step(&mut params, &grads, &mut velocity, n, &trainable, lr)
            .unwrap();
        for m in 0..members {
            for (k, r) in trainable.iter().enumerate() {
                let at = m * n + r.start..m * n + r.end;
                let g: Vec<f64> = grads[at.clone()].iter().map(|&v| f64::from(v)).collect();
                torch_sgd(
                    &mut ref_p[at],
                    &g,
                    &mut bufs[m * trainable.len() + k],
                    f64::from(lr),
                    f64::from(sgd.momentum),
                    f64::from(sgd.weight_decay),
                    sgd.nesterov,
                );
            }
        }
    }
    for (i, (&p, &r)) in params.iter().zip(&ref_p).enumerate() {
        let within = i % n;
        if trainable.iter().any(|t| t.contains(&within)) {
            assert!((f64::from(p) - r).abs() < 1e-5, "{sgd:?} [{i}]: {p} vs {r}");
            assert_ne!(p, initial[i], "[{i}] should have moved");
        } else {
            assert_eq!(p, initial[i], "frozen parameter {i} moved");
            assert_eq!(velocity[i], 0.0);
        }
    }
}

#[test]
fn sgd_matches_torch_momentum() {
    check_against_torch(Sgd {
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
    });
}

#[test]
fn sgd_matches_torch_momentum_weight_decay() {
    check_against_torch(Sgd {
        momentum: 0.9,
        weight_decay: 0.05,
        nesterov: false,
    });
}

#[test]
fn sgd_matches_torch_nesterov_weight_decay() {
    check_against_torch(Sgd {
        momentum: 0.8,
        weight_decay: 0.01,
        nesterov: true,
    });
}

#[test]
fn sgd_matches_torch_plain() {
    check_against_torch(Sgd {
        momentum: 0.0,
        weight_decay: 0.01,
        nesterov: false,
    });
}

#[test]
fn sgd_same_bits_on_any_thread_count() {
    let mut rng = Rng::new(9);
    let (members, n) = (16, 1000);
    let params = random(&mut rng, members * n);
    let grads = random(&mut rng, members * n);
    let run = |threads: usize| {
        let (mut p, mut v) = (params.clone(), vec![0.0; members * n]);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for _ in 0..3 {
                Sgd::default()
                    .step(&mut p, &grads, &mut v, n, &[0..n], 0.1)
                    .unwrap();
            }
        });
        p
    };
    assert_eq!(run(1), run(4));
}

#[test]
fn sgd_rejects_bad_shapes() {
    let sgd = Sgd::default();
    let (mut p, g, mut v) = (vec![0.0; 10], vec![0.0; 10], vec![0.0; 10]);
    assert!(matches!(
        sgd.step(&mut p, &g[..9], &mut v, 5, &[0..5], 0.1),
        Err(OptimError::Length(LengthMismatch { what: "grads", .. }))
    ));
    assert!(matches!(
        sgd.step(&mut p, &g, &mut v[..8], 5, &[0..5], 0.1),
        Err(OptimError::Length(LengthMismatch {
            what: "velocity",
            ..
        }))
    ));
    assert!(matches!(
        sgd.step(&mut p, &g, &mut v, 3, &[0..3], 0.1),
        Err(OptimError::MemberLen { .. })
    ));
    assert!(matches!(
        sgd.step(&mut p, &g, &mut v, 0, &[], 0.1),
        Err(OptimError::MemberLen { .. })
    ));
    assert!(matches!(
        sgd.step(&mut p, &g, &mut v, 5, &[0..6], 0.1),
        Err(OptimError::Range { .. })
    ));
    assert!(matches!(
        sgd.step(&mut p, &g, &mut v, 5, &[0..3, 2..4], 0.1),
        Err(OptimError::Range { .. })
    ));
    let nesterov_without_momentum = Sgd {
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: true,
    };
    assert!(matches!(
        nesterov_without_momentum.step(&mut p, &g, &mut v, 5, &[0..5], 0.1),
        Err(OptimError::NesterovWithoutMomentum { .. })
    ));
}

#[test]
fn cosine_endpoints_and_monotonicity() {
    let (base, warmup, total) = (0.1f32, 5usize, 100usize);
    let s = LrSchedule::cosine(base, warmup, total, DEFAULT_MIN_LR).unwrap();
    assert!((s.lr_at(0) - base / warmup as f32).abs() < 1e-7);
    assert!((s.lr_at(warmup - 1) - base).abs() < 1e-7);
    assert!((s.lr_at(warmup) - base).abs() < 1e-7);
    assert!((s.lr_at(total - 1) - DEFAULT_MIN_LR).abs() < 1e-9);
    assert_eq!(s.lr_at(total + 10), s.lr_at(total - 1));
    for w in 0..warmup - 1 {
        assert!(s.lr_at(w) < s.lr_at(w + 1));
    }
    for t in warmup..total - 1 {
        assert!(s.lr_at(t) > s.lr_at(t + 1), "step {t}");
    }
    // Halfway through the cosine the rate is the midpoint of base and min_lr.
    let s = LrSchedule::cosine(1.0, 0, 101, 0.0).unwrap();
    assert!((s.lr_at(50) - 0.5).abs() < 1e-6);
    assert_eq!(s.lr_at(0), 1.0);
    assert_eq!(s.lr_at(100), 0.0);
}

#[test]
fn schedule_edge_cases() {
    assert_eq!(LrSchedule::Constant(0.3).lr_at(12345), 0.3);
    assert_eq!(LrSchedule::cosine(0.1, 0, 1, 1e-4).unwrap().lr_at(0), 0.1);
    assert!(LrSchedule::cosine(0.1, 3, 3, 1e-4).is_err());
    assert!(LrSchedule::cosine(0.1, 0, 0, 1e-4).is_err());
    assert!(LrSchedule::cosine(0.1, 0, 10, 0.2).is_err());
    assert!(LrSchedule::cosine(f32::NAN, 0, 10, 0.0).is_err());
    assert_eq!(LrSchedule::cosine(0.1, 2, 10, 0.0).unwrap().base(), 0.1);
}
