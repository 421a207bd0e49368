//! The int8 export: a papa model with its BatchNorms folded, quantised by
//! [`crate::quant`] from a [`Calibration`], written as a QDQ graph.
//!
//! QDQ is the form onnxruntime and tract both run: `QuantizeLinear` then
//! `DequantizeLinear` on each activation tensor at its calibrated scale and zero point, and
//! `DequantizeLinear` on the int8 weights (per output channel, `axis = 0`) and int32 biases
//! (at `input_scale * weight_scale[c]`) of every Conv and Gemm. onnxruntime fuses the
//! patterns into integer kernels; tract runs them as f32 arithmetic on the dequantised
//! values (fake quantisation): the same numbers up to rounding, not integer speed.

use super::graph::{conv_attributes, folded, plan, Counts, Graph};
use super::proto::{int, node, tensor, tensor_i32, tensor_i8};
use super::{checked, model_proto, pb, ExportError, Opset};
use crate::names::{INPUT, META_QUANTIZATION, OUTPUT};
use crate::quant::{Calibration, QuantParams, QuantizedLayer};
use papa_model::card::ModelCard;
use papa_model::file::ModelFile;
use papa_model::plan::Op;
use papa_model::ModelSpec;
use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

/// What the int8 export's `papa.quantization` metadata says (followed by the calibration's
/// sample count).
pub const QUANTIZATION_NOTE: &str = "int8 QDQ, TensorFlow Lite Micro's scheme: weights int8 symmetric per output channel (DequantizeLinear axis 0), activations int8 per tensor with a zero point from min/max calibration, biases int32 at input_scale * weight_scale[c]";

/// A model ready for int8: its BatchNorms folded and its conv/linear layers quantised.
#[derive(Clone, Debug)]
pub struct Quantized {
    /// The model with every BatchNorm folded: the f32 model the int8 one approximates
    /// (papa's forward runs it).
    pub folded: ModelFile,
    /// The network input's parameters (after the normalisation, before the first layer).
    pub input: QuantParams,
    /// Each conv/linear layer, in forward order.
    pub layers: Vec<QuantizedLayer>,
    /// Samples the calibration saw.
    pub samples: usize,
}

/// `model` with every BatchNorm folded into the conv/linear layer before it (papa-core's
/// `fold_batchnorm`): the same function (to rounding), fewer layers, still a papa model.
/// Refuses a BatchNorm that follows no conv/linear layer ([`ExportError::Unfoldable`]).
///
/// ```
/// use papa_edge::onnx::fold;
/// use papa_model::card::{ModelCard, Normalization};
/// use papa_model::file::ModelFile;
/// use papa_model::{zoo, ModelSpec};
/// let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10)?;
/// let card = ModelCard::new("cnn-s", &spec, 255.0, Normalization::identity(1), vec![]);
/// let mut params = vec![0.01f32; spec.len()];
/// params[spec.find("bn1.running_var").unwrap().range()].fill(1.0);
/// params[spec.find("bn2.running_var").unwrap().range()].fill(1.0);
/// let folded = fold(&ModelFile { card, params })?;
/// assert_eq!(folded.card.layers.len(), 10); // both BatchNorms gone
/// assert_eq!(folded.params.len(), folded.card.spec()?.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn fold(model: &ModelFile) -> Result<ModelFile, ExportError> {
    let spec = checked(model)?;
    let card = &model.card;
    let planned = plan(card)?;
    let (mut layers, mut tensors) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < planned.len() {
        let p = &planned[i];
        let name = p.name.map(|n| n.to_string()).unwrap_or_default();
        let bn = planned.get(i + 1).filter(|n| {
            matches!(n.op, Op::BatchNorm { .. }) && matches!(p.op, Op::Conv(_) | Op::Linear(_))
        });
        let parts = match p.op {
            Op::Conv(c) => Some(([c.cout, c.cin, c.kernel, c.kernel], (c.weight, c.bias))),
            Op::Linear(l) => Some(([l.fout, l.fin, 1, 1], (l.weight, l.bias))),
            Op::BatchNorm { .. } => return Err(ExportError::Unfoldable { batch_norm: name }),
            _ => None,
        };
        if let Some((dims, offsets)) = parts {
            let f = folded(&name, &dims, offsets, bn, &model.params)?;
            tensors.push((f.weight.into_owned(), f.bias.into_owned()));
        }
        layers.push(card.layers[p.index]);
        i += 1 + usize::from(bn.is_some());
    }
    let folded_spec =
        ModelSpec::new(&layers, spec.input_shape(), spec.classes()).map_err(ExportError::Model)?;
    let mut params = vec![0.0f32; folded_spec.len()];
    let mut tensors = tensors.into_iter();
    for op in folded_spec.ops() {
        let (w, b) = match *op {
            Op::Conv(c) => (c.weight, c.bias),
            Op::Linear(l) => (l.weight, l.bias),
            _ => continue,
        };
        // The same conv/linear layers in the same order: one pair each.
        let Some((weight, bias)) = tensors.next() else {
            break;
        };
        params[w..w + weight.len()].copy_from_slice(&weight);
        params[b..b + bias.len()].copy_from_slice(&bias);
    }
    let fresh = ModelCard::new(
        &card.name,
        &folded_spec,
        card.input.pixel_scale,
        card.normalization.clone(),
        card.classes.names.clone(),
    );
    let mut folded_card = card.clone();
    folded_card.layers = fresh.layers;
    folded_card.layout = fresh.layout;
    Ok(ModelFile {
        card: folded_card,
        params,
    })
}

