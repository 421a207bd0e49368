//! Where each layer's tensors sit in a member's flat vector, computed without allocating.
//!
//! A member is one `f32` vector holding every tensor in PyTorch `state_dict` order: per
//! conv `convK.weight` `[out, in, k, k]` then `convK.bias`; per BatchNorm `bnK.weight`,
//! `bnK.bias`, `bnK.running_mean`, `bnK.running_var`, `bnK.num_batches_tracked` (a scalar);
//! per linear `fcK.weight` `[out, in]` then `fcK.bias`. `K` counts each kind from 1.
//!
//! ```
//! use papa_model::layer::{Layer, Shape};
//! use papa_model::plan::{summary, Op, Planner};
//!
//! let layers = [Layer::Flatten, Layer::Linear { out_features: 4 }];
//! let input = Shape::Spatial { channels: 1, height: 2, width: 3 };
//! let ops: Vec<Op> = Planner::new(&layers, input).map(|p| p.map(|p| p.op)).collect::<Result<_, _>>()?;
//! let Op::Linear(fc) = ops[1] else { unreachable!() };
//! assert_eq!((fc.fin, fc.fout, fc.weight, fc.bias), (6, 4, 0, 24));
//! assert_eq!(summary(&layers, input, 4)?.len, 28);
//! # Ok::<(), papa_model::ModelError>(())
//! ```

use crate::layer::{Layer, Shape};
use crate::ModelError;
use core::fmt;
use papa_core::layout::TensorKind;

/// A convolution: its sizes and where its weight and bias sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvLayer {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height and width.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Offset of the weight `[cout, cin, kernel, kernel]`.
    pub weight: usize,
    /// Offset of the bias `[cout]` (it follows the weight).
    pub bias: usize,
}

/// A linear layer: its sizes and where its weight and bias sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearLayer {
    /// Input features.
    pub fin: usize,
    /// Output features.
    pub fout: usize,
    /// Offset of the weight `[fout, fin]`.
    pub weight: usize,
    /// Offset of the bias `[fout]` (it follows the weight).
    pub bias: usize,
}

/// One planned layer: its sizes per sample and the offsets of its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A convolution.
    Conv(ConvLayer),
    /// A linear layer.
    Linear(LinearLayer),
    /// A BatchNorm over `c` channels of `spatial` values each.
    BatchNorm {
        /// Channels.
        c: usize,
        /// Values per channel and sample (1 on a flat input).
        spatial: usize,
        /// Offset of the scale (gamma).
        scale: usize,
        /// Offset of the shift (beta).
        shift: usize,
        /// Offset of the running mean.
        mean: usize,
        /// Offset of the running variance.
        var: usize,
        /// Offset of the `num_batches_tracked` counter.
        count: usize,
    },
    /// A ReLU over `len` values.
    Relu {
        /// Values per sample.
        len: usize,
    },
    /// A max-pool over a `c x h x w` input.
    MaxPool {
        /// Channels.
        c: usize,
        /// Input height.
        h: usize,
        /// Input width.
        w: usize,
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// A flatten of a `c x h x w` input (a no-op on the data, which is already channel-major).
    Flatten {
        /// Channels.
        c: usize,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
}

impl Op {
    /// Values per sample this op reads.
    pub fn in_len(&self) -> usize {
        match *self {
            Op::Conv(ConvLayer { cin, h, w, .. }) => cin * h * w,
            Op::Linear(LinearLayer { fin, .. }) => fin,
            Op::BatchNorm { c, spatial, .. } => c * spatial,
            Op::Relu { len } => len,
            Op::MaxPool { c, h, w, .. } | Op::Flatten { c, h, w } => c * h * w,
        }
    }

    /// Values per sample this op writes.
    pub fn out_len(&self) -> usize {
        match *self {
            Op::Conv(ConvLayer {
                cout, out_h, out_w, ..
            }) => cout * out_h * out_w,
            Op::Linear(LinearLayer { fout, .. }) => fout,
            Op::MaxPool {
                c,
                h,
                w,
                kernel,
                stride,
            } => c * ((h - kernel) / stride + 1) * ((w - kernel) / stride + 1),
            _ => self.in_len(),
        }
    }

    /// The tensors this op owns, in `state_dict` order (none for ops without parameters).
    pub fn tensors(&self) -> impl Iterator<Item = TensorSlot> {
        let mut slots: heapless::Vec<TensorSlot, 5> = heapless::Vec::new();
        let mut push = |part, dims: &[usize], offset, kind| {
            // Capacity 5 covers BatchNorm, the largest op; nothing else is pushed.
            let _ = slots.push(TensorSlot {
                part,
                shape: Dims::new(dims),
                offset,
                kind,
            });
        };
        match *self {
            Op::Conv(c) => {
                let k = c.kernel;
                push(
                    "weight",
                    &[c.cout, c.cin, k, k],
                    c.weight,
                    TensorKind::Weight,
                );
                push("bias", &[c.cout], c.bias, TensorKind::Bias);
            }
            Op::Linear(l) => {
                push("weight", &[l.fout, l.fin], l.weight, TensorKind::Weight);
                push("bias", &[l.fout], l.bias, TensorKind::Bias);
            }
            Op::BatchNorm {
                c,
                scale,
                shift,
                mean,
                var,
                count,
                ..
            } => {
                push("weight", &[c], scale, TensorKind::BnScale);
                push("bias", &[c], shift, TensorKind::BnShift);
                push("running_mean", &[c], mean, TensorKind::BnRunningMean);
                push("running_var", &[c], var, TensorKind::BnRunningVar);
                push("num_batches_tracked", &[], count, TensorKind::Counter);
            }
            _ => {}
        }
        slots.into_iter()
    }
}

/// The `state_dict` prefix of a layer with parameters: `conv1`, `bn2`, `fc3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerName {
    /// `"conv"`, `"bn"` or `"fc"`.
    pub kind: &'static str,
    /// 1 for the first layer of that kind.
    pub number: usize,
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind, self.number)
    }
}

