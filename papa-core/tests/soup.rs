//! Soups: hand-worked greedy soups, invariants on random populations, and the errors.

mod common;
use common::Nobody;
use papa_core::layout::{Layout, TensorKind, TensorSpec};
use papa_core::population::{Contiguous, Members};
use papa_core::rules::{average, Options, Weights};
use papa_core::soup::{greedy_soup, uniform_soup, GreedyBuffers, SoupOutcome};
use papa_core::Error;
use proptest::prelude::*;

/// Owned buffers for a population of `p` members of `n` floats.
struct Buffers {
    order: Vec<usize>,
    scores: Vec<f32>,
    candidate: Vec<f32>,
    out: Vec<f32>,
    weights: Vec<f32>,
}

impl Buffers {
    fn new(p: usize, n: usize) -> Self {
        Self {
            order: vec![usize::MAX; p],
            scores: vec![f32::NAN; p],
            candidate: vec![f32::NAN; n],
            out: vec![f32::NAN; n],
            weights: vec![f32::NAN; p],
        }
    }

    fn view(&mut self) -> GreedyBuffers<'_> {
        GreedyBuffers {
            order: &mut self.order,
            scores: &mut self.scores,
            candidate: &mut self.candidate,
            out: &mut self.out,
            weights: &mut self.weights,
        }
    }
}

fn soup_of(
    members: &[f32],
    n: usize,
    eval: impl FnMut(&[f32]) -> f32,
) -> (Result<SoupOutcome, Error>, Buffers) {
    let p = members.len() / n;
    let mut buf = Buffers::new(p, n);
    let pop = Contiguous::new(members, p).unwrap();
    let result = greedy_soup(&pop, eval, buf.view(), &Options::default());
    (result, buf)
}

#[test]
fn greedy_soup_by_hand() {
    // Target 5, score -(x - 5)^2. Members' own scores: -0.25, -4, -1, -1, -225, so the order
    // is 0, 2, 3 (tie with 2: the lower index first), 1, 4.
    //   soup {0} = 5.5, score -0.25
    //   + 2: (5.5 + 6) / 2 = 5.75 -> -0.5625      rejected
    //   + 3: (5.5 + 4) / 2 = 4.75 -> -0.0625      kept
    //   + 1: (5.5 + 4 + 3) / 3 = 4.1667 -> -0.69  rejected
    //   + 4: (5.5 + 4 + 20) / 3 = 9.83 -> -23.4   rejected
    // (Had 3 come before 2, 2 would then have been kept: the tie order matters.)
    let members = [5.5f32, 3.0, 6.0, 4.0, 20.0];
    let mut calls = 0;
    let (result, buf) = soup_of(&members, 1, |w| {
        calls += 1;
        -(w[0] - 5.0) * (w[0] - 5.0)
    });
    assert_eq!(
        result,
        Ok(SoupOutcome {
            kept: 2,
            score: -0.0625
        })
    );
    assert_eq!(buf.order, [0, 2, 3, 1, 4]);
    assert_eq!(buf.scores, [-0.25, -4.0, -1.0, -1.0, -225.0]);
    assert_eq!(buf.weights, [0.5, 0.0, 0.0, 0.5, 0.0]);
    assert_eq!(buf.out, [4.75]);
    assert_eq!(calls, 5 + 4);
}

#[test]
fn greedy_soup_keeps_all_when_each_improves() {
    // Target 3: scores -9, -1, -1, -49; order 1, 2, 0, 3.
    //   {1} = 2 -> -1; + 2: 3 -> 0 kept; + 0: 2 -> -1 rejected; + 3: 16/3 -> -5.4 rejected.
    let (result, buf) = soup_of(&[0.0, 2.0, 4.0, 10.0], 1, |w| -(w[0] - 3.0) * (w[0] - 3.0));
    assert_eq!(
        result,
        Ok(SoupOutcome {
            kept: 2,
            score: 0.0
        })
    );
    assert_eq!(buf.weights, [0.0, 0.5, 0.5, 0.0]);
    assert_eq!(buf.out, [3.0]);
    // Two-dimensional, target (1, 1), score minus the squared distance: scores -1, -1, -2;
    //   {0} = (2, 1) -> -1; + 1: (1.5, 1.5) -> -0.5 kept; + 2: (1, 1) -> 0 kept.
    let members = [2.0f32, 1.0, 1.0, 2.0, 0.0, 0.0];
    let (result, buf) = soup_of(&members, 2, |w| {
        -((w[0] - 1.0).powi(2) + (w[1] - 1.0).powi(2))
    });
    assert_eq!(result.unwrap().kept, 3);
    assert_eq!(buf.weights, [1.0 / 3.0; 3]);
    assert_eq!(buf.out, [1.0, 1.0]);
}

