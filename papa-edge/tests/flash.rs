//! The flash image and the microcontroller runtime, against independent references:
//! - f32: papa's own forward (papa-train's `Network`) on the unfolded model, within 1e-4;
//! - int8: this file's integer forward, written layer by layer (unfused: conv patches with
//!   zero-point padding through the quantiser's `QuantizedLayer::accumulate` and
//!   `requantize`, then a separate max-pool), bit for bit;
//! - the C source: compiled by the system's C compiler, the array's bytes read back;
//! - bad images and inputs: typed errors.

mod common;

use common::{moderate_batchnorm, quantised, stored_pixels, Card};
use papa_edge::flash::{arena_len_of, write, FlashModel, ImageError, Precision, RunError};
use papa_edge::onnx::{fold, quantize, Quantized};
use papa_edge::quant::{Calibration, Range};
use papa_edge::runtime::Input;
use papa_model::file::ModelFile;
use papa_model::layer::Layer;
use papa_model::plan::Op;
use papa_model::zoo;
use papa_train::model::{Input as NetInput, Network};

/// A random model of `layers` on `input`, its BatchNorms' statistics made non-trivial.
fn random_model(layers: &[Layer], input: [usize; 3], classes: usize, seed: u64) -> ModelFile {
    let card = Card::pixels("flash-test", input[0]);
    common::random_model(layers, input, classes, seed, Some(moderate_batchnorm), card)
}

/// conv(5) - BN - ReLU - maxpool2 - conv(4) - BN - ReLU - flatten - linear(12) - ReLU -
/// linear(5) on 2 x 9 x 9: odd sizes (the pool's floor), a conv without a pool.
fn cnn() -> ModelFile {
    let layers = [
        Layer::conv3x3(5),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::max_pool2(),
        Layer::conv3x3(4),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::Flatten,
        Layer::Linear { out_features: 12 },
        Layer::Relu,
        Layer::Linear { out_features: 5 },
    ];
    random_model(&layers, [2, 9, 9], 5, 11)
}

/// Rows wider than the runtime's 32-column conv segments: conv(3) - BN - ReLU - maxpool2 -
/// conv(2) - ReLU - flatten - linear(3) on 1 x 4 x 75 (conv rows of 75 and 37 columns).
fn wide() -> ModelFile {
    let layers = [
        Layer::conv3x3(3),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::max_pool2(),
        Layer::conv3x3(2),
        Layer::Relu,
        Layer::Flatten,
        Layer::Linear { out_features: 3 },
    ];
    random_model(&layers, [1, 4, 75], 3, 13)
}

/// What papa's engine does not train but the image and runtime take: a 5 x 5 conv of
/// stride 2 and padding 1, an overlapping 3 x 3 pool of stride 2, a 1 x 1 conv of stride 3
/// without padding, 3 x 3 convs of padding 2 and 0 (the runtime's sliding window at
/// other paddings), on 2 x 40 x 41.
fn strided() -> ModelFile {
    let layers = [
        Layer::Conv2d {
            out_channels: 4,
            kernel: 5,
            stride: 2,
            padding: 1,
        },
        Layer::Relu,
        Layer::MaxPool2d {
            kernel: 3,
            stride: 2,
        },
        Layer::Conv2d {
            out_channels: 3,
            kernel: 1,
            stride: 3,
            padding: 0,
        },
        Layer::Conv2d {
            out_channels: 3,
            kernel: 3,
            stride: 1,
            padding: 2,
        },
        Layer::Conv2d {
            out_channels: 2,
            kernel: 3,
            stride: 1,
            padding: 0,
        },
        Layer::Flatten,
        Layer::Linear { out_features: 4 },
    ];
    random_model(&layers, [2, 40, 41], 4, 14)
}

fn mlp() -> ModelFile {
    random_model(&zoo::mlp(&[16, 8], 4), [1, 5, 6], 4, 12)
}

