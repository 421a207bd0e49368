//! `papa train`: the run's settings, then each method trained, saved and reported.

use crate::error::CliError;
use crate::progress::MethodProgress;
use crate::run_dir;
use clap::Args;
use papa_cpu::Isa;
use papa_train::checkpoint::{save_model, write_atomic};
use papa_train::config::{build_model, Method, TrainConfig};
use papa_train::data::{self, Splits};
use papa_train::engine::{CpuEngine, Engine};
use papa_train::model::ModelSpec;
use papa_train::report::{
    markdown_table, verdicts, write_report, MethodResult, RunRecord, RunReport,
};
use papa_train::train::{member_recipes, model_card, train_on, NUMERICS};
use std::path::{Path, PathBuf};

/// Where a run goes unless told: the latest run only, replaced by the next.
const DEFAULT_OUT: &str = "runs/latest";

#[derive(Args)]
pub struct TrainArgs {
    /// One method (none, papa, papa-all, papa-2).
    #[arg(long, conflicts_with = "compare")]
    method: Option<Method>,
    /// Run all four methods on the same seeds and compare them in one table.
    #[arg(long)]
    compare: bool,
    /// Members.
    #[arg(long)]
    population: Option<usize>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Model: cnn-s, mlp or mlp:W1,W2,...
    #[arg(long)]
    model: Option<String>,
    /// Dataset: fashion-mnist, mnist, digits, spam (bundled), or a directory of IDX files or
    /// train.csv + test.csv.
    #[arg(long)]
    data: Option<String>,
    /// Seed of everything.
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads (0 = all cores); results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Training samples to use (0 = the whole training split).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Settings from a TOML file (keys of TrainConfig); repeat it to layer files, a later
    /// file's keys over an earlier one's; flags override them all.
    #[arg(long)]
    config: Vec<PathBuf>,
    /// Output directory (results, plot, models, checkpoints). It holds one run: a directory
    /// with another run's settings is refused (the default, runs/latest, is replaced).
    #[arg(long, default_value = DEFAULT_OUT, conflicts_with = "resume")]
    out: PathBuf,
    /// Replace the other run that --out holds.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Continue the run in this directory from its last checkpoint, with its own settings
    /// (only --threads may change; results do not depend on it).
    #[arg(long, conflicts_with_all = ["method", "compare", "population", "epochs", "model", "data", "seed", "train_limit", "config"])]
    resume: Option<PathBuf>,
    /// The CPU engine's path: portable, avx2 or avx512 (default: the fastest this CPU has;
    /// a resumed run keeps its own). Only the matrix products' bits depend on it, so a run
    /// recorded on another machine's path is reproduced, bit for bit, wherever that path runs.
    #[arg(long, conflicts_with = "resume")]
    cpu_path: Option<Isa>,
    /// Where the population trains: cpu, or cuda (GPU 0: papa-cuda's engine trains the
    /// whole population there as one batched computation, with the same trainer).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    /// With --device cuda: let cuBLAS use TF32 tensor cores for the GEMMs (faster, about
    /// 1e-3 relative per product; off by default, so that the GPU matches the CPU engine).
    /// The CPU engine has no TF32: there it changes nothing.
    #[arg(long)]
    tf32: bool,
}

/// Why `--device cuda` cannot work in this build.
#[cfg(not(feature = "cuda"))]
const NO_CUDA_FEATURE: &str = "this papa was built without its `cuda` feature";

/// Where the population trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Device {
    /// The CPU engine, on the fastest path this CPU has.
    Cpu,
    /// GPU 0, through papa-cuda.
    Cuda,
}

/// Refuses `--device cuda` without a usable GPU (papa-cuda's probe of the driver and the
/// device), saying why. Checked before the data is read or anything is written.
fn check_device(device: Device) -> Result<(), CliError> {
    if device == Device::Cpu {
        return Ok(());
    }
    #[cfg(feature = "cuda")]
    let why = match papa_cuda::Gpu::new(0) {
        Err(e) => format!("no usable GPU: {e}"),
        Ok(_) => return Ok(()),
    };
    #[cfg(not(feature = "cuda"))]
    let why = NO_CUDA_FEATURE.to_string();
    Err(CliError::Device(why))
}

