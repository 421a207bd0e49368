//! Model descriptions: the ordered tensors of a member's vector and the layers that use them.

use super::Error;
use papa_core::layout::{TensorKind, TensorSpec};
use papa_core::rng::Rng;

/// One layer of a sequential model, with PyTorch semantics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layer {
    /// `Conv2d(in, out, kernel 3, stride 1, padding 1)` with bias; needs a spatial input.
    Conv3x3 {
        /// Output channels.
        out: usize,
    },
    /// `BatchNorm2d` on a spatial input, `BatchNorm1d` on a flat one.
    BatchNorm,
    /// `ReLU`.
    Relu,
    /// `MaxPool2d(2)` (stride 2, floor); needs a spatial input at least 2x2.
    MaxPool2,
    /// `Flatten` (channel-major, as PyTorch flattens `C x H x W`).
    Flatten,
    /// `Linear(in, out)` with bias; needs a flat input.
    Linear {
        /// Output features.
        out: usize,
    },
}

/// The model families of the zoo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// `Flatten - [Linear - ReLU]* - Linear`, one hidden layer per entry of `hidden`.
    Mlp {
        /// Widths of the hidden layers.
        hidden: Vec<usize>,
    },
    /// The small CNN of the published comparison: `conv3x3(C->32) - BN - ReLU - maxpool2 -
    /// conv3x3(32->64) - BN - ReLU - maxpool2 - flatten - linear(->128) - ReLU - linear`.
    CnnS,
    /// Any sequence of layers; it must end with a flat output of `classes` features.
    Sequential(Vec<Layer>),
}

impl ModelKind {
    fn layers(&self, classes: usize) -> Vec<Layer> {
        match self {
            ModelKind::Mlp { hidden } => {
                let mut layers = vec![Layer::Flatten];
                for &h in hidden {
                    layers.extend([Layer::Linear { out: h }, Layer::Relu]);
                }
                layers.push(Layer::Linear { out: classes });
                layers
            }
            ModelKind::CnnS => vec![
                Layer::Conv3x3 { out: 32 },
                Layer::BatchNorm,
                Layer::Relu,
                Layer::MaxPool2,
                Layer::Conv3x3 { out: 64 },
                Layer::BatchNorm,
                Layer::Relu,
                Layer::MaxPool2,
                Layer::Flatten,
                Layer::Linear { out: 128 },
                Layer::Relu,
                Layer::Linear { out: classes },
            ],
            ModelKind::Sequential(layers) => layers.clone(),
        }
    }
}

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
}

/// A 3x3, padding-1 conv: its channels, its (input and output) image size, and where its
/// weight and bias sit in a member's vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvLayer {
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub weight: usize,
    pub bias: usize,
}

/// A linear layer: its sizes and where its weight and bias sit in a member's vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinearLayer {
    pub fin: usize,
    pub fout: usize,
    pub weight: usize,
    pub bias: usize,
}

/// Where a layer's tensors sit in a member's vector, and the sizes it works on (per sample).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Conv(ConvLayer),
    Linear(LinearLayer),
    BatchNorm {
        c: usize,
        spatial: usize,
        scale: usize,
        shift: usize,
        mean: usize,
        var: usize,
        count: usize,
    },
    Relu {
        len: usize,
    },
    MaxPool {
        c: usize,
        h: usize,
        w: usize,
    },
    Flatten {
        c: usize,
        h: usize,
        w: usize,
    },
}

impl Op {
    /// Values per sample this op reads.
    pub(crate) fn in_len(&self) -> usize {
        match *self {
            Op::Conv(ConvLayer { cin, h, w, .. }) => cin * h * w,
            Op::Linear(LinearLayer { fin, .. }) => fin,
            Op::BatchNorm { c, spatial, .. } => c * spatial,
            Op::Relu { len } => len,
            Op::MaxPool { c, h, w } | Op::Flatten { c, h, w } => c * h * w,
        }
    }

    /// Values per sample this op writes.
    pub(crate) fn out_len(&self) -> usize {
        match *self {
            Op::Conv(ConvLayer { cout, h, w, .. }) => cout * h * w,
            Op::Linear(LinearLayer { fout, .. }) => fout,
            Op::MaxPool { c, h, w } => c * (h / 2) * (w / 2),
            _ => self.in_len(),
        }
    }
}

/// A buildable model: its tensors (names, shapes, offsets, kinds), its layers and its size N.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    kind: ModelKind,
    input: [usize; 3],
    classes: usize,
    tensors: Vec<TensorInfo>,
    pub(crate) ops: Vec<Op>,
    repairable: Vec<(RepairableLayer, usize)>,
    len: usize,
}

