//! A model read in place: a layer table and the parameter blob, no allocator. This is what
//! firmware holds, both in flash.

use crate::layer::{Layer, Shape};
use crate::plan::{Op, Planner};
use crate::ModelError;
use papa_core::LengthMismatch;

/// A checked model over borrowed layers and parameters, with its ops planned once into a
/// table of at most `MAX_OPS` entries (a bounded `heapless::Vec`, so no allocator).
///
/// ```
/// use papa_model::layer::{Layer, Shape};
/// use papa_model::plan::Op;
/// use papa_model::view::ModelView;
///
/// const LAYERS: [Layer; 4] = [
///     Layer::conv3x3(2), Layer::Relu, Layer::Flatten, Layer::Linear { out_features: 3 },
/// ];
/// let input = Shape::Spatial { channels: 1, height: 4, width: 4 };
/// let params = [0.5f32; 2 * 9 + 2 + 3 * 32 + 3];
/// let view = ModelView::<8>::new(&LAYERS, input, 3, &params)?;
/// let Op::Conv(conv) = view.ops()[0] else { unreachable!() };
/// assert_eq!(view.slice(conv.weight, 18)?.len(), 18);
/// assert!(ModelView::<8>::new(&LAYERS, input, 3, &params[1..]).is_err());
/// # Ok::<(), papa_model::ModelError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ModelView<'a, const MAX_OPS: usize> {
    layers: &'a [Layer],
    input: Shape,
    classes: usize,
    ops: heapless::Vec<Op, MAX_OPS>,
    params: &'a [f32],
}

impl<'a, const MAX_OPS: usize> ModelView<'a, MAX_OPS> {
    /// Checks the model (see [`summary`](crate::plan::summary)) and that `params` holds
    /// exactly one member.
    pub fn new(
        layers: &'a [Layer],
        input: Shape,
        classes: usize,
        params: &'a [f32],
    ) -> Result<Self, ModelError> {
        let mut planner = Planner::checked(layers, input, classes)?;
        let (mut ops, mut overflow) = (heapless::Vec::new(), false);
        for planned in planner.by_ref() {
            overflow |= ops.push(planned?.op).is_err();
        }
        // A model that does not fit its parameters is wrong whatever the table holds.
        LengthMismatch::check("params", planner.finish(classes)?, params.len())?;
        if overflow {
            return Err(ModelError::TooManyLayers { capacity: MAX_OPS });
        }
        Ok(ModelView {
            layers,
            input,
            classes,
            ops,
            params,
        })
    }

    /// The layers, as given.
    pub fn layers(&self) -> &'a [Layer] {
        self.layers
    }

    /// The shape of one input sample.
    pub fn input(&self) -> Shape {
        self.input
    }

    /// Logits per sample.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The planned ops, in forward order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The whole parameter blob.
    pub fn params(&self) -> &'a [f32] {
        self.params
    }

    /// `len` parameters from `offset` (an offset of one of [`ModelView::ops`]).
    pub fn slice(&self, offset: usize, len: usize) -> Result<&'a [f32], LengthMismatch> {
        let end = offset.saturating_add(len);
        self.params.get(offset..end).ok_or(LengthMismatch {
            what: "params",
            expected: end,
            found: self.params.len(),
        })
    }
}
