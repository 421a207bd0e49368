//! Fuzz target of the ONNX runner (`papa_edge::tract::Model::from_bytes`), seeded with files
//! the exporter writes: an MLP, the small CNN (BatchNorm folded) and a model whose BatchNorm
//! stays a node; and of the flash image parser and runtime. Budget and reproduction:
//! docs/FUZZING.md.

use papa_edge::onnx::{export, to_bytes, Opset};
use papa_edge::tract::Model;
use papa_fuzz::{fuzz, Budget};
use papa_model::card::{ModelCard, Normalization};
use papa_model::file::ModelFile;
use papa_model::layer::Layer;
use papa_model::{zoo, ModelSpec};
use std::error::Error;

fn exported(layers: &[Layer], input: [usize; 3], classes: usize) -> Vec<u8> {
    let spec = ModelSpec::new(layers, input, classes).unwrap();
    let norm = Normalization {
        mean: vec![0.5; input[0]],
        std: vec![0.25; input[0]],
    };
    let card = ModelCard::new("fuzz", &spec, 255.0, norm, vec![]);
    let params = (0..spec.len()).map(|i| (i % 9) as f32 * 0.125).collect();
    to_bytes(&export(&ModelFile { card, params }, Opset::DEFAULT).unwrap())
}

#[test]
fn fuzz_onnx_load() -> Result<(), Box<dyn Error>> {
    // tract's own panics, which the runner catches and returns as errors, are not printed.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info
            .location()
            .is_some_and(|l| l.file().contains("/tract-"))
        {
            default(info);
        }
    }));
    let seeds = [
        exported(&zoo::mlp(&[4], 3), [1, 2, 2], 3),
        exported(&zoo::cnn_s(2), [1, 4, 4], 2),
        exported(
            &[
                Layer::Flatten,
                Layer::BatchNorm,
                Layer::Linear { out_features: 2 },
            ],
            [3, 1, 1],
            2,
        ),
    ];
    let report = fuzz("onnx-load", &seeds, &Budget::from_env()?, |bytes| {
        let model = Model::from_bytes(bytes)?;
        if model.sample_len() > 1 << 16 {
            // Valid, but a sample of it would be a big allocation for a fuzz case.
            return Ok(());
        }
        // An accepted model runs a sample and a batch, or says why not; its logits fit.
        let sample = vec![1.0; model.sample_len()];
        if let Ok(p) = model.predict(&sample) {
            assert_eq!(p.logits.len(), model.classes());
            assert!(p.class < model.classes());
        }
        assert!(model.predict(&sample[1..]).is_err());
        assert_eq!(model.class_names().len(), model.classes());
        Ok::<(), papa_edge::tract::Error>(())
    })?;
    println!("{report}");
    Ok(())
}

/// Fuzz target of the flash image parser and the runtime (`FlashModel::parse`, then an
/// inference), seeded with int8 and f32 images of a small CNN and an MLP. Each mutant is
/// parsed as it is (the checksum catches most edits) and again resealed (its checksum
/// recomputed, so the edits reach the structure checks); an accepted image must run an
/// input of its length, or refuse it with an error, never panic.
#[test]
fn fuzz_flash_image() -> Result<(), Box<dyn Error>> {
    use papa_edge::flash::{write, FlashModel, Precision};
    use papa_edge::onnx::{calibrate, quantize};
    use papa_edge::runtime::Input;
    let model = |layers: &[Layer], input: [usize; 3], classes| {
        let spec = ModelSpec::new(layers, input, classes).unwrap();
        let norm = Normalization {
            mean: vec![0.5; input[0]],
            std: vec![0.25; input[0]],
        };
        let card = ModelCard::new("fuzz", &spec, 255.0, norm, vec![]);
        // Positive everywhere, so the BatchNorms' variances are valid.
        let params = (0..spec.len())
            .map(|i| ((i * 7) % 11) as f32 * 0.05 + 0.05)
            .collect();
        ModelFile { card, params }
    };
    let mut seeds = Vec::new();
    for m in [
        model(&zoo::cnn_s(3), [1, 6, 6], 3),
        model(&zoo::mlp(&[5], 2), [2, 2, 2], 2),
    ] {
        let len = m.card.spec().unwrap().input_len();
        let stored: Vec<f32> = (0..8 * len).map(|i| (i * 37 % 256) as f32).collect();
        let q = quantize(&m, &calibrate(&m, &stored).unwrap()).unwrap();
        seeds.push(write::int8(&q).unwrap());
        seeds.push(write::f32(&m).unwrap());
    }
    let run = |bytes: &[u8]| -> Result<(), Box<dyn Error>> {
        let flash = FlashModel::parse(bytes)?;
        if flash.arena_len() > 1 << 20 || flash.input_len() > 1 << 16 {
            // Valid, but a big allocation for a fuzz case.
            return Ok(());
        }
        let sample: Vec<u8> = (0..flash.input_len())
            .map(|i| (i * 29 % 256) as u8)
            .collect();
        let classes = match flash.precision() {
            Precision::Int8 => {
                let mut arena = vec![0i8; flash.arena_len()];
                assert!(flash
                    .infer_int8(Input::Bytes(&sample[1..]), &mut arena)
                    .is_err());
                flash.infer_int8(Input::Bytes(&sample), &mut arena)?.class
            }
            Precision::F32 => {
                let mut arena = vec![0f32; flash.arena_len()];
                flash.infer_f32(Input::Bytes(&sample), &mut arena)?.class
            }
        };
        assert!(classes < flash.classes().max(1));
        Ok(())
    };
    // The resealed run's verdict is the one counted: accepted mutants seed further ones.
    let report = fuzz("flash-image", &seeds, &Budget::from_env()?, |bytes| {
        let _ = run(bytes);
        let mut sealed = bytes.to_vec();
        write::seal(&mut sealed);
        run(&sealed).map_err(|e| e.to_string())
    })?;
    println!("{report}");
    Ok(())
}
