//! Population training with PAPA: the loop that turns data into one model.
//!
//! Every random choice is a fork of the run seed by purpose, member, epoch and step, so a run
//! has the same bits on any thread count and resumes exactly from an epoch checkpoint.

use crate::augment::{augment_batch, draw_recipes, AugmentError, BatchShape, Recipe};
use crate::checkpoint::{load_state, save_state, CheckpointError};
use crate::config::{Augmentation, ConfigError, Method, TrainConfig};
use crate::data::{batches, batches_per_epoch, epoch_order, DataError, Splits};
use crate::eval::{accuracy, reestimate_batchnorm, repair, EvalError};
use crate::model::{self, soft_cross_entropy, Input, Mode, ModelSpec, Network};
use crate::optim::{LrSchedule, OptimError, Sgd};
use crate::report::{Accuracy, EpochRecord, MethodResult};
use papa_core::diversity::{distances_to_mean, mean_pairwise_cosine};
use papa_core::layout::{Layout, TensorSpec};
use papa_core::population::Contiguous;
use papa_core::rng::Rng;
use papa_core::rules::{
    average, draw_pairs, gradual, papa2, papa2_scratch_len, papa_all, Options, Weights,
};
use papa_core::schedule::{effective_alpha, Schedule};
use papa_core::soup::{greedy_soup, GreedyBuffers};
use papa_model::card::{ModelCard, Provenance};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

const INIT_STREAM: u64 = 1;
const AUGMENT_STREAM: u64 = 3;
const PAIR_STREAM: u64 = 4;
const CALIBRATION_STREAM: u64 = 5;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss of a member became NaN or infinite; checkpoints of finished epochs are kept.
    #[error("member {member}'s loss became {loss} in epoch {epoch}, at step {step}: training stopped (checkpoints of finished epochs are kept; try a lower `lr` in a --config file)")]
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
    #[error("{samples} training samples make no batch of {batch}")]
    NoBatch {
        /// Training samples.
        samples: usize,
        /// Samples per batch.
        batch: usize,
    },
    /// The checkpoint was written by another run (another method or other settings).
    #[error("checkpoint {} belongs to another run (method or settings differ); use a fresh --out", path.display())]
    ForeignCheckpoint {
        /// The checkpoint.
        path: PathBuf,
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
    config: TrainConfig,
    epochs_done: usize,
    seconds: f64,
    history: Vec<EpochRecord>,
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
        Augmentation::Grid => draw_recipes(cfg.seed, cfg.population, base),
        Augmentation::Standard => vec![base; cfg.population],
        Augmentation::None => vec![Recipe::plain(); cfg.population],
    }
}

/// Trains `cfg.population` members with `method` and evaluates everything. With `checkpoint`
/// the population is saved (atomically) after every epoch, and an existing checkpoint of the
/// same method and settings is resumed.
pub fn train_method(
    cfg: &TrainConfig,
    splits: &Splits,
    spec: &ModelSpec,
    method: Method,
    checkpoint: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Outcome, TrainError> {
    // A library caller reaches here without the CLI: every setting is checked once, here.
    cfg.validate()?;
    let run = Run::new(cfg, splits, spec, method)?;
    let (mut params, mut velocity, mut state) = match checkpoint.filter(|p| p.exists()) {
        Some(path) => run.resume(path)?,
        None => {
            let state = State {
                method,
                config: cfg.clone(),
                epochs_done: 0,
                seconds: 0.0,
                history: vec![],
            };
            (run.init()?, vec![0.0; run.p * run.n], state)
        }
    };
    let mut net = Network::new(spec, run.p, cfg.batch)?;
    while state.epochs_done < cfg.epochs {
        let started = Instant::now();
        let epoch = state.epochs_done;
        let loss = run.epoch(&mut net, &mut params, &mut velocity, epoch, progress)?;
        if run.epoch_rule_due(epoch) {
            run.epoch_rule(&mut params, &mut velocity, epoch)?;
        }
        let mut record = run.measure(&params, epoch, loss)?;
        record.seconds = started.elapsed().as_secs_f64();
        state.seconds += record.seconds;
        progress.epoch(&record);
        state.history.push(record);
        state.epochs_done += 1;
        if let Some(path) = checkpoint {
            let json = serde_json::to_string(&state)?;
            let shape = [run.p, run.n];
            save_state(
                path,
                &[
                    ("population", &params, &shape),
                    ("velocity", &velocity, &shape),
                ],
                &json,
            )?;
        }
    }
    let started = Instant::now();
    let (result, model) = run.finish(&params, &state)?;
    let mut result = result;
    result.wall_seconds = state.seconds + started.elapsed().as_secs_f64();
    Ok(Outcome { result, model })
}

/// Everything fixed for the length of a run.
struct Run<'a> {
    cfg: &'a TrainConfig,
    splits: &'a Splits,
    spec: &'a ModelSpec,
    method: Method,
    p: usize,
    n: usize,
    steps_per_epoch: usize,
    train_len: usize,
    recipes: Vec<Recipe>,
    lr: LrSchedule,
    alpha: f32,
    trainable: Vec<Range<usize>>,
    calibration: Vec<f32>,
    /// The model's tensors, for the rules' layout (counters take the max).
    tensors: Vec<TensorSpec<'a>>,
    /// When PAPA gradual applies (after optimizer steps).
    gradual_schedule: Schedule,
    /// When PAPA-all and PAPA-2 apply (after epochs).
    epoch_schedule: Schedule,
}

