//! `papa`: train a population with PAPA on real data, compare it with independent training,
//! and write out the one model.

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use papa_core::rng::Rng;
use papa_train::checkpoint::{load_model, save_model, write_atomic};
use papa_train::config::{build_model, Method, TrainConfig};
use papa_train::data::{self, Splits};
use papa_train::eval::accuracy;
use papa_train::model::{init_member, soft_cross_entropy, Input, Mode, Network};
use papa_train::optim::Sgd;
use papa_train::report::EpochRecord;
use papa_train::report::{markdown_table, write_report, MethodResult, RunReport};
use papa_train::train::{member_recipes, train_method, Progress};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

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
    Train(TrainArgs),
    /// Test accuracy of a saved model.
    Eval {
        /// A model written by `papa train` (`<out>/<method>.safetensors`).
        model: PathBuf,
        /// Dataset: a bundled name or a directory (default: the one the model was trained on).
        #[arg(long)]
        data: Option<String>,
    },
    /// Training throughput in member-steps per second.
    Bench {
        /// Population sizes to measure.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 16])]
        populations: Vec<usize>,
        /// Model.
        #[arg(long, default_value = "cnn-s")]
        model: String,
        /// Samples per member per step.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Timed steps per population size.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Worker threads (0 = all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

#[derive(Args)]
struct TrainArgs {
    /// One method (none, papa, papa-all, papa-2).
    #[arg(long, value_enum, conflicts_with = "compare")]
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
    /// Dataset: fashion-mnist, mnist, or a directory of IDX files or train.csv + test.csv.
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
    /// Settings from a TOML file (keys of TrainConfig); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output directory (results, plot, models, checkpoints).
    #[arg(long, default_value = "runs/latest", conflicts_with = "resume")]
    out: PathBuf,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Train(args) => train(args),
        Command::Eval { model, data } => eval(&model, data.as_deref()),
        Command::Bench {
            populations,
            model,
            batch,
            steps,
            threads,
        } => bench(&populations, &model, batch, steps, threads),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), String>;

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn set_threads(threads: usize) -> CliResult {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(text)
}

fn train(args: TrainArgs) -> CliResult {
    let (out, cfg) = match &args.resume {
        Some(dir) => {
            let mut cfg = TrainConfig::from_file(&dir.join("config.toml")).map_err(text)?;
            // The one setting a resumed run may change: results do not depend on it.
            cfg.threads = args.threads.unwrap_or(cfg.threads);
            (dir.clone(), cfg)
        }
        None => (args.out.clone(), configure(&args)?),
    };
    cfg.validate().map_err(text)?;
    set_threads(cfg.threads)?;
    let mut splits = data::load(&cfg.data, cfg.val_fraction, cfg.seed).map_err(text)?;
    splits.normalize();
    let shape = [
        splits.train.channels,
        splits.train.height,
        splits.train.width,
    ];
    let spec = build_model(&cfg.model, shape, splits.train.classes).map_err(text)?;
    let checkpoints = out.join("checkpoints");
    std::fs::create_dir_all(&checkpoints)
        .map_err(|e| format!("cannot create {}: {e}", checkpoints.display()))?;
    write_atomic(
        &out.join("config.toml"),
        toml::to_string(&cfg).map_err(text)?.as_bytes(),
    )
    .map_err(text)?;
    let used = match cfg.train_limit {
        0 => splits.train.len(),
        limit => limit.min(splits.train.len()),
    };
    eprintln!(
        "papa: {} members of {} ({} parameters) on {} ({} train / {} val / {} test), {} epochs, methods {:?}",
        cfg.population,
        cfg.model,
        spec.len(),
        cfg.data,
        used,
        splits.val.len(),
        splits.test.len(),
        cfg.epochs,
        cfg.methods.iter().map(|m| m.name()).collect::<Vec<_>>()
    );
    let mut results = Vec::new();
    for &method in &cfg.methods {
        let done = checkpoints.join(format!("{}.result.json", method.name()));
        let model_path = out.join(format!("{}.safetensors", method.name()));
        if done.exists() && model_path.exists() {
            let json = std::fs::read_to_string(&done).map_err(text)?;
            results.push(serde_json::from_str::<MethodResult>(&json).map_err(text)?);
            eprintln!(
                "{}: already finished, kept from {}",
                method.name(),
                done.display()
            );
            continue;
        }
        let bar = ProgressBar::new(0).with_message(method.name());
        bar.set_style(
            ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} steps {elapsed}<{eta}")
                .map_err(text)?
                .progress_chars("=> "),
        );
        let progress = BarProgress {
            bar: &bar,
            epochs: cfg.epochs,
        };
        let checkpoint = checkpoints.join(format!("{}.safetensors", method.name()));
        let outcome = train_method(&cfg, &splits, &spec, method, Some(&checkpoint), &progress)
            .map_err(text)?;
        bar.finish_and_clear();
        save_model(
            &model_path,
            &spec,
            &outcome.model,
            &model_metadata(&cfg, &splits, &outcome.result),
        )
        .map_err(text)?;
        write_atomic(
            &done,
            serde_json::to_string_pretty(&outcome.result)
                .map_err(text)?
                .as_bytes(),
        )
        .map_err(text)?;
        eprintln!(
            "{}: final model {:.2}% ({}), members mean {:.2}%, {:.0} s",
            method.name(),
            outcome.result.final_model,
            outcome.result.final_model_is,
            outcome.result.members_mean,
            outcome.result.wall_seconds
        );
        results.push(outcome.result);
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = RunReport {
        dataset: cfg.data.clone(),
        command,
        results,
        recipes: member_recipes(&cfg, splits.train.hflip_ok),
    };
    write_report(&report, &out).map_err(text)?;
    println!("{}", markdown_table(&report));
    println!(
        "written to {}: results.json, results.md, accuracy.svg, <method>.safetensors",
        out.display()
    );
    Ok(())
}

/// A progress bar over the steps, and one line per epoch above it.
struct BarProgress<'a> {
    bar: &'a ProgressBar,
    epochs: usize,
}

