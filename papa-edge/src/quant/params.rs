//! Ranges, per-tensor activation parameters, per-channel weights and int32 biases, over
//! caller-owned slices (no allocation).

use super::fixed::{round_half_away, QuantizedMultiplier};
use super::QuantError;

/// The smallest and largest value seen in a tensor, over a calibration set.
///
/// ```
/// use papa_edge::quant::Range;
/// let mut r = Range::EMPTY;
/// r.observe(&[0.5, -1.0, 2.0]);
/// r.observe(&[3.0]);
/// assert_eq!((r.min(), r.max()), (-1.0, 3.0));
/// assert_eq!(r.relu().min(), 0.0); // the same tensor after a ReLU
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    min: f32,
    max: f32,
}

impl Range {
    /// Nothing seen yet.
    pub const EMPTY: Range = Range {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
    };

    /// `[min, max]` (as given: an empty or NaN range is refused later, by
    /// [`QuantParams::from_range`]).
    pub fn new(min: f32, max: f32) -> Self {
        Range { min, max }
    }

    /// Widens the range to cover `values` (a NaN is kept, so that it is refused later
    /// rather than hidden).
    pub fn observe(&mut self, values: &[f32]) {
        for &v in values {
            if v.is_nan() {
                self.min = f32::NAN;
            }
            if v < self.min {
                self.min = v;
            }
            if v > self.max {
                self.max = v;
            }
        }
    }

    /// The range of the tensor after a ReLU.
    pub fn relu(self) -> Self {
        Range {
            min: if self.min.is_nan() {
                self.min
            } else {
                self.min.max(0.0)
            },
            max: self.max.max(0.0),
        }
    }

    /// The smallest value seen (`+inf` when none).
    pub fn min(self) -> f32 {
        self.min
    }

    /// The largest value seen (`-inf` when none).
    pub fn max(self) -> f32 {
        self.max
    }

    /// Whether nothing has been seen.
    pub fn is_empty(self) -> bool {
        self.min.partial_cmp(&self.max).is_none_or(|o| o.is_gt())
    }
}

/// Per-tensor int8 parameters of an activation: `real = (q - zero_point) * scale`,
/// `q` in `[-128, 127]` (TFLite's int8 scheme: asymmetric, the zero point chosen so that
/// 0.0 is exactly representable).
///
/// ```
/// use papa_edge::quant::{QuantParams, Range};
/// let p = QuantParams::from_range(Range::new(0.0, 2.55))?; // after a ReLU
/// assert_eq!(p.zero_point(), -128);
/// assert!((p.scale() - 0.01).abs() < 1e-9);
/// assert_eq!(p.quantize(1.0), -28); // 1.0 / 0.01 - 128
/// assert_eq!(p.quantize(-5.0), -128); // saturated
/// assert!((p.dequantize(-28) - 1.0).abs() < 1e-6);
/// # Ok::<(), papa_edge::quant::QuantError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantParams {
    scale: f32,
    zero_point: i8,
}

