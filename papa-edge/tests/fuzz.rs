//! Fuzz target of the ONNX runner (`papa_edge::tract::Model::from_bytes`), seeded with files
//! the exporter writes: an MLP, the small CNN (BatchNorm folded) and a model whose BatchNorm
//! stays a node. Budget and reproduction: docs/FUZZING.md.

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
