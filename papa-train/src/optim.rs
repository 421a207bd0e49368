//! SGD with momentum, weight decay and Nesterov; learning-rate schedules.
//!
//! The optimizer works on the whole population buffer (P members of N floats, member-major)
//! in one pass, like papa-core's rules, and follows `torch.optim.SGD` so that results can be
//! compared with the paper's PyTorch code.

use papa_core::LengthMismatch;
use papa_cpu::Isa;
use std::ops::Range;

use rayon::prelude::*;

/// Default final learning rate of the cosine schedule (the paper's code).
pub const DEFAULT_MIN_LR: f32 = 1e-4;

/// Why an optimizer step or schedule could not be built or applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimError {
    /// A buffer's length disagrees with the population shape.
    #[error(transparent)]
    Length(#[from] LengthMismatch),
    /// The member length is 0 or does not divide the parameter buffer.
    #[error("a buffer of {len} floats is not a whole number of members of {member_len}")]
    MemberLen {
        /// Parameter buffer length.
        len: usize,
        /// Floats per member.
        member_len: usize,
    },
    /// A trainable range is reversed, leaves the member or overlaps another one (which
    /// would update those parameters twice).
    #[error("trainable range {start}..{end} is invalid for members of {member_len} floats")]
    Range {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Floats per member.
        member_len: usize,
    },
    /// Nesterov momentum without momentum (PyTorch refuses it too).
    #[error("Nesterov momentum requires momentum > 0, got {momentum}")]
    NesterovWithoutMomentum {
        /// The momentum given.
        momentum: f32,
    },
    /// A cosine schedule with no step after its warmup.
    #[error("cosine schedule needs warmup < total steps, got {warmup} and {total}")]
    Warmup {
        /// Warmup steps.
        warmup: usize,
        /// Steps of the run.
        total: usize,
    },
    /// A cosine schedule whose rates are not `0 <= min_lr <= base`, finite.
    #[error("cosine schedule needs 0 <= min_lr <= base, got {min_lr} and {base}")]
    Rates {
        /// The final rate.
        min_lr: f32,
        /// The peak rate.
        base: f32,
    },
}

/// `torch.optim.SGD` with `dampening = 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Momentum factor mu (0 = plain SGD).
    pub momentum: f32,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f32,
    /// Nesterov momentum (requires momentum > 0, as in PyTorch).
    pub nesterov: bool,
}

impl Default for Sgd {
    /// The paper's settings: momentum 0.9, weight decay 1e-4, no Nesterov.
    fn default() -> Self {
        Sgd {
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
        }
    }
}

impl Sgd {
    /// One step over a population: `params`, `grads` and `velocity` are `P x member_len`
    /// floats; only the `trainable` ranges of each member (the same for every member) are
    /// updated. Per element, as PyTorch: `d = g + wd p; v = mu v + d;
    /// d = nesterov ? d + mu v : v; p -= lr d`. A zero velocity buffer equals PyTorch's
    /// first-step initialisation `v = d`. Members run in parallel; the arithmetic is
    /// elementwise, so the result has the same bits on any thread count.
    pub fn step(
        &self,
        params: &mut [f32],
        grads: &[f32],
        velocity: &mut [f32],
        member_len: usize,
        trainable: &[Range<usize>],
        lr: f32,
    ) -> Result<(), OptimError> {
        if member_len == 0 || !params.len().is_multiple_of(member_len) {
            return Err(OptimError::MemberLen {
                len: params.len(),
                member_len,
            });
        }
        check_len("grads", params.len(), grads.len())?;
        check_len("velocity", params.len(), velocity.len())?;
        check_ranges(trainable, member_len)?;
        if self.nesterov && self.momentum <= 0.0 {
            return Err(OptimError::NesterovWithoutMomentum {
                momentum: self.momentum,
            });
        }
        update(
            Isa::detect(),
            self,
            params,
            grads,
            velocity,
            member_len,
            trainable,
            lr,
        );
        Ok(())
    }
}

