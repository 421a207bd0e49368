//! Random models for papa-edge's tests: a member's initialisation, BatchNorm parameters and
//! statistics drawn away from the identity (so that folding and quantisation see real ones),
//! and a card. Each test file picks its draws; the loop over the model's ops is this one.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use papa_core::rng::Rng;
use papa_edge::onnx::{calibrate, quantize, Quantized};
use papa_model::card::{ModelCard, Normalization};
use papa_model::file::ModelFile;
use papa_model::layer::Layer;
use papa_model::plan::Op;
use papa_model::ModelSpec;

/// BatchNorm channel `k`'s scale, shift, running mean and running variance, from `rng`.
pub type BatchNormDraw = fn(&mut Rng, usize) -> [f32; 4];

/// Scales in [0.5, 1.5), small shifts and means, variances in [0.2, 1.2).
pub fn moderate_batchnorm(rng: &mut Rng, _k: usize) -> [f32; 4] {
    [
        0.5 + rng.uniform_f32(),
        0.2 * (rng.uniform_f32() - 0.3),
        0.2 * (rng.uniform_f32() - 0.5),
        0.2 + rng.uniform_f32(),
    ]
}

/// Per input channel `c`: mean 0.3 + 0.1 c, std 0.25 + 0.05 c.
pub fn normalization(channels: usize) -> Normalization {
    Normalization {
        mean: (0..channels).map(|c| 0.3 + 0.1 * c as f32).collect(),
        std: (0..channels).map(|c| 0.25 + 0.05 * c as f32).collect(),
    }
}

/// What the model's card says: its name, the stored inputs' scale and the normalisation.
pub struct Card<'a> {
    pub name: &'a str,
    pub pixel_scale: f32,
    pub normalization: Normalization,
}

impl<'a> Card<'a> {
    /// 8-bit pixels (scale 255) normalised by [`normalization`].
    pub fn pixels(name: &'a str, channels: usize) -> Self {
        Card {
            name,
            pixel_scale: 255.0,
            normalization: normalization(channels),
        }
    }
}

/// A model of `layers` on `input`: member initialisation from `seed`, then (with
/// `batchnorm`) every BatchNorm channel's parameters and statistics drawn from the same
/// generator in op order.
pub fn random_model(
    layers: &[Layer],
    input: [usize; 3],
    classes: usize,
    seed: u64,
    batchnorm: Option<BatchNormDraw>,
    card: Card<'_>,
) -> ModelFile {
    let spec = ModelSpec::new(layers, input, classes).unwrap();
    let mut rng = Rng::new(seed);
    let mut params = vec![0.0; spec.len()];
    spec.init_member(&mut rng, &mut params).unwrap();
    if let Some(draw) = batchnorm {
        for op in spec.ops() {
            if let Op::BatchNorm {
                c,
                scale,
                shift,
                mean,
                var,
                ..
            } = *op
            {
                for k in 0..c {
                    let [s, b, m, v] = draw(&mut rng, k);
                    (params[scale + k], params[shift + k]) = (s, b);
                    (params[mean + k], params[var + k]) = (m, v);
                }
            }
        }
    }
    let card = ModelCard::new(
        card.name,
        &spec,
        card.pixel_scale,
        card.normalization,
        vec![],
    );
    ModelFile { card, params }
}

/// `samples` random 8-bit samples of `model`'s input, as the dataset stores them.
pub fn stored_pixels(model: &ModelFile, samples: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let len = samples * model.card.spec().unwrap().input_len();
    (0..len)
        .map(|_| (rng.uniform_f32() * 256.0) as u8)
        .collect()
}

/// `model` quantised to int8, calibrated on the `stored` samples.
pub fn quantised(model: &ModelFile, stored: &[u8]) -> Quantized {
    let values: Vec<f32> = stored.iter().map(|&v| f32::from(v)).collect();
    quantize(model, &calibrate(model, &values).unwrap()).unwrap()
}
