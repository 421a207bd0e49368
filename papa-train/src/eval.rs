//! Evaluation and model surgery on any [`Engine`]: accuracies of members and ensembles,
//! BatchNorm re-estimation, and REPAIR of averaged children (papa-core's arithmetic on the
//! engine's statistics; the parameters stay where the engine keeps them).
//!
//! [`Evaluator`] (and the one-call functions [`accuracy`], [`reestimate_batchnorm`],
//! [`repair`]) does the same for populations in host memory, through CPU engines it keeps
//! across calls.

use crate::data::{eval_ranges, Dataset};
use crate::engine::{CpuEngine, Engine, EngineError};
use crate::model::{self, count_correct, Input, Mode, ModelSpec};
use papa_core::repair::{channel_stats, corrections, goal_stats, ChannelStats, Correction};
use papa_core::LengthMismatch;

/// Samples per evaluation forward (at most: an engine evaluates in batches of its capacity).
pub const EVAL_BATCH: usize = 500;

/// What went wrong while evaluating or repairing.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model refused a call.
    #[error(transparent)]
    Model(#[from] model::Error),
    /// The engine refused a call.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// papa-core refused an input.
    #[error("{0}")]
    Core(#[from] papa_core::Error),
    /// The dataset does not fit the model.
    #[error("dataset samples have {found} values, the model takes {expected}")]
    Shape {
        /// Values per sample the model takes.
        expected: usize,
        /// Values per sample of the data.
        found: usize,
    },
}

/// Test (or validation) accuracy of a population on `data`, in %.
#[derive(Clone, Debug, PartialEq)]
pub struct PopulationAccuracy {
    /// Each member alone.
    pub members: Vec<f32>,
    /// The ensemble: the mean of the members' logits.
    pub ensemble: f32,
}

/// Accuracy of every member `engine` holds and of their ensemble on all of `data`
/// (eval-mode forwards of shared batches).
pub fn population_accuracy<E: Engine>(
    engine: &mut E,
    data: &Dataset,
) -> Result<PopulationAccuracy, EvalError> {
    check_data(engine.spec(), data)?;
    let (p, classes) = (engine.population(), engine.spec().classes());
    let (mut correct, mut ensemble_correct) = (vec![0usize; p], 0usize);
    let (mut hits, mut ensemble_hits) = (vec![0usize; p], [0usize]);
    for range in eval_ranges(data.len(), engine.capacity().min(EVAL_BATCH)) {
        let input = &data.images[range.start * data.sample_len()..range.end * data.sample_len()];
        let labels: Vec<usize> = data.labels[range].iter().map(|&l| usize::from(l)).collect();
        let logits = engine.forward(Input::Shared(input), Mode::Eval)?;
        count_correct(logits, classes, &labels, &mut hits)?;
        // The ensemble predicts the mean of the members' logits (the paper's); the sum, in
        // member order, has the same argmax.
        let mut summed = vec![0.0f32; labels.len() * classes];
        for member in logits.chunks_exact(summed.len()) {
            summed.iter_mut().zip(member).for_each(|(a, &z)| *a += z);
        }
        count_correct(&summed, classes, &labels, &mut ensemble_hits)?;
        correct.iter_mut().zip(&hits).for_each(|(c, h)| *c += h);
        ensemble_correct += ensemble_hits[0];
    }
    let percent = |hits: usize| (100.0 * hits as f64 / data.len().max(1) as f64) as f32;
    Ok(PopulationAccuracy {
        members: correct.into_iter().map(percent).collect(),
        ensemble: percent(ensemble_correct),
    })
}

/// What REPAIR aims at: each parent's per-channel statistics at every layer it corrects.
///
/// Layers followed by a BatchNorm are left to it: re-estimated batch statistics undo any
/// per-channel affine change of its input, so BatchNorm reset is REPAIR there. The others
/// are corrected.
pub struct RepairGoal {
    /// The corrected layers (indices into `ModelSpec::repairable`), in network order.
    layers: Vec<usize>,
    /// Per corrected layer, `parents x C` statistics.
    parents: Vec<Vec<ChannelStats>>,
    members: usize,
}

impl RepairGoal {
    /// Measures the parents `engine` holds on the calibration batches (eval mode).
    pub fn measure<E: Engine>(
        engine: &mut E,
        calibration: &[f32],
        batch: usize,
    ) -> Result<Self, EvalError> {
        let layers: Vec<usize> = engine
            .spec()
            .repairable()
            .enumerate()
            .filter(|(_, l)| l.batch_norm.is_none())
            .map(|(i, _)| i)
            .collect();
        let parents = layers
            .iter()
            .map(|&layer| stats_of(&engine.layer_moments(layer, calibration, batch)?))
            .collect::<Result<_, EvalError>>()?;
        Ok(Self {
            layers,
            parents,
            members: engine.population(),
        })
    }

    /// REPAIR of the children `engine` holds: child `k`'s corrected layers get the
    /// statistics of the parents combined with `weights[k]` (one entry per parent), each
    /// layer measured after the earlier ones were fixed; BatchNorm statistics are
    /// re-estimated first (and again after, when a BatchNorm follows a corrected layer).
    pub fn repair<E: Engine>(
        &self,
        engine: &mut E,
        weights: &[Vec<f32>],
        calibration: &[f32],
        batch: usize,
    ) -> Result<(), EvalError> {
        let kids = engine.population();
        LengthMismatch::check("REPAIR weights (one row per child)", kids, weights.len())
            .map_err(model::Error::from)?;
        if let Some(row) = weights.iter().find(|w| w.len() != self.members) {
            LengthMismatch::check("REPAIR weights (one per parent)", self.members, row.len())
                .map_err(model::Error::from)?;
        }
        engine.reestimate_batchnorm(calibration, batch)?;
        for (&layer, parents) in self.layers.iter().zip(&self.parents) {
            let measured = stats_of(&engine.layer_moments(layer, calibration, batch)?)?;
            let c = measured.len() / kids.max(1);
            let mut fixes = vec![
                Correction {
                    scale: 1.0,
                    shift: 0.0
                };
                kids * c
            ];
            let mut goal = vec![
                ChannelStats {
                    mean: 0.0,
                    std: 0.0
                };
                c
            ];
            for (k, fix) in fixes.chunks_exact_mut(c).enumerate() {
                goal_stats(parents, &weights[k], &mut goal)?;
                corrections(&goal, &measured[k * c..(k + 1) * c], fix)?;
            }
            engine.fold(layer, &fixes)?;
        }
        // A BatchNorm after the first corrected layer saw uncorrected inputs; earlier ones (all
        // of the small CNN's) already hold the statistics a second pass would recompute.
        let later_batchnorm = self.layers.first().is_some_and(|&first| {
            engine
                .spec()
                .repairable()
                .enumerate()
                .any(|(i, l)| i > first && l.batch_norm.is_some())
        });
        if later_batchnorm {
            engine.reestimate_batchnorm(calibration, batch)?;
        }
        Ok(())
    }
}

/// Accuracy of every member of `params` (`P x N`) and of their ensemble on all of `data`
/// (one call; an [`Evaluator`] keeps its workspaces across calls).
pub fn accuracy(
    spec: &ModelSpec,
    params: &[f32],
    data: &Dataset,
) -> Result<PopulationAccuracy, EvalError> {
    Evaluator::new(spec).accuracy(params, data)
}

/// Re-estimates the BatchNorm statistics of every member (see
/// [`Evaluator::reestimate_batchnorm`]; one call).
pub fn reestimate_batchnorm(
    spec: &ModelSpec,
    params: &mut [f32],
    calibration: &[f32],
    batch: usize,
) -> Result<(), EvalError> {
    Evaluator::new(spec).reestimate_batchnorm(params, calibration, batch)
}

/// REPAIR (see [`Evaluator::repair`]; one call).
pub fn repair(
    spec: &ModelSpec,
    children: &mut [f32],
    parents: &[f32],
    weights: &[Vec<f32>],
    calibration: &[f32],
    batch: usize,
) -> Result<(), EvalError> {
    Evaluator::new(spec).repair(children, parents, weights, calibration, batch)
}

/// Evaluation and model surgery of populations in host memory (soups, saved models), with
/// one CPU engine per population size kept across calls (a run evaluates soups and members
/// dozens of times).
pub struct Evaluator {
    spec: ModelSpec,
    /// Engines by population size, each for batches of up to its capacity.
    engines: Vec<CpuEngine>,
}

impl Evaluator {
    /// No workspace yet: each is built on first use.
    pub fn new(spec: &ModelSpec) -> Self {
        Self {
            spec: spec.clone(),
            engines: vec![],
        }
    }

    /// Accuracy of every member of `params` (`P x N`) and of their ensemble on all of `data`.
    pub fn accuracy(
        &mut self,
        params: &[f32],
        data: &Dataset,
    ) -> Result<PopulationAccuracy, EvalError> {
        let engine = self.holding(params, EVAL_BATCH)?;
        population_accuracy(engine, data)
    }

    /// Re-estimates the BatchNorm running statistics of every member of `params` on the
    /// calibration batches (`calibration` holds whole batches of `batch` samples): the
    /// statistics are reset and recomputed as a cumulative average (PyTorch's
    /// `momentum=None`), so that averaged weights get statistics that match them.
    pub fn reestimate_batchnorm(
        &mut self,
        params: &mut [f32],
        calibration: &[f32],
        batch: usize,
    ) -> Result<(), EvalError> {
        let engine = self.holding(params, batch)?;
        engine.reestimate_batchnorm(calibration, batch)?;
        download_params(engine, params)
    }

    /// REPAIR: gives each child's conv/linear outputs the per-channel mean and std that its
    /// parents' outputs have, combined with the child's weights (`weights[c]` has one entry
    /// per parent), then re-estimates BatchNorm statistics (see [`RepairGoal`]).
    pub fn repair(
        &mut self,
        children: &mut [f32],
        parents: &[f32],
        weights: &[Vec<f32>],
        calibration: &[f32],
        batch: usize,
    ) -> Result<(), EvalError> {
        let goal = RepairGoal::measure(self.holding(parents, batch)?, calibration, batch)?;
        let engine = self.holding(children, batch)?;
        goal.repair(engine, weights, calibration, batch)?;
        download_params(engine, children)
    }

    /// An engine holding `params` (whole members, at least one), for batches of `batch`.
    fn holding(&mut self, params: &[f32], batch: usize) -> Result<&mut CpuEngine, EvalError> {
        let n = self.spec.len();
        let p = params.len() / n.max(1);
        LengthMismatch::check("params (P x N)", p.max(1) * n, params.len())
            .map_err(model::Error::from)?;
        let fits = |e: &CpuEngine| e.population() == p && e.capacity() >= batch;
        let at = match self.engines.iter().position(fits) {
            Some(at) => at,
            None => {
                let engine = CpuEngine::new(&self.spec, p, batch.max(EVAL_BATCH))?;
                self.engines.push(engine);
                self.engines.len() - 1
            }
        };
        let engine = &mut self.engines[at];
        engine.upload(params, &vec![0.0; params.len()])?;
        Ok(engine)
    }
}

/// Copies the population `engine` holds into `params` (its momentum is not needed here).
fn download_params(engine: &CpuEngine, params: &mut [f32]) -> Result<(), EvalError> {
    let mut velocity = vec![0.0; params.len()];
    Ok(engine.download(params, &mut velocity)?)
}

/// Channel statistics of each entry of `moments`.
fn stats_of(moments: &[papa_core::repair::Moments]) -> Result<Vec<ChannelStats>, EvalError> {
    let mut stats = vec![
        ChannelStats {
            mean: 0.0,
            std: 0.0
        };
        moments.len()
    ];
    channel_stats(moments, &mut stats)?;
    Ok(stats)
}

fn check_data(spec: &ModelSpec, data: &Dataset) -> Result<(), EvalError> {
    if data.sample_len() != spec.input_len() {
        return Err(EvalError::Shape {
            expected: spec.input_len(),
            found: data.sample_len(),
        });
    }
    Ok(())
}
