//! Diversity metrics against straightforward f64 references, on random populations whose
//! length is often off the chunk grid, and their errors.

mod common;
use common::Nobody;
use papa_core::diversity::{distances_to_mean, mean_pairwise_cosine};
use papa_core::population::{Contiguous, Members};
use papa_core::rng::Rng;
use papa_core::rules::{Weights, CHUNK};
use papa_core::Error;
use proptest::prelude::*;

fn population() -> impl Strategy<Value = (usize, usize, Vec<f32>, u64)> {
    (
        1usize..7,
        prop_oneof![1usize..40, (CHUNK - 3)..(2 * CHUNK + 5)],
    )
        .prop_flat_map(|(p, n)| {
            (
                Just(p),
                Just(n),
                proptest::collection::vec(-2.0f32..2.0, p * n),
                any::<u64>(),
            )
        })
}

fn random_weights(p: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let raw: Vec<f64> = (0..p).map(|_| rng.uniform_f64() + 0.05).collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|w| (w / sum) as f32).collect()
}

fn member(buf: &[f32], n: usize, j: usize) -> impl Iterator<Item = f64> + '_ {
    buf[j * n..(j + 1) * n].iter().map(|&x| f64::from(x))
}

fn reference_distances(buf: &[f32], p: usize, n: usize, w: &[f64]) -> Vec<f64> {
    let mut mean = vec![0.0f64; n];
    for (j, &c) in w.iter().enumerate() {
        for (m, x) in mean.iter_mut().zip(member(buf, n, j)) {
            *m += c * x;
        }
    }
    (0..p)
        .map(|j| {
            member(buf, n, j)
                .zip(&mean)
                .map(|(x, m)| (x - m) * (x - m))
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

fn reference_cosine(buf: &[f32], p: usize, n: usize) -> f64 {
    if p == 1 {
        return 1.0;
    }
    let dot = |a: usize, b: usize| -> f64 {
        member(buf, n, a)
            .zip(member(buf, n, b))
            .map(|(x, y)| x * y)
            .sum()
    };
    let mut sum = 0.0;
    for j in 0..p {
        for k in j + 1..p {
            sum += dot(j, k) / (dot(j, j).sqrt() * dot(k, k).sqrt());
        }
    }
    sum / (p * (p - 1) / 2) as f64
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-10 * want.abs() + 1e-12
}

proptest! {
    #[test]
    fn distances_match_the_reference((p, n, buf, seed) in population()) {
        let given = random_weights(p, seed);
        // Uniform weights are exactly 1/P, not 1/P rounded to f32.
        let uniform = vec![1.0 / p as f64; p];
        let given_f64: Vec<f64> = given.iter().map(|&w| f64::from(w)).collect();
        for (weights, w) in [(Weights::Uniform, &uniform), (Weights::Given(&given), &given_f64)] {
            let want = reference_distances(&buf, p, n, w);
            let mut got = vec![f64::NAN; p];
            distances_to_mean(&Contiguous::new(&buf[..], p).unwrap(), weights, &mut got).unwrap();
            for (g, r) in got.iter().zip(&want) {
                prop_assert!(close(*g, *r), "{} vs {}", g, r);
            }
            // The slice-of-members form gives the same bits.
            let list: Vec<&[f32]> = buf.chunks_exact(n).collect();
            let mut again = vec![f64::NAN; p];
            distances_to_mean(&Members::new(&list[..]).unwrap(), weights, &mut again).unwrap();
            prop_assert_eq!(&again, &got);
        }
    }

    #[test]
    fn cosine_matches_the_reference((p, n, buf, _seed) in population()) {
        let mut gram = vec![f64::NAN; p * p + 3];
        let got = mean_pairwise_cosine(&Contiguous::new(&buf[..], p).unwrap(), &mut gram).unwrap();
        prop_assert!(close(got, reference_cosine(&buf, p, n)), "{} vs {}", got, reference_cosine(&buf, p, n));
        for j in 0..p {
            for k in 0..p {
                let dot: f64 = member(&buf, n, j).zip(member(&buf, n, k)).map(|(x, y)| x * y).sum();
                prop_assert!(close(gram[j * p + k], dot));
            }
        }
    }
}

#[test]
fn hand_worked_values() {
    // Members (1, 0), (-1, 0): mean 0, both at distance 1, cosine -1.
    let buf = [1.0f32, 0.0, -1.0, 0.0];
    let pop = Contiguous::new(&buf[..], 2).unwrap();
    let mut out = [0.0f64; 2];
    distances_to_mean(&pop, Weights::Uniform, &mut out).unwrap();
    assert_eq!(out, [1.0, 1.0]);
    // With weights (0.75, 0.25) the mean is (0.5, 0).
    distances_to_mean(&pop, Weights::Given(&[0.75, 0.25]), &mut out).unwrap();
    assert_eq!(out, [0.5, 1.5]);
    let mut gram = [0.0f64; 4];
    assert_eq!(mean_pairwise_cosine(&pop, &mut gram), Ok(-1.0));
    assert_eq!(gram, [1.0, -1.0, -1.0, 1.0]);
    // One member: distance 0, cosine 1 by convention.
    let one = Contiguous::new(&buf[..2], 1).unwrap();
    let mut out = [f64::NAN; 1];
    distances_to_mean(&one, Weights::Uniform, &mut out).unwrap();
    assert_eq!(out, [0.0]);
    assert_eq!(mean_pairwise_cosine(&one, &mut gram), Ok(1.0));
}

#[test]
fn errors() {
    let mut out = [0.0f64; 3];
    let mut gram = [0.0f64; 9];
    assert_eq!(
        distances_to_mean(&Nobody, Weights::Uniform, &mut out),
        Err(Error::EmptyPopulation)
    );
    assert_eq!(
        mean_pairwise_cosine(&Nobody, &mut gram),
        Err(Error::EmptyPopulation)
    );

    let mut buf = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let pop = Contiguous::new(&buf[..], 3).unwrap();
    assert!(matches!(
        distances_to_mean(&pop, Weights::Uniform, &mut out[..2]),
        Err(Error::LengthMismatch {
            what: "out",
            expected: 3,
            found: 2,
            ..
        })
    ));
    assert!(matches!(
        distances_to_mean(&pop, Weights::Given(&[0.5, 0.5]), &mut out),
        Err(Error::LengthMismatch {
            what: "weights",
            ..
        })
    ));
    assert!(matches!(
        distances_to_mean(&pop, Weights::Given(&[0.5, 0.5, 0.5]), &mut out),
        Err(Error::WeightsDoNotSumToOne { .. })
    ));
    assert!(matches!(
        distances_to_mean(&pop, Weights::Given(&[0.5, 0.6, -0.1]), &mut out),
        Err(Error::NegativeWeight { index: 2, .. })
    ));
    assert_eq!(
        mean_pairwise_cosine(&pop, &mut gram[..8]),
        Err(Error::ScratchTooSmall {
            what: "gram",
            needed: 9,
            found: 8
        })
    );

    buf[5] = f32::NAN;
    let pop = Contiguous::new(&buf[..], 3).unwrap();
    assert_eq!(
        distances_to_mean(&pop, Weights::Uniform, &mut out),
        Err(Error::NonFinite {
            member: 2,
            index: 1
        })
    );
    assert_eq!(
        mean_pairwise_cosine(&pop, &mut gram),
        Err(Error::NonFinite {
            member: 2,
            index: 1
        })
    );

    buf[5] = 6.0;
    buf[2] = 0.0;
    buf[3] = 0.0;
    let pop = Contiguous::new(&buf[..], 3).unwrap();
    assert_eq!(
        mean_pairwise_cosine(&pop, &mut gram),
        Err(Error::Degenerate {
            what: "member norm",
            index: 1
        })
    );
    // Empty members have no direction either.
    let empty = Contiguous::new(&buf[..0], 2).unwrap();
    assert_eq!(
        mean_pairwise_cosine(&empty, &mut gram),
        Err(Error::Degenerate {
            what: "member norm",
            index: 0
        })
    );
    let mut out = [f64::NAN; 2];
    distances_to_mean(&empty, Weights::Uniform, &mut out).unwrap();
    assert_eq!(out, [0.0, 0.0]);
}
