//! An int8 flash image as the values the RTL's sequencer reads per layer: the image's
//! layer table, plus where each layer's tensors start in the concatenated memories, which
//! end of the arena it reads and writes (the runtime's), and the address increments its
//! conv engine adds (so that the hardware forms no address by multiplication).

use super::FpgaError;
use crate::flash::{FlashModel, Geometry, Precision};
use std::vec::Vec;

/// One conv or linear layer as the hardware runs it (a linear layer is a 1 x 1 conv on a
/// 1 x 1 input without a pool, as the flash image stores it): the flash layer's geometry
/// plus where the hardware finds its tensors and arena ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    /// The flash layer's shape, fused ReLU and pool, input zero point and clamp (a conv is
    /// run by `papa_conv`, a linear layer by `papa_dense`).
    pub geometry: Geometry,
    /// The output's zero point.
    pub output_zero_point: i8,
    /// Its first weight in `weights.mem`.
    pub w_base: usize,
    /// Its first channel in `bias.mem`, `mult.mem`, `shift.mem`.
    pub c_base: usize,
    /// Where its input starts in the arena.
    pub rd_base: usize,
    /// Where its output starts in the arena.
    pub wr_base: usize,
}

impl LayerPlan {
    /// Values read.
    pub fn input_len(&self) -> usize {
        self.geometry.input_len()
    }

    /// Values written.
    pub fn output_len(&self) -> usize {
        self.geometry.output_len()
    }

    /// Weights per output channel (`cin * kernel * kernel`).
    pub fn row_len(&self) -> usize {
        self.geometry.row_len()
    }

    /// The fused max-pool's window and stride ((1, 1): none).
    pub fn pool(&self) -> (usize, usize) {
        self.geometry.pool.unwrap_or((1, 1))
    }

    /// Multiply-accumulates per inference (padding taps included: the engine steps
    /// through them without a multiply, one cycle each).
    pub fn taps(&self) -> usize {
        let g = &self.geometry;
        let pool_kernel = self.pool().0;
        let windows = g.out_h * g.out_w * pool_kernel * pool_kernel;
        g.cout * windows * self.row_len()
    }

    /// The address increments and starts the conv engine adds (signed): the window at
    /// output (0, 0); the step to the next kernel row and input channel; one conv row
    /// down; the pool's step right and down.
    pub fn increments(&self) -> [i64; 6] {
        let g = &self.geometry;
        let [h, w, k, s, p] =
            [g.h, g.w, g.kernel, g.stride, g.padding].map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let ps = i64::try_from(self.pool().1).unwrap_or(i64::MAX);
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
            let output_zero_point = l.output.map_or(0, |o| o.zero_point());
            // The runtime's two ends: even layers read the front and write the back.
            let (rd_base, wr_base) = if index % 2 == 0 {
                (0, arena.saturating_sub(l.output_len()))
            } else {
                (arena.saturating_sub(l.input_len()), 0)
            };
            let plan = LayerPlan {
                geometry: l.geometry,
                output_zero_point,
                w_base: weights,
                c_base: channels,
                rd_base,
                wr_base,
            };
            weights = weights.saturating_add(l.geometry.cout * l.row_len());
            channels = channels.saturating_add(l.geometry.cout);
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
