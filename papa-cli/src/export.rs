//! `papa export`: a model file as an ONNX model, for tract, onnxruntime and other runtimes.

use crate::error::CliError;
use clap::{Args, ValueEnum};
use papa_edge::onnx::{self, Opset};
use papa_model::layer::Layer;
use papa_train::checkpoint::{load_model, write_atomic};
use std::path::PathBuf;

/// What `papa export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// ONNX, f32: BatchNorm folded, the input normalisation inside the graph.
    Onnx,
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
}

/// Reads the model file, builds its graph and writes it; prints what was written.
pub fn run(args: &ExportArgs) -> Result<(), CliError> {
    let Format::Onnx = args.format;
    let opset = Opset::new(args.opset).map_err(|source| CliError::Export {
        path: args.model.clone(),
        source,
    })?;
    let model = load_model(&args.model)?;
    let proto = onnx::export(&model, opset).map_err(|source| CliError::Export {
        path: args.model.clone(),
        source,
    })?;
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
    out!(
        "{}: ONNX opset {}, {} nodes, {} bytes ({folded} of {batch_norms} BatchNorm folded); input `{}` f32 [batch, {}, {}, {}] as the dataset stores it, output `{}` [batch, {}]",
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
