//! REPAIR arithmetic (Jordan et al. 2022, as PAPA uses it): restore the per-channel
//! statistics that averaging parents destroys, by folding an affine correction into the
//! child's layers.
//!
//! For each conv/linear layer but the classifier, in forward order:
//! 1. run the calibration batches through every parent and [`accumulate`] the layer's
//!    pre-activations into per-channel [`Moments`]; turn them into [`ChannelStats`] with
//!    [`channel_stats`];
//! 2. [`goal_stats`]: the goal of channel c is `mu*[c] = sum_j c_j mu_j[c]`,
//!    `s*[c] = sum_j c_j s_j[c]`;
//! 3. measure the child's statistics the same way, with the layers before this one already
//!    repaired (a layer's input depends on them);
//! 4. [`corrections`]: scale = s\*/s^, shift = mu\* - scale * mu^;
//! 5. [`fold_correction`] into the child's weight and bias ([`Bias::Create`] when the layer
//!    has none: the reference code drops the shift then, we keep it).
//!
//! [`fold_batchnorm`] folds an eval-mode BatchNorm into the layer before it.
//!
//! Statistics are accumulated in f64 with Chan's pairwise merge, so measuring batch by batch
//! gives the same moments as one pass over all the data.

use crate::error::check_len;
use crate::rules::check_weights;
use crate::Error;

/// Running count, mean and sum of squared deviations (M2) of one channel.
///
/// Numerically stable and mergeable: [`Moments::merge`] combines two sets of moments exactly
/// as if their values had been seen in one pass (Chan et al.).
///
/// ```
/// use papa_core::repair::Moments;
/// let mut m = Moments::of(&[1.0, 2.0]);
/// m.merge(&Moments::of(&[3.0, 4.0]));
/// assert_eq!(m.count(), 4);
/// assert_eq!(m.mean(), 2.5);
/// assert_eq!(m.variance(), 1.25);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// No value seen yet.
    pub const EMPTY: Self = Self {
        count: 0,
        mean: 0.0,
        m2: 0.0,
    };

    /// The moments of `values`, computed in two passes in f64 (mean first, then the squared
    /// deviations from it, with the usual compensation term).
    pub fn of(values: &[f32]) -> Self {
        if values.is_empty() {
            return Self::EMPTY;
        }
        let n = values.len() as f64;
        let mean = values.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let (mut sum_d, mut sum_d2) = (0.0f64, 0.0f64);
        for &x in values {
            let d = f64::from(x) - mean;
            sum_d += d;
            sum_d2 += d * d;
        }
        Self {
            count: values.len() as u64,
            // Moving the mean by the rounding residue keeps it exact to the last bit or two.
            mean: mean + sum_d / n,
            m2: (sum_d2 - sum_d * sum_d / n).max(0.0),
        }
    }

    /// Adds `other`'s values to these moments (Chan's parallel formula).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * (nb / n);
        self.m2 += other.m2 + delta * delta * (na * nb / n);
        self.count += other.count;
    }

    /// Number of values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their mean (0 when none was seen).
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Sum of squared deviations from the mean.
    pub fn m2(&self) -> f64 {
        self.m2
    }

    /// Biased (population) variance M2 / count, as BatchNorm and REPAIR use it; 0 when no
    /// value was seen.
    pub fn variance(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.m2 / self.count as f64
        }
    }

    /// Square root of [`Moments::variance`].
    pub fn std(&self) -> f64 {
        libm::sqrt(self.variance())
    }
}