#[test]
fn greedy_soup_does_not_accept_ties() {
    let (result, buf) = soup_of(&[1.0, 2.0, 3.0], 1, |_| 0.5);
    assert_eq!(
        result,
        Ok(SoupOutcome {
            kept: 1,
            score: 0.5
        })
    );
    assert_eq!(buf.order, [0, 1, 2]);
    assert_eq!(buf.weights, [1.0, 0.0, 0.0]);
    assert_eq!(buf.out, [1.0]);
}

#[test]
fn greedy_soup_of_one_member() {
    let mut calls = 0;
    let (result, buf) = soup_of(&[1.5, -2.0], 2, |w| {
        calls += 1;
        w[0]
    });
    assert_eq!(
        result,
        Ok(SoupOutcome {
            kept: 1,
            score: 1.5
        })
    );
    assert_eq!(
        (buf.weights, buf.out, calls),
        (vec![1.0], vec![1.5, -2.0], 1)
    );
}

#[test]
fn greedy_soup_of_separate_members_under_a_layout() {
    // The counter takes the max over the population, the weights are averaged.
    let tensors = [
        TensorSpec {
            name: "w",
            shape: &[2],
            offset: 0,
            kind: TensorKind::Weight,
        },
        TensorSpec {
            name: "n",
            shape: &[1],
            offset: 2,
            kind: TensorKind::Counter,
        },
    ];
    let opts = Options {
        layout: Some(Layout::new(&tensors).unwrap()),
        check_finite: true,
    };
    let list = [
        vec![1.0f32, 0.0, 5.0],
        vec![0.0, 1.0, 9.0],
        vec![1.0, 1.0, 7.0],
    ];
    let pop = Members::new(&list[..]).unwrap();
    let mut buf = Buffers::new(3, 3);
    let eval = |w: &[f32]| -((w[0] - 0.5).abs() + (w[1] - 0.5).abs());
    // Scores -1, -1, -1: order 0, 1, 2; {0,1} -> (0.5, 0.5) score 0 kept; + 2 -> -1/3 rejected.
    let soup = greedy_soup(&pop, eval, buf.view(), &opts).unwrap();
    assert_eq!(
        soup,
        SoupOutcome {
            kept: 2,
            score: 0.0
        }
    );
    assert_eq!(buf.out, [0.5, 0.5, 9.0]);
}

#[test]
fn uniform_soup_is_the_mean() {
    let buf = [1.0f32, 2.0, 3.0, 4.0, 8.0, 0.0];
    let pop = Contiguous::new(&buf[..], 3).unwrap();
    let mut out = [0.0f32; 2];
    uniform_soup(&pop, &mut out, &Options::default()).unwrap();
    assert_eq!(out, [4.0, 2.0]);
    assert!(matches!(
        uniform_soup(&pop, &mut out[..1], &Options::default()),
        Err(Error::LengthMismatch { what: "out", .. })
    ));
}