impl Progress for BarProgress<'_> {
    fn step(&self, done: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    fn epoch(&self, r: &EpochRecord) {
        let members = &r.member_test_acc;
        let (lo, hi) = members
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &a| {
                (lo.min(a), hi.max(a))
            });
        let distance =
            r.distance_to_mean.iter().sum::<f64>() / r.distance_to_mean.len().max(1) as f64;
        let average = r
            .average_test_acc
            .map_or("n/a".to_string(), |a| format!("{a:.2}%"));
        self.bar.println(format!(
            "{:>9} epoch {}/{}: loss {:.3}, members {lo:.2}-{hi:.2}%, average model {average}, \
             distance to mean {distance:.3}, pairwise cosine {:.3}, {:.0} s",
            self.bar.message(),
            r.epoch + 1,
            self.epochs,
            r.train_loss,
            r.mean_pairwise_cosine,
            r.seconds
        ));
    }
}

/// The run's settings: defaults, then the TOML file, then the flags.
fn configure(args: &TrainArgs) -> Result<TrainConfig, String> {
    let mut cfg = match &args.config {
        Some(path) => TrainConfig::from_file(path).map_err(text)?,
        None => TrainConfig::default(),
    };
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

/// What `papa eval` and the exporters need besides the weights.
fn model_metadata(
    cfg: &TrainConfig,
    splits: &Splits,
    result: &MethodResult,
) -> BTreeMap<String, String> {
    let list = |v: &[f32]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let d = &splits.train;
    BTreeMap::from([
        ("model".to_string(), cfg.model.clone()),
        ("data".to_string(), cfg.data.clone()),
        (
            "input_shape".to_string(),
            format!("{},{},{}", d.channels, d.height, d.width),
        ),
        ("classes".to_string(), d.classes.to_string()),
        ("normalize_mean".to_string(), list(&splits.mean)),
        ("normalize_std".to_string(), list(&splits.std)),
        ("val_fraction".to_string(), cfg.val_fraction.to_string()),
        ("seed".to_string(), cfg.seed.to_string()),
        ("method".to_string(), result.method.clone()),
        ("final_model_is".to_string(), result.final_model_is.clone()),
        ("test_accuracy".to_string(), result.final_model.to_string()),
    ])
}

fn eval(path: &Path, data_source: Option<&str>) -> CliResult {
    let loaded = load_model(path).map_err(text)?;
    let meta = |key: &str| {
        loaded
            .metadata
            .get(key)
            .cloned()
            .ok_or_else(|| format!("{}: metadata lacks `{key}`", path.display()))
    };
    let floats = |key: &str| -> Result<Vec<f32>, String> {
        meta(key)?
            .split(',')
            .map(|v| {
                v.parse::<f32>()
                    .map_err(|e| format!("{}: bad `{key}`: {e}", path.display()))
            })
            .collect()
    };
    let source = match data_source {
        Some(s) => s.to_string(),
        None => meta("data")?,
    };
    let val_fraction: f64 = meta("val_fraction")?.parse().map_err(text)?;
    let seed: u64 = meta("seed")?.parse().map_err(text)?;
    let mut splits = data::load(&source, val_fraction, seed).map_err(text)?;
    let (mean, std) = (floats("normalize_mean")?, floats("normalize_std")?);
    let test = &mut splits.test;
    let plane = test.height * test.width;
    if mean.len() != test.channels || std.len() != test.channels {
        return Err(format!(
            "{}: normalisation has {} channels, the data {}",
            path.display(),
            mean.len(),
            test.channels
        ));
    }
    // The training run's normalisation, not one recomputed here: the same bits go in.
    for (k, values) in test.images.chunks_mut(plane.max(1)).enumerate() {
        let c = k % test.channels;
        values.iter_mut().for_each(|v| *v = (*v - mean[c]) / std[c]);
    }
    let shape = [test.channels, test.height, test.width];
    let spec = build_model(&meta("model")?, shape, test.classes).map_err(text)?;
    let acc = accuracy(&spec, &loaded.params, test).map_err(text)?;
    println!(
        "{}: test accuracy {:.2}% on {} samples of {source}",
        path.display(),
        acc.members[0],
        test.len()
    );
    if let Ok(recorded) = meta("test_accuracy") {
        println!("recorded at training time: {recorded}%");
    }
    Ok(())
}

fn bench(
    populations: &[usize],
    model: &str,
    batch: usize,
    steps: usize,
    threads: usize,
) -> CliResult {
    set_threads(threads)?;
    let spec = build_model(model, [1, 28, 28], 10).map_err(text)?;
    let (n, classes, sl) = (spec.len(), spec.classes(), spec.input_len());
    println!("| model | P | batch | threads | member-steps/s | ms per step |");
    println!("|---|---|---|---|---|---|");
    for &p in populations {
        let mut rng = Rng::new(7);
        let mut params = vec![0.0; p * n];
        for (j, m) in params.chunks_exact_mut(n).enumerate() {
            init_member(&spec, &mut rng.fork(j as u64), m).map_err(text)?;
        }
        let input: Vec<f32> = (0..p * batch * sl).map(|_| rng.uniform_f32()).collect();
        let mut targets = vec![0.0; p * batch * classes];
        targets
            .iter_mut()
            .step_by(classes + 1)
            .for_each(|t| *t = 1.0);
        let (mut dlogits, mut losses, mut velocity) =
            (vec![0.0; targets.len()], vec![0.0; p], vec![0.0; p * n]);
        let mut net = Network::new(&spec, p, batch).map_err(text)?;
        let sgd = Sgd::default();
        let trainable = spec.trainable_ranges();
        let mut step = || -> CliResult {
            let logits = net
                .forward(&mut params, Input::PerMember(&input), Mode::Train)
                .map_err(text)?;
            soft_cross_entropy(logits, &targets, classes, &mut dlogits, &mut losses)
                .map_err(text)?;
            let grads = net.backward(&params, &dlogits).map_err(text)?;
            sgd.step(&mut params, grads, &mut velocity, n, &trainable, 0.01)
                .map_err(text)
        };
        step()?;
        let started = Instant::now();
        for _ in 0..steps {
            step()?;
        }
        let per_step = started.elapsed().as_secs_f64() / steps.max(1) as f64;
        let threads = rayon::current_num_threads();
        println!(
            "| {model} | {p} | {batch} | {threads} | {:.1} | {:.1} |",
            p as f64 / per_step,
            per_step * 1e3
        );
    }
    Ok(())
}