#[derive(Clone, Copy)]
enum Shape {
    Spatial(usize, usize, usize),
    Flat(usize),
}

impl ModelSpec {
    /// Describes `kind` for inputs of `channels x height x width` and `classes` outputs.
    ///
    /// Fails with [`Error::Spec`] for zero sizes or a layer applied to the wrong kind of
    /// input (a conv after flatten, a linear on a spatial input, an output that is not flat
    /// or not `classes` wide).
    pub fn new(
        kind: ModelKind,
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
    ) -> Result<Self, Error> {
        let bad = |msg: String| Err(Error::Spec(msg));
        if channels == 0 || height == 0 || width == 0 || classes == 0 {
            return bad("input dimensions and classes must be positive".into());
        }
        let layers = kind.layers(classes);
        let mut b = Builder::default();
        let mut shape = Shape::Spatial(channels, height, width);
        let mut pending: Option<(RepairableLayer, usize)> = None;
        let last_linear = layers
            .iter()
            .rposition(|l| matches!(l, Layer::Linear { .. }));
        for (i, layer) in layers.iter().enumerate() {
            // Name prefix of a conv/linear layer built by this iteration.
            let mut dense = None;
            let op = match (layer, shape) {
                (Layer::Conv3x3 { out }, Shape::Spatial(c, h, w)) if *out > 0 => {
                    b.convs += 1;
                    let name = format!("conv{}", b.convs);
                    dense = Some(name.clone());
                    let weight = b.push(
                        format!("{name}.weight"),
                        vec![*out, c, 3, 3],
                        TensorKind::Weight,
                    );
                    let bias = b.push(format!("{name}.bias"), vec![*out], TensorKind::Bias);
                    shape = Shape::Spatial(*out, h, w);
                    Op::Conv(ConvLayer {
                        cin: c,
                        cout: *out,
                        h,
                        w,
                        weight,
                        bias,
                    })
                }
                (Layer::Linear { out }, Shape::Flat(n)) if *out > 0 => {
                    b.linears += 1;
                    let name = format!("fc{}", b.linears);
                    dense = Some(name.clone());
                    let weight =
                        b.push(format!("{name}.weight"), vec![*out, n], TensorKind::Weight);
                    let bias = b.push(format!("{name}.bias"), vec![*out], TensorKind::Bias);
                    shape = Shape::Flat(*out);
                    Op::Linear(LinearLayer {
                        fin: n,
                        fout: *out,
                        weight,
                        bias,
                    })
                }
                (Layer::BatchNorm, _) => {
                    let (c, spatial) = match shape {
                        Shape::Spatial(c, h, w) => (c, h * w),
                        Shape::Flat(n) => (n, 1),
                    };
                    b.norms += 1;
                    let name = format!("bn{}", b.norms);
                    if let Some((layer, _)) = pending.as_mut() {
                        layer.batch_norm = Some(name.clone());
                    }
                    Op::BatchNorm {
                        c,
                        spatial,
                        scale: b.push(format!("{name}.weight"), vec![c], TensorKind::BnScale),
                        shift: b.push(format!("{name}.bias"), vec![c], TensorKind::BnShift),
                        mean: b.push(
                            format!("{name}.running_mean"),
                            vec![c],
                            TensorKind::BnRunningMean,
                        ),
                        var: b.push(
                            format!("{name}.running_var"),
                            vec![c],
                            TensorKind::BnRunningVar,
                        ),
                        count: b.push(
                            format!("{name}.num_batches_tracked"),
                            vec![],
                            TensorKind::Counter,
                        ),
                    }
                }
                (Layer::Relu, s) => Op::Relu { len: shape_len(s) },
                (Layer::MaxPool2, Shape::Spatial(c, h, w)) if h >= 2 && w >= 2 => {
                    shape = Shape::Spatial(c, h / 2, w / 2);
                    Op::MaxPool { c, h, w }
                }
                (Layer::Flatten, Shape::Spatial(c, h, w)) => {
                    shape = Shape::Flat(c * h * w);
                    Op::Flatten { c, h, w }
                }
                (Layer::Flatten, Shape::Flat(_)) => continue,
                (layer, _) => return bad(format!("layer {i} ({layer:?}) does not fit its input")),
            };
            if !matches!(op, Op::BatchNorm { .. }) {
                b.repairable.extend(pending.take());
            }
            if let (
                Some(prefix),
                Op::Conv(ConvLayer { cout: channels, .. })
                | Op::Linear(LinearLayer { fout: channels, .. }),
            ) = (dense, op)
            {
                if Some(i) != last_linear {
                    let layer = RepairableLayer {
                        weight: format!("{prefix}.weight"),
                        bias: format!("{prefix}.bias"),
                        channels,
                        batch_norm: None,
                    };
                    pending = Some((layer, b.ops.len()));
                }
            }
            b.ops.push(op);
        }
        b.repairable.extend(pending.take());
        match shape {
            Shape::Flat(n) if n == classes => {}
            _ => {
                return bad(format!(
                    "the model must end with a flat output of {classes} features"
                ))
            }
        }
        Ok(Self {
            kind,
            input: [channels, height, width],
            classes,
            len: b.len,
            tensors: b.tensors,
            ops: b.ops,
            repairable: b.repairable,
        })
    }