proptest! {
    /// On any population: the soup is the exact average of its kept members with weights 1/n,
    /// its score is eval of the soup, it is at least the best member's, and eval ran 2P - 1 times.
    #[test]
    fn greedy_soup_invariants(
        (p, n, members, target) in (1usize..8, 1usize..20).prop_flat_map(|(p, n)| (
            Just(p),
            Just(n),
            proptest::collection::vec(-2.0f32..2.0, p * n),
            proptest::collection::vec(-1.0f32..1.0, n),
        ))
    ) {
        let eval = |w: &[f32]| -> f32 {
            -w.iter().zip(&target).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
        };
        let mut calls = 0;
        let (result, buf) = soup_of(&members, n, |w| { calls += 1; eval(w) });
        let soup = result.unwrap();
        prop_assert_eq!(calls, 2 * p - 1);
        let kept: Vec<usize> = (0..p).filter(|&j| buf.weights[j] > 0.0).collect();
        prop_assert_eq!(kept.len(), soup.kept);
        prop_assert!(kept.iter().all(|&j| buf.weights[j] == 1.0 / soup.kept as f32));
        prop_assert!(kept.contains(&buf.order[0]));
        let mut want = vec![0.0f32; n];
        let pop = Contiguous::new(&members[..], p).unwrap();
        average(&pop, Weights::Given(&buf.weights), &mut want, &Options::default()).unwrap();
        prop_assert_eq!(&buf.out, &want);
        prop_assert_eq!(soup.score, eval(&buf.out));
        let best = buf.scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        prop_assert!(soup.score >= best);
        let sorted = buf.order.windows(2).all(|w| {
            let (a, b) = (buf.scores[w[0]], buf.scores[w[1]]);
            a > b || (a == b && w[0] < w[1])
        });
        prop_assert!(sorted, "order {:?} for scores {:?}", buf.order, buf.scores);
    }
}

/// Makes one buffer the wrong length.
type Spoil = fn(&mut Buffers);

#[test]
fn greedy_soup_errors() {
    let opts = Options::default();
    let mut buf = Buffers::new(0, 1);
    assert_eq!(
        greedy_soup(&Nobody, |_| 0.0, buf.view(), &opts),
        Err(Error::EmptyPopulation)
    );

    let members = [1.0f32, 2.0, 3.0, 4.0];
    let pop = Contiguous::new(&members[..], 2).unwrap();
    let cases: [(&str, Spoil); 5] = [
        ("order", |b| b.order.push(0)),
        ("scores", |b| {
            b.scores.pop();
        }),
        ("weights", |b| b.weights.push(0.0)),
        ("candidate", |b| {
            b.candidate.pop();
        }),
        ("out", |b| b.out.push(0.0)),
    ];
    for (what, spoil) in cases {
        let mut buf = Buffers::new(2, 2);
        spoil(&mut buf);
        let err = greedy_soup(&pop, |_| 0.0, buf.view(), &opts).unwrap_err();
        assert!(
            matches!(err, Error::LengthMismatch { what: w, .. } if w == what),
            "{what}: {err:?}"
        );
    }

    // A NaN score, alone or for a candidate, names the member being tried.
    let mut buf = Buffers::new(2, 2);
    let nan_for_second = |w: &[f32]| if w[0] == 3.0 { f32::NAN } else { 0.0 };
    assert!(matches!(
        greedy_soup(&pop, nan_for_second, buf.view(), &opts),
        Err(Error::InvalidValue { index: Some(1), .. })
    ));
    let nan_for_mixes = |w: &[f32]| if w[0] == 2.0 { f32::NAN } else { w[0] };
    assert!(matches!(
        greedy_soup(&pop, nan_for_mixes, buf.view(), &opts),
        Err(Error::InvalidValue { index: Some(0), .. })
    ));
    // Infinite scores are ordered like any other.
    assert_eq!(
        greedy_soup(
            &pop,
            |w| if w[0] == 1.0 { f32::INFINITY } else { 0.0 },
            buf.view(),
            &opts
        ),
        Ok(SoupOutcome {
            kept: 1,
            score: f32::INFINITY
        })
    );

    // Errors of the average: a layout of the wrong length, a non-finite member.
    let tensors = [TensorSpec {
        name: "w",
        shape: &[3],
        offset: 0,
        kind: TensorKind::Weight,
    }];
    let bad_layout = Options {
        layout: Some(Layout::new(&tensors).unwrap()),
        check_finite: false,
    };
    assert!(matches!(
        greedy_soup(&pop, |_| 0.0, buf.view(), &bad_layout),
        Err(Error::LengthMismatch { what: "layout", .. })
    ));
    let with_nan = [1.0f32, f32::NAN];
    let check = Options {
        layout: None,
        check_finite: true,
    };
    let mut buf = Buffers::new(1, 2);
    assert_eq!(
        greedy_soup(
            &Contiguous::new(&with_nan[..], 1).unwrap(),
            |_| 0.0,
            buf.view(),
            &check
        ),
        Err(Error::NonFinite {
            member: 0,
            index: 1
        })
    );
}
