//! The PAPA rules: weighted average, PAPA-all, PAPA gradual and PAPA-2.
//!
//! Every rule is one streaming pass: the members are walked in chunks of [`CHUNK`] columns;
//! a chunk of every member is read once from memory, combined in f64 on the stack, and
//! written once. No rule allocates; PAPA-2 takes its scratch space from the caller.

use crate::error::check_len;
use crate::layout::{Layout, Policy};
use crate::population::{check_finite, Population, PopulationMut};
use crate::rng::Rng;
use crate::{Error, WEIGHT_SUM_TOLERANCE};
use core::ops::Range;

/// Columns processed per chunk: four cache lines of f32 per member. A few chunks of f64
/// accumulators (512 B each) sit on the stack, small enough for a microcontroller, and the
/// P x 64 f32 of a chunk stay in L1 for the write-back pass. Measured best for every rule
/// (docs/BENCHMARKS.md: 64 against 128-4096).
pub const CHUNK: usize = 64;

/// The averaging weights c_j of the members.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Weights<'a> {
    /// c_j = 1/P.
    Uniform,
    /// One non-negative weight per member, summing to 1 within
    /// [`WEIGHT_SUM_TOLERANCE`](crate::WEIGHT_SUM_TOLERANCE).
    Given(&'a [f32]),
}

/// Options shared by the rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options<'a> {
    /// How each tensor is combined (counters take the max). Without one, every entry is
    /// averaged.
    pub layout: Option<Layout<'a>>,
    /// Scan the population for NaN and infinities before changing anything.
    pub check_finite: bool,
}

/// The weighted average of the members, written to `out` (length N).
///
/// ```
/// use papa_core::population::Contiguous;
/// use papa_core::rules::{average, Options, Weights};
/// let pop = [1.0f32, 2.0, 3.0, 6.0];
/// let mut out = [0.0f32; 2];
/// average(&Contiguous::new(&pop[..], 2)?, Weights::Given(&[0.75, 0.25]), &mut out, &Options::default())?;
/// assert_eq!(out, [1.5, 3.0]);
/// # Ok::<(), papa_core::Error>(())
/// ```
#[inline(always)]
pub fn average<P: Population + ?Sized>(
    pop: &P,
    weights: Weights<'_>,
    out: &mut [f32],
    opts: &Options<'_>,
) -> Result<(), Error> {
    check_len("out", pop.member_len(), out.len())?;
    let combine = Combine::new(pop, weights, opts)?;
    for (segment, policy) in segments(pop.member_len(), opts) {
        for cols in chunks_of(segment) {
            let acc = &mut [0.0f64; CHUNK][..cols.len()];
            combine.reduce(pop, cols.clone(), policy, acc);
            store(acc, &mut out[cols]);
        }
    }
    Ok(())
}

/// PAPA-all: every member is replaced by the weighted average of the population.
///
/// ```
/// use papa_core::population::Contiguous;
/// use papa_core::rules::{papa_all, Options, Weights};
/// let mut buf = [1.0f32, 3.0, 3.0, 5.0];
/// papa_all(&mut Contiguous::new(&mut buf[..], 2)?, Weights::Uniform, &Options::default())?;
/// assert_eq!(buf, [2.0, 4.0, 2.0, 4.0]);
/// # Ok::<(), papa_core::Error>(())
/// ```
#[inline(always)]
pub fn papa_all<P: PopulationMut + ?Sized>(
    pop: &mut P,
    weights: Weights<'_>,
    opts: &Options<'_>,
) -> Result<(), Error> {
    let combine = Combine::new(pop, weights, opts)?;
    for (segment, policy) in segments(pop.member_len(), opts) {
        for cols in chunks_of(segment) {
            let acc = &mut [0.0f64; CHUNK][..cols.len()];
            combine.reduce(pop, cols.clone(), policy, acc);
            // Rounded once, then copied: every member gets the same bits.
            let mean = &mut [0.0f32; CHUNK][..cols.len()];
            store(acc, mean);
            for j in 0..pop.members() {
                pop.member_mut(j)[cols.clone()].copy_from_slice(mean);
            }
        }
    }
    Ok(())
}