/// Adds a batch of activations laid out `[B, C, spatial]` (row-major; `spatial` = H x W for a
/// convolution, 1 for a linear layer's `[B, C]` output) to the per-channel `stats` (C of
/// them). B is inferred from the length; an empty batch adds nothing.
///
/// Each (sample, channel) block is reduced in f64 and merged with Chan's formula, so feeding
/// the calibration data batch by batch equals one pass over all of it. Fails with
/// [`Error::BadShape`] on zero `channels` or `spatial`, or a length that is not a multiple of
/// `channels * spatial`; with [`Error::LengthMismatch`] when `stats` does not hold C entries;
/// with [`Error::NonFinite`] (member = sample, index = position inside the sample) on a NaN
/// or infinity. `stats` is unchanged on error.
///
/// ```
/// use papa_core::repair::{accumulate, Moments};
/// let mut stats = [Moments::EMPTY; 2];
/// // Two samples, two channels, two pixels each.
/// accumulate(&mut stats, &[1.0, 3.0, 0.0, 0.0, 5.0, 7.0, 2.0, 2.0], 2, 2)?;
/// assert_eq!((stats[0].mean(), stats[0].variance()), (4.0, 5.0));
/// assert_eq!((stats[1].mean(), stats[1].variance()), (1.0, 1.0));
/// # Ok::<(), papa_core::Error>(())
/// ```
pub fn accumulate(
    stats: &mut [Moments],
    activations: &[f32],
    channels: usize,
    spatial: usize,
) -> Result<(), Error> {
    if channels == 0 {
        return Err(Error::BadShape { what: "channels" });
    }
    if spatial == 0 {
        return Err(Error::BadShape { what: "spatial" });
    }
    let sample = channels.checked_mul(spatial).ok_or(Error::BadShape {
        what: "channels * spatial",
    })?;
    if !activations.len().is_multiple_of(sample) {
        return Err(Error::BadShape {
            what: "activations length is not a multiple of channels * spatial",
        });
    }
    if stats.len() != channels {
        return Err(Error::LengthMismatch {
            what: "stats",
            index: None,
            expected: channels,
            found: stats.len(),
        });
    }
    // One NaN would poison the moments for good; refuse it before touching them.
    if let Some(pos) = activations.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite {
            member: pos / sample,
            index: pos % sample,
        });
    }
    for item in activations.chunks_exact(sample) {
        for (s, block) in stats.iter_mut().zip(item.chunks_exact(spatial)) {
            s.merge(&Moments::of(block));
        }
    }
    Ok(())
}

/// Mean and (biased) standard deviation of one channel's pre-activations.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChannelStats {
    /// Mean.
    pub mean: f64,
    /// Standard deviation (population, not sample).
    pub std: f64,
}

/// Converts accumulated moments to channel statistics, `out[c]` from `moments[c]`.
///
/// Fails with [`Error::LengthMismatch`] when the lengths differ and with
/// [`Error::Degenerate`] naming the first channel that saw no value.
///
/// ```
/// use papa_core::repair::{channel_stats, ChannelStats, Moments};
/// let mut out = [ChannelStats::default(); 1];
/// channel_stats(&[Moments::of(&[1.0, 3.0])], &mut out)?;
/// assert_eq!(out[0], ChannelStats { mean: 2.0, std: 1.0 });
/// # Ok::<(), papa_core::Error>(())
/// ```
pub fn channel_stats(moments: &[Moments], out: &mut [ChannelStats]) -> Result<(), Error> {
    check_len("out", moments.len(), out.len())?;
    if let Some(index) = moments.iter().position(|m| m.count == 0) {
        return Err(Error::Degenerate {
            what: "channel sample count",
            index,
        });
    }
    for (o, m) in out.iter_mut().zip(moments) {
        *o = ChannelStats {
            mean: m.mean(),
            std: m.std(),
        };
    }
    Ok(())
}

/// REPAIR's goal statistics: `out[c] = (sum_j c_j mu_j[c], sum_j c_j s_j[c])` for parents'
/// statistics laid out `[P, C]` (parent-major) and one weight per parent (non-negative,
/// summing to 1, as for the rules). C is `out.len()`.
///
/// Fails with the weight errors of the rules, [`Error::BadShape`] when C is 0,
/// [`Error::LengthMismatch`] when `parents` does not hold P x C entries, and
/// [`Error::InvalidValue`] (index = position in `parents`) on a non-finite mean or a negative
/// or non-finite std.
///
/// ```
/// use papa_core::repair::{goal_stats, ChannelStats};
/// let parents = [ChannelStats { mean: 0.0, std: 1.0 }, ChannelStats { mean: 4.0, std: 3.0 }];
/// let mut goal = [ChannelStats::default(); 1];
/// goal_stats(&parents, &[0.5, 0.5], &mut goal)?;
/// assert_eq!(goal[0], ChannelStats { mean: 2.0, std: 2.0 });
/// # Ok::<(), papa_core::Error>(())
/// ```
pub fn goal_stats(
    parents: &[ChannelStats],
    weights: &[f32],
    out: &mut [ChannelStats],
) -> Result<(), Error> {
    check_weights(weights, weights.len())?;
    let channels = nonzero_channels(out.len())?;
    let expected = weights.len().checked_mul(channels).ok_or(Error::BadShape {
        what: "parents * channels",
    })?;
    check_len("parents", expected, parents.len())?;
    for (i, p) in parents.iter().enumerate() {
        check_stats("parent channel stats", i, p)?;
    }
    out.fill(ChannelStats::default());
    for (&w, row) in weights.iter().zip(parents.chunks_exact(channels)) {
        let w = f64::from(w);
        for (o, p) in out.iter_mut().zip(row) {
            o.mean += w * p.mean;
            o.std += w * p.std;
        }
    }
    Ok(())
}