impl<'a> Run<'a> {
    fn new(
        cfg: &'a TrainConfig,
        splits: &'a Splits,
        spec: &'a ModelSpec,
        method: Method,
    ) -> Result<Self, TrainError> {
        let train_len = match cfg.train_limit {
            0 => splits.train.len(),
            limit => limit.min(splits.train.len()),
        };
        let steps_per_epoch = batches_per_epoch(train_len, cfg.batch);
        if steps_per_epoch == 0 {
            return Err(TrainError::NoBatch {
                samples: train_len,
                batch: cfg.batch,
            });
        }
        let total = steps_per_epoch * cfg.epochs;
        let lr = LrSchedule::cosine(cfg.lr, cfg.warmup_steps, total, cfg.min_lr.min(cfg.lr))?;
        let recipes = member_recipes(cfg, splits.train.hflip_ok);
        // Calibration for REPAIR and BatchNorm: fixed, unaugmented training samples.
        let calib_count = (cfg.repair_batches * cfg.batch).min(train_len) / cfg.batch * cfg.batch;
        let mut order: Vec<u32> = (0..train_len as u32).collect();
        Rng::new(cfg.seed)
            .fork(CALIBRATION_STREAM)
            .shuffle(&mut order);
        let sl = splits.train.sample_len();
        let mut calibration = vec![0.0; calib_count * sl];
        let mut labels = vec![0u8; calib_count];
        splits
            .train
            .gather(&order[..calib_count], &mut calibration, &mut labels)?;
        let tensors = spec.tensor_specs();
        Layout::new(&tensors)?;
        Ok(Run {
            tensors,
            gradual_schedule: Schedule::every_steps(cfg.papa_every_steps)?,
            epoch_schedule: Schedule::every_epochs(cfg.papa_every_epochs)?,
            cfg,
            splits,
            spec,
            method,
            p: cfg.population,
            n: spec.len(),
            steps_per_epoch,
            train_len,
            recipes,
            lr,
            alpha: cfg.papa_alpha(total),
            trainable: spec.trainable_ranges(),
            calibration,
        })
    }

    fn init(&self) -> Result<Vec<f32>, TrainError> {
        let rng = Rng::new(self.cfg.seed).fork(INIT_STREAM);
        let mut params = vec![0.0; self.p * self.n];
        for (j, member) in params.chunks_exact_mut(self.n).enumerate() {
            self.spec
                .init_member(&mut rng.fork(j as u64), member)
                .map_err(model::Error::from)?;
        }
        Ok(params)
    }

