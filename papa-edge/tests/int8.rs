//! The int8 (QDQ) export run in tract against this file's own fake-quantised f32 forward of
//! the same quantised model (ONNX's QuantizeLinear/DequantizeLinear semantics, written out
//! here), on a model whose channels have scales orders of magnitude apart: the regression
//! test of tract's per-axis DequantizeLinear (before 0.23.9 every channel used channel 0's
//! scale). Also: the calibration (papa-train's forward) against this file's f32 forward,
//! and the int8 export's errors.

mod common;

use common::{random_model, BatchNormDraw, Card};
use papa_core::rng::Rng;
use papa_edge::onnx::{self, calibrate, export_int8, fold, quantize, Opset, Quantized};
use papa_edge::quant::{Calibration, Range};
use papa_edge::tract::Model;
use papa_model::card::{ModelCard, Normalization};
use papa_model::file::ModelFile;
use papa_model::layer::Layer;
use papa_model::plan::Op;
use papa_model::ModelSpec;

const INPUT: [usize; 3] = [2, 8, 8];

/// conv3x3(6) - BN - ReLU - maxpool2 - conv3x3(4) - BN - ReLU - maxpool2 - flatten -
/// linear(12) - ReLU - linear(5), random; the BatchNorms' scales make conv channel c's
/// weights about 4^c times channel 0's once folded.
fn model() -> ModelFile {
    let layers = [
        Layer::conv3x3(6),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::max_pool2(),
        Layer::conv3x3(4),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::max_pool2(),
        Layer::Flatten,
        Layer::Linear { out_features: 12 },
        Layer::Relu,
        Layer::Linear { out_features: 5 },
    ];
    let card = Card {
        name: "int8-test",
        pixel_scale: 255.0,
        normalization: Normalization {
            mean: vec![0.3, 0.6],
            std: vec![0.25, 0.4],
        },
    };
    let batchnorm: BatchNormDraw = |rng, k| {
        [
            0.05 * 4f32.powi(k as i32) * (0.5 + rng.uniform_f32()),
            0.1 * (rng.uniform_f32() - 0.3),
            0.2 * (rng.uniform_f32() - 0.5),
            0.2 + rng.uniform_f32(),
        ]
    };
    random_model(&layers, INPUT, 5, 5, Some(batchnorm), card)
}

/// 8-bit pixel samples, as the dataset would store them.
fn pixels(samples: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let len = samples * INPUT.iter().product::<usize>();
    (0..len)
        .map(|_| (rng.uniform_f32() * 255.0).floor())
        .collect()
}

/// ONNX QuantizeLinear then DequantizeLinear (int8): `saturate(round_half_even(x / s) + z)`,
/// then `(q - z) * s`, in f32.
fn fake_quant(values: &mut [f32], scale: f32, zero: i8) {
    for v in values {
        let q = ((*v / scale).round_ties_even() + f32::from(zero)).clamp(-128.0, 127.0);
        *v = (q - f32::from(zero)) * scale;
    }
}

/// Where the f32 forward below quantises.
enum Mode<'a> {
    /// Not at all: the folded f32 model; records each conv/linear output's range (after
    /// its ReLU) and the normalised input's.
    Float(&'a mut Calibration),
    /// At every point of the int8 export, with the layers' own integers and scales;
    /// `scale_of_channel_0` uses channel 0's weight scale for every channel (tract's old
    /// per-axis bug).
    Quantised {
        q: &'a Quantized,
        scale_of_channel_0: bool,
    },
}

