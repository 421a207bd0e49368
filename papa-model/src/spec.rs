//! The owned model description: layers, ops, named tensors and the layers REPAIR works on.

use crate::init::init_ops;
use crate::layer::{Layer, Shape};
use crate::plan::{ConvLayer, LinearLayer, Op, Planner};
use crate::ModelError;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ops::Range;
use papa_core::layout::{TensorKind, TensorSpec};
use papa_core::rng::Rng;
use papa_core::LengthMismatch;

/// One tensor of a member's vector (owned form of [`TensorSpec`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// PyTorch `state_dict` name, e.g. `"bn1.running_var"`.
    pub name: String,
    /// Shape, outermost first (`[]` for a scalar counter).
    pub shape: Vec<usize>,
    /// Index of its first element in the member's vector.
    pub offset: usize,
    /// What it holds.
    pub kind: TensorKind,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The index range it covers in a member's vector.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.numel()
    }
}

/// A conv/linear layer whose output channels REPAIR rescales (every one but the classifier).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairableLayer {
    /// Name of its weight tensor (output channel outermost).
    pub weight: String,
    /// Name of its bias tensor.
    pub bias: String,
    /// Output channels (features for a linear layer).
    pub channels: usize,
    /// Name prefix of the BatchNorm that directly follows it (e.g. `"bn1"`), if any.
    pub batch_norm: Option<String>,
    /// Its index in [`ModelSpec::ops`].
    pub op: usize,
}

/// A checked model: its layers, planned ops, tensors (names, shapes, offsets, kinds) and
/// size N.
///
/// ```
/// use papa_core::layout::Layout;
/// use papa_model::{zoo, ModelSpec};
/// let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10)?;
/// let layout = Layout::new(&spec.tensor_specs())?.len();
/// assert_eq!(layout, 422_028); // 422,026 + two BatchNorm counters
/// assert_eq!(spec.find("bn2.running_var").unwrap().shape, [64]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    layers: Vec<Layer>,
    input: [usize; 3],
    classes: usize,
    tensors: Vec<TensorInfo>,
    ops: Vec<Op>,
    repairable: Vec<RepairableLayer>,
    len: usize,
}

impl ModelSpec {
    /// Describes `layers` for inputs of `[channels, height, width]` and `classes` outputs.
    ///
    /// Fails for an empty input, zero classes, a layer that cannot take its input, or a model
    /// that does not end with `classes` flat features.
    pub fn new(layers: &[Layer], input: [usize; 3], classes: usize) -> Result<Self, ModelError> {
        let [channels, height, width] = input;
        let shape = Shape::Spatial {
            channels,
            height,
            width,
        };
        let last_linear = layers
            .iter()
            .rposition(|l| matches!(l, Layer::Linear { .. }));
        let (mut tensors, mut ops, mut repairable) = (Vec::new(), Vec::new(), Vec::new());
        let mut pending: Option<RepairableLayer> = None;
        let mut planner = Planner::checked(layers, shape, classes)?;
        for planned in planner.by_ref() {
            let planned = planned?;
            let op = planned.op;
            let name = planned.name.map(|n| n.to_string());
            if let Some(layer) = planned.name {
                tensors.extend(op.tensors().map(|t| TensorInfo {
                    name: t.name(layer).to_string(),
                    shape: t.shape.as_slice().to_vec(),
                    offset: t.offset,
                    kind: t.kind,
                }));
            }
            match op {
                // A BatchNorm right after a repairable layer is the one REPAIR leaves to
                // re-estimation.
                Op::BatchNorm { .. } => {
                    if let Some(layer) = pending.as_mut() {
                        layer.batch_norm = name;
                    }
                }
                _ => repairable.extend(pending.take()),
            }
            if let (
                Some(prefix),
                Op::Conv(ConvLayer { cout: channels, .. })
                | Op::Linear(LinearLayer { fout: channels, .. }),
            ) = (planned.name, op)
            {
                if Some(planned.index) != last_linear {
                    pending = Some(RepairableLayer {
                        weight: format!("{prefix}.weight"),
                        bias: format!("{prefix}.bias"),
                        channels,
                        batch_norm: None,
                        op: ops.len(),
                    });
                }
            }
            ops.push(op);
        }
        repairable.extend(pending.take());
        let len = planner.finish(classes)?;
        Ok(Self {
            layers: layers.to_vec(),
            input,
            classes,
            tensors,
            ops,
            repairable,
            len,
        })
    }

    /// The layers, as given.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The planned ops, in forward order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Input shape `[channels, height, width]`.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input
    }

    /// Values per input sample (`channels * height * width`).
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    /// Number of classes (logits per sample).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// N: the length of one member's vector.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the model has no parameter at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tensors in `state_dict` order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Borrowed tensor descriptions, for `papa_core::layout::Layout::new`.
    pub fn tensor_specs(&self) -> Vec<TensorSpec<'_>> {
        self.tensors
            .iter()
            .map(|t| TensorSpec {
                name: &t.name,
                shape: &t.shape,
                offset: t.offset,
                kind: t.kind,
            })
            .collect()
    }

    /// The tensor called `name`, if any.
    pub fn find(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The index ranges an optimizer trains (weights, biases, BatchNorm affine), merged where
    /// adjacent; running statistics and counters are left out.
    pub fn trainable_ranges(&self) -> Vec<Range<usize>> {
        let mut ranges: Vec<Range<usize>> = Vec::new();
        for r in self
            .tensors
            .iter()
            .filter(|t| t.kind.trainable())
            .map(TensorInfo::range)
        {
            match ranges.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => ranges.push(r),
            }
        }
        ranges
    }

    /// The layers REPAIR works on, in forward order.
    pub fn repairable(&self) -> core::slice::Iter<'_, RepairableLayer> {
        self.repairable.iter()
    }

    /// Initialises one member's vector with PyTorch's defaults (see [`init_ops`]).
    pub fn init_member(&self, rng: &mut Rng, member: &mut [f32]) -> Result<(), ModelError> {
        LengthMismatch::check("member", self.len, member.len())?;
        init_ops(&self.ops, rng, member)
    }
}
