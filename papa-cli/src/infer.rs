//! `papa infer`: an ONNX model's test accuracy, latency and throughput in tract.

use crate::error::CliError;
use clap::Args;
use papa_edge::names::{META_CARD, META_QUANTIZATION};
use papa_edge::tract::Model;
use papa_model::card::ModelCard;
use papa_train::data;
use std::path::PathBuf;
use std::time::Instant;

/// Samples timed one by one for the latency.
const LATENCY_SAMPLES: usize = 200;

#[derive(Args)]
pub struct InferArgs {
    /// An ONNX classifier (e.g. written by `papa export`).
    model: PathBuf,
    /// Dataset: a bundled name or a directory; its test split is used.
    #[arg(long)]
    data: String,
    /// Samples per run for the accuracy and the throughput.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    batch: usize,
}

/// Loads the model in tract and the data's test split as the dataset stores it, then
/// measures the accuracy (and throughput) in batches of `--batch`, and the latency of one
/// sample at a time.
pub fn run(args: &InferArgs) -> Result<(), CliError> {
    let onnx_error = |source| CliError::Onnx {
        path: args.model.clone(),
        source,
    };
    let model = Model::load(&args.model).map_err(onnx_error)?;
    let splits = data::load(&args.data, 0.1, 0)?;
    let test = &splits.test;
    let shape = [test.channels, test.height, test.width];
    if model.sample_shape() != shape || model.classes() != test.classes {
        return Err(CliError::OnnxDataDoesNotFit {
            path: args.model.clone(),
            data: args.data.clone(),
            model: format!("{:?} in {} classes", model.sample_shape(), model.classes()),
            found: format!("{shape:?} in {} classes", test.classes),
        });
    }
    // A papa model knows how its data was stored; one read otherwise would be silently wrong.
    if let Some(card) = model
        .metadata(META_CARD)
        .and_then(|j| ModelCard::from_json(j).ok())
    {
        if card.input.pixel_scale != splits.pixel_scale {
            return Err(CliError::PixelScale {
                path: args.model.clone(),
                model: card.input.pixel_scale,
                data: args.data.clone(),
                found: splits.pixel_scale,
            });
        }
    }
    // The loader divides by the pixel scale; multiplying back gives the stored values (for
    // 8-bit pixels, v / 255 * 255 is v again in f32).
    let stored: Vec<f32> = test.images.iter().map(|v| v * splits.pixel_scale).collect();
    let sample = test.sample_len();
    let start = Instant::now();
    let mut correct = 0usize;
    for (inputs, labels) in stored
        .chunks(args.batch * sample)
        .zip(test.labels.chunks(args.batch))
    {
        let predictions = model.predict_batch(inputs).map_err(onnx_error)?;
        correct += predictions
            .iter()
            .zip(labels)
            .filter(|(p, &l)| p.class == usize::from(l))
            .count();
    }
    let throughput = test.len() as f64 / start.elapsed().as_secs_f64();
    let timed = test.len().min(LATENCY_SAMPLES);
    let mut latencies = Vec::with_capacity(timed);
    for one in stored.chunks_exact(sample).take(timed) {
        let t = Instant::now();
        model.predict(one).map_err(onnx_error)?;
        latencies.push(t.elapsed().as_secs_f64());
    }
    latencies.sort_by(f64::total_cmp);
    let median = latencies.get(timed / 2).copied().unwrap_or(0.0);
    // tract has no integer kernels for QDQ: it dequantises and computes in f32.
    let how = if model.metadata(META_QUANTIZATION).is_some() {
        "tract; int8 QDQ run as f32 arithmetic on the dequantised values (fake quantisation)"
    } else {
        "tract, f32"
    };
    out!(
        "{}: test accuracy {:.2}% on {} samples of {} ({how})",
        args.model.display(),
        100.0 * correct as f64 / test.len().max(1) as f64,
        test.len(),
        args.data
    )?;
    out!(
        "latency at batch 1: {:.1} us per sample (median of {timed}); throughput at batch {}: {:.0} samples/s (one thread)",
        median * 1e6,
        args.batch,
        throughput
    )
}