    fn resume(&self, path: &Path) -> Result<(Vec<f32>, Vec<f32>, State), TrainError> {
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
        let take = |buffer: &'static str| {
            loaded
                .buffers
                .get(buffer)
                .filter(|(shape, _)| shape == &[self.p, self.n])
                .map(|(_, v)| v.clone())
                .ok_or_else(|| TrainError::CheckpointShape {
                    path: path.into(),
                    buffer,
                    members: self.p,
                    len: self.n,
                })
        };
        Ok((take("population")?, take("velocity")?, state))
    }

    fn layout_options<R>(&self, f: impl FnOnce(&Options<'_>) -> R) -> R {
        // Validated in `Run::new`.
        let layout = Layout::new(&self.tensors).ok();
        f(&Options {
            layout,
            check_finite: false,
        })
    }

    /// One epoch of SGD on every member; PAPA gradual inside. Returns the mean training loss.
    fn epoch(
        &self,
        net: &mut Network,
        params: &mut [f32],
        velocity: &mut [f32],
        epoch: usize,
        progress: &dyn Progress,
    ) -> Result<f32, TrainError> {
        let (p, b, cfg) = (self.p, self.cfg.batch, self.cfg);
        let train = &self.splits.train;
        let sl = train.sample_len();
        let classes = train.classes;
        let shape = BatchShape {
            channels: train.channels,
            height: train.height,
            width: train.width,
            classes,
        };
        let pad = self.splits.pad_value(0);
        let orders: Vec<Vec<u32>> = (0..p)
            .map(|j| epoch_order(cfg.seed, j as u64, epoch as u64, self.train_len as u32))
            .collect();
        let (mut images, mut targets) = (vec![0.0f32; p * b * sl], vec![0.0f32; p * b * classes]);
        let (mut dlogits, mut losses) = (vec![0.0f32; p * b * classes], vec![0.0f32; p]);
        let gradual_schedule = self.gradual_schedule;
        let total_steps = (self.steps_per_epoch * cfg.epochs) as u64;
        let sgd = Sgd {
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            nesterov: cfg.nesterov,
        };
        let mut loss_sum = 0.0f64;
        for s in 0..self.steps_per_epoch {
            let step = (epoch * self.steps_per_epoch + s) as u64;
            images
                .par_chunks_mut(b * sl)
                .zip(targets.par_chunks_mut(b * classes))
                .enumerate()
                .try_for_each(|(j, (img, tgt))| -> Result<(), TrainError> {
                    let idx = batches(&orders[j], b)?.nth(s).ok_or(DataError::Index {
                        index: (s + 1) * b - 1,
                        len: orders[j].len(),
                    })?;
                    let mut labels = vec![0u8; b];
                    train.gather(idx, img, &mut labels)?;
                    let mut rng = Rng::new(cfg.seed)
                        .fork(AUGMENT_STREAM)
                        .fork(j as u64)
                        .fork(step);
                    Ok(augment_batch(
                        &self.recipes[j],
                        &mut rng,
                        img,
                        &labels,
                        shape,
                        pad,
                        tgt,
                    )?)
                })?;
            let logits = net.forward(params, Input::PerMember(&images), Mode::Train)?;
            soft_cross_entropy(logits, &targets, classes, &mut dlogits, &mut losses)?;
            if let Some((member, &loss)) = losses.iter().enumerate().find(|(_, l)| !l.is_finite()) {
                return Err(TrainError::Diverged {
                    member,
                    epoch: epoch + 1,
                    step,
                    loss,
                });
            }
            loss_sum += losses.iter().map(|&l| f64::from(l)).sum::<f64>() / p as f64;
            let grads = net.backward(params, &dlogits)?;
            let lr = self.lr.lr_at(step as usize);
            sgd.step(params, grads, velocity, self.n, &self.trainable, lr)?;
            if self.method == Method::Papa && gradual_schedule.due_after_step(step + 1) {
                let alpha = if cfg.papa_lr_scaling {
                    effective_alpha(self.alpha, lr, self.lr.base())?
                } else {
                    self.alpha
                };
                self.layout_options(|opts| {
                    gradual(
                        &mut Contiguous::new(&mut *params, p)?,
                        Weights::Uniform,
                        alpha,
                        opts,
                    )?;
                    if cfg.average_momentum {
                        gradual(
                            &mut Contiguous::new(&mut *velocity, p)?,
                            Weights::Uniform,
                            alpha,
                            &Options::default(),
                        )?;
                    }
                    Ok::<_, papa_core::Error>(())
                })?;
            }
            progress.step(step + 1, total_steps);
        }
        Ok((loss_sum / self.steps_per_epoch as f64) as f32)
    }

    /// PAPA-all and PAPA-2 act after every E epochs, never after the last (the soups follow).
    fn epoch_rule_due(&self, epoch: usize) -> bool {
        matches!(self.method, Method::PapaAll | Method::Papa2)
            && epoch + 1 < self.cfg.epochs
            && self.epoch_schedule.due_after_epoch(epoch as u64 + 1)
    }

    fn epoch_rule(
        &self,
        params: &mut [f32],
        velocity: &mut [f32],
        epoch: usize,
    ) -> Result<(), TrainError> {
        let (p, n) = (self.p, self.n);
        let parents = params.to_vec();
        let weights: Vec<Vec<f32>> = match self.method {
            Method::Papa2 => {
                let mut pairs = vec![(0, 0); p];
                draw_pairs(
                    &mut Rng::new(self.cfg.seed).fork(PAIR_STREAM).fork(epoch as u64),
                    p,
                    &mut pairs,
                )?;
                let mut scratch = vec![0.0; papa2_scratch_len(p, n)];
                self.layout_options(|opts| {
                    papa2(
                        &mut Contiguous::new(&mut *params, p)?,
                        &pairs,
                        &mut scratch,
                        opts,
                    )?;
                    if self.cfg.average_momentum {
                        papa2(
                            &mut Contiguous::new(&mut *velocity, p)?,
                            &pairs,
                            &mut scratch,
                            &Options::default(),
                        )?;
                    }
                    Ok::<_, papa_core::Error>(())
                })?;
                pairs
                    .iter()
                    .map(|&(a, b)| {
                        let mut w = vec![0.0; p];
                        w[a] += 0.5;
                        w[b] += 0.5;
                        w
                    })
                    .collect()
            }
            _ => {
                self.layout_options(|opts| {
                    papa_all(
                        &mut Contiguous::new(&mut *params, p)?,
                        Weights::Uniform,
                        opts,
                    )?;
                    if self.cfg.average_momentum {
                        papa_all(
                            &mut Contiguous::new(&mut *velocity, p)?,
                            Weights::Uniform,
                            &Options::default(),
                        )?;
                    }
                    Ok::<_, papa_core::Error>(())
                })?;
                vec![vec![1.0 / p as f32; p]; p]
            }
        };
        repair(
            self.spec,
            params,
            &parents,
            &weights,
            &self.calibration,
            self.cfg.batch,
        )?;
        Ok(())
    }

    /// The uniform average of the members with re-estimated BatchNorm statistics.
    fn uniform_soup(&self, params: &[f32]) -> Result<Vec<f32>, TrainError> {
        let mut soup = vec![0.0; self.n];
        self.layout_options(|opts| {
            average(
                &Contiguous::new(params, self.p)?,
                Weights::Uniform,
                &mut soup,
                opts,
            )
        })?;
        reestimate_batchnorm(self.spec, &mut soup, &self.calibration, self.cfg.batch)?;
        Ok(soup)
    }

    /// Per-epoch record: members' and average model's test accuracy, diversity.
    fn measure(
        &self,
        params: &[f32],
        epoch: usize,
        train_loss: f32,
    ) -> Result<EpochRecord, TrainError> {
        let test = &self.splits.test;
        let members = accuracy(self.spec, params, test)?.members;
        let soup = self.uniform_soup(params)?;
        let average_acc = accuracy(self.spec, &soup, test)?.members[0];
        // Diversity of what training moves: counters and running statistics would dominate
        // the norms (a step counter shared by every member makes all cosines 1).
        let trained: Vec<f32> = params
            .chunks_exact(self.n)
            .flat_map(|member| {
                self.trainable
                    .iter()
                    .flat_map(move |r| member[r.clone()].iter().copied())
            })
            .collect();
        let pop = Contiguous::new(&trained[..], self.p)?;
        let mut distance = vec![0.0; self.p];
        distances_to_mean(&pop, Weights::Uniform, &mut distance)?;
        let mut gram = vec![0.0; self.p * self.p];
        let cosine = mean_pairwise_cosine(&pop, &mut gram)?;
        Ok(EpochRecord {
            epoch,
            train_loss,
            member_test_acc: members,
            average_test_acc: Some(average_acc),
            distance_to_mean: distance,
            mean_pairwise_cosine: cosine,
            seconds: 0.0,
        })
    }

    /// Members, ensemble, soups with and without REPAIR, and the one model to ship: the
    /// candidate with the best validation accuracy.
    fn finish(
        &self,
        params: &[f32],
        state: &State,
    ) -> Result<(MethodResult, Vec<f32>), TrainError> {
        let (p, n, spec) = (self.p, self.n, self.spec);
        let (val, test) = (&self.splits.val, &self.splits.test);
        let test_acc = accuracy(spec, params, test)?;
        let val_acc = accuracy(spec, params, val)?;
        let repaired = |weights: &[f32], soup: &[f32]| -> Result<Vec<f32>, TrainError> {
            let mut child = soup.to_vec();
            repair(
                spec,
                &mut child,
                params,
                &[weights.to_vec()],
                &self.calibration,
                self.cfg.batch,
            )?;
            Ok(child)
        };
        let uniform = self.uniform_soup(params)?;
        let uniform_weights = vec![1.0 / p as f32; p];
        let uniform_repaired = repaired(&uniform_weights, &uniform)?;

        let (mut order, mut scores, mut weights) = (vec![0; p], vec![0.0; p], vec![0.0; p]);
        let (mut candidate, mut greedy) = (vec![0.0; n], vec![0.0; n]);
        let mut failure = None;
        // greedy_soup scores the P members first, then soups of several members: only those
        // need BatchNorm statistics of their own (a member's trained ones are better than 5
        // calibration batches).
        let mut calls = 0;
        let eval_val = |w: &[f32]| -> f32 {
            calls += 1;
            let mut model = w.to_vec();
            let statistics = if calls > p {
                reestimate_batchnorm(spec, &mut model, &self.calibration, self.cfg.batch)
            } else {
                Ok(())
            };
            match statistics.and_then(|()| accuracy(spec, &model, val)) {
                Ok(acc) => acc.members[0],
                Err(e) => {
                    failure = Some(e);
                    f32::NAN
                }
            }
        };
        let buf = GreedyBuffers {
            order: &mut order,
            scores: &mut scores,
            candidate: &mut candidate,
            out: &mut greedy,
            weights: &mut weights,
        };
        let outcome = self
            .layout_options(|opts| greedy_soup(&Contiguous::new(params, p)?, eval_val, buf, opts));
        if let Some(e) = failure {
            return Err(e.into());
        }
        let outcome = outcome?;
        if outcome.kept > 1 {
            reestimate_batchnorm(spec, &mut greedy, &self.calibration, self.cfg.batch)?;
        }
        let greedy_repaired = repaired(&weights, &greedy)?;

        let candidates = [
            ("uniform soup", uniform),
            ("uniform soup + REPAIR", uniform_repaired),
            ("greedy soup", greedy),
            ("greedy soup + REPAIR", greedy_repaired),
        ];
        let mut scored = Vec::new();
        for (name, model) in candidates {
            let v = accuracy(spec, &model, val)?.members[0];
            let t = accuracy(spec, &model, test)?.members[0];
            scored.push((name, model, v, t));
        }
        // Strictly better on validation wins; ties keep the earlier, simpler candidate.
        let best = (0..scored.len()).fold(0, |b, i| if scored[i].2 > scored[b].2 { i } else { b });
        let best_member = (0..p).fold(0, |b, j| {
            if val_acc.members[j] > val_acc.members[b] {
                j
            } else {
                b
            }
        });
        let members = &test_acc.members;
        let mean = members.iter().sum::<f32>() / p as f32;
        let result = MethodResult {
            method: self.method.name().into(),
            seed: self.cfg.seed,
            population: p,
            epochs: self.cfg.epochs,
            model: self.cfg.model.clone(),
            members: members.clone(),
            members_mean: mean,
            members_min: members.iter().copied().fold(f32::INFINITY, f32::min),
            members_max: members.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            best_member_on_val: members[best_member],
            ensemble: test_acc.ensemble,
            uniform_soup: Accuracy {
                plain: scored[0].3,
                repaired: Some(scored[1].3),
            },
            greedy_soup: Accuracy {
                plain: scored[2].3,
                repaired: Some(scored[3].3),
            },
            greedy_soup_size: outcome.kept,
            final_model: scored[best].3,
            final_model_is: scored[best].0.into(),
            wall_seconds: 0.0,
            history: state.history.clone(),
        };
        let model = std::mem::take(&mut scored[best].1);
        Ok((result, model))
    }
}