/// The logits of `stored` samples through the folded model `folded`, batch by sample,
/// written out loop by loop (f64 accumulation).
fn forward(folded: &ModelFile, stored: &[f32], mut mode: Mode) -> Vec<f32> {
    let card = &folded.card;
    let spec = card.spec().unwrap();
    let [channels, h, w] = INPUT;
    let mut logits = Vec::new();
    for sample in stored.chunks(spec.input_len()) {
        let mut x: Vec<f32> = sample
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let c = i / (h * w);
                (v / card.input.pixel_scale - card.normalization.mean[c])
                    / card.normalization.std[c]
            })
            .collect();
        assert_eq!(channels, card.normalization.mean.len());
        if let Mode::Float(cal) = &mut mode {
            cal.input.observe(&x);
        }
        let ops = spec.ops();
        let mut k = 0;
        for (i, op) in ops.iter().enumerate() {
            let relu_next = matches!(ops.get(i + 1), Some(Op::Relu { .. }));
            match *op {
                Op::Conv(_) | Op::Linear(_) => {
                    let (weights, bias): (Vec<f32>, Vec<f32>) = match &mode {
                        Mode::Float(_) => {
                            let (w, n, b, m) = match *op {
                                Op::Conv(c) => (
                                    c.weight,
                                    c.cout * c.cin * c.kernel * c.kernel,
                                    c.bias,
                                    c.cout,
                                ),
                                Op::Linear(l) => (l.weight, l.fout * l.fin, l.bias, l.fout),
                                _ => unreachable!(),
                            };
                            (
                                folded.params[w..w + n].to_vec(),
                                folded.params[b..b + m].to_vec(),
                            )
                        }
                        Mode::Quantised {
                            q,
                            scale_of_channel_0,
                        } => {
                            let l = &q.layers[k];
                            fake_quant(&mut x, l.input.scale(), l.input.zero_point());
                            let row = l.weights.len() / l.channels();
                            let scale = |c: usize| {
                                if *scale_of_channel_0 {
                                    l.weight_scales[0]
                                } else {
                                    l.weight_scales[c]
                                }
                            };
                            let w = l
                                .weights
                                .iter()
                                .enumerate()
                                .map(|(i, &v)| f32::from(v) * scale(i / row))
                                .collect();
                            let b = l
                                .bias
                                .iter()
                                .enumerate()
                                .map(|(c, &v)| v as f32 * l.bias_scales[c])
                                .collect();
                            (w, b)
                        }
                    };
                    x = match *op {
                        Op::Conv(c) => conv(&x, &weights, &bias, c),
                        _ => linear(&x, &weights, &bias),
                    };
                    if relu_next {
                        x.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                    match &mut mode {
                        Mode::Float(cal) => cal.outputs[k].observe(&x),
                        Mode::Quantised { q, .. } => {
                            let out = q.layers[k].output;
                            fake_quant(&mut x, out.scale(), out.zero_point());
                        }
                    }
                    k += 1;
                }
                Op::Relu { .. } => x.iter_mut().for_each(|v| *v = v.max(0.0)),
                Op::MaxPool {
                    c,
                    h,
                    w,
                    kernel,
                    stride,
                } => x = max_pool(&x, c, h, w, kernel, stride),
                Op::Flatten { .. } => {}
                Op::BatchNorm { .. } => panic!("the folded model has no BatchNorm"),
            }
        }
        logits.extend(x);
    }
    logits
}

fn conv(x: &[f32], w: &[f32], b: &[f32], c: papa_model::plan::ConvLayer) -> Vec<f32> {
    let (k, p, s) = (c.kernel, c.padding as isize, c.stride);
    let mut out = vec![0.0; c.cout * c.out_h * c.out_w];
    for o in 0..c.cout {
        for y in 0..c.out_h {
            for xx in 0..c.out_w {
                let mut acc = f64::from(b[o]);
                for i in 0..c.cin {
                    for dy in 0..k {
                        for dx in 0..k {
                            let (iy, ix) = ((y * s + dy) as isize - p, (xx * s + dx) as isize - p);
                            if iy < 0 || ix < 0 || iy >= c.h as isize || ix >= c.w as isize {
                                continue;
                            }
                            let v = x[(i * c.h + iy as usize) * c.w + ix as usize];
                            acc += f64::from(v) * f64::from(w[((o * c.cin + i) * k + dy) * k + dx]);
                        }
                    }
                }
                out[(o * c.out_h + y) * c.out_w + xx] = acc as f32;
            }
        }
    }
    out
}

