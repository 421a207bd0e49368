//! An int8 flash image as the values the RTL's sequencer reads per layer: the image's
//! layer table, plus where each layer's tensors start in the concatenated memories, which
//! end of the arena it reads and writes (the runtime's), and the address increments its
//! conv engine adds (so that the hardware forms no address by multiplication).

use super::FpgaError;
use crate::flash::{FlashModel, Precision};
use std::vec::Vec;

/// One conv or linear layer as the hardware runs it (a linear layer is a 1 x 1 conv on a
/// 1 x 1 input without a pool, as the flash image stores it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    /// A convolution (run by `papa_conv`) or a linear layer (`papa_dense`).
    pub conv: bool,
    /// Input channels (features).
    pub cin: usize,
    /// Output channels (features).
    pub cout: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Conv stride.
    pub stride: usize,
    /// Zero padding (at the input zero point: the tap is skipped).
    pub padding: usize,
    /// The fused max-pool's window (1: none).
    pub pool_kernel: usize,
    /// Its stride (1: none).
    pub pool_stride: usize,
    /// Output height (after the pool).
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// The input's zero point.
    pub input_zero_point: i8,
    /// The output's zero point.
    pub output_zero_point: i8,
    /// The output clamp (the ReLU's when it has one).
    pub clamp: (i8, i8),
    /// Its first weight in `weights.mem`.
    pub w_base: usize,
    /// Its first channel in `bias.mem`, `mult.mem`, `shift.mem`.
    pub c_base: usize,
    /// Where its input starts in the arena.
    pub rd_base: usize,
    /// Where its output starts in the arena.
    pub wr_base: usize,
    /// Weights per output channel (`cin * kernel * kernel`).
    pub row_len: usize,
}

impl LayerPlan {
    /// Values read.
    pub fn input_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    /// Values written.
    pub fn output_len(&self) -> usize {
        self.cout * self.out_h * self.out_w
    }

    /// Multiply-accumulates per inference (padding taps included: the engine steps
    /// through them without a multiply, one cycle each).
    pub fn taps(&self) -> usize {
        let windows = self.out_h * self.out_w * self.pool_kernel * self.pool_kernel;
        self.cout * windows * self.row_len
    }

    /// The address increments and starts the conv engine adds (signed): the window at
    /// output (0, 0); the step to the next kernel row and input channel; one conv row
    /// down; the pool's step right and down.
    pub fn increments(&self) -> [i64; 6] {
        let [h, w, k, s, p] = [self.h, self.w, self.kernel, self.stride, self.padding]
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let ps = i64::try_from(self.pool_stride).unwrap_or(i64::MAX);
        let rd = i64::try_from(self.rd_base).unwrap_or(i64::MAX);
        [
            rd - p * w - p,
            w - (k - 1),
            h * w - (k - 1) * w - (k - 1),
            s * w,
            ps * s,
            ps * s * w,
        ]
    }
}

/// A whole model: its layers and the depth of each memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Each layer, in order.
    pub layers: Vec<LayerPlan>,
    /// The input's channels, height and width.
    pub input: [usize; 3],
    /// Classes (the last layer's outputs).
    pub classes: usize,
    /// Arena entries (the runtime's: the largest input plus output of one layer).
    pub arena: usize,
    /// Weights, all layers.
    pub weights: usize,
    /// Output channels, all layers (entries of the per-channel memories).
    pub channels: usize,
    /// Entries of the input table (256 per input channel).
    pub table: usize,
}

impl Plan {
    /// The plan of an int8 image (refuses an f32 one).
    pub fn of(model: &FlashModel<'_>) -> Result<Self, FpgaError> {
        if model.precision() != Precision::Int8 {
            return Err(FpgaError::Precision(model.precision()));
        }
        let arena = model.arena_len();
        let (mut weights, mut channels) = (0, 0);
        let mut layers = Vec::with_capacity(model.layer_count());
        for index in 0..model.layer_count() {
            let l = model.layer(index)?;
            let (pool_kernel, pool_stride) = l.pool.unwrap_or((1, 1));
            let output_zero_point = l.output.map_or(0, |o| o.zero_point());
            // The runtime's two ends: even layers read the front and write the back.
            let (rd_base, wr_base) = if index % 2 == 0 {
                (0, arena.saturating_sub(l.output_len()))
            } else {
                (arena.saturating_sub(l.input_len()), 0)
            };
            let plan = LayerPlan {
                conv: l.conv,
                cin: l.cin,
                cout: l.cout,
                h: l.h,
                w: l.w,
                kernel: l.kernel,
                stride: l.stride,
                padding: l.padding,
                pool_kernel,
                pool_stride,
                out_h: l.out_h,
                out_w: l.out_w,
                input_zero_point: l.input_zero_point,
                output_zero_point,
                clamp: l.clamp,
                w_base: weights,
                c_base: channels,
                rd_base,
                wr_base,
                row_len: l.row_len(),
            };
            weights = weights.saturating_add(l.cout * l.row_len());
            channels = channels.saturating_add(l.cout);
            layers.push(plan);
        }
        let input = model.input_shape();
        let plan = Plan {
            layers,
            input,
            classes: model.classes(),
            arena,
            weights,
            channels,
            table: 256 * input[0],
        };
        super::limits::check(&plan)?;
        Ok(plan)
    }
}