impl QuantParams {
    /// Checked parameters: `scale` finite and positive.
    pub fn new(scale: f32, zero_point: i8) -> Result<Self, QuantError> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(QuantError::Scale { scale });
        }
        Ok(QuantParams { scale, zero_point })
    }

    /// The parameters covering `range` as TFLite chooses them (`ChooseQuantizationParams`
    /// of its quantisation utilities): the range is first widened to include 0; `scale =
    /// (max - min) / 255`; the zero point is `-128 - min / scale` or `127 - max / scale`,
    /// whichever loses less, rounded and clamped to `[-128, 127]` ("nudged"). A range of
    /// only 0 gets scale 1. Refuses an empty range, a NaN or an infinity.
    pub fn from_range(range: Range) -> Result<Self, QuantError> {
        let (min, max) = (range.min, range.max);
        if range.is_empty() || !min.is_finite() || !max.is_finite() {
            return Err(QuantError::Range { min, max });
        }
        let (min, max) = (f64::from(min.min(0.0)), f64::from(max.max(0.0)));
        if min == max {
            return Self::new(1.0, 0);
        }
        let (qmin, qmax) = (f64::from(i8::MIN), f64::from(i8::MAX));
        let scale = (max - min) / (qmax - qmin);
        let scale32 = scale as f32;
        if !(scale32 > 0.0 && scale32.is_finite()) {
            return Err(QuantError::Range {
                min: range.min,
                max: range.max,
            });
        }
        let from_min = qmin - min / scale;
        let from_max = qmax - max / scale;
        let error_min = qmin.abs() + (min / scale).abs();
        let error_max = qmax.abs() + (max / scale).abs();
        let zero = if error_min < error_max {
            from_min
        } else {
            from_max
        };
        let zero = round_half_away(zero).clamp(qmin, qmax) as i8;
        Self::new(scale32, zero)
    }

    /// The scale.
    pub fn scale(self) -> f32 {
        self.scale
    }

    /// The zero point.
    pub fn zero_point(self) -> i8 {
        self.zero_point
    }

    /// `clamp(round(x / scale) + zero_point, -128, 127)`, rounding halves away from zero as
    /// TFLM's `AffineQuantize` does (ONNX's QuantizeLinear rounds halves to even: the two
    /// differ only when `x / scale` is exactly `k + 0.5`). NaN gives the zero point.
    pub fn quantize(self, x: f32) -> i8 {
        let q = f64::from(x) / f64::from(self.scale);
        if q.is_nan() {
            return self.zero_point;
        }
        let q = round_half_away(q.clamp(-1e10, 1e10)) + f64::from(self.zero_point);
        q.clamp(f64::from(i8::MIN), f64::from(i8::MAX)) as i8
    }

    /// `(q - zero_point) * scale`.
    pub fn dequantize(self, q: i8) -> f32 {
        (i32::from(q) - i32::from(self.zero_point)) as f32 * self.scale
    }

    /// The quantised value of real 0 and the largest: the output range a fused ReLU clamps
    /// to (TFLM's `CalculateActivationRangeQuantized` for ReLU).
    pub fn relu_range(self) -> (i8, i8) {
        (self.zero_point, i8::MAX)
    }
}

/// The largest magnitude of an int8 weight: symmetric weights use `[-127, 127]`.
pub const WEIGHT_MAX: i8 = 127;

/// Quantises a weight tensor per output channel, symmetrically (zero point 0):
/// `weights` holds `channels` rows of equal length (output channel outermost, as PyTorch and
/// ONNX store conv and linear weights); row `c`'s scale is `max |w| / 127` (1 for a row of
/// zeros) and `q = clamp(round(w / scale), -127, 127)`, halves away from zero.
///
/// ```
/// use papa_edge::quant::quantize_weights;
/// let w = [0.5, -1.0, 0.25, /* channel 1: */ 0.01, 0.02, -0.03];
/// let (mut q, mut scales) = ([0i8; 6], [0f32; 2]);
/// quantize_weights(&w, 2, &mut q, &mut scales)?;
/// assert_eq!(q, [64, -127, 32, 42, 85, -127]);
/// assert_eq!(scales, [1.0 / 127.0, 0.03 / 127.0]);
/// # Ok::<(), papa_edge::quant::QuantError>(())
/// ```
pub fn quantize_weights(
    weights: &[f32],
    channels: usize,
    q: &mut [i8],
    scales: &mut [f32],
) -> Result<(), QuantError> {
    if channels == 0 || !weights.len().is_multiple_of(channels) {
        return Err(QuantError::Shape {
            what: "weights (whole rows per channel)",
            expected: channels,
            found: weights.len(),
        });
    }
    check_len("quantised weights", weights.len(), q.len())?;
    check_len("weight scales", channels, scales.len())?;
    if let Some(&value) = weights.iter().find(|w| !w.is_finite()) {
        return Err(QuantError::NonFinite { value });
    }
    let row = weights.len() / channels;
    for (c, (w, q)) in weights.chunks(row).zip(q.chunks_mut(row)).enumerate() {
        let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 {
            (f64::from(max) / f64::from(WEIGHT_MAX)) as f32
        } else {
            1.0
        };
        // A subnormal max could round the scale to 0.
        let scale = if scale > 0.0 {
            scale
        } else {
            f32::MIN_POSITIVE
        };
        scales[c] = scale;
        for (q, &w) in q.iter_mut().zip(w) {
            let r = round_half_away(f64::from(w) / f64::from(scale));
            *q = r.clamp(-f64::from(WEIGHT_MAX), f64::from(WEIGHT_MAX)) as i8;
        }
    }
    Ok(())
}