/// A tensor's `state_dict` name: `conv1.weight`, `bn1.running_var`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorName {
    /// The layer's prefix.
    pub layer: LayerName,
    /// `"weight"`, `"bias"`, `"running_mean"`, ...
    pub part: &'static str,
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.layer, self.part)
    }
}

/// A shape of at most four dimensions, stored inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    dims: [usize; 4],
    rank: usize,
}

impl Dims {
    fn new(dims: &[usize]) -> Self {
        let mut out = [0; 4];
        out[..dims.len()].copy_from_slice(dims);
        Dims {
            dims: out,
            rank: dims.len(),
        }
    }

    /// The dimensions, outermost first (`[]` for a scalar).
    pub fn as_slice(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.as_slice().iter().product()
    }
}

/// One tensor of a member's vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorSlot {
    /// Its part of the layer's name: `"weight"`, `"bias"`, `"running_mean"`, ...
    pub part: &'static str,
    /// Its shape.
    pub shape: Dims,
    /// Index of its first element.
    pub offset: usize,
    /// What it holds.
    pub kind: TensorKind,
}

impl TensorSlot {
    /// Its `state_dict` name in the layer called `layer`.
    pub fn name(&self, layer: LayerName) -> TensorName {
        TensorName {
            layer,
            part: self.part,
        }
    }
}

/// One step of a [`Planner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Position of the layer in the model.
    pub index: usize,
    /// The op.
    pub op: Op,
    /// The `state_dict` prefix, for ops with parameters.
    pub name: Option<LayerName>,
    /// The shape the op gives.
    pub output: Shape,
}

/// Walks the layers, yielding each op with its offsets; stops after the first error. A
/// flatten of an already flat input yields nothing.
#[derive(Clone, Debug)]
pub struct Planner<'a> {
    layers: &'a [Layer],
    next: usize,
    shape: Shape,
    offset: usize,
    counts: [usize; 3],
    failed: bool,
}

impl<'a> Planner<'a> {
    /// Plans `layers` for samples of `input`.
    pub fn new(layers: &'a [Layer], input: Shape) -> Self {
        Planner {
            layers,
            next: 0,
            shape: input,
            offset: 0,
            counts: [0; 3],
            failed: false,
        }
    }

    /// A planner for a model of `classes` outputs: fails for an empty input or zero classes.
    /// Walk it, then call [`Planner::finish`].
    pub fn checked(layers: &'a [Layer], input: Shape, classes: usize) -> Result<Self, ModelError> {
        if input.len().is_none_or(|n| n == 0) {
            return Err(ModelError::EmptyInput);
        }
        if classes == 0 {
            return Err(ModelError::ZeroClasses);
        }
        Ok(Self::new(layers, input))
    }

    /// After the walk: N, once the model is known to end with `classes` flat features.
    pub fn finish(&self, classes: usize) -> Result<usize, ModelError> {
        match self.shape {
            Shape::Flat { features } if features == classes => Ok(self.offset),
            output => Err(ModelError::WrongOutput { classes, output }),
        }
    }

