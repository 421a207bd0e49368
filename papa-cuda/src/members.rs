//! A model's population and its momentum on the GPU: the population half of papa-train's
//! `Engine` (upload, download, apply, average, diversity) done by papa-cuda's kernels, with
//! the CPU engine's semantics. The GPU training engine (issue 18) keeps one of these.

use crate::population::{Columns, Counters, DevicePopulation};
use crate::{Error, Gpu};
use papa_core::layout::Layout;
use papa_core::rules::Weights;
use papa_train::engine::{Diversity, Rule};
use papa_train::model::ModelSpec;
use std::sync::Arc;

/// P members of a model and their momentum buffers, each P x N floats on the device.
///
/// ```no_run
/// use papa_core::rules::Weights;
/// use papa_cuda::{DeviceMembers, Gpu};
/// use papa_model::zoo;
/// use papa_train::engine::Rule;
/// use papa_train::model::ModelSpec;
///
/// let spec = ModelSpec::new(&zoo::mlp(&[8], 3), [1, 4, 4], 3).unwrap();
/// let mut members = DeviceMembers::new(&Gpu::new(0)?, &spec, 4)?;
/// members.apply(Rule::All { weights: Weights::Uniform }, true)?;
/// let soup = members.average(Weights::Uniform)?;
/// assert_eq!(soup.len(), spec.len());
/// # Ok::<(), papa_cuda::Error>(())
/// ```
#[derive(Debug)]
pub struct DeviceMembers {
    params: DevicePopulation,
    velocity: DevicePopulation,
    /// The model's counters (BatchNorm's `num_batches_tracked`) take the max.
    counters: Counters,
    /// The momentum has no layout: a counter's velocity is zero.
    plain: Counters,
    /// The diversity looks at the trainable entries only, as the CPU engine's.
    trainable: Columns,
}

impl DeviceMembers {
    /// `population` zeroed members of `spec` and zeroed momentum.
    pub fn new(gpu: &Arc<Gpu>, spec: &ModelSpec, population: usize) -> Result<Self, Error> {
        let n = spec.len();
        let tensors = spec.tensor_specs();
        let layout = Layout::new(&tensors)?;
        Ok(Self {
            params: DevicePopulation::zeros(gpu, population, n)?,
            velocity: DevicePopulation::zeros(gpu, population, n)?,
            counters: Counters::new(gpu, Some(&layout))?,
            plain: Counters::none(gpu)?,
            trainable: Columns::new(gpu, &spec.trainable_ranges())?,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &DevicePopulation {
        &self.params
    }

    /// The parameters and the momentum, writable (the GPU engine's SGD step).
    pub(crate) fn both_mut(&mut self) -> (&mut DevicePopulation, &mut DevicePopulation) {
        (&mut self.params, &mut self.velocity)
    }

    /// Replaces the population and its momentum with host copies (P x N each).
    pub fn upload(&mut self, params: &[f32], velocity: &[f32]) -> Result<(), Error> {
        self.params.upload(params)?;
        self.velocity.upload(velocity)
    }

    /// Copies the population and its momentum to the host (P x N each).
    pub fn download(&self, params: &mut [f32], velocity: &mut [f32]) -> Result<(), Error> {
        self.params.download(params)?;
        self.velocity.download(velocity)
    }

    /// Applies `rule` to the population, then to the momentum when `momentum`.
    pub fn apply(&mut self, rule: Rule<'_>, momentum: bool) -> Result<(), Error> {
        self.params.apply(rule, &self.counters)?;
        if momentum {
            self.velocity.apply(rule, &self.plain)?;
        }
        Ok(())
    }

    /// The weighted average of the members (a soup), N floats on the host.
    pub fn average(&self, weights: Weights<'_>) -> Result<Vec<f32>, Error> {
        self.params.average(weights, &self.counters)
    }

    /// The members' spread over their trainable entries.
    pub fn diversity(&self) -> Result<Diversity, Error> {
        self.params.diversity(&self.trainable)
    }
}