/// Quantises a bias to int32 at scale `input_scale * weight_scales[c]` (zero point 0):
/// writes that scale (the f32 product, as the file stores it) into `scales` and
/// `round(b / scale)` (halves away from zero) into `q`. Refuses a bias beyond the int32
/// range at its scale.
///
/// ```
/// use papa_edge::quant::quantize_bias;
/// let (mut q, mut scales) = ([0i32; 2], [0f32; 2]);
/// quantize_bias(&[0.5, -0.25], 0.5, &[0.01, 0.001], &mut q, &mut scales)?;
/// assert_eq!(scales, [0.5f32 * 0.01, 0.5f32 * 0.001]);
/// assert_eq!(q, [100, -500]);
/// # Ok::<(), papa_edge::quant::QuantError>(())
/// ```
pub fn quantize_bias(
    bias: &[f32],
    input_scale: f32,
    weight_scales: &[f32],
    q: &mut [i32],
    scales: &mut [f32],
) -> Result<(), QuantError> {
    check_len("weight scales", bias.len(), weight_scales.len())?;
    check_len("quantised bias", bias.len(), q.len())?;
    check_len("bias scales", bias.len(), scales.len())?;
    for (c, &b) in bias.iter().enumerate() {
        if !b.is_finite() {
            return Err(QuantError::NonFinite { value: b });
        }
        let scale = input_scale * weight_scales[c];
        if !(scale.is_finite() && scale > 0.0) {
            return Err(QuantError::Scale { scale });
        }
        let r = round_half_away(f64::from(b) / f64::from(scale));
        if !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&r) {
            return Err(QuantError::BiasOverflow { bias: b, scale });
        }
        scales[c] = scale;
        q[c] = r as i32;
    }
    Ok(())
}

/// The per-channel requantisation multipliers of a conv or linear layer, as TFLM computes
/// them (`PopulateConvolutionQuantizationParams`): `M[c] = input_scale * weight_scales[c] /
/// output_scale` in f64, then [`QuantizedMultiplier::from_real`].
///
/// ```
/// use papa_edge::quant::{requantization_multipliers, QuantizedMultiplier};
/// let mut m = [QuantizedMultiplier::ZERO; 2];
/// requantization_multipliers(0.5, &[0.01, 0.02], 0.1, &mut m)?;
/// assert_eq!(m[0], QuantizedMultiplier::from_real(0.5 * 0.01f32 as f64 / 0.1f32 as f64)?);
/// assert!((m[1].to_real() - 0.1).abs() < 1e-6);
/// # Ok::<(), papa_edge::quant::QuantError>(())
/// ```
pub fn requantization_multipliers(
    input_scale: f32,
    weight_scales: &[f32],
    output_scale: f32,
    out: &mut [QuantizedMultiplier],
) -> Result<(), QuantError> {
    check_len("multipliers", weight_scales.len(), out.len())?;
    for (m, &w) in out.iter_mut().zip(weight_scales) {
        let real = f64::from(input_scale) * f64::from(w) / f64::from(output_scale);
        *m = QuantizedMultiplier::from_real(real)?;
    }
    Ok(())
}

/// TFLM's output stage of a conv or linear layer: `clamp(M(acc) + output_zero_point, min,
/// max)` where `acc` is the int32 sum `bias[c] + sum (x - input_zero_point) * w` and `M` the
/// channel's multiplier.
///
/// ```
/// use papa_edge::quant::{requantize, QuantizedMultiplier};
/// let m = QuantizedMultiplier::from_real(0.25)?;
/// assert_eq!(requantize(400, m, -128, -128, 127), -28);
/// assert_eq!(requantize(-400, m, -128, -128, 127), -128); // clamped (a fused ReLU)
/// # Ok::<(), papa_edge::quant::QuantError>(())
/// ```
pub fn requantize(acc: i32, m: QuantizedMultiplier, output_zero_point: i8, min: i8, max: i8) -> i8 {
    let v = m.apply(acc).saturating_add(i32::from(output_zero_point));
    v.clamp(i32::from(min), i32::from(max)) as i8
}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), QuantError> {
    if expected == found {
        Ok(())
    } else {
        Err(QuantError::Shape {
            what,
            expected,
            found,
        })
    }
}