    /// The offset after every tensor planned so far: N once the planner is done.
    pub fn len(&self) -> usize {
        self.offset
    }

    /// Whether no tensor has been planned yet.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// The shape after the layers planned so far.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Reserves `numel` values and returns their offset.
    fn reserve(&mut self, numel: Option<usize>, index: usize) -> Result<usize, ModelError> {
        let start = self.offset;
        self.offset = numel
            .and_then(|n| start.checked_add(n))
            .ok_or(ModelError::TooLarge { index })?;
        Ok(start)
    }

    fn name(&mut self, kind: usize) -> LayerName {
        self.counts[kind] += 1;
        LayerName {
            kind: ["conv", "bn", "fc"][kind],
            number: self.counts[kind],
        }
    }

    fn plan(&mut self, index: usize, layer: Layer) -> Result<Option<Planned>, ModelError> {
        let input = self.shape;
        let output = layer.output(input).ok_or(ModelError::LayerDoesNotFit {
            index,
            layer,
            input,
        })?;
        let mut name = None;
        let op = match (layer, input) {
            (
                Layer::Conv2d {
                    kernel,
                    stride,
                    padding,
                    ..
                },
                Shape::Spatial {
                    channels,
                    height,
                    width,
                },
            ) => {
                let [cout, out_h, out_w] = output.chw();
                let numel = cout
                    .checked_mul(channels)
                    .and_then(|n| n.checked_mul(kernel.checked_mul(kernel)?));
                name = Some(self.name(0));
                let weight = self.reserve(numel, index)?;
                let bias = self.reserve(Some(cout), index)?;
                Op::Conv(ConvLayer {
                    cin: channels,
                    cout,
                    kernel,
                    stride,
                    padding,
                    h: height,
                    w: width,
                    out_h,
                    out_w,
                    weight,
                    bias,
                })
            }
            (Layer::Linear { out_features }, Shape::Flat { features }) => {
                name = Some(self.name(2));
                let weight = self.reserve(out_features.checked_mul(features), index)?;
                let bias = self.reserve(Some(out_features), index)?;
                Op::Linear(LinearLayer {
                    fin: features,
                    fout: out_features,
                    weight,
                    bias,
                })
            }
            (Layer::BatchNorm, s) => {
                let [c, h, w] = s.chw();
                name = Some(self.name(1));
                Op::BatchNorm {
                    c,
                    spatial: h * w,
                    scale: self.reserve(Some(c), index)?,
                    shift: self.reserve(Some(c), index)?,
                    mean: self.reserve(Some(c), index)?,
                    var: self.reserve(Some(c), index)?,
                    count: self.reserve(Some(1), index)?,
                }
            }
            (Layer::Relu, s) => Op::Relu {
                len: s.len().ok_or(ModelError::TooLarge { index })?,
            },
            (Layer::MaxPool2d { kernel, stride }, s) => {
                let [c, h, w] = s.chw();
                Op::MaxPool {
                    c,
                    h,
                    w,
                    kernel,
                    stride,
                }
            }
            (Layer::Flatten, Shape::Spatial { .. }) => {
                let [c, h, w] = input.chw();
                Op::Flatten { c, h, w }
            }
            (Layer::Flatten, Shape::Flat { .. }) => return Ok(None),
            // `output` above accepted only the pairs matched here.
            _ => {
                return Err(ModelError::LayerDoesNotFit {
                    index,
                    layer,
                    input,
                })
            }
        };
        self.shape = output;
        Ok(Some(Planned {
            index,
            op,
            name,
            output,
        }))
    }
}

impl Iterator for Planner<'_> {
    type Item = Result<Planned, ModelError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            let index = self.next;
            let layer = *self.layers.get(index)?;
            self.next += 1;
            match self.plan(index, layer) {
                Ok(None) => continue,
                Ok(Some(planned)) => return Some(Ok(planned)),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// What a whole model comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// N: values in a member's vector.
    pub len: usize,
    /// Ops the planner yields.
    pub ops: usize,
}

/// Checks a whole model: every layer fits its input, the input is not empty, and the model
/// ends with `classes` flat features.
pub fn summary(layers: &[Layer], input: Shape, classes: usize) -> Result<Summary, ModelError> {
    let mut planner = Planner::checked(layers, input, classes)?;
    let mut ops = 0;
    for planned in planner.by_ref() {
        planned?;
        ops += 1;
    }
    Ok(Summary {
        len: planner.finish(classes)?,
        ops,
    })
}
