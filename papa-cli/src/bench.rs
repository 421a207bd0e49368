//! `papa bench`: training throughput of the CPU engine in member-steps per second.

use crate::error::CliError;
use clap::Args;
use papa_core::rng::Rng;
use papa_train::config::build_model;
use papa_train::engine::{CpuEngine, Engine};
use papa_train::model::{self, soft_cross_entropy, Input, Mode};
use papa_train::optim::Sgd;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// Population sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 16])]
    populations: Vec<usize>,
    /// Model.
    #[arg(long, default_value = "cnn-s")]
    model: String,
    /// Samples per member per step.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed steps per population size (at least 1).
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    steps: usize,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Times full training steps (forward, loss, backward, SGD) on random 28 x 28 images, one
/// warm-up step first, and prints a table.
pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    crate::set_threads(args.threads)?;
    let (model, batch) = (args.model.as_str(), args.batch);
    let spec = build_model(model, [1, 28, 28], 10)?;
    let (n, classes, sl) = (spec.len(), spec.classes(), spec.input_len());
    out!("| model | CPU path | P | batch | threads | member-steps/s | ms per step |")?;
    out!("|---|---|---|---|---|---|---|")?;
    for &p in &args.populations {
        let mut rng = Rng::new(7);
        let mut params: Vec<f32> = vec![0.0; p * n];
        for (j, m) in params.chunks_exact_mut(n).enumerate() {
            spec.init_member(&mut rng.fork(j as u64), m)
                .map_err(model::Error::from)?;
        }
        let input: Vec<f32> = (0..p * batch * sl).map(|_| rng.uniform_f32()).collect();
        let mut targets = vec![0.0; p * batch * classes];
        targets
            .iter_mut()
            .step_by(classes + 1)
            .for_each(|t| *t = 1.0);
        let (mut dlogits, mut losses) = (vec![0.0; targets.len()], vec![0.0; p]);
        let mut engine = CpuEngine::new(&spec, p, batch)?;
        engine.upload(&params, &vec![0.0; p * n])?;
        let sgd = Sgd::default();
        let mut step = || -> Result<(), CliError> {
            let logits = engine.forward(Input::PerMember(&input), Mode::Train)?;
            soft_cross_entropy(logits, &targets, classes, &mut dlogits, &mut losses)?;
            engine.backward(&dlogits)?;
            Ok(engine.sgd_step(&sgd, 0.01)?)
        };
        step()?;
        let started = Instant::now();
        for _ in 0..args.steps {
            step()?;
        }
        let per_step = started.elapsed().as_secs_f64() / args.steps as f64;
        let threads = rayon::current_num_threads();
        out!(
            "| {model} | {} | {p} | {batch} | {threads} | {:.1} | {:.1} |",
            engine.path(),
            p as f64 / per_step,
            per_step * 1e3
        )?;
    }
    Ok(())
}