/// The affine map REPAIR folds into one output channel: y' = scale * y + shift.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Correction {
    /// Multiplies the channel's weights and bias.
    pub scale: f64,
    /// Added to the channel's bias.
    pub shift: f64,
}

/// Per-channel corrections that move the child's measured statistics onto the goal:
/// scale = s\*/s^, shift = mu\* - scale * mu^.
///
/// A child channel with s^ = 0 cannot be rescaled: when its goal std is 0 too, only the mean
/// is moved (scale 1, since the std already matches); otherwise this fails with
/// [`Error::Degenerate`] naming the channel, rather than silently leaving it wrong or blowing
/// it up with a huge scale as an epsilon would. Also fails with [`Error::BadShape`] when there
/// is no channel, [`Error::LengthMismatch`] when the lengths differ, and
/// [`Error::InvalidValue`] (index = channel) on non-finite statistics or a negative std.
///
/// ```
/// use papa_core::repair::{corrections, ChannelStats, Correction};
/// let goal = [ChannelStats { mean: 1.0, std: 2.0 }];
/// let child = [ChannelStats { mean: 3.0, std: 1.0 }];
/// let mut out = [Correction { scale: 1.0, shift: 0.0 }];
/// corrections(&goal, &child, &mut out)?;
/// assert_eq!(out[0], Correction { scale: 2.0, shift: -5.0 });
/// # Ok::<(), papa_core::Error>(())
/// ```
pub fn corrections(
    goal: &[ChannelStats],
    measured: &[ChannelStats],
    out: &mut [Correction],
) -> Result<(), Error> {
    nonzero_channels(out.len())?;
    check_len("goal", out.len(), goal.len())?;
    check_len("measured", out.len(), measured.len())?;
    for (c, ((o, g), m)) in out.iter_mut().zip(goal).zip(measured).enumerate() {
        check_stats("goal channel stats", c, g)?;
        check_stats("measured channel stats", c, m)?;
        let scale = if m.std > 0.0 {
            g.std / m.std
        } else if g.std == 0.0 {
            1.0
        } else {
            return Err(Error::Degenerate {
                what: "child channel std",
                index: c,
            });
        };
        let shift = g.mean - scale * m.mean;
        // A subnormal child std can still overflow the scale.
        if !(scale.is_finite() && shift.is_finite()) {
            return Err(Error::Degenerate {
                what: "child channel std",
                index: c,
            });
        }
        *o = Correction { scale, shift };
    }
    Ok(())
}

