//! `papa`: train a population with PAPA on real data, compare it with independent training,
//! and write out the one model.

/// Prints a line of the command's output; a closed or full stdout is an error, not a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::error::CliError::Stdout)
    }};
}

/// Prints a line for the user on stderr; should stderr be unwritable (a full disk under a
/// log file), the line is lost rather than the run.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod bench;
mod error;
mod eval;
#[cfg(feature = "edge")]
mod export;
#[cfg(feature = "edge")]
mod export_members;
#[cfg(feature = "edge")]
mod infer;
mod progress;
mod run_dir;
mod train;

use clap::{Parser, Subcommand};
use error::CliError;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "papa",
    version,
    about = "Population Parameter Averaging: train many, ship one"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a population (default: PAPA against independent training on Fashion-MNIST).
    Train(train::TrainArgs),
    /// Test accuracy of a saved model.
    Eval {
        /// A model written by `papa train` (`<out>/<method>.safetensors`).
        model: PathBuf,
        /// Dataset: a bundled name or a directory (default: the one the model was trained on).
        #[arg(long)]
        data: Option<String>,
    },
    /// Training throughput in member-steps per second.
    Bench(bench::BenchArgs),
    #[cfg(feature = "edge")]
    /// Write a model as ONNX (BatchNorm folded, input normalisation in the graph).
    Export(export::ExportArgs),
    #[cfg(feature = "edge")]
    /// Test accuracy, latency and throughput of an ONNX model in tract.
    Infer(infer::InferArgs),
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Train(args) => train::run(args),
        Command::Eval { model, data } => eval::run(&model, data.as_deref()),
        Command::Bench(args) => bench::run(&args),
        #[cfg(feature = "edge")]
        Command::Export(args) => export::run(&args),
        #[cfg(feature = "edge")]
        Command::Infer(args) => infer::run(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            note!("{}", error::report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Sets the worker threads of every parallel section (0 = all cores).
fn set_threads(threads: usize) -> Result<(), CliError> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?)
}