/// PAPA gradual: w_j <- alpha * w_j + (1 - alpha) * m, with m the weighted average.
/// Counters (under a layout) take the max instead. See
/// [`schedule::effective_alpha`](crate::schedule::effective_alpha) for lr scaling.
///
/// ```
/// use papa_core::population::Contiguous;
/// use papa_core::rules::{gradual, Options, Weights};
/// let mut buf = [0.0f32, 4.0];
/// gradual(&mut Contiguous::new(&mut buf[..], 2)?, Weights::Uniform, 0.75, &Options::default())?;
/// assert_eq!(buf, [0.5, 3.5]);
/// # Ok::<(), papa_core::Error>(())
/// ```
#[inline(always)]
pub fn gradual<P: PopulationMut + ?Sized>(
    pop: &mut P,
    weights: Weights<'_>,
    alpha: f32,
    opts: &Options<'_>,
) -> Result<(), Error> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::AlphaOutOfRange { alpha });
    }
    let combine = Combine::new(pop, weights, opts)?;
    let keep = f64::from(alpha);
    let pull = 1.0 - keep;
    // Software pipeline: each chunk's pulled mean (1 - alpha) * m waits in one of two buffers
    // and is applied while the next chunk is being read, so the f64 update work overlaps the
    // memory traffic instead of following it (docs/BENCHMARKS.md).
    let mut buffers = [[0.0f64; CHUNK]; 2];
    let mut pending: Option<(Range<usize>, usize)> = None;
    for (segment, policy) in segments(pop.member_len(), opts) {
        for cols in chunks_of(segment) {
            let slot = pending.as_ref().map_or(0, |(_, slot)| 1 - slot);
            let [a, b] = &mut buffers;
            let (next, prev) = if slot == 0 { (a, &*b) } else { (b, &*a) };
            let next = &mut next[..cols.len()];
            if policy == Policy::Max {
                combine.reduce(pop, cols.clone(), policy, next);
                for j in 0..pop.members() {
                    store(next, &mut pop.member_mut(j)[cols.clone()]);
                }
                continue;
            }
            match pending.take() {
                Some((prev_cols, _)) => {
                    let update = Update {
                        pulled: &prev[..prev_cols.len()],
                        cols: prev_cols,
                        keep,
                    };
                    combine.reduce_and_update(pop, cols.clone(), next, &update);
                }
                None => combine.reduce(pop, cols.clone(), policy, next),
            }
            next.iter_mut().for_each(|m| *m *= pull);
            pending = Some((cols, slot));
        }
    }
    if let Some((cols, slot)) = pending {
        let update = Update {
            pulled: &buffers[slot][..cols.len()],
            cols,
            keep,
        };
        for j in 0..pop.members() {
            update.apply(&mut pop.member_mut(j)[update.cols.clone()]);
        }
    }
    Ok(())
}

/// Elements of scratch space [`papa2`] needs for a population of `members` x `member_len`.
pub const fn papa2_scratch_len(members: usize, member_len: usize) -> usize {
    let cols = if member_len < CHUNK {
        member_len
    } else {
        CHUNK
    };
    members * cols
}

/// PAPA-2: child j <- (w_a + w_b) / 2 for `pairs[j] = (a, b)`, all computed from the OLD
/// population. One pair per member; `scratch` holds at least
/// [`papa2_scratch_len`] floats (a chunk of the old population, not a copy of it).
/// Counters (under a layout) take the max of the two parents.
///
/// ```
/// use papa_core::population::Contiguous;
/// use papa_core::rules::{papa2, papa2_scratch_len, Options};
/// let mut buf = [0.0f32, 2.0, 4.0];
/// let mut scratch = [0.0f32; 3];
/// assert_eq!(papa2_scratch_len(3, 1), 3);
/// let pairs = [(1, 2), (0, 2), (0, 1)];
/// papa2(&mut Contiguous::new(&mut buf[..], 3)?, &pairs, &mut scratch, &Options::default())?;
/// assert_eq!(buf, [3.0, 2.0, 1.0]);
/// # Ok::<(), papa_core::Error>(())
/// ```
#[inline(always)]
pub fn papa2<P: PopulationMut + ?Sized>(
    pop: &mut P,
    pairs: &[(usize, usize)],
    scratch: &mut [f32],
    opts: &Options<'_>,
) -> Result<(), Error> {
    let (members, len) = (pop.members(), pop.member_len());
    if pairs.len() != members {
        return Err(Error::LengthMismatch {
            what: "pairs",
            index: None,
            expected: members,
            found: pairs.len(),
        });
    }
    if let Some((child, &(a, b))) = pairs
        .iter()
        .enumerate()
        .find(|(_, &(a, b))| a.max(b) >= members)
    {
        let parent = if a >= members { a } else { b };
        return Err(Error::PairOutOfRange {
            child,
            parent,
            members,
        });
    }
    let needed = papa2_scratch_len(members, len);
    if scratch.len() < needed {
        return Err(Error::ScratchTooSmall {
            what: "papa2",
            needed,
            found: scratch.len(),
        });
    }
    check_common(pop, opts)?;
    for (segment, policy) in segments(len, opts) {
        for cols in chunks_of(segment) {
            let width = cols.len();
            for j in 0..members {
                scratch[j * width..(j + 1) * width].copy_from_slice(&pop.member(j)[cols.clone()]);
            }
            for (j, &(a, b)) in pairs.iter().enumerate() {
                let (wa, wb) = (
                    &scratch[a * width..(a + 1) * width],
                    &scratch[b * width..(b + 1) * width],
                );
                let child = &mut pop.member_mut(j)[cols.clone()];
                for ((c, &x), &y) in child.iter_mut().zip(wa).zip(wb) {
                    *c = match policy {
                        Policy::Average => ((f64::from(x) + f64::from(y)) * 0.5) as f32,
                        Policy::Max => x.max(y),
                    };
                }
            }
        }
    }
    Ok(())
}