#[test]
fn the_f32_runtime_matches_papas_forward() {
    for model in [cnn(), wide(), mlp()] {
        let spec = model.card.spec().unwrap();
        let n = 64;
        let stored = stored_pixels(&model, n, 1);
        let image = write::f32(&model).unwrap();
        let flash = FlashModel::parse(&image).unwrap();
        assert_eq!(flash.precision(), Precision::F32);
        let mut arena = vec![0.0f32; flash.arena_len()];

        let mut x: Vec<f32> = stored.iter().map(|&v| f32::from(v) / 255.0).collect();
        let plane = spec.input_len() / spec.input_shape()[0];
        model.card.normalization.apply(&mut x, plane).unwrap();
        let mut net = Network::new(&spec, 1, n).unwrap();
        let papa = net
            .evaluate(&model.params, NetInput::Shared(&x))
            .unwrap()
            .to_vec();

        let mut max_diff = 0.0f32;
        for (sample, expected) in stored
            .chunks(spec.input_len())
            .zip(papa.chunks(spec.classes()))
        {
            let got = flash.infer_f32(Input::Bytes(sample), &mut arena).unwrap();
            for (a, b) in got.logits.iter().zip(expected) {
                max_diff = max_diff.max((a - b).abs());
            }
            // The same sample as f32 values gives the same bits.
            let values: Vec<f32> = sample.iter().map(|&v| f32::from(v)).collect();
            let logits = got.logits.to_vec();
            assert_eq!(
                flash
                    .infer_f32(Input::F32(&values), &mut arena)
                    .unwrap()
                    .logits,
                &logits[..]
            );
        }
        assert!(
            max_diff < 1e-4,
            "{}: max |difference| {max_diff}",
            model.card.name
        );
        assert!(max_diff > 0.0 || spec.classes() > 0);
    }
}

/// The int8 forward of `q` on one stored sample, unfused and loop by loop: each conv as
/// patches (padding at the input zero point) through `QuantizedLayer::accumulate` and
/// `requantize`, a ReLU in the requantisation's clamp, each max-pool on the int8 values.
fn reference_int8(q: &Quantized, sample: &[u8]) -> Vec<i8> {
    let card = &q.folded.card;
    let spec = card.spec().unwrap();
    let [channels, h, w] = spec.input_shape();
    let mut x: Vec<i8> = sample
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / (h * w);
            let n = &card.normalization;
            q.input
                .quantize((f32::from(v) / card.input.pixel_scale - n.mean[c]) / n.std[c])
        })
        .collect();
    assert_eq!(channels, card.normalization.mean.len());
    let mut k = 0;
    for op in spec.ops() {
        match *op {
            Op::Conv(c) => {
                let l = &q.layers[k];
                let zp = l.input.zero_point();
                let mut y = vec![0i8; c.cout * c.out_h * c.out_w];
                let mut patch = Vec::new();
                for oy in 0..c.out_h {
                    for ox in 0..c.out_w {
                        patch.clear();
                        for ci in 0..c.cin {
                            for ky in 0..c.kernel {
                                for kx in 0..c.kernel {
                                    let iy = (oy * c.stride + ky) as isize - c.padding as isize;
                                    let ix = (ox * c.stride + kx) as isize - c.padding as isize;
                                    let inside = (0..c.h as isize).contains(&iy)
                                        && (0..c.w as isize).contains(&ix);
                                    patch.push(if inside {
                                        x[(ci * c.h + iy as usize) * c.w + ix as usize]
                                    } else {
                                        zp
                                    });
                                }
                            }
                        }
                        for co in 0..c.cout {
                            let acc = l.accumulate(co, &patch).unwrap();
                            y[(co * c.out_h + oy) * c.out_w + ox] = l.requantize(co, acc);
                        }
                    }
                }
                x = y;
                k += 1;
            }
            Op::Linear(_) => {
                x = q.layers[k].forward_one(&x).unwrap();
                k += 1;
            }
            Op::MaxPool {
                c,
                h,
                w,
                kernel,
                stride,
            } => {
                let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
                let mut y = Vec::with_capacity(c * oh * ow);
                for ch in 0..c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut m = i8::MIN;
                            for dy in 0..kernel {
                                for dx in 0..kernel {
                                    let v = x[(ch * h + oy * stride + dy) * w + ox * stride + dx];
                                    m = m.max(v);
                                }
                            }
                            y.push(m);
                        }
                    }
                }
                x = y;
            }
            // The ReLU is the requantisation's clamp; the data is channel-major already.
            Op::Relu { .. } | Op::Flatten { .. } => {}
            Op::BatchNorm { .. } => panic!("the folded model has no BatchNorm"),
        }
    }
    x
}