/// The run's settings: defaults, then the TOML files in order, then the flags.
fn configure(args: &TrainArgs) -> Result<TrainConfig, CliError> {
    let mut cfg = TrainConfig::from_files(&args.config)?;
    if args.compare {
        cfg.methods = Method::ALL.to_vec();
    } else if let Some(m) = args.method {
        cfg.methods = vec![m];
    }
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = args.$field.clone() { cfg.$field = v; } )* };
    }
    set!(population, epochs, model, data, seed, threads, train_limit);
    Ok(cfg)
}

/// Trains every method of the settings into the run directory and prints the comparison.
pub fn run(args: TrainArgs) -> Result<(), CliError> {
    let isa = cpu_path(&args)?;
    check_device(args.device)?;
    let (out, cfg) = match &args.resume {
        Some(dir) => {
            let config = dir.join(run_dir::CONFIG_FILE);
            if !config.exists() {
                // e.g. killed while writing its first file: nothing was trained yet.
                return Err(CliError::NothingToResume { dir: dir.clone() });
            }
            let mut cfg = TrainConfig::from_file(&config)?;
            // The one setting a resumed run may change: results do not depend on it.
            cfg.threads = args.threads.unwrap_or(cfg.threads);
            (dir.clone(), cfg)
        }
        None => (args.out.clone(), configure(&args)?),
    };
    cfg.validate()?;
    crate::set_threads(cfg.threads)?;
    let mut splits = data::load_with(&cfg.data, &cfg.load_options())?;
    splits.normalize_over(cfg.normalize_over)?;
    let shape = [
        splits.train.channels,
        splits.train.height,
        splits.train.width,
    ];
    // Settings that depend on the data (batch, warm-up) are refused before --out is touched.
    papa_train::train::check(&cfg, &splits)?;
    let spec = build_model(&cfg.model, shape, splits.train.classes)?;
    // Built before anything is written, so that a population too big for this machine is
    // refused without leaving a half-made run directory; every method reuses it.
    let capacity = cfg.engine_capacity();
    match args.device {
        Device::Cpu => {
            let engine = CpuEngine::with_isa(&spec, cfg.population, capacity, isa)?;
            train_all(engine, &args, &out, &cfg, &splits, &spec)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            let precision = if args.tf32 {
                papa_cuda::Precision::Tf32
            } else {
                papa_cuda::Precision::Fp32
            };
            let engine = papa_cuda::Gpu::new(0)
                .and_then(|gpu| {
                    papa_cuda::CudaEngine::new(&gpu, &spec, cfg.population, capacity, precision)
                })
                .map_err(|e| CliError::Device(format!("the GPU engine: {e}")))?;
            train_all(engine, &args, &out, &cfg, &splits, &spec)
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(CliError::Device(NO_CUDA_FEATURE.into())),
    }
}

/// The CPU engine's path: the one asked for (if this CPU has it), a resumed run's own (if
/// this CPU has it; else the detected one, which the resume check then refuses by name), or
/// the fastest this CPU has.
fn cpu_path(args: &TrainArgs) -> Result<Isa, CliError> {
    if args.device != Device::Cpu && args.cpu_path.is_some() {
        return Err(CliError::Device(
            "--cpu-path chooses the CPU engine's path; the GPU engine has none".into(),
        ));
    }
    if let Some(isa) = args.cpu_path {
        return Ok(isa.checked()?);
    }
    let recorded = args.resume.as_deref().and_then(run_dir::recorded_cpu_path);
    Ok(recorded
        .filter(|isa| isa.is_supported())
        .unwrap_or_else(Isa::detect))
}

/// Trains every method of `cfg` on `engine` into `out` (claimed or resumed here) and prints
/// the comparison: the same trainer, data orders and member recipes on every engine.
fn train_all<E: Engine>(
    mut engine: E,
    args: &TrainArgs,
    out: &Path,
    cfg: &TrainConfig,
    splits: &Splits,
    spec: &ModelSpec,
) -> Result<(), CliError> {
    let record = RunRecord {
        numerics: NUMERICS,
        cpu_path: engine.path(),
        data: splits.identity.clone(),
    };
    if args.resume.is_some() {
        run_dir::check_resume(out, &record)?;
    } else {
        let replace = args.force || out == Path::new(DEFAULT_OUT);
        run_dir::claim(out, cfg, &record, replace)?;
    }
    let checkpoints = out.join("checkpoints");
    std::fs::create_dir_all(&checkpoints).map_err(|source| CliError::CreateDir {
        path: checkpoints.clone(),
        source,
    })?;
    run_dir::mark(out, cfg, &record)?;
    // Writes killed by an earlier interruption leave temp files nothing else would clear.
    for dir in [out, checkpoints.as_path()] {
        papa_train::checkpoint::remove_stale_temps_in(dir);
    }
    let used = match cfg.train_limit {
        0 => splits.train.len(),
        limit => limit.min(splits.train.len()),
    };
    note!(
        "papa: {} members of {} ({} parameters) on {} ({} classes; {} train / {} val / {} test), {} epochs, methods {:?}",
        cfg.population,
        cfg.model,
        spec.len(),
        cfg.data,
        spec.classes(),
        used,
        splits.val.len(),
        splits.test.len(),
        cfg.epochs,
        cfg.methods.iter().map(|m| m.name()).collect::<Vec<_>>()
    );
    let mut timings = run_dir::timings(out);
    let mut results = Vec::new();
    for &method in &cfg.methods {
        let done = checkpoints.join(format!("{}.result.json", method.name()));
        let model_path = out.join(format!("{}.safetensors", method.name()));
        if done.exists() && model_path.exists() {
            let parse = |source| CliError::Result {
                path: done.clone(),
                source,
            };
            let json =
                std::fs::read_to_string(&done).map_err(|e| parse(serde_json::Error::io(e)))?;
            let mut kept = serde_json::from_str::<MethodResult>(&json).map_err(parse)?;
            // Result files hold no timings: the invocation that trained it kept its own.
            kept.wall_seconds = timings.get(method.name()).copied().unwrap_or(f64::NAN);
            results.push(kept);
            note!(
                "{}: already finished, kept from {}",
                method.name(),
                done.display()
            );
            continue;
        }
        let progress = MethodProgress::new(method.name(), cfg.epochs);
        let checkpoint = checkpoints.join(format!("{}.safetensors", method.name()));
        let outcome = train_on(
            &mut engine,
            cfg,
            splits,
            method,
            Some(&checkpoint),
            &progress,
        )?;
        progress.finish();
        let card = model_card(cfg, splits, spec, &outcome.result);
        save_model(&model_path, &card, &outcome.model)?;
        write_atomic(
            &done,
            serde_json::to_string_pretty(&outcome.result)?.as_bytes(),
        )?;
        note!(
            "{}: final model {:.2}% ({}), members mean {:.2}%, {:.0} s",
            method.name(),
            outcome.result.final_model,
            outcome.result.final_model_is,
            outcome.result.members_mean,
            outcome.result.wall_seconds
        );
        timings.insert(method.name().into(), outcome.result.wall_seconds);
        run_dir::write_timings(out, &timings)?;
        results.push(outcome.result);
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = RunReport {
        dataset: cfg.data.clone(),
        command,
        results,
        recipes: member_recipes(cfg, splits.train.hflip_ok),
    };
    write_report(&report, out)?;
    #[cfg(feature = "plot")]
    papa_cli::plot::plot_history(&report, &out.join("accuracy.svg"))?;
    out!("{}", markdown_table(&report))?;
    for line in verdicts(&report) {
        out!("{line}")?;
    }
    out!(
        "written to {}: results.json, results.md, {}<method>.safetensors",
        out.display(),
        if cfg!(feature = "plot") {
            "accuracy.svg, "
        } else {
            ""
        }
    )?;
    Ok(())
}
