//! `papa export`: a model file as an ONNX model, for tract, onnxruntime and other runtimes;
//! f32, or int8 (QDQ) calibrated on the model's training images.

use crate::error::CliError;
use clap::{Args, ValueEnum};
use papa_edge::onnx::{self, Opset, DEFAULT_CALIBRATION_SAMPLES};
use papa_model::file::ModelFile;
use papa_model::layer::Layer;
use papa_train::checkpoint::{load_model, write_atomic};
use papa_train::data;
use std::path::PathBuf;

/// What `papa export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// ONNX, f32: BatchNorm folded, the input normalisation inside the graph.
    Onnx,
    /// ONNX, int8 as QDQ (QuantizeLinear/DequantizeLinear around every Conv and Gemm):
    /// weights per output channel, activations per tensor, calibrated on training images.
    OnnxInt8,
}

#[derive(Args)]
pub struct ExportArgs {
    /// A model written by `papa train` (`<out>/<method>.safetensors`).
    model: PathBuf,
    /// The output format.
    #[arg(long, value_enum, default_value_t = Format::Onnx)]
    format: Format,
    /// The ONNX operator set (13 to 18).
    #[arg(long, default_value_t = Opset::DEFAULT.version())]
    opset: i64,
    /// The file to write (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// onnx-int8: training images the activation ranges are measured on (the first ones of
    /// the training split).
    #[arg(long, default_value_t = DEFAULT_CALIBRATION_SAMPLES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    calibration: usize,
    /// onnx-int8: the dataset to calibrate on (default: the one the model was trained on).
    #[arg(long)]
    data: Option<String>,
}

/// Reads the model file, builds its graph and writes it; prints what was written.
pub fn run(args: &ExportArgs) -> Result<(), CliError> {
    let export_error = |source| CliError::Export {
        path: args.model.clone(),
        source,
    };
    let opset = Opset::new(args.opset).map_err(export_error)?;
    let model = load_model(&args.model)?;
    let (proto, quantised) = match args.format {
        Format::Onnx => (onnx::export(&model, opset).map_err(export_error)?, None),
        Format::OnnxInt8 => {
            let (images, source) = calibration_images(args, &model)?;
            let calibration = onnx::calibrate(&model, &images).map_err(export_error)?;
            let q = onnx::quantize(&model, &calibration).map_err(export_error)?;
            let proto = onnx::export_int8(&q, opset).map_err(export_error)?;
            (proto, Some((calibration.samples, source)))
        }
    };
    let bytes = onnx::to_bytes(&proto);
    write_atomic(&args.out, &bytes)?;
    let ops: Vec<&str> = proto
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .map(|n| n.op_type.as_str())
        .collect();
    let batch_norms = model
        .card
        .layers
        .iter()
        .filter(|l| matches!(l, Layer::BatchNorm))
        .count();
    let folded =
        batch_norms.saturating_sub(ops.iter().filter(|&&op| op == "BatchNormalization").count());
    let input = &model.card.input;
    let kind = match &quantised {
        None => "f32".to_string(),
        Some((samples, source)) => {
            format!("int8 QDQ calibrated on {samples} training images of {source}")
        }
    };
    out!(
        "{}: ONNX opset {}, {kind}, {} nodes, {} bytes ({folded} of {batch_norms} BatchNorm folded); input `{}` f32 [batch, {}, {}, {}] as the dataset stores it, output `{}` [batch, {}]",
        args.out.display(),
        opset.version(),
        ops.len(),
        bytes.len(),
        papa_edge::names::INPUT,
        input.channels,
        input.height,
        input.width,
        papa_edge::names::OUTPUT,
        model.card.classes.count
    )
}

/// The first `--calibration` training images of the model's dataset (or `--data`), as the
/// dataset stores them; and the dataset's name.
fn calibration_images(
    args: &ExportArgs,
    model: &ModelFile,
) -> Result<(Vec<f32>, String), CliError> {
    let card = &model.card;
    let source = match (&args.data, &card.provenance) {
        (Some(d), _) => d.clone(),
        (None, Some(p)) => p.dataset.clone(),
        (None, None) => {
            return Err(CliError::NoDataset {
                path: args.model.clone(),
            })
        }
    };
    let splits = data::load(&source, 0.1, 0)?;
    let train = &splits.train;
    let i = &card.input;
    let shape = [train.channels, train.height, train.width, train.classes];
    let wanted = [i.channels, i.height, i.width, card.classes.count];
    if shape != wanted {
        return Err(CliError::DataDoesNotFit {
            path: args.model.clone(),
            data: source,
            model: wanted,
            found: shape,
        });
    }
    if splits.pixel_scale != i.pixel_scale {
        return Err(CliError::PixelScale {
            path: args.model.clone(),
            model: i.pixel_scale,
            data: source,
            found: splits.pixel_scale,
        });
    }
    let n = args.calibration.min(train.len());
    // The loader divides by the pixel scale; multiplying back gives the stored values.
    let images = train.images[..n * train.sample_len()]
        .iter()
        .map(|v| v * splits.pixel_scale)
        .collect();
    Ok((images, source))
}
