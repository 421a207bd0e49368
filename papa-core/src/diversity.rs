//! Population diversity: how far the members sit from their mean and from each other.
//!
//! PAPA must keep members close enough to average well but different enough to gain from
//! averaging; these metrics make that balance visible during a run. Like the rules, each is
//! one streaming pass over the population in chunks of [`CHUNK`] columns, accumulated in
//! f64, without allocation.

use crate::population::{check_finite, Population};
use crate::rules::{check_weights, Weights, CHUNK};
use crate::Error;
use core::ops::Range;

/// Euclidean distance of each member to the (weighted) mean of the population, written to
/// `out` (P entries).
///
/// Fails with [`Error::EmptyPopulation`], the weight errors of the rules,
/// [`Error::LengthMismatch`] when `out` does not hold P entries, and [`Error::NonFinite`] when
/// the population holds a NaN or infinity.
///
/// ```
/// use papa_core::diversity::distances_to_mean;
/// use papa_core::population::Contiguous;
/// use papa_core::rules::Weights;
/// let pop = [0.0f32, 0.0, 6.0, 8.0]; // mean (3, 4)
/// let mut out = [0.0f64; 2];
/// distances_to_mean(&Contiguous::new(&pop[..], 2)?, Weights::Uniform, &mut out)?;
/// assert_eq!(out, [5.0, 5.0]);
/// # Ok::<(), papa_core::Error>(())
/// ```
pub fn distances_to_mean<P: Population + ?Sized>(
    pop: &P,
    weights: Weights<'_>,
    out: &mut [f64],
) -> Result<(), Error> {
    let members = nonempty(pop)?;
    if let Weights::Given(w) = weights {
        check_weights(w, members)?;
    }
    if out.len() != members {
        return Err(Error::LengthMismatch {
            what: "out",
            index: None,
            expected: members,
            found: out.len(),
        });
    }
    let uniform = 1.0 / members as f64;
    let weight = |j: usize| match weights {
        Weights::Uniform => uniform,
        Weights::Given(w) => f64::from(w[j]),
    };
    out.fill(0.0);
    for cols in chunks(pop.member_len()) {
        let mean = &mut [0.0f64; CHUNK][..cols.len()];
        for j in 0..members {
            let c = weight(j);
            for (m, &x) in mean.iter_mut().zip(&pop.member(j)[cols.clone()]) {
                *m += c * f64::from(x);
            }
        }
        // The chunk of every member is still in cache for this second look.
        for (j, o) in out.iter_mut().enumerate() {
            for (&m, &x) in mean.iter().zip(&pop.member(j)[cols.clone()]) {
                let d = f64::from(x) - m;
                *o += d * d;
            }
        }
    }
    for o in out.iter_mut() {
        *o = libm::sqrt(*o);
    }
    // A NaN anywhere poisons the mean and so every distance: name where it came from.
    if out.iter().any(|o| !o.is_finite()) {
        check_finite(pop)?;
    }
    Ok(())
}

/// Mean over the pairs j < k of the cosine similarity cos(w_j, w_k), from the members' Gram
/// matrix accumulated in one pass. On return `gram` (at least P x P entries of scratch)
/// starts with the Gram matrix, row-major. A population of one member gives 1.0.
///
/// Fails with [`Error::EmptyPopulation`], [`Error::ScratchTooSmall`] when `gram` holds fewer
/// than P x P entries, [`Error::NonFinite`] when a member holds a NaN or infinity, and
/// [`Error::Degenerate`] naming a member whose norm is 0 (its cosine is undefined).
///
/// ```
/// use papa_core::diversity::mean_pairwise_cosine;
/// use papa_core::population::Contiguous;
/// let pop = [1.0f32, 0.0, 1.0, 1.0, 0.0, 2.0]; // (1, 0), (1, 1), (0, 2)
/// let mut gram = [0.0f64; 9];
/// let cos = mean_pairwise_cosine(&Contiguous::new(&pop[..], 3)?, &mut gram)?;
/// let half = core::f64::consts::FRAC_1_SQRT_2;
/// assert!((cos - (half + 0.0 + half) / 3.0).abs() < 1e-12);
/// assert_eq!(gram[..3], [1.0, 1.0, 0.0]);
/// # Ok::<(), papa_core::Error>(())
/// ```
pub fn mean_pairwise_cosine<P: Population + ?Sized>(
    pop: &P,
    gram: &mut [f64],
) -> Result<f64, Error> {
    let members = nonempty(pop)?;
    let needed = members.saturating_mul(members);
    if gram.len() < needed {
        return Err(Error::ScratchTooSmall {
            what: "gram",
            needed,
            found: gram.len(),
        });
    }
    let gram = &mut gram[..needed];
    gram.fill(0.0);
    for cols in chunks(pop.member_len()) {
        for j in 0..members {
            let a = &pop.member(j)[cols.clone()];
            for k in j..members {
                let b = &pop.member(k)[cols.clone()];
                gram[j * members + k] += a
                    .iter()
                    .zip(b)
                    .map(|(&x, &y)| f64::from(x) * f64::from(y))
                    .sum::<f64>();
            }
        }
    }
    // Only the upper triangle was accumulated; mirror it so the caller gets the whole matrix.
    for j in 0..members {
        for k in j + 1..members {
            gram[k * members + j] = gram[j * members + k];
        }
    }
    for j in 0..members {
        let norm2 = gram[j * members + j];
        if !norm2.is_finite() {
            check_finite(pop)?;
        }
        if norm2 == 0.0 {
            return Err(Error::Degenerate {
                what: "member norm",
                index: j,
            });
        }
    }
    if members == 1 {
        return Ok(1.0);
    }
    let mut sum = 0.0;
    for j in 0..members {
        for k in j + 1..members {
            let norms = libm::sqrt(gram[j * members + j]) * libm::sqrt(gram[k * members + k]);
            sum += gram[j * members + k] / norms;
        }
    }
    Ok(sum / (members * (members - 1) / 2) as f64)
}

fn nonempty<P: Population + ?Sized>(pop: &P) -> Result<usize, Error> {
    match pop.members() {
        0 => Err(Error::EmptyPopulation),
        members => Ok(members),
    }
}

/// Consecutive column ranges of at most [`CHUNK`] columns covering `0..len`.
fn chunks(len: usize) -> impl Iterator<Item = Range<usize>> {
    (0..len)
        .step_by(CHUNK)
        .map(move |start| start..len.min(start + CHUNK))
}