/// Draws one parent pair per entry of `out`, uniformly among the unordered pairs of distinct
/// members, and without repetition while there are enough pairs (with 2 members every child
/// gets (0, 1); with 1 member, (0, 0)). Each pair is returned as (smaller, larger).
///
/// ```
/// use papa_core::rng::Rng;
/// use papa_core::rules::draw_pairs;
/// let mut pairs = [(0, 0); 4];
/// draw_pairs(&mut Rng::new(1), 4, &mut pairs)?;
/// assert!(pairs.iter().all(|&(a, b)| a < b && b < 4));
/// # Ok::<(), papa_core::Error>(())
/// ```
pub fn draw_pairs(rng: &mut Rng, members: usize, out: &mut [(usize, usize)]) -> Result<(), Error> {
    if members == 0 {
        return Err(Error::EmptyPopulation);
    }
    let distinct_pairs = members * (members - 1) / 2;
    let unique = distinct_pairs >= out.len();
    for i in 0..out.len() {
        out[i] = loop {
            let pair = if members == 1 {
                (0, 0)
            } else {
                let a = rng.below(members as u64) as usize;
                let mut b = rng.below(members as u64 - 1) as usize;
                if b >= a {
                    b += 1;
                }
                (a.min(b), a.max(b))
            };
            if !unique || !out[..i].contains(&pair) {
                break pair;
            }
        };
    }
    Ok(())
}

/// Validated averaging weights, ready for the streaming passes.
struct Combine<'a> {
    weights: Weights<'a>,
    uniform: f64,
}

impl<'a> Combine<'a> {
    fn new<P: Population + ?Sized>(
        pop: &P,
        weights: Weights<'a>,
        opts: &Options<'_>,
    ) -> Result<Self, Error> {
        if let Weights::Given(w) = weights {
            check_weights(w, pop.members())?;
        }
        check_common(pop, opts)?;
        Ok(Self {
            weights,
            uniform: 1.0 / pop.members() as f64,
        })
    }

    #[inline(always)]
    fn weight(&self, j: usize) -> f64 {
        match self.weights {
            Weights::Uniform => self.uniform,
            Weights::Given(w) => f64::from(w[j]),
        }
    }

