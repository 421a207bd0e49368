//! Population training with PAPA: the loop that turns data into one model.
//!
//! Every random choice is a fork of the run seed by purpose, member, epoch and step, so a run
//! has the same bits on any thread count and resumes exactly from an epoch checkpoint.

mod averaging;
mod batches;
mod finish;
mod surgery;

use crate::augment::{draw_recipes, AugmentError, AugmentStyle, Recipe};
use crate::checkpoint::{load_state, save_state, CheckpointError};
use crate::config::{Augmentation, ConfigError, Method, MinLrAt, TrainConfig};
use crate::data::{batches_per_epoch, DataError, DataIdentity, Splits};
use crate::engine::{CpuEngine, Engine, EngineError};
use crate::eval::{population_accuracy, EvalError};
use crate::model::{self, soft_cross_entropy, Input, Mode, ModelSpec};
use crate::optim::{LrSchedule, OptimError, Sgd};
use crate::report::{EpochRecord, MethodResult};
use averaging::{Averaging, MethodAveraging};
use batches::BatchLoader;
use papa_core::rng::Rng;
use papa_core::rules::Weights;
use papa_cpu::Isa;
use papa_model::card::{ModelCard, Provenance};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use surgery::Surgery;

/// The version of the numerics: what a run computes from its settings and data, bit for bit.
/// It goes up with every change that alters those bits (a kernel's order of additions, a
/// rule, a random stream), so that a checkpoint or run directory of another version is
/// refused instead of being continued into a mix. Rebuilding the same version resumes.
pub const NUMERICS: u32 = 1;

