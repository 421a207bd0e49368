//! Every way a command can fail: each library error converts in, and `main` prints the chain.

use papa_model::card::CardError;
use papa_train::checkpoint::CheckpointError;
use papa_train::config::ConfigError;
use papa_train::data::DataError;
use papa_train::engine::EngineError;
use papa_train::eval::EvalError;
use papa_train::model;
use papa_train::optim::OptimError;
use papa_train::report::ReportError;
use papa_train::train::TrainError;
use std::path::PathBuf;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Training.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Evaluation.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// The engine.
    #[error(transparent)]
    Model(#[from] model::Error),
    /// The optimizer.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// The training engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A model card.
    #[error(transparent)]
    Card(#[from] CardError),
    /// A file in the run directory.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The results.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The plot.
    #[cfg(feature = "plot")]
    #[error(transparent)]
    Plot(#[from] papa_cli::plot::PlotError),
    /// A finished method's result file.
    #[error("{}: {source}", path.display())]
    Result {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: serde_json::Error,
    },
    /// The results could not be encoded.
    #[error("cannot encode the results: {0}")]
    Json(#[from] serde_json::Error),
    /// The command's output could not be written (a closed pipe, a full disk).
    #[error("cannot write the output to stdout: {0}")]
    Stdout(std::io::Error),
    /// The worker threads could not be started.
    #[error("cannot start the worker threads: {0}")]
    Threads(#[from] rayon::ThreadPoolBuildError),
    /// `--cpu-path` names a path this CPU cannot run.
    #[error("--cpu-path: {0}")]
    CpuPath(#[from] papa_cpu::IsaError),
    /// `--device cuda` on a machine or build that cannot train there.
    #[error("--device cuda: {0}")]
    Device(String),
    /// The run directory could not be created.
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `--resume` names a directory without a run's settings.
    #[error("{} holds no run to resume (no {}): start the run again without --resume", dir.display(), crate::run_dir::CONFIG_FILE)]
    NothingToResume {
        /// The directory.
        dir: PathBuf,
    },
    /// `--out` holds a run of other settings.
    #[error("{} holds another run ({differs}); choose another --out, continue it with --resume, or replace it with --force", out.display())]
    OtherRun {
        /// The directory.
        out: PathBuf,
        /// What differs.
        differs: String,
    },
    /// `--resume` of a run that this papa, machine or data would not continue bit for bit.
    #[error("{} cannot be resumed here: it holds a run of {differs}", dir.display())]
    ResumeElsewhere {
        /// The directory.
        dir: PathBuf,
        /// What differs.
        differs: String,
    },
    /// A file of a replaced run could not be removed.
    #[error("cannot remove {}: {source}", path.display())]
    Remove {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model without provenance evaluated without `--data`.
    #[error("{}: the model card records no dataset; name one with --data", path.display())]
    NoDataset {
        /// The model file.
        path: PathBuf,
    },
    /// A model holding a NaN or infinite parameter.
    #[error("{}: tensor `{tensor}` holds {value}: the model is broken (retrain it)", path.display())]
    NonFinite {
        /// The model file.
        path: PathBuf,
        /// The tensor holding it.
        tensor: String,
        /// The value.
        value: f32,
    },
    /// A model evaluated on data of another shape or number of classes.
    #[error("{}: the model takes {} x {} x {} inputs in {} classes, the data {data} has {} x {} x {} in {}", path.display(), model[0], model[1], model[2], model[3], found[0], found[1], found[2], found[3])]
    DataDoesNotFit {
        /// The model file.
        path: PathBuf,
        /// The dataset.
        data: String,
        /// The model's channels, height, width and classes.
        model: [usize; 4],
        /// The data's.
        found: [usize; 4],
    },
    /// A model that cannot be exported.
    #[cfg(feature = "edge")]
    #[error("{}: {source}", path.display())]
    Export {
        /// The model file.
        path: PathBuf,
        /// The exporter's error.
        source: papa_edge::onnx::ExportError,
    },
    /// A model the FPGA blocks cannot express.
    #[cfg(feature = "edge")]
    #[error("{}: {source}", path.display())]
    Fpga {
        /// The model file.
        path: PathBuf,
        /// What the FPGA export refused.
        source: papa_edge::fpga::FpgaError,
    },
    /// An ONNX model that cannot be loaded or run.
    #[cfg(feature = "edge")]
    #[error("{}: {source}", path.display())]
    Onnx {
        /// The ONNX file.
        path: PathBuf,
        /// The runner's error.
        source: papa_edge::tract::Error,
    },
    /// An ONNX model run on data of another shape or number of classes.
    #[cfg(feature = "edge")]
    #[error("{}: the model takes samples of {model}, the data {data} has {found}", path.display())]
    OnnxDataDoesNotFit {
        /// The ONNX file.
        path: PathBuf,
        /// The dataset.
        data: String,
        /// The model's sample shape and classes.
        model: String,
        /// The data's.
        found: String,
    },
    /// A model evaluated on data stored otherwise than its training data.
    #[error("{}: the model reads inputs divided by {model}, the data {data} is stored divided by {found}", path.display())]
    PixelScale {
        /// The model file.
        path: PathBuf,
        /// The card's pixel scale.
        model: f32,
        /// The dataset.
        data: String,
        /// The dataset's pixel scale.
        found: f32,
    },
}

/// The error and its causes, one per line; a cause whose text the message already shows is
/// left out.
pub fn report(error: &dyn std::error::Error) -> String {
    let mut text = format!("error: {error}");
    let mut shown = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let line = e.to_string();
        if !shown.contains(&line) {
            text.push_str(&format!("\n  caused by: {line}"));
            shown.push_str(&line);
        }
        cause = e.source();
    }
    text
}