/// The bias of the layer being folded into.
#[derive(Debug)]
pub enum Bias<'a> {
    /// The layer's bias (C entries), updated in place.
    Existing(&'a mut [f32]),
    /// The layer has no bias: this fresh slice (C entries, any content) receives the bias the
    /// folded layer needs, computed as if the old bias were 0.
    Create(&'a mut [f32]),
}

/// Folds per-channel corrections into a conv/linear layer whose weight is laid out
/// `[C_out, fan_in]` (a conv `[C_out, C_in, kh, kw]` or a linear `[out, in]`, flattened):
/// `W'[c, ..] = scale[c] * W[c, ..]`, `b'[c] = scale[c] * b[c] + shift[c]`.
///
/// Fails with [`Error::BadShape`] when there is no correction or the weight is not a non-empty
/// multiple of C, [`Error::LengthMismatch`] when the bias does not hold C entries, and
/// [`Error::InvalidValue`] on a non-finite correction; the layer is unchanged on error.
///
/// ```
/// use papa_core::repair::{fold_correction, Bias, Correction};
/// let mut w = [1.0f32, 2.0, 3.0, 4.0]; // 2 channels, fan-in 2
/// let mut b = [0.0f32; 2];
/// let c = [Correction { scale: 2.0, shift: 1.0 }, Correction { scale: 0.5, shift: 0.0 }];
/// fold_correction(&mut w, Bias::Create(&mut b), &c)?;
/// assert_eq!((w, b), ([2.0, 4.0, 1.5, 2.0], [1.0, 0.0]));
/// # Ok::<(), papa_core::Error>(())
/// ```
pub fn fold_correction(
    weight: &mut [f32],
    bias: Bias<'_>,
    corrections: &[Correction],
) -> Result<(), Error> {
    fold_affine(weight, bias, corrections.len(), |c| {
        let Correction { scale, shift } = corrections[c];
        finite("correction scale", c, scale)?;
        finite("correction shift", c, shift)?;
        Ok((scale, shift))
    })
}

/// Folds an eval-mode BatchNorm (C channels) into the conv/linear layer before it:
/// k = gamma / sqrt(running_var + eps), W' = k * W, b' = k * (b - running_mean) + beta.
/// The folded layer replaces the pair; drop the BatchNorm afterwards.
///
/// Fails with [`Error::BadShape`] and [`Error::LengthMismatch`] on inconsistent lengths,
/// [`Error::InvalidValue`] on a non-finite parameter, a negative running variance or a
/// negative `eps`, and [`Error::Degenerate`] when running_var + eps is 0; the layer is
/// unchanged on error.
///
/// ```
/// use papa_core::repair::{fold_batchnorm, Bias};
/// let mut w = [1.0f32, -1.0]; // 1 channel, fan-in 2
/// let mut b = [1.0f32];
/// fold_batchnorm(&mut w, Bias::Existing(&mut b), &[2.0], &[0.5], &[3.0], &[4.0], 0.0)?;
/// assert_eq!((w, b), ([1.0, -1.0], [-1.5]));
/// # Ok::<(), papa_core::Error>(())
/// ```
pub fn fold_batchnorm(
    weight: &mut [f32],
    bias: Bias<'_>,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
) -> Result<(), Error> {
    let channels = nonzero_channels(gamma.len())?;
    check_len("beta", channels, beta.len())?;
    check_len("running_mean", channels, running_mean.len())?;
    check_len("running_var", channels, running_var.len())?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::InvalidValue {
            what: "eps",
            index: None,
            value: f64::from(eps),
        });
    }
    fold_affine(weight, bias, channels, |c| {
        let g = finite("gamma", c, f64::from(gamma[c]))?;
        let b = finite("beta", c, f64::from(beta[c]))?;
        let mean = finite("running_mean", c, f64::from(running_mean[c]))?;
        let var = finite("running_var", c, f64::from(running_var[c]))?;
        if var < 0.0 {
            return Err(invalid("running_var", c, var));
        }
        let denom = var + f64::from(eps);
        if denom == 0.0 {
            return Err(Error::Degenerate {
                what: "running_var + eps",
                index: c,
            });
        }
        let k = g / libm::sqrt(denom);
        Ok((k, b - k * mean))
    })
}

/// `W[c, ..] *= k[c]`, `b[c] = k[c] * b_old[c] + t[c]` (b_old = 0 for [`Bias::Create`]), with
/// `(k, t) = affine(c)`. Every channel's coefficients are computed (and so validated) before
/// anything is written, so that an error leaves the layer intact.
fn fold_affine(
    weight: &mut [f32],
    bias: Bias<'_>,
    channels: usize,
    affine: impl Fn(usize) -> Result<(f64, f64), Error>,
) -> Result<(), Error> {
    nonzero_channels(channels)?;
    if weight.is_empty() || !weight.len().is_multiple_of(channels) {
        return Err(Error::BadShape {
            what: "weight length is not a non-empty multiple of the channel count",
        });
    }
    let (bias, existing) = match bias {
        Bias::Existing(b) => (b, true),
        Bias::Create(b) => (b, false),
    };
    check_len("bias", channels, bias.len())?;
    for c in 0..channels {
        affine(c)?;
    }
    let fan_in = weight.len() / channels;
    for (c, (row, b)) in weight
        .chunks_exact_mut(fan_in)
        .zip(bias.iter_mut())
        .enumerate()
    {
        let (k, t) = affine(c)?;
        for w in row {
            *w = (k * f64::from(*w)) as f32;
        }
        let old = if existing { f64::from(*b) } else { 0.0 };
        *b = (k * old + t) as f32;
    }
    Ok(())
}

fn nonzero_channels(channels: usize) -> Result<usize, Error> {
    if channels == 0 {
        return Err(Error::BadShape { what: "channels" });
    }
    Ok(channels)
}

/// A statistic is usable when its mean is finite and its std finite and non-negative.
fn check_stats(what: &'static str, index: usize, s: &ChannelStats) -> Result<(), Error> {
    finite(what, index, s.mean)?;
    if !(s.std.is_finite() && s.std >= 0.0) {
        return Err(invalid(what, index, s.std));
    }
    Ok(())
}

fn finite(what: &'static str, index: usize, value: f64) -> Result<f64, Error> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(invalid(what, index, value))
    }
}

fn invalid(what: &'static str, index: usize, value: f64) -> Error {
    Error::InvalidValue {
        what,
        index: Some(index),
        value,
    }
}