    /// acc <- sum_j c_j x_j (or sum_j x_j when not `WEIGHTED`) over the `members` columns.
    #[inline(always)]
    fn sum_columns<'p, const WEIGHTED: bool>(
        &self,
        members: usize,
        column: impl Fn(usize) -> &'p [f32],
        acc: &mut [f64],
    ) {
        let term = |j: usize| self.term::<WEIGHTED>(j);
        let scaled = Self::scaled::<WEIGHTED>;
        if let Ok(acc) = <&mut [f64; CHUNK]>::try_from(&mut *acc) {
            // A whole chunk: the sums stay in registers over a fixed trip count, member by
            // member (the same additions in the same order as below).
            let mut sum = [0.0f64; CHUNK];
            for j in 0..members {
                let (c, x) = (term(j), &column(j)[..CHUNK]);
                if j == 0 {
                    sum.iter_mut().zip(x).for_each(|(s, &x)| *s = scaled(c, x));
                } else {
                    sum.iter_mut().zip(x).for_each(|(s, &x)| *s += scaled(c, x));
                }
            }
            *acc = sum;
            return;
        }
        let (c, x) = (term(0), column(0));
        for (a, &x) in acc.iter_mut().zip(x) {
            *a = scaled(c, x);
        }
        let width = acc.len();
        let mut j = 1;
        while j + 4 <= members {
            let (c0, c1, c2, c3) = (term(j), term(j + 1), term(j + 2), term(j + 3));
            let (x0, x1, x2, x3) = (column(j), column(j + 1), column(j + 2), column(j + 3));
            let (x0, x1, x2, x3) = (&x0[..width], &x1[..width], &x2[..width], &x3[..width]);
            for i in 0..width {
                let mut s = acc[i];
                s += scaled(c0, x0[i]);
                s += scaled(c1, x1[i]);
                s += scaled(c2, x2[i]);
                s += scaled(c3, x3[i]);
                acc[i] = s;
            }
            j += 4;
        }
        for j in j..members {
            let c = term(j);
            for (a, &x) in acc.iter_mut().zip(column(j)) {
                *a += scaled(c, x);
            }
        }
    }

    /// `reduce` of the average over `cols` into `acc`, fused with `update` of the previous
    /// chunk (still in L1): member by member, this chunk is read, then the previous one
    /// updated. Sums run in member order: the same bits as `reduce`.
    #[inline(always)]
    fn reduce_and_update<P: PopulationMut + ?Sized>(
        &self,
        pop: &mut P,
        cols: Range<usize>,
        acc: &mut [f64],
        update: &Update<'_>,
    ) {
        match self.weights {
            Weights::Uniform => self.fused::<false, P>(pop, cols, acc, update),
            Weights::Given(_) => self.fused::<true, P>(pop, cols, acc, update),
        }
    }

    #[inline(always)]
    fn fused<const WEIGHTED: bool, P: PopulationMut + ?Sized>(
        &self,
        pop: &mut P,
        cols: Range<usize>,
        acc: &mut [f64],
        update: &Update<'_>,
    ) {
        let mut sum = [0.0f64; CHUNK];
        for j in 0..pop.members() {
            let (c, member) = (self.term::<WEIGHTED>(j), pop.member_mut(j));
            let x = &member[cols.clone()];
            if let Ok(x) = <&[f32; CHUNK]>::try_from(x) {
                // A whole chunk: a fixed trip count the compiler unrolls.
                if j == 0 {
                    sum.iter_mut()
                        .zip(x)
                        .for_each(|(s, &x)| *s = Self::scaled::<WEIGHTED>(c, x));
                } else {
                    sum.iter_mut()
                        .zip(x)
                        .for_each(|(s, &x)| *s += Self::scaled::<WEIGHTED>(c, x));
                }
            } else {
                for (s, &x) in sum.iter_mut().zip(x) {
                    let term = Self::scaled::<WEIGHTED>(c, x);
                    *s = if j == 0 { term } else { *s + term };
                }
            }
            update.apply(&mut member[update.cols.clone()]);
        }
        let scale = if WEIGHTED { 1.0 } else { self.uniform };
        for (a, s) in acc.iter_mut().zip(sum) {
            *a = s * scale;
        }
    }

    /// The weight of member j in a sum (1 when the sum is scaled afterwards).
    #[inline(always)]
    fn term<const WEIGHTED: bool>(&self, j: usize) -> f64 {
        if WEIGHTED {
            self.weight(j)
        } else {
            1.0
        }
    }

    /// c * x, or x when the sum is scaled afterwards.
    #[inline(always)]
    fn scaled<const WEIGHTED: bool>(c: f64, x: f32) -> f64 {
        if WEIGHTED {
            c * f64::from(x)
        } else {
            f64::from(x)
        }
    }

    /// acc <- sum_j c_j w_j[cols] (or the max over members), in f64.
    ///
    /// Members are folded in four at a time so that each accumulator is loaded and stored once
    /// per four members; the additions still happen in member order, so the result is the
    /// same as a plain sequential sum.
    #[inline(always)]
    fn reduce<P: Population + ?Sized>(
        &self,
        pop: &P,
        cols: Range<usize>,
        policy: Policy,
        acc: &mut [f64],
    ) {
        let width = acc.len();
        let column = |j: usize| &pop.member(j)[cols.clone()][..width];
        match policy {
            Policy::Average => match self.weights {
                // Uniform: sum, then scale once, sparing a multiply per element.
                Weights::Uniform => {
                    self.sum_columns::<false>(pop.members(), column, acc);
                    acc.iter_mut().for_each(|a| *a *= self.uniform);
                }
                Weights::Given(_) => self.sum_columns::<true>(pop.members(), column, acc),
            },
            Policy::Max => {
                for (a, &x) in acc.iter_mut().zip(column(0)) {
                    *a = f64::from(x);
                }
                for j in 1..pop.members() {
                    for (a, &x) in acc.iter_mut().zip(column(j)) {
                        *a = a.max(f64::from(x));
                    }
                }
            }
        }
    }
}