#[test]
fn the_int8_runtime_is_bit_exact_with_the_layer_by_layer_integer_forward() {
    // papa's forward (the calibration) takes only 3 x 3 convs of stride 1: the strided
    // model's ranges come from the f32 image's layer outputs instead.
    let by_f32_image = |m: &ModelFile, stored: &[u8]| {
        let image = write::f32(m).unwrap();
        let flash = FlashModel::parse(&image).unwrap();
        let mut arena = vec![0f32; flash.arena_len()];
        let mut outputs = vec![Range::EMPTY; flash.layer_count()];
        let mut input = Range::EMPTY;
        let folded = fold(m).unwrap();
        for sample in stored.chunks(flash.input_len()) {
            let x: Vec<f32> = sample.iter().map(|&v| f32::from(v)).collect();
            let mut normalised = x.iter().map(|v| v / 255.0).collect::<Vec<_>>();
            let plane = flash.input_len() / flash.input_shape()[0];
            folded
                .card
                .normalization
                .apply(&mut normalised, plane)
                .unwrap();
            input.observe(&normalised);
            flash
                .infer_f32_traced(Input::F32(&x), &mut arena, |i, y| outputs[i].observe(y))
                .unwrap();
        }
        let calibration = Calibration {
            input,
            outputs,
            samples: stored.len() / flash.input_len(),
        };
        quantize(m, &calibration).unwrap()
    };
    for model in [cnn(), wide(), strided(), mlp()] {
        let spec = model.card.spec().unwrap();
        let calibration_set = stored_pixels(&model, 128, 2);
        let q = if model.card.layers.len() == strided().card.layers.len() {
            by_f32_image(&model, &calibration_set)
        } else {
            quantised(&model, &calibration_set)
        };
        let image = write::int8(&q).unwrap();
        let flash = FlashModel::parse(&image).unwrap();
        assert_eq!(arena_len_of(&image), flash.arena_len());
        let mut arena = vec![0i8; flash.arena_len()];
        let (mut distinct, n) = (std::collections::BTreeSet::new(), 200);
        for sample in stored_pixels(&model, n, 3).chunks(spec.input_len()) {
            let expected = reference_int8(&q, sample);
            let got = flash.infer_int8(Input::Bytes(sample), &mut arena).unwrap();
            assert_eq!(got.logits, &expected[..], "{}", model.card.name);
            // Stored bytes given as f32 take the f32 normalisation, then the quantiser: the
            // table holds exactly that.
            let values: Vec<f32> = sample.iter().map(|&v| f32::from(v)).collect();
            assert_eq!(
                flash
                    .infer_int8(Input::F32(&values), &mut arena)
                    .unwrap()
                    .logits,
                &expected[..]
            );
            distinct.insert(expected);
        }
        // Not a constant model: the comparison has something to catch.
        assert!(
            distinct.len() > n / 2,
            "{}: {} distinct outputs",
            model.card.name,
            distinct.len()
        );
    }
}

#[test]
fn the_int8_model_agrees_with_the_f32_one() {
    let model = cnn();
    let spec = model.card.spec().unwrap();
    let stored = stored_pixels(&model, 300, 4);
    let q = quantised(&model, &stored);
    let (i8_image, f32_image) = (write::int8(&q).unwrap(), write::f32(&model).unwrap());
    let (qm, fm) = (
        FlashModel::parse(&i8_image).unwrap(),
        FlashModel::parse(&f32_image).unwrap(),
    );
    let (mut qa, mut fa) = (vec![0i8; qm.arena_len()], vec![0f32; fm.arena_len()]);
    let out = qm.output_params().unwrap();
    let mut worst = 0.0f32;
    for sample in stored.chunks(spec.input_len()) {
        let f = fm
            .infer_f32(Input::Bytes(sample), &mut fa)
            .unwrap()
            .logits
            .to_vec();
        let range = f.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let q = qm.infer_int8(Input::Bytes(sample), &mut qa).unwrap();
        for (a, &b) in f.iter().zip(q.logits) {
            worst = worst.max((a - out.dequantize(b)).abs() / range.max(1e-3));
        }
    }
    // int8 with 8 bits per tensor: within a few percent of the logits' scale.
    assert!(worst < 0.1, "worst relative logit error {worst}");
}