/// The conv/linear layers of `spec` in forward order: (its op's index, whether a ReLU
/// follows it).
fn layer_ops(spec: &ModelSpec) -> Vec<(usize, bool)> {
    let ops = spec.ops();
    ops.iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Op::Conv(_) | Op::Linear(_)))
        .map(|(i, _)| (i, matches!(ops.get(i + 1), Some(Op::Relu { .. }))))
        .collect()
}

/// Folds `model` and quantises it with the ranges of `calibration` (see [`crate::quant`]):
/// the input's parameters from its range, each layer's output parameters from its range,
/// each layer reading the parameters of the tensor before it (max-pools and flattens keep
/// the scale, as TFLM's kernels require).
pub fn quantize(model: &ModelFile, calibration: &Calibration) -> Result<Quantized, ExportError> {
    let folded = fold(model)?;
    let spec = folded.card.spec()?;
    let points = layer_ops(&spec);
    if calibration.outputs.len() != points.len() {
        return Err(ExportError::Calibration(format!(
            "{} output ranges for a model of {} conv/linear layers",
            calibration.outputs.len(),
            points.len()
        )));
    }
    let quant = |tensor: &str, source| ExportError::Quant {
        tensor: tensor.into(),
        source,
    };
    let input = QuantParams::from_range(calibration.input).map_err(|e| quant("input", e))?;
    let names: Vec<String> = spec
        .repairable()
        .map(|r| r.weight.trim_end_matches(".weight").to_string())
        .collect();
    let mut layers: Vec<QuantizedLayer> = Vec::with_capacity(points.len());
    for (k, &(i, relu)) in points.iter().enumerate() {
        let ((w, numel), (b, channels)) = match spec.ops()[i] {
            Op::Conv(c) => (
                (c.weight, c.cout * c.cin * c.kernel * c.kernel),
                (c.bias, c.cout),
            ),
            Op::Linear(l) => ((l.weight, l.fout * l.fin), (l.bias, l.fout)),
            _ => continue,
        };
        let name = names.get(k).map_or("layer", String::as_str);
        let x = layers.last().map_or(input, |l| l.output);
        let output = QuantParams::from_range(calibration.outputs[k])
            .map_err(|e| quant(&format!("{name} output"), e))?;
        let params = &folded.params;
        let layer = QuantizedLayer::new(
            &params[w..w + numel],
            &params[b..b + channels],
            x,
            output,
            relu,
        )
        .map_err(|e| quant(name, e))?;
        layers.push(layer);
    }
    Ok(Quantized {
        folded,
        input,
        layers,
        samples: calibration.samples,
    })
}

