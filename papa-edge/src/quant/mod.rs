//! The int8 quantiser, written once for every integer target: the ONNX QDQ export
//! ([`crate::onnx::export_int8`]), and the microcontroller runtime and FPGA export to come.
//!
//! The scheme is TensorFlow Lite Micro's (tensorflow.org/lite/performance/quantization_spec):
//! `real = (q - zero_point) * scale`;
//! - weights int8 in `[-127, 127]`, symmetric (zero point 0), one scale per output channel
//!   ([`quantize_weights`]);
//! - activations int8 in `[-128, 127]`, one scale and zero point per tensor, chosen from the
//!   tensor's [`Range`] over a calibration set ([`QuantParams::from_range`]);
//! - biases int32 at scale `input_scale * weight_scale[c]`, zero point 0
//!   ([`quantize_bias`]);
//! - requantisation of the int32 accumulator by `M[c] = input_scale * weight_scale[c] /
//!   output_scale`, stored as a Q31 multiplier and a shift ([`QuantizedMultiplier`], TFLM's
//!   `QuantizeMultiplier`) and applied with TFLM's `MultiplyByQuantizedMultiplier`
//!   (gemmlowp's [`saturating_rounding_doubling_high_mul`] then
//!   [`rounding_divide_by_pot`]: TFLM's reference kernels, two roundings; not CMSIS-NN's
//!   single-rounding variant), see [`requantize`].
//!
//! Everything here works on caller-owned slices without an allocator; with the `alloc`
//! feature, [`QuantizedLayer`] holds one layer's quantised tensors and [`Calibration`] the
//! ranges of a model's tensors.
//!
//! One layer, end to end (what an integer kernel computes, checked against real arithmetic):
//!
//! ```
//! use papa_edge::quant::{QuantParams, QuantizedLayer, Range};
//! // A linear layer of 2 outputs over 3 inputs, input in [-1, 1], output after a ReLU in [0, 4].
//! let (w, b) = ([0.5f32, -1.0, 0.25, 2.0, 0.0, -0.5], [0.1f32, -0.2]);
//! let input = QuantParams::from_range(Range::new(-1.0, 1.0))?;
//! let output = QuantParams::from_range(Range::new(0.0, 4.0))?;
//! let layer = QuantizedLayer::new(&w, &b, input, output, true)?;
//! let x = [0.8f32, -0.3, 0.5];
//! let xq: Vec<i8> = x.iter().map(|&v| input.quantize(v)).collect();
//! let y = layer.forward_one(&xq)?; // int8 in, int8 out
//! for c in 0..2 {
//!     let real: f32 = (0..3).map(|i| w[3 * c + i] * x[i]).sum::<f32>() + b[c];
//!     let real = real.max(0.0);
//!     assert!((output.dequantize(y[c]) - real).abs() < 0.05, "{c}: {real}");
//! }
//! # Ok::<(), papa_edge::quant::QuantError>(())
//! ```

mod fixed;
#[cfg(feature = "alloc")]
mod layer;
mod params;

pub use fixed::{
    rounding_divide_by_pot, saturating_rounding_doubling_high_mul, QuantizedMultiplier,
};
#[cfg(feature = "alloc")]
pub use layer::{Calibration, QuantizedLayer};
pub use params::{
    quantize_bias, quantize_weights, requantization_multipliers, requantize, QuantParams, Range,
    WEIGHT_MAX,
};

use core::fmt;

/// Why a tensor cannot be quantised.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum QuantError {
    /// A real multiplier TFLM's representation cannot hold (negative, NaN, infinite, or
    /// `2^30` and above).
    Multiplier {
        /// The multiplier.
        real: f64,
    },
    /// A stored multiplier/shift pair that is not normalised.
    StoredMultiplier {
        /// The Q31 mantissa.
        multiplier: i32,
        /// The shift.
        shift: i32,
    },
    /// A scale that is not finite and positive.
    Scale {
        /// The scale.
        scale: f32,
    },
    /// A calibration range that is empty (nothing observed) or not finite.
    Range {
        /// Its minimum.
        min: f32,
        /// Its maximum.
        max: f32,
    },
    /// A NaN or infinite weight or bias.
    NonFinite {
        /// The value.
        value: f32,
    },
    /// A bias beyond the int32 range at its scale.
    BiasOverflow {
        /// The bias.
        bias: f32,
        /// Its scale, `input_scale * weight_scale`.
        scale: f32,
    },
    /// Buffers of sizes that do not fit each other.
    Shape {
        /// Which buffer.
        what: &'static str,
        /// The size it should have.
        expected: usize,
        /// Its size.
        found: usize,
    },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            QuantError::Multiplier { real } => write!(
                f,
                "the requantisation multiplier {real:e} cannot be stored as a Q31 multiplier and a shift in [-31, 30] (it must be finite, >= 0 and < 2^30)"
            ),
            QuantError::StoredMultiplier { multiplier, shift } => write!(
                f,
                "multiplier {multiplier} with shift {shift} is not normalised (multiplier in [2^30, 2^31) or 0, shift in [-31, 30])"
            ),
            QuantError::Scale { scale } => {
                write!(f, "scale {scale:e} is not finite and positive")
            }
            QuantError::Range { min, max } => write!(
                f,
                "the calibration range [{min}, {max}] is empty or not finite (no calibration data, or the model gives NaN or infinity)"
            ),
            QuantError::NonFinite { value } => {
                write!(f, "a weight or bias is {value}: the model is broken")
            }
            QuantError::BiasOverflow { bias, scale } => write!(
                f,
                "bias {bias} at scale {scale:e} does not fit in int32"
            ),
            QuantError::Shape {
                what,
                expected,
                found,
            } => write!(f, "{what}: {found} values, expected {expected}"),
        }
    }
}

impl core::error::Error for QuantError {}
