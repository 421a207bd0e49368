//! Schedules, lr-scaled alpha and the per-run alpha helper.

use papa_core::population::Contiguous;
use papa_core::rules::{gradual, Options, Weights};
use papa_core::schedule::{alpha_for_run, effective_alpha, Schedule};
use papa_core::Error;
use proptest::prelude::*;

#[test]
fn schedules_fire_on_multiples_of_their_period() {
    let every_3 = Schedule::every_steps(3).unwrap();
    let due: Vec<u64> = (0..10).filter(|&s| every_3.due_after_step(s)).collect();
    assert_eq!(due, [3, 6, 9]);
    assert!((0..10).all(|e| !every_3.due_after_epoch(e)));

    let every_2 = Schedule::every_epochs(2).unwrap();
    let due: Vec<u64> = (0..7).filter(|&e| every_2.due_after_epoch(e)).collect();
    assert_eq!(due, [2, 4, 6]);
    assert!((0..10).all(|s| !every_2.due_after_step(s)));

    // The paper's schedule: after the first epoch, then every E from it.
    let from_first = Schedule::every_epochs_from_first(3).unwrap();
    let due: Vec<u64> = (0..12).filter(|&e| from_first.due_after_epoch(e)).collect();
    assert_eq!(due, [1, 4, 7, 10]);
    assert!((0..10).all(|s| !from_first.due_after_step(s)));
    let each = Schedule::every_epochs_from_first(1).unwrap();
    assert!(!each.due_after_epoch(0) && (1..50).all(|e| each.due_after_epoch(e)));
    let huge = Schedule::every_epochs_from_first(u32::MAX).unwrap();
    assert!(huge.due_after_epoch(1) && !huge.due_after_epoch(u64::MAX));

    let every_1 = Schedule::every_steps(1).unwrap();
    assert!(
        !every_1.due_after_step(0) && every_1.due_after_step(1) && every_1.due_after_step(u64::MAX)
    );
    let rare = Schedule::every_epochs(u32::MAX).unwrap();
    assert!(rare.due_after_epoch(u64::from(u32::MAX)) && !rare.due_after_epoch(1));

    assert!(
        (0..100).all(|n| !Schedule::Never.due_after_step(n) && !Schedule::Never.due_after_epoch(n))
    );
}

#[test]
fn zero_periods_are_refused() {
    for made in [
        Schedule::every_steps(0),
        Schedule::every_epochs(0),
        Schedule::every_epochs_from_first(0),
    ] {
        assert!(
            matches!(made, Err(Error::InvalidValue { index: None, value, .. }) if value == 0.0)
        );
    }
}

#[test]
fn applications_count_the_due_points() {
    for k in 1..7u32 {
        let s = Schedule::every_steps(k).unwrap();
        let count = (1..=100u64).filter(|&n| s.due_after_step(n)).count() as u64;
        assert_eq!(s.applications(100, 3), count);
        let e = Schedule::every_epochs(k).unwrap();
        let count = (1..=20u64).filter(|&n| e.due_after_epoch(n)).count() as u64;
        assert_eq!(e.applications(1000, 20), count);
        let f = Schedule::every_epochs_from_first(k).unwrap();
        for epochs in 0..20u64 {
            let count = (1..=epochs).filter(|&n| f.due_after_epoch(n)).count() as u64;
            assert_eq!(
                f.applications(1000, epochs),
                count,
                "k {k}, {epochs} epochs"
            );
        }
    }
    assert_eq!(Schedule::Never.applications(100, 20), 0);
}

#[test]
fn effective_alpha_scales_the_pull_with_the_lr() {
    assert_eq!(effective_alpha(0.99, 0.1, 0.1), Ok(0.99));
    assert_eq!(effective_alpha(0.5, 0.05, 0.1), Ok(0.75));
    assert_eq!(effective_alpha(0.0, 0.1, 0.1), Ok(0.0));
    assert_eq!(effective_alpha(1.0, 0.1, 0.1), Ok(1.0));
    assert_eq!(effective_alpha(0.3, 0.0, 0.1), Ok(1.0));
    // A warm-up lr above the start would pull past the mean: clamped.
    assert_eq!(effective_alpha(0.5, 0.3, 0.1), Ok(0.0));
}

#[test]
fn effective_alpha_errors() {
    for alpha in [-0.1, 1.1, f32::NAN] {
        assert!(matches!(
            effective_alpha(alpha, 0.1, 0.1),
            Err(Error::AlphaOutOfRange { .. })
        ));
    }
    for lr_start in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            effective_alpha(0.9, 0.1, lr_start),
            Err(Error::InvalidValue {
                what: "lr_start",
                ..
            })
        ));
    }
    for lr_now in [-1e-9, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            effective_alpha(0.9, lr_now, 0.1),
            Err(Error::InvalidValue { what: "lr_now", .. })
        ));
    }
}

proptest! {
    #[test]
    fn effective_alpha_stays_in_range(alpha in 0.0f32..=1.0, now in 0.0f32..1.0, start in 1e-6f32..1.0) {
        let a = effective_alpha(alpha, now, start).unwrap();
        prop_assert!((0.0..=1.0).contains(&a));
        if now <= start {
            prop_assert!(a >= alpha - 1e-6);
        }
    }

    #[test]
    fn alpha_for_run_leaves_the_remaining_fraction(n in 1u64..100_000, r in 1e-6f32..0.999) {
        let alpha = alpha_for_run(n, r).unwrap();
        prop_assert!(alpha > 0.0 && alpha < 1.0 || (alpha == 1.0 && n > 1000));
        let left = f64::from(alpha).powf(n as f64);
        // alpha is rounded to f32: n applications multiply its relative error by n.
        let tol = 1e-7 * n as f64 + 1e-6;
        prop_assert!((left.ln() - f64::from(r).ln()).abs() <= tol, "{} vs {}", left, r);
    }
}

#[test]
fn alpha_for_run_matches_repeated_gradual_application() {
    // Two members at distance 1 from their mean; 50 applications must leave 10% of it.
    let alpha = alpha_for_run(50, 0.1).unwrap();
    let mut buf = [-1.0f32, 1.0];
    let mut pop = Contiguous::new(&mut buf[..], 2).unwrap();
    for _ in 0..50 {
        gradual(&mut pop, Weights::Uniform, alpha, &Options::default()).unwrap();
    }
    assert!(
        (buf[1] - 0.1).abs() < 1e-5 && (buf[0] + 0.1).abs() < 1e-5,
        "{buf:?}"
    );
    // One application pulls all the way to the fraction.
    assert!((alpha_for_run(1, 0.25).unwrap() - 0.25).abs() < 1e-7);
}

#[test]
fn alpha_for_run_errors() {
    assert!(matches!(
        alpha_for_run(0, 0.5),
        Err(Error::InvalidValue {
            what: "applications",
            ..
        })
    ));
    for r in [0.0, 1.0, -0.5, 1.5, f32::NAN] {
        assert!(matches!(
            alpha_for_run(10, r),
            Err(Error::InvalidValue {
                what: "remaining fraction",
                ..
            })
        ));
    }
}