/// PAPA gradual's write-back of one chunk: w <- keep * w + pulled, with pulled = (1 - alpha) m.
struct Update<'u> {
    cols: Range<usize>,
    pulled: &'u [f64],
    keep: f64,
}

impl Update<'_> {
    /// Updates one member's chunk `w`.
    #[inline(always)]
    fn apply(&self, w: &mut [f32]) {
        let update = |(w, &pulled): (&mut f32, &f64)| {
            *w = (self.keep * f64::from(*w) + pulled) as f32;
        };
        match (
            <&mut [f32; CHUNK]>::try_from(&mut *w),
            <&[f64; CHUNK]>::try_from(self.pulled),
        ) {
            // A whole chunk: a fixed trip count the compiler unrolls.
            (Ok(w), Ok(pulled)) => w.iter_mut().zip(pulled).for_each(update),
            _ => w.iter_mut().zip(self.pulled).for_each(update),
        }
    }
}

/// Checks weights: one per member, non-negative, summing to 1.
pub(crate) fn check_weights(weights: &[f32], members: usize) -> Result<(), Error> {
    if members == 0 || weights.is_empty() {
        return Err(Error::EmptyPopulation);
    }
    if weights.len() != members {
        return Err(Error::LengthMismatch {
            what: "weights",
            index: None,
            expected: members,
            found: weights.len(),
        });
    }
    if let Some((index, &value)) = weights
        .iter()
        .enumerate()
        .find(|(_, w)| w.is_nan() || **w < 0.0)
    {
        return Err(Error::NegativeWeight { index, value });
    }
    let sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    if sum.is_nan() || (sum - 1.0).abs() > f64::from(WEIGHT_SUM_TOLERANCE) {
        return Err(Error::WeightsDoNotSumToOne { sum: sum as f32 });
    }
    Ok(())
}

fn check_common<P: Population + ?Sized>(pop: &P, opts: &Options<'_>) -> Result<(), Error> {
    if pop.members() == 0 {
        return Err(Error::EmptyPopulation);
    }
    if let Some(layout) = &opts.layout {
        if layout.len() != pop.member_len() {
            return Err(Error::LengthMismatch {
                what: "layout",
                index: None,
                expected: pop.member_len(),
                found: layout.len(),
            });
        }
    }
    if opts.check_finite {
        check_finite(pop)?;
    }
    Ok(())
}

#[inline(always)]
fn store(acc: &[f64], out: &mut [f32]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = a as f32;
    }
}

/// The runs of entries that share a policy (one run of `len` averaged entries without a
/// layout). The rules walk each in [`chunks_of`] with a `for` loop rather than a callback, so
/// that their loop bodies stay inside the rule and are compiled with the target features of
/// whoever instantiates it (papa-cpu).
#[inline(always)]
fn segments<'o>(
    len: usize,
    opts: &Options<'o>,
) -> impl Iterator<Item = (Range<usize>, Policy)> + 'o {
    let whole = opts.layout.is_none().then_some((0..len, Policy::Average));
    opts.layout
        .into_iter()
        .flat_map(|layout| layout.segments())
        .chain(whole)
}

/// Consecutive ranges of at most [`CHUNK`] columns covering `segment`.
#[inline(always)]
fn chunks_of(segment: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    let end = segment.end;
    segment
        .step_by(CHUNK)
        .map(move |start| start..end.min(start + CHUNK))
}