#[test]
fn the_c_source_compiles_and_holds_the_image() {
    let model = mlp();
    let image = write::f32(&model).unwrap();
    let (h, c) = write::c_source(&image, "papa_model", "papa_model.h").unwrap();
    assert!(h.contains(&format!("#define PAPA_MODEL_LEN {}u", image.len())));
    let arena = FlashModel::parse(&image).unwrap().arena_len();
    assert!(h.contains(&format!("#define PAPA_MODEL_ARENA_LEN {arena}u")));
    assert!(write::c_source(&image, "9lives", "x.h").is_err());
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if std::process::Command::new(&cc)
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIP: no C compiler ({cc}); the C source was not compiled");
        return;
    }
    let dir = std::env::temp_dir().join(format!("papa-flash-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("papa_model.h"), h).unwrap();
    std::fs::write(dir.join("papa_model.c"), c).unwrap();
    let main = "#include <stdio.h>\n#include \"papa_model.h\"\nint main(void) {\n  \
        if (((unsigned long)papa_model) % 16 != 0) return 2;\n  \
        fwrite(papa_model, 1, PAPA_MODEL_LEN, stdout);\n  return 0;\n}\n";
    std::fs::write(dir.join("main.c"), main).unwrap();
    let exe = dir.join("dump");
    let status = std::process::Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(dir.join("main.c"))
        .arg(dir.join("papa_model.c"))
        .status()
        .unwrap();
    assert!(status.success());
    let out = std::process::Command::new(&exe).output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(out.stdout, image);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_images_and_inputs_are_typed_errors() {
    let model = cnn();
    let q = quantised(&model, &stored_pixels(&model, 32, 5));
    let image = write::int8(&q).unwrap();
    let parse = |b: &[u8]| FlashModel::parse(b).map(|_| ()).unwrap_err();

    assert_eq!(
        parse(&image[..10]),
        ImageError::Truncated {
            needed: 64,
            found: 10
        }
    );
    assert!(matches!(
        parse(&image[..image.len() - 1]),
        ImageError::Truncated { .. }
    ));
    let mut b = image.clone();
    b[0] = b'X';
    assert_eq!(parse(&b), ImageError::Magic);
    let mut b = image.clone();
    b[8] = 9;
    assert_eq!(parse(&b), ImageError::Version { found: 9 });
    let mut b = image.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    assert!(matches!(parse(&b), ImageError::Checksum { .. }));
    // Resealed corruptions are caught by the structure checks.
    let resealed = |at: usize, value: u8| {
        let mut b = image.clone();
        b[at] = value;
        write::seal(&mut b);
        parse(&b)
    };
    assert_eq!(
        resealed(10, 7),
        ImageError::Header {
            field: "precision",
            value: 7
        }
    );
    assert!(matches!(
        resealed(64, 3),
        ImageError::Layer { index: 0, .. }
    )); // kind
    let e = resealed(64 + 6, 4);
    assert!(matches!(e, ImageError::Layer { index: 1, .. }), "{e:?}"); // cout: the next layer no longer fits
    assert!(matches!(
        resealed(64 + 16, 0xff),
        ImageError::Tensor {
            layer: 0,
            tensor: "weights",
            ..
        }
    ));
    assert!(matches!(
        resealed(24, 1),
        ImageError::Arena { stated: 1, .. }
    ));
    assert!(matches!(
        resealed(64 + 24 + 3, 0x7f),
        ImageError::Tensor {
            layer: 0,
            tensor: "requantisation",
            ..
        }
    ));

    let flash = FlashModel::parse(&image).unwrap();
    let sample = vec![0u8; flash.input_len()];
    let mut arena = vec![0i8; flash.arena_len()];
    assert_eq!(
        flash
            .infer_int8(Input::Bytes(&sample[1..]), &mut arena)
            .unwrap_err(),
        RunError::Input {
            expected: 162,
            found: 161
        }
    );
    assert_eq!(
        flash
            .infer_int8(Input::Bytes(&sample), &mut arena[1..])
            .unwrap_err(),
        RunError::Arena {
            needed: flash.arena_len(),
            found: flash.arena_len() - 1
        }
    );
    assert_eq!(
        flash
            .infer_f32(Input::Bytes(&sample), &mut [0.0; 4096])
            .unwrap_err(),
        RunError::Precision {
            image: Precision::Int8
        }
    );
    // What the image cannot express is refused by the writer.
    let pool_after_linear = random_model(
        &[
            Layer::Flatten,
            Layer::Linear { out_features: 4 },
            Layer::BatchNorm,
            Layer::Relu,
        ],
        [1, 2, 2],
        4,
        1,
    );
    let err = write::f32(&pool_after_linear).err();
    assert!(
        err.is_none(),
        "a BatchNorm after a linear layer folds: {err:?}"
    );
    let two_pools = random_model(
        &[
            Layer::conv3x3(2),
            Layer::max_pool2(),
            Layer::max_pool2(),
            Layer::Flatten,
            Layer::Linear { out_features: 2 },
        ],
        [1, 8, 8],
        2,
        1,
    );
    let err = write::f32(&two_pools).unwrap_err().to_string();
    assert!(err.contains("max-pool"), "{err}");
}
