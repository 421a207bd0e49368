//! The engine: whoever holds a population and does everything the trainer does to it.
//!
//! The trainer never touches parameters except through [`Engine::upload`] and
//! [`Engine::download`] (checkpoints, export), so an engine may keep its population where it
//! computes (papa-cuda: on the GPU) and average it there. Two engines implement it here:
//! [`CpuEngine`] (the population-batched f32 engine, on the CPU path it detects) and
//! [`Reference`] (plain f64 loops: slow, obviously correct, the conformance suite's
//! independent reference).

mod cpu;
mod reference;

pub use cpu::CpuEngine;
pub use reference::Reference;

use crate::model::{self, Input, Mode, ModelSpec, RepairableLayer, TensorInfo};
use crate::optim::{OptimError, Sgd};
use papa_core::repair::{fold_correction, Bias, Correction, Moments};
use papa_core::rules::Weights;

/// What an engine refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model, a buffer or a batch did not fit.
    #[error(transparent)]
    Model(#[from] model::Error),
    /// A rule of papa-core refused its input.
    #[error(transparent)]
    Core(#[from] papa_core::Error),
    /// The optimizer refused its settings or buffers.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// REPAIR's arithmetic refused its input (e.g. a non-finite activation or correction).
    #[error("REPAIR: {0}")]
    Repair(papa_core::Error),
    /// No repairable layer of that index.
    #[error("no repairable layer {0}")]
    NoSuchLayer(usize),
    /// `sgd_step` was called without the gradients of a backward pass.
    #[error("sgd_step needs the gradients of a preceding backward")]
    NoGradients,
    /// The device an engine computes on failed or refused (papa-cuda: a driver, cuBLAS or
    /// launch error, out of device memory).
    #[error("device: {0}")]
    Device(Box<dyn std::error::Error + Send + Sync>),
}

/// A papa-core rule applied to the whole population (and, when asked, to the momentum
/// buffers with the same rule and no layout: the velocity of a counter is zero).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule<'a> {
    /// PAPA gradual: `w_j <- alpha w_j + (1 - alpha) mean` (counters take the max).
    Gradual {
        /// The weights of the mean.
        weights: Weights<'a>,
        /// Keep factor in `[0, 1]`.
        alpha: f32,
    },
    /// PAPA-all: every member becomes the mean.
    All {
        /// The weights of the mean.
        weights: Weights<'a>,
    },
    /// PAPA-2: child `j` becomes the mean of `pairs[j]`, from the old population.
    Pairs(&'a [(usize, usize)]),
}

/// How far apart the members are, over their trainable entries only (counters and running
/// statistics would dominate the norms).
#[derive(Clone, Debug, PartialEq)]
pub struct Diversity {
    /// Each member's L2 distance to the uniform mean.
    pub distance_to_mean: Vec<f64>,
    /// The mean cosine similarity over distinct pairs (1 for a single member).
    pub mean_pairwise_cosine: f64,
}

/// Everything the trainer does to a population of `P` members of `N` floats (PyTorch's
/// `state_dict` order, running statistics and counters included), each with a momentum
/// buffer of `N` floats.
pub trait Engine {
    /// The model every member is.
    fn spec(&self) -> &ModelSpec;
    /// Members P.
    fn population(&self) -> usize;
    /// The most samples per member in one forward.
    fn capacity(&self) -> usize;
    /// Where the kernels run, as recorded in a run (e.g. `avx512`, `portable`, `f64`).
    fn path(&self) -> String;

    /// Replaces the population and its momentum with host copies (`P x N` each).
    fn upload(&mut self, params: &[f32], velocity: &[f32]) -> Result<(), EngineError>;
    /// Copies the population and its momentum to the host (`P x N` each).
    fn download(&self, params: &mut [f32], velocity: &mut [f32]) -> Result<(), EngineError>;

    /// Forward pass of every member; the logits, `P x B x classes`. [`Mode::Train`] uses
    /// batch statistics and updates BatchNorm's running statistics and counters as PyTorch.
    fn forward(&mut self, input: Input<'_>, mode: Mode) -> Result<&[f32], EngineError>;
    /// Gradients of the last forward's parameters for the logits' gradient `dlogits`
    /// (`P x N`, zero for running statistics and counters); kept for [`Engine::sgd_step`].
    fn backward(&mut self, dlogits: &[f32]) -> Result<&[f32], EngineError>;
    /// [`Engine::backward`] for a training step: the gradients stay with the engine for
    /// [`Engine::sgd_step`] and are not returned (an engine that computes elsewhere, such as
    /// papa-cuda's, skips their copy to the host). What the trainer calls.
    fn backward_for_sgd(&mut self, dlogits: &[f32]) -> Result<(), EngineError> {
        self.backward(dlogits).map(|_| ())
    }
    /// One `torch.optim.SGD` step of the trainable entries with the last gradients.
    fn sgd_step(&mut self, sgd: &Sgd, lr: f32) -> Result<(), EngineError>;

    /// Applies `rule` to the population, then to the momentum when `momentum`.
    fn apply(&mut self, rule: Rule<'_>, momentum: bool) -> Result<(), EngineError>;
    /// The weighted average of the members (a soup), `N` floats on the host.
    fn average(&self, weights: Weights<'_>) -> Result<Vec<f32>, EngineError>;
    /// The members' spread over their trainable entries.
    fn diversity(&self) -> Result<Diversity, EngineError>;

    /// Resets every member's BatchNorm running statistics and counters and re-estimates them
    /// as PyTorch's cumulative average (`momentum=None`) over train-mode forwards of
    /// `calibration`: whole batches of `batch` samples, the same for every member.
    fn reestimate_batchnorm(
        &mut self,
        calibration: &[f32],
        batch: usize,
    ) -> Result<(), EngineError>;
    /// Each member's per-channel moments of repairable layer `layer`'s outputs (before any
    /// activation; see `ModelSpec::repairable`) over eval-mode forwards of `calibration`
    /// (whole batches of `batch`): `P x C`, member-major.
    fn layer_moments(
        &mut self,
        layer: usize,
        calibration: &[f32],
        batch: usize,
    ) -> Result<Vec<Moments>, EngineError>;
    /// Folds per-member, per-channel corrections (`P x C`: `y <- scale y + shift`) into
    /// repairable layer `layer`'s weight and bias.
    fn fold(&mut self, layer: usize, corrections: &[Correction]) -> Result<(), EngineError>;
}

/// Repairable layer `layer` of `spec` with its weight and bias tensors.
pub(crate) fn repair_target(
    spec: &ModelSpec,
    layer: usize,
) -> Result<(&RepairableLayer, &TensorInfo, &TensorInfo), EngineError> {
    let missing = || EngineError::NoSuchLayer(layer);
    let target = spec.repairable().nth(layer).ok_or_else(missing)?;
    let weight = spec.find(&target.weight).ok_or_else(missing)?;
    let bias = spec.find(&target.bias).ok_or_else(missing)?;
    Ok((target, weight, bias))
}

/// Folds per-member, per-channel corrections (`P x C`) into repairable layer `layer`'s
/// weight and bias in a host population (`P x N`, member-major): the CPU engine's fold,
/// which the GPU engine also runs on its downloaded members.
pub fn fold_into_population(
    spec: &ModelSpec,
    layer: usize,
    population: &mut [f32],
    corrections: &[Correction],
) -> Result<(), EngineError> {
    let n = spec.len();
    let (target, weight, bias) = repair_target(spec, layer)?;
    let c = target.channels;
    let p = population.len() / n.max(1);
    papa_core::LengthMismatch::check("corrections (P x C)", p * c, corrections.len())
        .map_err(model::Error::from)?;
    let w_range = weight.offset..weight.offset + weight.shape.iter().product::<usize>();
    let b_offset = bias.offset;
    if w_range.end > b_offset {
        let what = "REPAIR of a layer whose bias precedes its weight";
        return Err(model::Error::Unsupported {
            op: target.op,
            what,
        }
        .into());
    }
    for (member, fix) in population
        .chunks_exact_mut(n)
        .zip(corrections.chunks_exact(c))
    {
        let (w, rest) = member.split_at_mut(b_offset);
        let b = &mut rest[..c];
        fold_correction(&mut w[w_range.clone()], Bias::Existing(b), fix)
            .map_err(EngineError::Repair)?;
    }
    Ok(())
}

/// The calibration batches of `calibration`: whole batches of `batch` samples of
/// `sample_len` values, or an error naming the length.
pub(crate) fn calibration_batches(
    calibration: &[f32],
    batch: usize,
    sample_len: usize,
) -> Result<core::slice::ChunksExact<'_, f32>, EngineError> {
    let per = (batch * sample_len).max(1);
    let whole = calibration.len() / per * per;
    papa_core::LengthMismatch::check("calibration (whole batches)", whole, calibration.len())
        .map_err(model::Error::from)?;
    Ok(calibration.chunks_exact(per))
}
