//! `papa export`: a model file as an ONNX model, for tract, onnxruntime and other runtimes
//! (f32, or int8 QDQ calibrated on the model's training images), or as a flash image for
//! papa-edge's microcontroller runtime (int8 or f32; raw bytes or C source).

use crate::error::CliError;
use crate::export_members;
use clap::{Args, ValueEnum};
use papa_edge::flash;
use papa_edge::onnx::{self, Opset, DEFAULT_CALIBRATION_SAMPLES};
use papa_model::file::ModelFile;
use papa_model::layer::Layer;
use papa_train::checkpoint::{load_model, write_atomic};
use papa_train::data;
use std::path::PathBuf;

#[path = "export_fpga.rs"]
mod fpga;

/// What `papa export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// ONNX, f32: BatchNorm folded, the input normalisation inside the graph.
    Onnx,
    /// ONNX, int8 as QDQ (QuantizeLinear/DequantizeLinear around every Conv and Gemm):
    /// weights per output channel, activations per tensor, calibrated on training images.
    OnnxInt8,
    /// A flash image for papa-edge's microcontroller runtime (`--precision`, int8 by
    /// default, calibrated as onnx-int8 is): tensors used in place from flash.
    Flash,
    /// The flash image as C: `--out NAME.c` and `NAME.h` beside it (the array `NAME`,
    /// `NAME_LEN`, `NAME_ARENA_LEN`).
    C,
    /// The int8 model (calibrated as flash is) for papa-edge's FPGA blocks (papa-edge/fpga):
    /// `--out` is a directory of `$readmemh` memory files, a Verilog/C parameter header
    /// (model.vh, model.h) and the int8 runtime's per-layer golden vectors (golden/).
    Fpga,
}

/// The arithmetic of a flash image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// int8 weights and activations, int32 accumulators (TFLM's scheme).
    Int8,
    /// f32 (BatchNorm folded).
    F32,
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
    /// The file to write (written atomically; for fpga, a directory, replaced whole).
    #[arg(long)]
    out: PathBuf,
    /// onnx-int8: training images the activation ranges are measured on (the first ones of
    /// the training split).
    #[arg(long, default_value_t = DEFAULT_CALIBRATION_SAMPLES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    calibration: usize,
    /// onnx-int8, flash, c, fpga: the dataset to calibrate on (default: the one the model was
    /// trained on).
    #[arg(long)]
    data: Option<String>,
    /// flash, c: int8 or f32.
    #[arg(long, value_enum, default_value_t = Precision::Int8)]
    precision: Precision,
    /// flash, c (int8): test images the per-layer int8 error report runs on, and the
    /// comparison with each member of the run beside the model (0: neither).
    #[arg(long, default_value_t = 1000)]
    report_samples: usize,
    /// fpga: test images whose golden vectors (input, every layer's output) are written.
    #[arg(long, default_value_t = 10)]
    golden_samples: usize,
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
        Format::Flash | Format::C => return flash_export(args, &model),
        Format::Fpga => return fpga::run(args, &model),
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

/// `papa export --format flash|c`: the image (int8 calibrated on training images, or f32),
/// written atomically; for int8 the per-layer error report on test images.
fn flash_export(args: &ExportArgs, model: &ModelFile) -> Result<(), CliError> {
    let export_error = |source| CliError::Export {
        path: args.model.clone(),
        source,
    };
    let f32_image = flash::write::f32(model).map_err(export_error)?;
    let (image, calibrated) = match args.precision {
        Precision::F32 => (f32_image.clone(), None),
        Precision::Int8 => {
            let (images, source) = calibration_images(args, model)?;
            let image = export_members::int8_image(model, &images).map_err(export_error)?;
            (image, Some((images, source)))
        }
    };
    let parsed = flash::FlashModel::parse(&image).map_err(|e| flash_error(args, e))?;
    let written = match args.format {
        Format::C => {
            let symbol = c_symbol(&args.out);
            let header = args.out.with_extension("h");
            let header_name = header
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (h, c) =
                flash::write::c_source(&image, &symbol, &header_name).map_err(export_error)?;
            write_atomic(&header, h.as_bytes())?;
            write_atomic(&args.out, c.as_bytes())?;
            format!(
                "{} and {} (array `{symbol}`)",
                args.out.display(),
                header.display()
            )
        }
        _ => {
            write_atomic(&args.out, &image)?;
            args.out.display().to_string()
        }
    };
    let sample_len = model.card.input.channels * model.card.input.height * model.card.input.width;
    let kind = match &calibrated {
        None => "f32".to_string(),
        Some((images, source)) => format!(
            "int8 calibrated on {} training images of {source}",
            images.len() / sample_len.max(1)
        ),
    };
    out!(
        "{written}: flash image v{}, {kind}, {} layers, {} bytes ({} of tensors), arena {} {}",
        flash::VERSION,
        parsed.layer_count(),
        image.len(),
        parsed.tensor_bytes(),
        parsed.arena_len(),
        match args.precision {
            Precision::Int8 => "bytes (int8)",
            Precision::F32 => "f32 (4 bytes each)",
        }
    )?;
    if let (Some((images, source)), true) = (&calibrated, args.report_samples > 0) {
        let f32_model = flash::FlashModel::parse(&f32_image).map_err(|e| flash_error(args, e))?;
        let (stored, labels) = test_images(source, model, args.report_samples)?;
        let report = flash::quantization_report(&f32_model, &parsed, &stored, &labels)
            .map_err(|e| flash_error(args, e))?;
        print_report(&report, source)?;
        export_members::compare(&args.model, model, &report, images, &stored, &labels)?;
    }
    Ok(())
}

fn flash_error(args: &ExportArgs, e: impl std::fmt::Display) -> CliError {
    CliError::Export {
        path: args.model.clone(),
        source: onnx::ExportError::Flash(e.to_string()),
    }
}

/// The C identifier of the array: the output file's stem, other characters as `_`.
fn c_symbol(out: &std::path::Path) -> String {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut symbol: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !symbol.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        symbol.insert_str(0, "papa_");
    }
    symbol
}

/// The first `n` test images of `source` as the dataset stores them, and their labels.
fn test_images(source: &str, model: &ModelFile, n: usize) -> Result<(Vec<f32>, Vec<u8>), CliError> {
    let splits = data::load(source, 0.1, 0)?;
    let test = &splits.test;
    let n = n.min(test.len());
    let sample = model.card.input.channels * model.card.input.height * model.card.input.width;
    let stored = test.images[..n * sample]
        .iter()
        .map(|v| v * splits.pixel_scale)
        .collect();
    Ok((stored, test.labels[..n].to_vec()))
}

fn print_report(r: &flash::QuantizationReport, source: &str) -> Result<(), CliError> {
    out!(
        "int8 against f32, layer by layer, on the first {} test images of {source}:",
        r.samples
    )?;
    out!("| layer | f32 rms | int8 step | rms error | relative | max error |")?;
    out!("|---|---|---|---|---|---|")?;
    for (i, l) in r.layers.iter().enumerate() {
        out!(
            "| {i} | {:.4} | {:.4} | {:.4} | {:.2}% | {:.4} |",
            l.f32_rms,
            l.step,
            l.rms,
            100.0 * l.relative(),
            l.max
        )?;
    }
    out!(
        "accuracy: f32 {:.2}%, int8 {:.2}% ({:+.2} points); the two agree on {:.2}%",
        r.f32_accuracy,
        r.int8_accuracy,
        r.int8_accuracy - r.f32_accuracy,
        r.agreement
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