    /// The model family.
    pub fn kind(&self) -> &ModelKind {
        &self.kind
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
    ///
    /// ```
    /// use papa_core::layout::Layout;
    /// use papa_train::model::{ModelKind, ModelSpec};
    /// let spec = ModelSpec::new(ModelKind::CnnS, 1, 28, 28, 10).unwrap();
    /// let specs = spec.tensor_specs();
    /// let layout = Layout::new(&specs).unwrap();
    /// assert_eq!(layout.len(), 422_028); // 422,026 + two BatchNorm counters
    /// ```
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
    pub fn trainable_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
        for t in self.tensors.iter().filter(|t| t.kind.trainable()) {
            let r = t.offset..t.offset + t.shape.iter().product::<usize>();
            match ranges.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => ranges.push(r),
            }
        }
        ranges
    }

    /// The layers REPAIR works on, in forward order (index `i` here is the `layer` argument of
    /// [`Network::pre_activation`](super::Network::pre_activation)).
    pub fn repairable(&self) -> impl ExactSizeIterator<Item = &RepairableLayer> {
        self.repairable.iter().map(|(layer, _)| layer)
    }

    /// Op index of repairable layer `i`.
    pub(crate) fn repairable_op(&self, i: usize) -> Option<usize> {
        self.repairable.get(i).map(|&(_, op)| op)
    }
}

fn shape_len(s: Shape) -> usize {
    match s {
        Shape::Spatial(c, h, w) => c * h * w,
        Shape::Flat(n) => n,
    }
}

#[derive(Default)]
struct Builder {
    tensors: Vec<TensorInfo>,
    ops: Vec<Op>,
    repairable: Vec<(RepairableLayer, usize)>,
    len: usize,
    convs: usize,
    linears: usize,
    norms: usize,
}

impl Builder {
    /// Appends a tensor and returns its offset.
    fn push(&mut self, name: String, shape: Vec<usize>, kind: TensorKind) -> usize {
        let offset = self.len;
        self.len += shape.iter().product::<usize>();
        self.tensors.push(TensorInfo {
            name,
            shape,
            offset,
            kind,
        });
        offset
    }
}

/// Initialises one member's vector with PyTorch's defaults: conv/linear weight and bias
/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (what `kaiming_uniform_(a = sqrt(5))` gives), BatchNorm
/// scale 1, shift 0, running mean 0, running variance 1, counter 0. Tensors are drawn in
/// order from `rng`, so a seed fixes the member.
pub fn init_member(spec: &ModelSpec, rng: &mut Rng, out: &mut [f32]) -> Result<(), Error> {
    if out.len() != spec.len() {
        return Err(Error::Length {
            what: "member",
            expected: spec.len(),
            found: out.len(),
        });
    }
    for op in &spec.ops {
        let (fan_in, fout, weight, bias) = match *op {
            Op::Conv(ConvLayer {
                cin,
                cout,
                weight,
                bias,
                ..
            }) => (cin * 9, cout, weight, bias),
            Op::Linear(LinearLayer {
                fin,
                fout,
                weight,
                bias,
            }) => (fin, fout, weight, bias),
            Op::BatchNorm {
                c,
                scale,
                shift,
                mean,
                var,
                count,
                ..
            } => {
                out[scale..scale + c].fill(1.0);
                out[shift..shift + c].fill(0.0);
                out[mean..mean + c].fill(0.0);
                out[var..var + c].fill(1.0);
                out[count] = 0.0;
                continue;
            }
            _ => continue,
        };
        let bound = 1.0 / (fan_in as f32).sqrt();
        // The bias directly follows the weight: both are drawn in one sweep.
        debug_assert_eq!(bias, weight + fout * fan_in);
        for v in &mut out[weight..bias + fout] {
            *v = bound * (2.0 * rng.uniform_f32() - 1.0);
        }
    }
    Ok(())
}