/// The QDQ ONNX model of `quantized`: the f32 input as the dataset stores it, the
/// normalisation in f32, then each conv/linear layer as `Q -> DQ -> Conv/Gemm(DQ(int8
/// weights, axis 0), DQ(int32 bias, axis 0)) [-> Relu] -> Q -> DQ`, max-pools and flattens on
/// the dequantised values between them, f32 logits out (the last layer's int8 output,
/// dequantised). Opset 13 or later (per-axis DequantizeLinear).
pub fn export_int8(quantized: &Quantized, opset: Opset) -> Result<pb::ModelProto, ExportError> {
    let card = &quantized.folded.card;
    checked(&quantized.folded)?;
    let planned = plan(card)?;
    let mut g = Graph::default();
    g.normalisation(card)?;
    let mut weight_nodes = Vec::new();
    let mut layers = quantized.layers.iter();
    let mut previous: Option<(String, QuantParams)> = None;
    let mut counts = Counts::default();
    let mut i = 0;
    while i < planned.len() {
        let p = &planned[i];
        let name = p.name.map(|n| n.to_string()).unwrap_or_default();
        if g.parameterless(p.op, &mut counts)? {
            i += 1;
            continue;
        }
        let (op_type, dims, attrs) = match p.op {
            Op::Conv(c) => (
                "Conv",
                vec![c.cout, c.cin, c.kernel, c.kernel],
                conv_attributes(&c)?,
            ),
            Op::Linear(l) => ("Gemm", vec![l.fout, l.fin], vec![int("transB", 1)]),
            // A BatchNorm is all that is left (the parameterless ops were pushed above).
            _ => return Err(ExportError::Unfoldable { batch_norm: name }),
        };
        let layer = layers
            .next()
            .ok_or_else(|| ExportError::Calibration(format!("no quantised layer for {name}")))?;
        // The input: quantised at the previous layer's output parameters (already, when the
        // layer reads that output directly), or at the network input's.
        let (point, params) = previous
            .clone()
            .unwrap_or_else(|| ("input".to_string(), quantized.input));
        let direct = g
            .nodes
            .last()
            .is_some_and(|n| n.name == format!("{point}.dequantize"));
        if previous.is_none() {
            g.constant_q(&point, params)?;
        }
        if !direct {
            g.qdq(&format!("{name}.input"), &point);
        }
        let [w, b] = g.quantized_weights(&mut weight_nodes, &name, &dims, layer)?;
        g.push(op_type, &name, &[&w, &b], attrs);
        let fused = matches!(planned.get(i + 1).map(|n| n.op), Some(Op::Relu { .. }));
        if fused {
            g.relu(&mut counts);
            i += 1;
        }
        let point = format!("{name}.output");
        g.constant_q(&point, layer.output)?;
        g.qdq(&point, &point);
        previous = Some((point, layer.output));
        i += 1;
    }
    if layers.next().is_some() {
        return Err(ExportError::Calibration(
            "more quantised layers than the model has".into(),
        ));
    }
    match g.nodes.last_mut() {
        Some(last) => last.output = [OUTPUT.to_string()].into(),
        None => g
            .nodes
            .push(node("Identity", OUTPUT, &[INPUT], OUTPUT, Vec::new())),
    }
    // The weights' DequantizeLinear nodes read initializers only: first, in topological order.
    weight_nodes.append(&mut g.nodes);
    g.nodes = weight_nodes;
    let doc = format!(
        "{}: exported by papa-edge from its model file, int8 (QDQ), calibrated on {} samples",
        card.name, quantized.samples
    );
    let note = format!(
        "{QUANTIZATION_NOTE}; calibrated on {} samples",
        quantized.samples
    );
    model_proto(card, g, opset, doc, vec![(META_QUANTIZATION, note)])
}

impl Graph {
    /// The scale (f32 scalar) and zero point (int8 scalar) of quantisation point `point`.
    fn constant_q(&mut self, point: &str, q: QuantParams) -> Result<(), ExportError> {
        let doc = "per-tensor int8 activation parameters (calibrated min/max)";
        self.initializers
            .push(tensor(&format!("{point}.scale"), &[], &[q.scale()], doc)?);
        self.initializers.push(tensor_i8(
            &format!("{point}.zero_point"),
            &[],
            &[q.zero_point()],
            doc,
        )?);
        Ok(())
    }

    /// `QuantizeLinear` then `DequantizeLinear` of the last value at point `point`'s
    /// parameters, named `{name}.quantize` and `{name}.dequantize`.
    fn qdq(&mut self, name: &str, point: &str) {
        let (scale, zero) = (format!("{point}.scale"), format!("{point}.zero_point"));
        for op in ["QuantizeLinear", "DequantizeLinear"] {
            let node = if op == "QuantizeLinear" {
                format!("{name}.quantize")
            } else {
                format!("{name}.dequantize")
            };
            self.push(op, &node, &[&scale, &zero], Vec::new());
        }
    }

