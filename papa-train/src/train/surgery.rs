//! The run's one evaluation workspace and its calibration batches: accuracies, BatchNorm
//! re-estimation and REPAIR, however often a run asks.

use crate::data::Dataset;
use crate::engine::Engine;
use crate::eval::{EvalError, Evaluator, PopulationAccuracy, RepairGoal};
use crate::model::ModelSpec;

/// An [`Evaluator`] with the run's calibration batches (fixed, unaugmented training
/// samples, whole batches of the run's calibration batch).
pub(super) struct Surgery {
    eval: Evaluator,
    samples: Vec<f32>,
    batch: usize,
}

impl Surgery {
    pub(super) fn new(spec: &ModelSpec, samples: Vec<f32>, batch: usize) -> Self {
        Self {
            eval: Evaluator::new(spec),
            samples,
            batch,
        }
    }

    /// Accuracies of the members of `params` and of their ensemble on `data`.
    pub(super) fn accuracy(
        &mut self,
        params: &[f32],
        data: &Dataset,
    ) -> Result<PopulationAccuracy, EvalError> {
        self.eval.accuracy(params, data)
    }

    /// Fresh BatchNorm statistics for every member of `params`.
    pub(super) fn reestimate(&mut self, params: &mut [f32]) -> Result<(), EvalError> {
        self.eval
            .reestimate_batchnorm(params, &self.samples, self.batch)
    }

    /// What REPAIR of children of the parents `engine` holds now aims at.
    pub(super) fn goal<E: Engine>(&self, engine: &mut E) -> Result<RepairGoal, EvalError> {
        RepairGoal::measure(engine, &self.samples, self.batch)
    }

    /// Fresh BatchNorm statistics for every member `engine` holds.
    pub(super) fn reestimate_on<E: Engine>(&self, engine: &mut E) -> Result<(), EvalError> {
        Ok(engine.reestimate_batchnorm(&self.samples, self.batch)?)
    }

    /// REPAIR of the children `engine` holds towards `goal`, child `k` with `weights[k]`.
    pub(super) fn repair_on<E: Engine>(
        &self,
        engine: &mut E,
        goal: &RepairGoal,
        weights: &[Vec<f32>],
    ) -> Result<(), EvalError> {
        goal.repair(engine, weights, &self.samples, self.batch)
    }

    /// REPAIR of `children` towards `parents` combined with each child's `weights`.
    pub(super) fn repair(
        &mut self,
        children: &mut [f32],
        parents: &[f32],
        weights: &[Vec<f32>],
    ) -> Result<(), EvalError> {
        self.eval
            .repair(children, parents, weights, &self.samples, self.batch)
    }
}
