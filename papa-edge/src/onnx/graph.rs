//! The graph of a papa model: the input normalisation, then one node per layer, each
//! BatchNorm that directly follows a conv/linear layer folded into it.

use super::proto::{float, int, ints, node, tensor};
use super::{ExportError, INPUT, OUTPUT};
use papa_core::repair::{fold_batchnorm, Bias};
use papa_model::card::ModelCard;
use papa_model::layer::Shape;
use papa_model::plan::{ConvLayer, Op, Planned, Planner};
use papa_model::BN_EPS;
use std::borrow::Cow;
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;
use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};

/// Nodes and initializers, built in forward order.
#[derive(Default)]
pub(crate) struct Graph {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
}

/// The graph of `card`'s model with parameters `params` (one member, already checked to
/// fill the card's model): the pixel scale and per-channel normalisation, then the layers;
/// the last node writes [`OUTPUT`].
pub(crate) fn build(card: &ModelCard, params: &[f32]) -> Result<Graph, ExportError> {
    let mut g = Graph::default();
    g.normalisation(card)?;
    let planned = plan(card)?;
    let mut counts = Counts::default();
    let mut i = 0;
    while i < planned.len() {
        let p = &planned[i];
        let name = p.name.map(|n| n.to_string()).unwrap_or_default();
        // A BatchNorm right after a conv/linear layer becomes part of its weights.
        let bn = planned.get(i + 1).filter(|n| {
            matches!(n.op, Op::BatchNorm { .. }) && matches!(p.op, Op::Conv(_) | Op::Linear(_))
        });
        match p.op {
            Op::Conv(c) => {
                let dims = [c.cout, c.cin, c.kernel, c.kernel];
                let [w, b] = g.weights(&name, &dims, (c.weight, c.bias), bn, params)?;
                g.push("Conv", &name, &[&w, &b], conv_attributes(&c)?);
            }
            Op::Linear(l) => {
                let [w, b] = g.weights(&name, &[l.fout, l.fin], (l.weight, l.bias), bn, params)?;
                g.push("Gemm", &name, &[&w, &b], [int("transB", 1)].into());
            }
            Op::BatchNorm {
                c,
                scale,
                shift,
                mean,
                var,
                ..
            } => {
                // Not after a conv/linear layer: kept as an eval-mode BatchNorm.
                let mut inputs = Vec::new();
                for (part, offset) in [
                    ("weight", scale),
                    ("bias", shift),
                    ("running_mean", mean),
                    ("running_var", var),
                ] {
                    let tensor = format!("{name}.{part}");
                    g.constant(&tensor, &[c], &params[offset..offset + c], "")?;
                    inputs.push(tensor);
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                g.push(
                    "BatchNormalization",
                    &name,
                    &inputs,
                    [float("epsilon", BN_EPS)].into(),
                );
            }
            Op::Relu { .. } | Op::MaxPool { .. } | Op::Flatten { .. } => {
                g.parameterless(p.op, &mut counts)?;
            }
        }
        i += 1 + usize::from(bn.is_some());
    }
    match g.nodes.last_mut() {
        Some(last) => last.output = [OUTPUT.to_string()].into(),
        // Unreachable for a model the card accepts (a flatten always comes first), but an
        // empty graph would still be wrong: pass the input through.
        None => g
            .nodes
            .push(node("Identity", OUTPUT, &[INPUT], OUTPUT, Vec::new())),
    }
    Ok(g)
}

/// `card`'s layers planned on its input shape.
pub(crate) fn plan(card: &ModelCard) -> Result<Vec<Planned>, ExportError> {
    let input = Shape::Spatial {
        channels: card.input.channels,
        height: card.input.height,
        width: card.input.width,
    };
    Planner::new(&card.layers, input)
        .collect::<Result<_, _>>()
        .map_err(ExportError::Model)
}

/// A Conv node's kernel, stride and padding attributes.
pub(crate) fn conv_attributes(c: &ConvLayer) -> Result<Vec<AttributeProto>, ExportError> {
    Ok([
        ints("kernel_shape", &[c.kernel, c.kernel])?,
        ints("strides", &[c.stride, c.stride])?,
        ints("pads", &[c.padding; 4])?,
    ]
    .into())
}

/// Running counts that name the parameterless nodes: relu1, relu2, ..., pool1, ...
#[derive(Default)]
pub(crate) struct Counts {
    relus: usize,
    pools: usize,
}

impl Graph {
    /// Appends a ReLU, named by its count.
    pub(crate) fn relu(&mut self, counts: &mut Counts) {
        counts.relus += 1;
        self.push("Relu", &format!("relu{}", counts.relus), &[], Vec::new());
    }

    /// Appends `op` when it has no parameters (ReLU, max-pool, flatten); `false` for any
    /// other op, which is left to the caller.
    pub(crate) fn parameterless(
        &mut self,
        op: Op,
        counts: &mut Counts,
    ) -> Result<bool, ExportError> {
        match op {
            Op::Relu { .. } => self.relu(counts),
            Op::MaxPool { kernel, stride, .. } => {
                counts.pools += 1;
                let attrs = [
                    ints("kernel_shape", &[kernel, kernel])?,
                    ints("strides", &[stride, stride])?,
                ];
                self.push(
                    "MaxPool",
                    &format!("pool{}", counts.pools),
                    &[],
                    attrs.into(),
                );
            }
            Op::Flatten { .. } => self.push("Flatten", "flatten", &[], [int("axis", 1)].into()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Appends a node reading the previous node's output (the graph input for the first)
    /// and the initializers `params`, writing a value named like the node.
    pub(crate) fn push(
        &mut self,
        op_type: &str,
        name: &str,
        params: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        let last = self
            .nodes
            .last()
            .and_then(|n| n.output.first())
            .map_or(INPUT, String::as_str)
            .to_string();
        let inputs: Vec<&str> = [last.as_str()]
            .into_iter()
            .chain(params.iter().copied())
            .collect();
        self.nodes.push(node(op_type, name, &inputs, name, attrs));
    }

    /// Adds an f32 initializer.
    pub(crate) fn constant(
        &mut self,
        name: &str,
        dims: &[usize],
        values: &[f32],
        doc: &str,
    ) -> Result<(), ExportError> {
        self.initializers.push(tensor(name, dims, values, doc)?);
        Ok(())
    }

    /// The dataset's stored values to the model's input: `(x / pixel_scale - mean[c]) /
    /// std[c]`, as papa computes it (a division, not a multiplication by the inverse, so
    /// that the same f32 values go in). A step that changes nothing is left out.
    pub(crate) fn normalisation(&mut self, card: &ModelCard) -> Result<(), ExportError> {
        let (input, norm) = (&card.input, &card.normalization);
        let channel = [input.channels, 1, 1];
        if input.pixel_scale != 1.0 {
            let doc = "the dataset stores inputs multiplied by this";
            self.constant("input.pixel_scale", &[], &[input.pixel_scale], doc)?;
            self.push("Div", "pixel_scale", &["input.pixel_scale"], Vec::new());
        }
        if norm.mean.iter().any(|&m| m != 0.0) {
            self.constant("input.mean", &channel, &norm.mean, "mean per channel")?;
            self.push("Sub", "normalize_mean", &["input.mean"], Vec::new());
        }
        if norm.std.iter().any(|&s| s != 1.0) {
            let doc = "standard deviation per channel";
            self.constant("input.std", &channel, &norm.std, doc)?;
            self.push("Div", "normalize_std", &["input.std"], Vec::new());
        }
        Ok(())
    }

    /// Adds the weight `[out, ...]` and bias `[out]` of layer `name` (found at `offsets`
    /// in `params`) as initializers, with the eval-mode BatchNorm `bn` folded in when
    /// given; returns their names.
    fn weights(
        &mut self,
        name: &str,
        dims: &[usize],
        offsets: (usize, usize),
        bn: Option<&Planned>,
        params: &[f32],
    ) -> Result<[String; 2], ExportError> {
        let Folded {
            weight: w,
            bias: b,
            doc,
        } = folded(name, dims, offsets, bn, params)?;
        let names = [format!("{name}.weight"), format!("{name}.bias")];
        self.constant(&names[0], dims, &w, &doc)?;
        self.constant(&names[1], &[dims[0]], &b, &doc)?;
        Ok(names)
    }
}

/// A conv/linear layer's weight and bias with the BatchNorm after it folded in (borrowed
/// when there is none), and a note saying so.
pub(crate) struct Folded<'a> {
    pub(crate) weight: Cow<'a, [f32]>,
    pub(crate) bias: Cow<'a, [f32]>,
    pub(crate) doc: String,
}

/// The weight `[out, ...]` (`dims`) and bias `[out]` of layer `name`, found at `(weight,
/// bias)` in `params`, with the eval-mode BatchNorm `bn` folded in when given (papa-core's
/// `fold_batchnorm`).
pub(crate) fn folded<'a>(
    name: &str,
    dims: &[usize],
    (weight, bias): (usize, usize),
    bn: Option<&Planned>,
    params: &'a [f32],
) -> Result<Folded<'a>, ExportError> {
    let (out, numel) = (dims[0], dims.iter().product::<usize>());
    let mut w = Cow::Borrowed(&params[weight..weight + numel]);
    let mut b = Cow::Borrowed(&params[bias..bias + out]);
    let mut doc = String::new();
    if let Some(Planned {
        op:
            Op::BatchNorm {
                scale,
                shift,
                mean,
                var,
                ..
            },
        name: bn_name,
        ..
    }) = bn
    {
        let bn_name = bn_name.map(|n| n.to_string()).unwrap_or_default();
        let part = |offset: usize| &params[offset..offset + out];
        fold_batchnorm(
            w.to_mut(),
            Bias::Existing(b.to_mut()),
            part(*scale),
            part(*shift),
            part(*mean),
            part(*var),
            BN_EPS,
        )
        .map_err(|source| ExportError::Fold {
            layer: name.into(),
            batch_norm: bn_name.clone(),
            source,
        })?;
        doc = format!("{bn_name} (eval mode) folded in");
    }
    Ok(Folded {
        weight: w,
        bias: b,
        doc,
    })
}