    /// Layer `name`'s int8 weights (`dims`) and int32 bias as initializers, each read by a
    /// per-axis `DequantizeLinear` (added to `nodes`); returns the dequantised values' names.
    fn quantized_weights(
        &mut self,
        nodes: &mut Vec<pb::NodeProto>,
        name: &str,
        dims: &[usize],
        layer: &QuantizedLayer,
    ) -> Result<[String; 2], ExportError> {
        let c = layer.channels();
        let doc = "int8, symmetric per output channel; BatchNorm folded in first";
        let w = format!("{name}.weight");
        self.initializers
            .push(tensor_i8(&w, dims, &layer.weights, doc)?);
        self.initializers.push(tensor(
            &format!("{w}_scale"),
            &[c],
            &layer.weight_scales,
            "one scale per output channel",
        )?);
        self.initializers.push(tensor_i8(
            &format!("{w}_zero_point"),
            &[c],
            &vec![0; c],
            "",
        )?);
        let b = format!("{name}.bias");
        let doc = "int32 at input_scale * weight_scale[c]";
        self.initializers
            .push(tensor_i32(&b, &[c], &layer.bias, doc)?);
        self.initializers.push(tensor(
            &format!("{b}_scale"),
            &[c],
            &layer.bias_scales,
            "input_scale * weight_scale[c]",
        )?);
        self.initializers.push(tensor_i32(
            &format!("{b}_zero_point"),
            &[c],
            &vec![0; c],
            "",
        )?);
        let mut out = Vec::new();
        for t in [w, b] {
            let dq = format!("{t}.dequantized");
            let inputs = [
                t.as_str(),
                &format!("{t}_scale"),
                &format!("{t}_zero_point"),
            ];
            nodes.push(node(
                "DequantizeLinear",
                &dq,
                &inputs,
                &dq,
                vec![int("axis", 0)],
            ));
            out.push(dq);
        }
        Ok([out.remove(0), out.remove(0)])
    }
}

/// How many training samples `papa export --format onnx-int8` calibrates on by default.
#[cfg(feature = "calibrate")]
pub const DEFAULT_CALIBRATION_SAMPLES: usize = 512;

/// The ranges of `model`'s quantisation points over `stored` (whole samples laid end to
/// end, as the dataset stores them, like the ONNX graph's input), measured with papa's own
/// f32 forward (papa-train's `Network`, eval mode) on the folded model: the normalised
/// input's range and each conv/linear layer's output range (after the ReLU that follows it).
#[cfg(feature = "calibrate")]
pub fn calibrate(model: &ModelFile, stored: &[f32]) -> Result<Calibration, ExportError> {
    use crate::quant::Range;
    use papa_train::model::{Input, Network};
    let folded = fold(model)?;
    let card = &folded.card;
    let spec = card.spec()?;
    let sample = spec.input_len();
    let n = stored.len().checked_div(sample).unwrap_or(0);
    if n == 0 || n * sample != stored.len() {
        return Err(ExportError::Calibration(format!(
            "{} values are not a positive number of samples of {sample}",
            stored.len()
        )));
    }
    let batch = n.min(64);
    if layer_ops(&spec).len() > spec.repairable().count() + 1 {
        return Err(ExportError::Calibration(
            "a conv/linear layer papa's forward does not expose".into(),
        ));
    }
    let mut net = Network::new(&spec, 1, batch)?;
    let relus: Vec<bool> = layer_ops(&spec).into_iter().map(|(_, r)| r).collect();
    let plane = card.input.height * card.input.width;
    let (mut input, mut outputs) = (Range::EMPTY, vec![Range::EMPTY; relus.len()]);
    let mut x = Vec::with_capacity(batch * sample);
    for chunk in stored.chunks(batch * sample) {
        x.clear();
        x.extend(chunk.iter().map(|v| v / card.input.pixel_scale));
        card.normalization
            .apply(&mut x, plane)
            .map_err(ExportError::Params)?;
        input.observe(&x);
        net.evaluate(&folded.params, Input::Shared(&x))?;
        // The hidden layers' outputs; the last layer's (not one REPAIR works on) is the logits.
        let hidden = spec.repairable().count().min(outputs.len());
        for (k, range) in outputs.iter_mut().enumerate() {
            if k < hidden {
                range.observe(net.pre_activation(k)?.member(0));
            } else {
                range.observe(net.logits());
            }
        }
    }
    for (range, &relu) in outputs.iter_mut().zip(&relus) {
        if relu {
            *range = range.relu();
        }
    }
    Ok(Calibration {
        input,
        outputs,
        samples: n,
    })
}