papa_cpu::multiversion! {
    /// The update of [`Sgd::step`] on checked buffers, compiled for the CPU's vector
    /// extensions (elementwise, without contraction: the same bits on every path).
    #[isa(isa)]
    #[allow(clippy::too_many_arguments)]
    fn update(
        isa: Isa,
        sgd: &Sgd,
        params: &mut [f32],
        grads: &[f32],
        velocity: &mut [f32],
        member_len: usize,
        trainable: &[Range<usize>],
        lr: f32,
    ) {
        let Sgd {
            momentum: mu,
            weight_decay: wd,
            nesterov,
        } = *sgd;
        params
            .par_chunks_mut(member_len)
            .zip(grads.par_chunks(member_len))
            .zip(velocity.par_chunks_mut(member_len))
            .for_each(|((p, g), v)| {
                for r in trainable {
                    let (p, g, v) = (&mut p[r.clone()], &g[r.clone()], &mut v[r.clone()]);
                    for ((p, &g), v) in p.iter_mut().zip(g).zip(v.iter_mut()) {
                        let d = g + wd * *p;
                        *v = mu * *v + d;
                        let d = if nesterov { d + mu * *v } else { *v };
                        *p -= lr * d;
                    }
                }
            });
    }
}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), OptimError> {
    Ok(LengthMismatch::check(what, expected, found)?)
}

fn check_ranges(ranges: &[Range<usize>], member_len: usize) -> Result<(), OptimError> {
    let mut sorted: Vec<&Range<usize>> = ranges.iter().collect();
    sorted.sort_by_key(|r| r.start);
    let mut covered = 0;
    for r in sorted {
        if r.start > r.end || r.end > member_len || r.start < covered {
            return Err(OptimError::Range {
                start: r.start,
                end: r.end,
                member_len,
            });
        }
        covered = r.end;
    }
    Ok(())
}

/// A learning rate per optimizer step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant(f32),
    /// Linear warmup then cosine decay; build it with [`LrSchedule::cosine`].
    Cosine {
        /// Peak rate, reached at the last warmup step.
        base: f32,
        /// Warmup steps: step `s < warmup` has `base (s + 1) / warmup`.
        warmup: usize,
        /// Steps of the run.
        total: usize,
        /// Rate of the last step.
        min_lr: f32,
    },
}

impl LrSchedule {
    /// Cosine with linear warmup over `total` steps: `base / warmup` at step 0 rising to
    /// `base` at step `warmup - 1`, then cosine from `base` at step `warmup` to `min_lr` at
    /// step `total - 1` (use [`DEFAULT_MIN_LR`] for the paper's setting).
    pub fn cosine(
        base: f32,
        warmup: usize,
        total: usize,
        min_lr: f32,
    ) -> Result<LrSchedule, OptimError> {
        if total == 0 || warmup >= total {
            return Err(OptimError::Warmup { warmup, total });
        }
        if !(base.is_finite() && min_lr.is_finite() && 0.0 <= min_lr && min_lr <= base) {
            return Err(OptimError::Rates { min_lr, base });
        }
        Ok(LrSchedule::Cosine {
            base,
            warmup,
            total,
            min_lr,
        })
    }

    /// The rate at the start of the run's main phase (the peak): the reference for
    /// PAPA's learning-rate scaling of the pull.
    pub fn base(&self) -> f32 {
        match *self {
            LrSchedule::Constant(lr) => lr,
            LrSchedule::Cosine { base, .. } => base,
        }
    }

    /// The rate of `step`; steps past the end keep the final rate.
    pub fn lr_at(&self, step: usize) -> f32 {
        match *self {
            LrSchedule::Constant(lr) => lr,
            LrSchedule::Cosine {
                base,
                warmup,
                total,
                min_lr,
            } => {
                if step < warmup {
                    return (f64::from(base) * (step + 1) as f64 / warmup as f64) as f32;
                }
                // One cosine step is both first and last: keep it at the peak.
                let span = (total - 1 - warmup).max(1) as f64;
                let t = ((step - warmup) as f64 / span).min(1.0);
                let (base, min_lr) = (f64::from(base), f64::from(min_lr));
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                (min_lr + (base - min_lr) * cos) as f32
            }
        }
    }
}
