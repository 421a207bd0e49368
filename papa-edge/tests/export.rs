//! Exported graphs run in tract give papa's logits (those of papa-train's f64 reference
//! engine, which runs any layer sizes): small models of every layer kind, random parameters
//! and BatchNorm statistics, 8-bit pixel and CSV-like inputs.

mod common;

use common::{random_model, BatchNormDraw, Card};
use papa_core::rng::Rng;
use papa_edge::onnx::{export, to_bytes, Opset};
use papa_edge::tract::Model;
use papa_model::card::{ModelCard, Normalization};
use papa_model::file::ModelFile;
use papa_model::layer::Layer;
use papa_model::zoo;
use papa_train::engine::{Engine, Reference};
use papa_train::model::{Input, Mode};

/// A model of `layers` with random parameters and running statistics, its card reading
/// inputs divided by `pixel_scale` and normalised with a mean and std per channel.
fn model(layers: &[Layer], input: [usize; 3], classes: usize, pixel_scale: f32) -> ModelFile {
    let channels = input[0];
    let card = Card {
        name: "test",
        pixel_scale,
        normalization: Normalization {
            mean: (0..channels).map(|c| 0.1 * c as f32 + 0.2).collect(),
            std: (0..channels).map(|c| 0.3 + 0.05 * c as f32).collect(),
        },
    };
    let batchnorm: BatchNormDraw = |rng, _| {
        [
            0.5 + rng.uniform_f32(),
            rng.uniform_f32() - 0.5,
            rng.uniform_f32() - 0.5,
            0.1 + rng.uniform_f32(),
        ]
    };
    random_model(layers, input, classes, 3, Some(batchnorm), card)
}

/// The largest difference between tract's logits on `stored` (as the data stores them) and
/// papa's on the same samples read and normalised as papa reads them.
fn max_difference(file: &ModelFile, stored: &[f32], opset: Opset) -> f32 {
    let card = &file.card;
    let spec = card.spec().unwrap();
    let onnx = Model::from_bytes(&to_bytes(&export(file, opset).unwrap())).unwrap();
    let tract = onnx.logits(stored).unwrap();
    let mut read: Vec<f32> = stored.iter().map(|v| v / card.input.pixel_scale).collect();
    let plane = card.input.height * card.input.width;
    card.normalization.apply(&mut read, plane).unwrap();
    let batch = stored.len() / spec.input_len();
    let mut engine = Reference::new(&spec, 1, batch).unwrap();
    engine
        .upload(&file.params, &vec![0.0; file.params.len()])
        .unwrap();
    let papa = engine.forward(Input::Shared(&read), Mode::Eval).unwrap();
    assert_eq!(tract.len(), papa.len());
    papa.iter()
        .zip(&tract)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn pixels(n: usize) -> Vec<f32> {
    let mut rng = Rng::new(9);
    (0..n)
        .map(|_| (rng.uniform_f32() * 255.0).floor())
        .collect()
}

#[test]
fn cnn_s_with_folded_batchnorm_matches_papa() {
    let file = model(&zoo::cnn_s(10), [1, 28, 28], 10, 255.0);
    let diff = max_difference(&file, &pixels(7 * 784), Opset::DEFAULT);
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn every_layer_kind_and_opset_matches_papa() {
    // Three-channel images, a strided conv, a BatchNorm after a ReLU (kept as a node), a
    // BatchNorm after a linear layer (folded) and a BatchNorm of a flat input.
    let layers = [
        Layer::Conv2d {
            out_channels: 4,
            kernel: 3,
            stride: 2,
            padding: 1,
        },
        Layer::Relu,
        Layer::BatchNorm,
        Layer::MaxPool2d {
            kernel: 2,
            stride: 1,
        },
        Layer::Flatten,
        Layer::BatchNorm,
        Layer::Linear { out_features: 6 },
        Layer::BatchNorm,
        Layer::Relu,
        Layer::Linear { out_features: 3 },
    ];
    let file = model(&layers, [3, 9, 9], 3, 255.0);
    for opset in Opset::MIN..=Opset::MAX {
        let diff = max_difference(&file, &pixels(5 * 243), Opset::new(opset).unwrap());
        assert!(diff < 1e-4, "opset {opset}: {diff}");
    }
}

#[test]
fn csv_features_each_a_channel_match_papa() {
    // CSV tables load as F x 1 x 1, features as they are (pixel scale 1).
    let file = model(&zoo::mlp(&[16, 8], 4), [5, 1, 1], 4, 1.0);
    let mut rng = Rng::new(4);
    let features: Vec<f32> = (0..6 * 5).map(|_| 10.0 * rng.uniform_f32() - 5.0).collect();
    let diff = max_difference(&file, &features, Opset::DEFAULT);
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn the_graph_carries_names_shapes_and_metadata() {
    let mut file = model(&zoo::cnn_s(10), [1, 28, 28], 10, 255.0);
    file.card.classes.names = (0..10).map(|c| format!("class \"{c}\"")).collect();
    let proto = export(&file, Opset::DEFAULT).unwrap();
    let graph = proto.graph.as_ref().unwrap();
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        initializers,
        [
            "input.pixel_scale",
            "input.mean",
            "input.std",
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias"
        ]
    );
    assert_eq!(
        (graph.input[0].name.as_str(), graph.output[0].name.as_str()),
        ("input", "logits")
    );
    let model = Model::from_bytes(&to_bytes(&proto)).unwrap();
    assert_eq!(model.sample_shape(), [1, 28, 28]);
    assert_eq!(model.class_names(), file.card.classes.names);
    let card = ModelCard::from_json(model.metadata("papa.model_card").unwrap()).unwrap();
    assert_eq!(card, file.card);
    assert!(model.metadata("papa.input").unwrap().contains("0 to 255"));
    // Any batch size runs.
    for n in [1, 3, 64] {
        assert_eq!(model.predict_batch(&pixels(n * 784)).unwrap().len(), n);
    }
}