fn linear(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    b.iter()
        .enumerate()
        .map(|(o, &bias)| {
            let row = &w[o * x.len()..(o + 1) * x.len()];
            (f64::from(bias)
                + row
                    .iter()
                    .zip(x)
                    .map(|(&w, &v)| f64::from(w) * f64::from(v))
                    .sum::<f64>()) as f32
        })
        .collect()
}

fn max_pool(x: &[f32], c: usize, h: usize, w: usize, k: usize, s: usize) -> Vec<f32> {
    let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
    let mut out = Vec::with_capacity(c * oh * ow);
    for ch in 0..c {
        for y in 0..oh {
            for xx in 0..ow {
                let mut m = f32::NEG_INFINITY;
                for dy in 0..k {
                    for dx in 0..k {
                        m = m.max(x[(ch * h + y * s + dy) * w + xx * s + dx]);
                    }
                }
                out.push(m);
            }
        }
    }
    out
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn calibration_is_the_f32_forward_s_ranges() {
    let file = model();
    let cal_images = pixels(100, 1);
    let cal = calibrate(&file, &cal_images).unwrap();
    assert_eq!((cal.samples, cal.outputs.len()), (100, 4));
    let folded = fold(&file).unwrap();
    let mut mine = Calibration {
        input: Range::EMPTY,
        outputs: vec![Range::EMPTY; 4],
        samples: 100,
    };
    forward(&folded, &cal_images, Mode::Float(&mut mine));
    let close = |a: Range, b: Range| {
        let tol = 1e-4 * (b.max() - b.min()).abs().max(1.0);
        (a.min() - b.min()).abs() <= tol && (a.max() - b.max()).abs() <= tol
    };
    assert!(
        close(cal.input, mine.input),
        "{:?} vs {:?}",
        cal.input,
        mine.input
    );
    for (k, (a, b)) in cal.outputs.iter().zip(&mine.outputs).enumerate() {
        assert!(close(*a, *b), "layer {k}: {a:?} vs {b:?}");
    }
    // After a ReLU the range starts at 0; the logits' does not.
    assert_eq!(cal.outputs[0].min(), 0.0);
    assert!(cal.outputs[3].min() < 0.0);
}

#[test]
fn tract_runs_the_int8_export_as_its_fake_quantised_reference() {
    let file = model();
    let q = quantize(&file, &calibrate(&file, &pixels(200, 1)).unwrap()).unwrap();
    // The model is what this test is about: conv1's channel scales span orders of magnitude.
    let s = &q.layers[0].weight_scales;
    let spread =
        s.iter().cloned().fold(0.0f32, f32::max) / s.iter().cloned().fold(f32::INFINITY, f32::min);
    assert!(spread > 100.0, "conv1 weight scales {s:?}");

    let test = pixels(64, 2);
    let reference = forward(
        &q.folded,
        &test,
        Mode::Quantised {
            q: &q,
            scale_of_channel_0: false,
        },
    );
    let bug = forward(
        &q.folded,
        &test,
        Mode::Quantised {
            q: &q,
            scale_of_channel_0: true,
        },
    );
    let step = f64::from(q.layers[3].output.scale());
    for opset in [13, 17, 18] {
        let bytes = onnx::to_bytes(&export_int8(&q, Opset::new(opset).unwrap()).unwrap());
        let tract = Model::from_bytes(&bytes).unwrap().logits(&test).unwrap();
        let (diff, bug_diff) = (
            mean_abs_diff(&tract, &reference),
            mean_abs_diff(&bug, &reference),
        );
        let within_a_step = tract
            .iter()
            .zip(&reference)
            .filter(|(a, b)| f64::from((*a - *b).abs()) <= step * 1.01)
            .count();
        println!(
            "opset {opset}: tract vs the fake-quantised reference: mean |diff| {:.3} output steps, {within_a_step} of {} logits within one step; the per-axis bug would give {:.1} steps",
            diff / step,
            tract.len(),
            bug_diff / step
        );
        // Rounding may flip a quantisation point by one step now and then (the two sum in
        // different orders); the bug moves every logit by many.
        assert!(diff <= 0.25 * step, "{} steps", diff / step);
        assert!(within_a_step * 100 >= 97 * tract.len(), "{within_a_step}");
        assert!(
            bug_diff >= 5.0 * step,
            "the test cannot see the bug: {} steps",
            bug_diff / step
        );
    }
}

#[test]
fn the_int8_graph_is_qdq_around_every_conv_and_gemm() {
    let file = model();
    let q = quantize(&file, &calibrate(&file, &pixels(20, 1)).unwrap()).unwrap();
    let proto = export_int8(&q, Opset::DEFAULT).unwrap();
    let graph = proto.graph.unwrap();
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    // Weights and biases of 4 layers, each dequantised per axis; the inputs of conv1, conv2
    // (after a max-pool) and fc1 (after a max-pool and the flatten), fc2 reading fc1's
    // output DQ directly; the 4 outputs.
    assert_eq!(
        ops.iter().filter(|&&o| o == "DequantizeLinear").count(),
        8 + 3 + 4
    );
    assert_eq!(
        ops.iter().filter(|&&o| o == "QuantizeLinear").count(),
        3 + 4
    );
    for n in graph
        .node
        .iter()
        .filter(|n| n.op_type == "Conv" || n.op_type == "Gemm")
    {
        let producer = |value: &str| graph.node.iter().find(|m| m.output[0] == value).unwrap();
        for input in &n.input {
            assert_eq!(
                producer(input).op_type,
                "DequantizeLinear",
                "{} reads {input}",
                n.name
            );
        }
        let w = producer(&n.input[1]);
        assert!(
            w.attribute.iter().any(|a| a.name == "axis" && a.i == 0),
            "{}",
            w.name
        );
    }
    let meta: Vec<&str> = proto
        .metadata_props
        .iter()
        .map(|m| m.key.as_str())
        .collect();
    assert!(
        meta.contains(&papa_edge::names::META_QUANTIZATION),
        "{meta:?}"
    );
}

#[test]
fn int8_errors_name_the_problem() {
    let file = model();
    let good = calibrate(&file, &pixels(4, 1)).unwrap();
    // No calibration data, or not whole samples.
    assert!(calibrate(&file, &[]).is_err());
    assert!(calibrate(&file, &pixels(1, 1)[..10]).is_err());
    // Ranges for another model.
    let mut short = good.clone();
    short.outputs.pop();
    let e = quantize(&file, &short).unwrap_err().to_string();
    assert!(e.contains("3 output ranges for a model of 4"), "{e}");
    // A range that saw nothing.
    let mut empty = good.clone();
    empty.outputs[1] = Range::EMPTY;
    let e = quantize(&file, &empty).unwrap_err().to_string();
    assert!(e.contains("conv2 output") && e.contains("empty"), "{e}");
    // A BatchNorm after a ReLU cannot be folded.
    let layers = [
        Layer::Flatten,
        Layer::Linear { out_features: 4 },
        Layer::Relu,
        Layer::BatchNorm,
        Layer::Linear { out_features: 3 },
    ];
    let spec = ModelSpec::new(&layers, [1, 2, 2], 3).unwrap();
    let card = ModelCard::new("bn", &spec, 1.0, Normalization::identity(1), vec![]);
    let mut params = vec![0.5; spec.len()];
    params[spec
        .find("bn1.running_var")
        .map(|t| t.range())
        .unwrap_or(0..0)]
    .fill(1.0);
    let e = fold(&ModelFile { card, params }).unwrap_err().to_string();
    assert!(e.contains("follows no conv or linear layer"), "{e}");
}
