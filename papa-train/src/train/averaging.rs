//! How each method averages its population: one type per method, each with an after-step
//! and an after-epoch hook, built once per run from the validated settings.

use super::surgery::Surgery;
use super::{TrainError, PAIR_STREAM};
use crate::config::{AfterAveraging, Method, StepPhase, TrainConfig};
use crate::engine::{Engine, Rule};
use papa_core::rng::Rng;
use papa_core::rules::{draw_pairs, Weights};
use papa_core::schedule::{effective_alpha, Schedule};

/// What a method does to the population besides SGD; by default, nothing.
pub(super) trait Averaging {
    /// After optimizer step `step` (0-based, run-wide) taken at rate `lr`.
    fn after_step<E: Engine>(&self, engine: &mut E, step: u64, lr: f32) -> Result<(), TrainError> {
        let _ = (engine, step, lr);
        Ok(())
    }

    /// After epoch `epoch` (0-based).
    fn after_epoch<E: Engine>(
        &self,
        engine: &mut E,
        epoch: usize,
        surgery: &mut Surgery,
    ) -> Result<(), TrainError> {
        let _ = (engine, epoch, surgery);
        Ok(())
    }
}

/// Independent training: nothing.
pub(super) struct Independent;

/// PAPA: the members are pulled a little towards their mean every few steps.
pub(super) struct Gradual {
    every: u32,
    phase: StepPhase,
    steps_per_epoch: u64,
    alpha: f32,
    /// The peak rate, when the pull is scaled by `lr / peak`.
    lr_scaling: Option<f32>,
    momentum: bool,
}

/// PAPA-all and PAPA-2: every few epochs the population is replaced by averages (all of
/// it, or of random pairs), then REPAIRed; never after the last epoch (the soups follow).
pub(super) struct EveryEpochs {
    schedule: Schedule,
    pairs: bool,
    after: AfterAveraging,
    epochs: usize,
    seed: u64,
    momentum: bool,
}

/// The averaging of `method`, one of the three types above.
pub(super) enum MethodAveraging {
    /// `none`.
    Independent(Independent),
    /// `papa`.
    Gradual(Gradual),
    /// `papa-all`, `papa-2`.
    EveryEpochs(EveryEpochs),
}

impl MethodAveraging {
    /// Built once per run from a validated `cfg` and the run's `steps_per_epoch` (the run's
    /// length sets PAPA's default alpha).
    pub(super) fn new(
        method: Method,
        cfg: &TrainConfig,
        steps_per_epoch: usize,
    ) -> Result<Self, TrainError> {
        Ok(match method {
            Method::None => Self::Independent(Independent),
            Method::Papa => Self::Gradual(Gradual {
                every: cfg.papa_every_steps,
                phase: cfg.papa_step_phase,
                steps_per_epoch: steps_per_epoch as u64,
                alpha: cfg.papa_alpha(steps_per_epoch * cfg.epochs),
                lr_scaling: cfg.papa_lr_scaling.then_some(cfg.lr),
                momentum: cfg.average_momentum,
            }),
            Method::PapaAll | Method::Papa2 => Self::EveryEpochs(EveryEpochs {
                schedule: if cfg.papa_from_first_epoch.applies_to(method) {
                    Schedule::every_epochs_from_first(cfg.papa_every_epochs)?
                } else {
                    Schedule::every_epochs(cfg.papa_every_epochs)?
                },
                pairs: method == Method::Papa2,
                after: cfg.after_averaging,
                epochs: cfg.epochs,
                seed: cfg.seed,
                momentum: cfg.average_momentum,
            }),
        })
    }
}

impl Averaging for MethodAveraging {
    fn after_step<E: Engine>(&self, engine: &mut E, step: u64, lr: f32) -> Result<(), TrainError> {
        match self {
            Self::Independent(a) => a.after_step(engine, step, lr),
            Self::Gradual(a) => a.after_step(engine, step, lr),
            Self::EveryEpochs(a) => a.after_step(engine, step, lr),
        }
    }

    fn after_epoch<E: Engine>(
        &self,
        engine: &mut E,
        epoch: usize,
        surgery: &mut Surgery,
    ) -> Result<(), TrainError> {
        match self {
            Self::Independent(a) => a.after_epoch(engine, epoch, surgery),
            Self::Gradual(a) => a.after_epoch(engine, epoch, surgery),
            Self::EveryEpochs(a) => a.after_epoch(engine, epoch, surgery),
        }
    }
}

impl Averaging for Independent {}

impl Averaging for Gradual {
    fn after_step<E: Engine>(&self, engine: &mut E, step: u64, lr: f32) -> Result<(), TrainError> {
        if !self.phase.due(step, self.every, self.steps_per_epoch) {
            return Ok(());
        }
        let alpha = match self.lr_scaling {
            Some(peak) => effective_alpha(self.alpha, lr, peak)?,
            None => self.alpha,
        };
        let rule = Rule::Gradual {
            weights: Weights::Uniform,
            alpha,
        };
        Ok(engine.apply(rule, self.momentum)?)
    }
}

impl Averaging for EveryEpochs {
    fn after_epoch<E: Engine>(
        &self,
        engine: &mut E,
        epoch: usize,
        surgery: &mut Surgery,
    ) -> Result<(), TrainError> {
        if epoch + 1 >= self.epochs || !self.schedule.due_after_epoch(epoch as u64 + 1) {
            return Ok(());
        }
        let p = engine.population();
        let goal = match self.after {
            AfterAveraging::Repair => Some(surgery.goal(engine)?),
            AfterAveraging::ResetBatchnorm => None,
        };
        // Each child's weights over the parents, for REPAIR's goal statistics.
        let weights: Vec<Vec<f32>> = if self.pairs {
            let mut pairs = vec![(0, 0); p];
            let mut rng = Rng::new(self.seed).fork(PAIR_STREAM).fork(epoch as u64);
            draw_pairs(&mut rng, p, &mut pairs)?;
            engine.apply(Rule::Pairs(&pairs), self.momentum)?;
            pairs
                .iter()
                .map(|&(a, b)| {
                    let mut w = vec![0.0; p];
                    w[a] += 0.5;
                    w[b] += 0.5;
                    w
                })
                .collect()
        } else {
            let rule = Rule::All {
                weights: Weights::Uniform,
            };
            engine.apply(rule, self.momentum)?;
            vec![vec![1.0 / p as f32; p]; p]
        };
        match goal {
            Some(goal) => surgery.repair_on(engine, &goal, &weights)?,
            None => surgery.reestimate_on(engine)?,
        }
        Ok(())
    }
}