const INIT_STREAM: u64 = 1;
const AUGMENT_STREAM: u64 = 3;
const PAIR_STREAM: u64 = 4;
const CALIBRATION_STREAM: u64 = 5;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss of a member became NaN or infinite; checkpoints of finished epochs are kept.
    #[error("member {member}'s loss became {loss} in epoch {epoch}, at step {step}: training diverged and stopped (resuming repeats the same steps: start a fresh run with a lower `lr` in a --config file)")]
    Diverged {
        /// The member.
        member: usize,
        /// 1-based epoch, as the progress lines count.
        epoch: usize,
        /// Global step.
        step: u64,
        /// The value.
        loss: f32,
    },
    /// A member's mean loss over an epoch exploded while staying finite (1e19, say): its
    /// weights are garbage, so that epoch is not checkpointed.
    #[error("member {member}'s mean loss in epoch {epoch} was {loss:.3e}, over {bound:.0} (100 times the loss of chance): training diverged and stopped before checkpointing that epoch (start a fresh run with a lower `lr` in a --config file)")]
    LossExploded {
        /// The member.
        member: usize,
        /// 1-based epoch.
        epoch: usize,
        /// Its mean training loss over the epoch.
        loss: f64,
        /// The bound it crossed.
        bound: f64,
    },
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Evaluation or REPAIR failed.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// The engine refused a call.
    #[error(transparent)]
    Model(#[from] model::Error),
    /// A rule of papa-core refused its input.
    #[error(transparent)]
    Core(#[from] papa_core::Error),
    /// The engine refused a call.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The data could not be batched.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A batch could not be augmented.
    #[error(transparent)]
    Augment(#[from] AugmentError),
    /// The optimizer or its schedule refused its settings.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The run's state could not be encoded, or a checkpoint's could not be decoded.
    #[error("the run state: {0}")]
    State(#[from] serde_json::Error),
    /// Too few training samples for one batch.
    #[error("{samples} training samples make no batch of `batch` = {batch}")]
    NoBatch {
        /// Training samples.
        samples: usize,
        /// Samples per batch.
        batch: usize,
    },
    /// The warm-up does not end before the run does.
    #[error("`warmup_steps` = {warmup} is not below the run's {total} steps ({epochs} epochs of {steps_per_epoch} batches)")]
    Warmup {
        /// Warm-up steps.
        warmup: usize,
        /// Steps of the run.
        total: usize,
        /// Epochs.
        epochs: usize,
        /// Batches per epoch.
        steps_per_epoch: usize,
    },
    /// The checkpoint was written by another run (another method or other settings).
    #[error("checkpoint {} belongs to another run (method or settings differ); use a fresh --out", path.display())]
    ForeignCheckpoint {
        /// The checkpoint.
        path: PathBuf,
    },
    /// The checkpoint was written on another CPU path: resuming here would not give the bits
    /// an uninterrupted run gives.
    #[error("checkpoint {} was written on the {written} path and this engine runs {here}: resume it on a machine of the same kind, or start a fresh --out", path.display())]
    OtherCpuPath {
        /// The checkpoint.
        path: PathBuf,
        /// The path it was written on.
        written: String,
        /// The path here.
        here: String,
    },
    /// The checkpoint was written by a papa of other numerics: continuing it here would mix
    /// two versions' bits.
    #[error("checkpoint {} was written by numerics version {written} and this papa has {}: start a fresh --out, or resume with the papa that wrote it", path.display(), NUMERICS)]
    OtherNumerics {
        /// The checkpoint.
        path: PathBuf,
        /// Its numerics version.
        written: u32,
    },
    /// The checkpoint was trained on other data.
    #[error("checkpoint {} was trained on {differs}: resume it on its own data, or start a fresh --out", path.display())]
    OtherData {
        /// The checkpoint.
        path: PathBuf,
        /// What differs.
        differs: String,
    },
    /// The checkpoint lacks a buffer of the population's shape.
    #[error("checkpoint {} lacks a `{buffer}` of {members} x {len}", path.display())]
    CheckpointShape {
        /// The checkpoint.
        path: PathBuf,
        /// The buffer's name.
        buffer: &'static str,
        /// Members P.
        members: usize,
        /// Floats per member N.
        len: usize,
    },
}

/// The resumable part of a run, stored beside the population at each epoch end.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    method: Method,
    /// Where the engine's kernels ran (checkpoints from before paths: `portable`).
    #[serde(default = "portable")]
    path: String,
    /// [`NUMERICS`] of the binary that wrote it (checkpoints from before: 0).
    #[serde(default)]
    numerics: u32,
    /// The data it trained on (checkpoints from before: none recorded).
    #[serde(default)]
    data: DataIdentity,
    config: TrainConfig,
    epochs_done: usize,
    seconds: f64,
    history: Vec<EpochRecord>,
}

fn portable() -> String {
    Isa::Portable.name().into()
}

/// What one method produced: its results and the single model it ships.
pub struct Outcome {
    /// Accuracies, soups, history.
    pub result: MethodResult,
    /// The final model (N floats).
    pub model: Vec<f32>,
}

/// The card saved with a method's final model: the model, how to read its input (the
/// dataset's pixel scale and the run's normalisation), its classes and where it came from.
pub fn model_card(
    cfg: &TrainConfig,
    splits: &Splits,
    spec: &ModelSpec,
    result: &MethodResult,
) -> ModelCard {
    let mut card = ModelCard::new(
        &cfg.model,
        spec,
        splits.pixel_scale,
        splits.normalization.clone(),
        splits.class_names.clone(),
    );
    card.provenance = Some(Provenance {
        dataset: cfg.data.clone(),
        val_fraction: cfg.val_fraction,
        seed: cfg.seed,
        method: result.method.clone(),
        final_model_is: result.final_model_is.clone(),
        test_accuracy: result.final_model,
    });
    card
}

/// What a caller hears while a method trains.
pub trait Progress: Sync {
    /// After every optimizer step: the steps done and the total (for progress bars).
    fn step(&self, done: u64, total: u64);
    /// After every epoch, with its accuracies and diversity.
    fn epoch(&self, record: &EpochRecord);
}

/// Hears nothing.
pub struct Silent;

impl Progress for Silent {
    fn step(&self, _: u64, _: u64) {}
    fn epoch(&self, _: &EpochRecord) {}
}

/// Each member's augmentation and regularisation under `cfg` (the same for every method of
/// a run): its entry of the shuffled grid on top of the configured crop and flip (flips only
/// where `hflip_ok`, i.e. the dataset allows them).
pub fn member_recipes(cfg: &TrainConfig, hflip_ok: bool) -> Vec<Recipe> {
    let base = Recipe::standard(cfg.crop_padding, cfg.hflip && hflip_ok);
    match cfg.augmentation {
        Augmentation::Grid => draw_recipes(cfg.seed, cfg.population, base)
            .into_iter()
            .map(|r| r.scaled(cfg.grid_strength))
            .collect(),
        Augmentation::Standard => vec![base; cfg.population],
        Augmentation::None => vec![Recipe::plain(); cfg.population],
    }
}

/// Trains `cfg.population` members with `method` on the CPU engine and evaluates
/// everything. With `checkpoint` the population is saved (atomically) after every epoch, and
/// an existing checkpoint of the same method and settings is resumed.
pub fn train_method(
    cfg: &TrainConfig,
    splits: &Splits,
    spec: &ModelSpec,
    method: Method,
    checkpoint: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Outcome, TrainError> {
    // Checked before the engine is sized by it (train_on checks again: it is an entry too).
    cfg.validate()?;
    let capacity = cfg.engine_capacity();
    let mut engine = CpuEngine::with_isa(spec, cfg.population, capacity, Isa::detect())?;
    train_on(&mut engine, cfg, splits, method, checkpoint, progress)
}

/// [`train_method`] on any engine sized for `cfg.population` members and batches of
/// [`TrainConfig::engine_capacity`] (its population is overwritten by the initialisation or the checkpoint).
pub fn train_on<E: Engine>(
    engine: &mut E,
    cfg: &TrainConfig,
    splits: &Splits,
    method: Method,
    checkpoint: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Outcome, TrainError> {
    // A library caller reaches here without the CLI: every setting is checked once, here.
    cfg.validate()?;
    let run = Run::new(cfg, splits, engine, method)?;
    let mut state = match checkpoint.filter(|p| p.exists()) {
        Some(path) => run.resume(engine, path)?,
        None => run.start(engine)?,
    };
    let recipes = member_recipes(cfg, splits.train.hflip_ok);
    let settings = (cfg.seed, cfg.batch, run.train_len);
    let style = AugmentStyle {
        pad_value: cfg.crop_fill.pad_value(splits),
        mix_partner: cfg.mix_partner,
        erasing_box: cfg.erasing_box,
    };
    let mut loader = BatchLoader::new(&splits.train, &recipes, settings, style);
    let calibration = calibration_samples(cfg, splits, run.train_len)?;
    let mut surgery = Surgery::new(&run.spec, calibration, cfg.calibration_batch_size());
    while state.epochs_done < cfg.epochs {
        let started = Instant::now();
        let epoch = state.epochs_done;
        let loss = run.epoch(engine, &mut loader, epoch, progress)?;
        run.averaging.after_epoch(engine, epoch, &mut surgery)?;
        let mut record = run.measure(engine, &mut surgery, epoch, loss)?;
        record.seconds = started.elapsed().as_secs_f64();
        state.seconds += record.seconds;
        progress.epoch(&record);
        state.history.push(record);
        state.epochs_done += 1;
        if let Some(path) = checkpoint {
            run.save(engine, path, &state)?;
        }
    }
    let started = Instant::now();
    let (p, n) = (run.p, run.n);
    let (mut params, mut velocity) = (vec![0.0; p * n], vec![0.0; p * n]);
    engine.download(&mut params, &mut velocity)?;
    let (mut result, model) = finish::finish(&run, engine, &mut surgery, &params, &state)?;
    result.wall_seconds = state.seconds + started.elapsed().as_secs_f64();
    Ok(Outcome { result, model })
}

/// Checks `cfg` against the data before anything is written: every setting (as
/// [`TrainConfig::validate`]) and those that depend on the data: a training split that fills
/// a batch, a warm-up that ends within the run, each method's schedule. [`train_on`] checks
/// the same when it starts.
pub fn check(cfg: &TrainConfig, splits: &Splits) -> Result<(), TrainError> {
    cfg.validate()?;
    let length = Length::new(cfg, splits.train.len())?;
    for &method in &cfg.methods {
        MethodAveraging::new(method, cfg, length.steps_per_epoch)?;
    }
    Ok(())
}

/// How long a run is on its data: the samples it uses, its batches per epoch and its rate
/// schedule over all its steps.
struct Length {
    train_len: usize,
    steps_per_epoch: usize,
    lr: LrSchedule,
}

impl Length {
    fn new(cfg: &TrainConfig, train_samples: usize) -> Result<Self, TrainError> {
        let train_len = match cfg.train_limit {
            0 => train_samples,
            limit => limit.min(train_samples),
        };
        let steps_per_epoch = batches_per_epoch(train_len, cfg.batch);
        if steps_per_epoch == 0 {
            return Err(TrainError::NoBatch {
                samples: train_len,
                batch: cfg.batch,
            });
        }
        let total = steps_per_epoch * cfg.epochs;
        if cfg.warmup_steps >= total {
            return Err(TrainError::Warmup {
                warmup: cfg.warmup_steps,
                total,
                epochs: cfg.epochs,
                steps_per_epoch,
            });
        }
        // The schedule reaches min_lr at its last step: one step past the run's end when asked.
        let schedule_steps = match cfg.min_lr_at {
            MinLrAt::LastStep => total,
            MinLrAt::AfterLastStep => total + 1,
        };
        let lr = LrSchedule::cosine(
            cfg.lr,
            cfg.warmup_steps,
            schedule_steps,
            cfg.min_lr.min(cfg.lr),
        )?;
        Ok(Length {
            train_len,
            steps_per_epoch,
            lr,
        })
    }
}

/// Everything fixed for the length of a run, built once from its validated settings.
struct Run<'a> {
    cfg: &'a TrainConfig,
    splits: &'a Splits,
    spec: ModelSpec,
    method: Method,
    /// Where the engine's kernels run (recorded, and checked on resume).
    path: String,
    p: usize,
    n: usize,
    steps_per_epoch: usize,
    train_len: usize,
    lr: LrSchedule,
    sgd: Sgd,
    averaging: MethodAveraging,
}

impl<'a> Run<'a> {
    fn new<E: Engine>(
        cfg: &'a TrainConfig,
        splits: &'a Splits,
        engine: &E,
        method: Method,
    ) -> Result<Self, TrainError> {
        let spec = engine.spec().clone();
        if engine.population() != cfg.population || engine.capacity() < cfg.engine_capacity() {
            return Err(model::Error::Batch {
                batch: cfg.engine_capacity(),
                capacity: engine.capacity(),
            }
            .into());
        }
        let Length {
            train_len,
            steps_per_epoch,
            lr,
        } = Length::new(cfg, splits.train.len())?;
        Ok(Run {
            lr,
            sgd: Sgd {
                momentum: cfg.momentum,
                weight_decay: cfg.weight_decay,
                nesterov: cfg.nesterov,
            },
            averaging: MethodAveraging::new(method, cfg, steps_per_epoch)?,
            path: engine.path(),
            p: cfg.population,
            n: spec.len(),
            spec,
            cfg,
            splits,
            method,
            steps_per_epoch,
            train_len,
        })
    }

    /// Initialises every member (a fork of the run seed each) and a zero momentum.
    fn start<E: Engine>(&self, engine: &mut E) -> Result<State, TrainError> {
        let rng = Rng::new(self.cfg.seed).fork(INIT_STREAM);
        let mut params = vec![0.0; self.p * self.n];
        for (j, member) in params.chunks_exact_mut(self.n).enumerate() {
            // With same_init every member draws member 0's initialisation.
            let stream = if self.cfg.same_init { 0 } else { j as u64 };
            self.spec
                .init_member(&mut rng.fork(stream), member)
                .map_err(model::Error::from)?;
        }
        engine.upload(&params, &vec![0.0; self.p * self.n])?;
        Ok(State {
            method: self.method,
            path: self.path.clone(),
            numerics: NUMERICS,
            data: self.splits.identity.clone(),
            config: self.cfg.clone(),
            epochs_done: 0,
            seconds: 0.0,
            history: vec![],
        })
    }

    /// Loads a checkpoint of this very run (same method, settings and engine path).
    fn resume<E: Engine>(&self, engine: &mut E, path: &Path) -> Result<State, TrainError> {
        let loaded = load_state(path)?;
        let state: State = serde_json::from_str(&loaded.state_json)?;
        // Threads are the one setting that may differ: results do not depend on them.
        let same = TrainConfig {
            threads: self.cfg.threads,
            ..state.config.clone()
        };
        if state.method != self.method || &same != self.cfg {
            return Err(TrainError::ForeignCheckpoint { path: path.into() });
        }
        if state.numerics != NUMERICS {
            return Err(TrainError::OtherNumerics {
                path: path.into(),
                written: state.numerics,
            });
        }
        if let Some(differs) = state.data.difference(&self.splits.identity) {
            return Err(TrainError::OtherData {
                path: path.into(),
                differs,
            });
        }
        if state.path != self.path {
            return Err(TrainError::OtherCpuPath {
                path: path.into(),
                written: state.path,
                here: self.path.clone(),
            });
        }
        let take = |buffer: &'static str| {
            loaded
                .buffers
                .get(buffer)
                .filter(|(shape, _)| shape == &[self.p, self.n])
                .map(|(_, v)| v.as_slice())
                .ok_or_else(|| TrainError::CheckpointShape {
                    path: path.into(),
                    buffer,
                    members: self.p,
                    len: self.n,
                })
        };
        engine.upload(take("population")?, take("velocity")?)?;
        Ok(state)
    }

    /// Writes the population, its momentum and the state (atomically).
    fn save<E: Engine>(&self, engine: &E, path: &Path, state: &State) -> Result<(), TrainError> {
        let (mut params, mut velocity) = (vec![0.0; self.p * self.n], vec![0.0; self.p * self.n]);
        engine.download(&mut params, &mut velocity)?;
        let json = serde_json::to_string(state)?;
        let shape = [self.p, self.n];
        let buffers = [
            ("population", &params[..], &shape[..]),
            ("velocity", &velocity, &shape),
        ];
        Ok(save_state(path, &buffers, &json)?)
    }

    /// One epoch of SGD on every member, the method's after-step averaging inside. Returns
    /// the mean training loss.
    fn epoch<E: Engine>(
        &self,
        engine: &mut E,
        loader: &mut BatchLoader<'_>,
        epoch: usize,
        progress: &dyn Progress,
    ) -> Result<f32, TrainError> {
        let (p, classes) = (self.p, self.spec.classes());
        let mut dlogits = vec![0.0f32; p * self.cfg.batch * classes];
        let mut losses = vec![0.0f32; p];
        let total_steps = (self.steps_per_epoch * self.cfg.epochs) as u64;
        loader.start_epoch(epoch);
        let (mut loss_sum, mut member_sums) = (0.0f64, vec![0.0f64; p]);
        for s in 0..self.steps_per_epoch {
            let step = (epoch * self.steps_per_epoch + s) as u64;
            let (images, targets) = loader.load(s, step)?;
            let logits = engine.forward(Input::PerMember(images), Mode::Train)?;
            soft_cross_entropy(logits, targets, classes, &mut dlogits, &mut losses)?;
            if let Some((member, &loss)) = losses.iter().enumerate().find(|(_, l)| !l.is_finite()) {
                return Err(TrainError::Diverged {
                    member,
                    epoch: epoch + 1,
                    step,
                    loss,
                });
            }
            loss_sum += losses.iter().map(|&l| f64::from(l)).sum::<f64>() / p as f64;
            for (sum, &l) in member_sums.iter_mut().zip(&losses) {
                *sum += f64::from(l);
            }
            engine.backward_for_sgd(&dlogits)?;
            let lr = self.lr.lr_at(step as usize);
            engine.sgd_step(&self.sgd, lr)?;
            self.averaging.after_step(engine, step, lr)?;
            progress.step(step + 1, total_steps);
        }
        let steps = self.steps_per_epoch as f64;
        let means = member_sums.iter().map(|s| s / steps);
        // Soft cross-entropy starts near ln(classes); no healthy epoch averages 100 times that.
        let bound = 100.0 * (classes.max(2) as f64).ln();
        if let Some((member, loss)) = means.enumerate().find(|&(_, l)| l.is_nan() || l > bound) {
            return Err(TrainError::LossExploded {
                member,
                epoch: epoch + 1,
                loss,
                bound,
            });
        }
        Ok((loss_sum / steps) as f32)
    }

    /// The uniform average of the members with re-estimated BatchNorm statistics.
    fn uniform_soup<E: Engine>(
        &self,
        engine: &E,
        surgery: &mut Surgery,
    ) -> Result<Vec<f32>, TrainError> {
        let mut soup = engine.average(Weights::Uniform)?;
        surgery.reestimate(&mut soup)?;
        Ok(soup)
    }

    /// Per-epoch record: members' and average model's test accuracy, diversity.
    fn measure<E: Engine>(
        &self,
        engine: &mut E,
        surgery: &mut Surgery,
        epoch: usize,
        train_loss: f32,
    ) -> Result<EpochRecord, TrainError> {
        let test = &self.splits.test;
        let members = population_accuracy(engine, test)?.members;
        let soup = self.uniform_soup(engine, surgery)?;
        let average_acc = surgery.accuracy(&soup, test)?.members[0];
        let diversity = engine.diversity()?;
        Ok(EpochRecord {
            epoch,
            train_loss,
            member_test_acc: members,
            average_test_acc: Some(average_acc),
            distance_to_mean: diversity.distance_to_mean,
            mean_pairwise_cosine: diversity.mean_pairwise_cosine,
            seconds: 0.0,
        })
    }
}

/// Calibration for REPAIR and BatchNorm: whole batches of fixed, unaugmented training
/// samples, drawn once per run.
fn calibration_samples(
    cfg: &TrainConfig,
    splits: &Splits,
    train_len: usize,
) -> Result<Vec<f32>, TrainError> {
    let batch = cfg.calibration_batch_size();
    let count = (cfg.repair_batches * batch).min(train_len) / batch * batch;
    let mut order: Vec<u32> = (0..train_len as u32).collect();
    Rng::new(cfg.seed)
        .fork(CALIBRATION_STREAM)
        .shuffle(&mut order);
    let mut samples = vec![0.0; count * splits.train.sample_len()];
    let mut labels = vec![0u8; count];
    splits
        .train
        .gather(&order[..count], &mut samples, &mut labels)?;
    Ok(samples)
}
