//! One conv or linear layer quantised (feature `alloc`), and a model's calibration ranges.

use super::params::{
    quantize_bias, quantize_weights, requantization_multipliers, requantize, QuantParams, Range,
};
use super::{QuantError, QuantizedMultiplier};
use alloc::vec;
use alloc::vec::Vec;

/// A conv or linear layer in int8: what an integer kernel needs, and what the ONNX QDQ export
/// writes.
///
/// The weights are `channels` rows (output channel outermost, each row the layer's weights of
/// one output, `[cin, k, k]` of a conv or `[fin]` of a linear layer).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedLayer {
    /// The input's parameters.
    pub input: QuantParams,
    /// The output's parameters (after the fused ReLU, when there is one).
    pub output: QuantParams,
    /// int8 weights, symmetric per output channel.
    pub weights: Vec<i8>,
    /// One scale per output channel.
    pub weight_scales: Vec<f32>,
    /// int32 biases, zero point 0.
    pub bias: Vec<i32>,
    /// Their scales, `input.scale() * weight_scales[c]`.
    pub bias_scales: Vec<f32>,
    /// The requantisation multiplier of each output channel.
    pub multipliers: Vec<QuantizedMultiplier>,
    /// Whether a ReLU is fused into the output (its range clamped at the zero point).
    pub relu: bool,
}

impl QuantizedLayer {
    /// Quantises a layer of f32 `weights` (one row per output channel, `bias.len()` rows)
    /// and `bias`, reading `input` and writing `output` (with a fused ReLU when `relu`).
    pub fn new(
        weights: &[f32],
        bias: &[f32],
        input: QuantParams,
        output: QuantParams,
        relu: bool,
    ) -> Result<Self, QuantError> {
        let channels = bias.len();
        let mut q = vec![0i8; weights.len()];
        let mut weight_scales = vec![0.0f32; channels];
        quantize_weights(weights, channels, &mut q, &mut weight_scales)?;
        let (mut bias_q, mut bias_scales) = (vec![0i32; channels], vec![0.0f32; channels]);
        quantize_bias(
            bias,
            input.scale(),
            &weight_scales,
            &mut bias_q,
            &mut bias_scales,
        )?;
        let mut multipliers = vec![QuantizedMultiplier::ZERO; channels];
        requantization_multipliers(
            input.scale(),
            &weight_scales,
            output.scale(),
            &mut multipliers,
        )?;
        Ok(QuantizedLayer {
            input,
            output,
            weights: q,
            weight_scales,
            bias: bias_q,
            bias_scales,
            multipliers,
            relu,
        })
    }

    /// Output channels.
    pub fn channels(&self) -> usize {
        self.bias.len()
    }

    /// Weights per output channel.
    pub fn row_len(&self) -> usize {
        self.weights.len().checked_div(self.channels()).unwrap_or(0)
    }

    /// The int8 range the output is clamped to: `[zero_point, 127]` with a fused ReLU, the
    /// whole int8 range without.
    pub fn output_range(&self) -> (i8, i8) {
        if self.relu {
            self.output.relu_range()
        } else {
            (i8::MIN, i8::MAX)
        }
    }

    /// The int32 accumulator of channel `c` over `x`, one row of int8 inputs in the weights'
    /// order (a linear layer's input, or a conv's input patch): `bias[c] + sum_i (x[i] -
    /// input_zero_point) * w[c, i]` (wrapping, as int32 hardware does).
    pub fn accumulate(&self, c: usize, x: &[i8]) -> Result<i32, QuantError> {
        let row = self.row_len();
        if x.len() != row || c >= self.channels() {
            return Err(QuantError::Shape {
                what: "input row (one value per weight of the channel)",
                expected: row,
                found: x.len(),
            });
        }
        let zp = i32::from(self.input.zero_point());
        let w = &self.weights[c * row..(c + 1) * row];
        Ok(x.iter().zip(w).fold(self.bias[c], |acc, (&x, &w)| {
            acc.wrapping_add((i32::from(x) - zp) * i32::from(w))
        }))
    }

    /// Channel `c`'s int8 output for accumulator `acc` ([`requantize`] with its multiplier,
    /// the output zero point and [`QuantizedLayer::output_range`]).
    pub fn requantize(&self, c: usize, acc: i32) -> i8 {
        let (min, max) = self.output_range();
        let m = self
            .multipliers
            .get(c)
            .copied()
            .unwrap_or(QuantizedMultiplier::ZERO);
        requantize(acc, m, self.output.zero_point(), min, max)
    }

    /// The int8 outputs of a linear layer (or of a conv at one position, given its patch)
    /// for one row of int8 inputs: TFLM's reference fully-connected kernel.
    pub fn forward_one(&self, x: &[i8]) -> Result<Vec<i8>, QuantError> {
        (0..self.channels())
            .map(|c| Ok(self.requantize(c, self.accumulate(c, x)?)))
            .collect()
    }
}

/// The ranges of a model's quantisation points over a calibration set: its input (after the
/// normalisation) and the output of each conv/linear layer in forward order (after the ReLU
/// that follows it, when one does).
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// The normalised input's range.
    pub input: Range,
    /// Each conv/linear layer's output range.
    pub outputs: Vec<Range>,
    /// Samples observed.
    pub samples: usize,
}
