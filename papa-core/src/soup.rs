//! Model soups: the final population is turned into ONE model by averaging its members.
//!
//! The uniform soup averages every member; the greedy soup (Wortsman et al. 2022) adds
//! members best first and keeps one only when it strictly improves a held-out score. REPAIR
//! the result afterwards with weights 1/n over the kept members (the `weights` the greedy
//! soup returns).

use crate::error::check_len;
use crate::population::Population;
use crate::rules::{average, Options, Weights};
use crate::Error;
use core::cmp::Ordering;

/// The uniform soup: the plain mean of every member, written to `out` (length N). This is
/// [`rules::average`](crate::rules::average) with [`Weights::Uniform`], under a name that says
/// what it is for; counters take the max under a layout, as in the rules.
///
/// ```
/// use papa_core::population::Contiguous;
/// use papa_core::rules::Options;
/// use papa_core::soup::uniform_soup;
/// let pop = [1.0f32, 2.0, 3.0, 6.0];
/// let mut out = [0.0f32; 2];
/// uniform_soup(&Contiguous::new(&pop[..], 2)?, &mut out, &Options::default())?;
/// assert_eq!(out, [2.0, 4.0]);
/// # Ok::<(), papa_core::Error>(())
/// ```
pub fn uniform_soup<P: Population + ?Sized>(
    pop: &P,
    out: &mut [f32],
    opts: &Options<'_>,
) -> Result<(), Error> {
    average(pop, Weights::Uniform, out, opts)
}

/// What a greedy soup kept.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SoupOutcome {
    /// Number of members in the soup (at least 1).
    pub kept: usize,
    /// The soup's score.
    pub score: f32,
}

/// Caller-provided space of [`greedy_soup`]: three lists of P entries and two vectors of N.
#[derive(Debug)]
pub struct GreedyBuffers<'a> {
    /// Scratch (P): receives the members' indices, best score first.
    pub order: &'a mut [usize],
    /// Receives (P) each member's own score.
    pub scores: &'a mut [f32],
    /// Scratch (N): the soup being tried.
    pub candidate: &'a mut [f32],
    /// Receives (N) the soup.
    pub out: &'a mut [f32],
    /// Receives (P) the soup's weights: 1/n for the n kept members, 0 for the others.
    pub weights: &'a mut [f32],
}

/// The greedy soup: score every member alone with `eval` (higher is better, e.g. accuracy on
/// a held-out validation split, never the test set), sort them best first (ties keep the
/// lower index first), start from the best, and try the others in that order: the candidate
/// is the uniform average of the kept members and the next one, recomputed exactly with
/// [`rules::average`](crate::rules::average) (no drift from incremental updates), and the
/// member is kept only when the candidate's score is STRICTLY greater than the soup's.
///
/// `eval` is called P times on the members, then P - 1 times on candidates. `buf.weights`
/// doubles as the candidate's weights: the next member is given 1/(n+1) with the kept ones,
/// and the weights go back to 1/n on rejection. The soup of one member is that member as
/// written by the average (counters take the max over every member under a layout).
///
/// Fails with [`Error::EmptyPopulation`], [`Error::LengthMismatch`] when a buffer has the
/// wrong length, [`Error::InvalidValue`] (index = member tried) on a NaN score, and the
/// errors of the average (layout, non-finite check); the buffers' content is unspecified
/// on error.
///
/// ```
/// use papa_core::population::Contiguous;
/// use papa_core::rules::Options;
/// use papa_core::soup::{greedy_soup, GreedyBuffers};
/// let pop = [0.0f32, 2.0, 4.0, 10.0]; // four members of one number
/// let (mut order, mut scores, mut weights) = ([0; 4], [0.0; 4], [0.0; 4]);
/// let (mut candidate, mut out) = ([0.0; 1], [0.0; 1]);
/// let buf = GreedyBuffers {
///     order: &mut order,
///     scores: &mut scores,
///     candidate: &mut candidate,
///     out: &mut out,
///     weights: &mut weights,
/// };
/// let eval = |w: &[f32]| -(w[0] - 3.0).abs(); // best at 3
/// let soup = greedy_soup(&Contiguous::new(&pop[..], 4)?, eval, buf, &Options::default())?;
/// assert_eq!((soup.kept, soup.score, out, weights), (2, 0.0, [3.0], [0.0, 0.5, 0.5, 0.0]));
/// # Ok::<(), papa_core::Error>(())
/// ```
pub fn greedy_soup<P: Population + ?Sized>(
    pop: &P,
    mut eval: impl FnMut(&[f32]) -> f32,
    buf: GreedyBuffers<'_>,
    opts: &Options<'_>,
) -> Result<SoupOutcome, Error> {
    let GreedyBuffers {
        order,
        scores,
        candidate,
        out,
        weights,
    } = buf;
    let (members, len) = (pop.members(), pop.member_len());
    if members == 0 {
        return Err(Error::EmptyPopulation);
    }
    check_len("order", members, order.len())?;
    check_len("scores", members, scores.len())?;
    check_len("weights", members, weights.len())?;
    check_len("candidate", len, candidate.len())?;
    check_len("out", len, out.len())?;

    for (j, s) in scores.iter_mut().enumerate() {
        *s = scored(j, eval(pop.member(j)))?;
    }
    for (i, o) in order.iter_mut().enumerate() {
        *o = i;
    }
    // Scores hold no NaN, so partial_cmp is total; the index breaks ties like a stable sort.
    order.sort_unstable_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or(Ordering::Equal)
            .then(a.cmp(&b))
    });

    weights.fill(0.0);
    weights[order[0]] = 1.0;
    average(pop, Weights::Given(weights), out, opts)?;
    let mut soup = SoupOutcome {
        kept: 1,
        score: scores[order[0]],
    };
    for &next in &order[1..] {
        set_kept_weights(weights, 1.0 / (soup.kept + 1) as f32);
        weights[next] = 1.0 / (soup.kept + 1) as f32;
        average(pop, Weights::Given(weights), candidate, opts)?;
        let score = scored(next, eval(candidate))?;
        if score > soup.score {
            out.copy_from_slice(candidate);
            soup = SoupOutcome {
                kept: soup.kept + 1,
                score,
            };
        } else {
            weights[next] = 0.0;
            set_kept_weights(weights, 1.0 / soup.kept as f32);
        }
    }
    Ok(soup)
}

/// Gives every member with a non-zero weight the weight `w`.
fn set_kept_weights(weights: &mut [f32], w: f32) {
    for x in weights.iter_mut().filter(|x| **x > 0.0) {
        *x = w;
    }
}

fn scored(member: usize, score: f32) -> Result<f32, Error> {
    if score.is_nan() {
        return Err(Error::InvalidValue {
            what: "score when trying member",
            index: Some(member),
            value: f64::from(score),
        });
    }
    Ok(score)
}
