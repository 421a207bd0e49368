//! The CPU engine: [`Network`]'s population-batched f32 kernels and papa-core's rules, both
//! on the CPU path detected at run time (papa-cpu).

use super::{
    calibration_batches, fold_into_population, repair_target, Diversity, Engine, EngineError, Rule,
};
use crate::model::{self, reset_running_stats, Input, Mode, ModelSpec, Network, BN_MOMENTUM};
use crate::optim::Sgd;
use papa_core::diversity::{distances_to_mean, mean_pairwise_cosine};
use papa_core::population::{Contiguous, Population};
use papa_core::repair::{accumulate, Correction, Moments};
use papa_core::rules::{papa2_scratch_len, Options, Weights};
use papa_core::LengthMismatch;
use papa_cpu::{rules, Isa};
use std::ops::Range;

/// A population of `P` members in host memory, trained by [`Network`].
///
/// ```
/// use papa_model::zoo;
/// use papa_train::engine::{CpuEngine, Engine, Rule};
/// use papa_train::model::{Input, Mode, ModelSpec};
/// use papa_core::rules::Weights;
///
/// let spec = ModelSpec::new(&zoo::mlp(&[8], 3), [1, 4, 4], 3).unwrap();
/// let mut engine = CpuEngine::new(&spec, 2, 5).unwrap();
/// let logits = engine.forward(Input::Shared(&[0.5; 5 * 16]), Mode::Eval).unwrap();
/// assert_eq!(logits.len(), 2 * 5 * 3);
/// engine.apply(Rule::All { weights: Weights::Uniform }, true).unwrap();
/// ```
pub struct CpuEngine {
    net: Network,
    params: Vec<f32>,
    velocity: Vec<f32>,
    /// Whether `net` holds gradients not yet used by a step.
    has_gradients: bool,
    trainable: Vec<Range<usize>>,
}

impl CpuEngine {
    /// A population of `population` zeroed members, batches of up to `capacity` samples per
    /// member, on the fastest path this CPU has.
    pub fn new(spec: &ModelSpec, population: usize, capacity: usize) -> Result<Self, EngineError> {
        Self::with_isa(spec, population, capacity, Isa::detect())
    }

    /// [`CpuEngine::new`] on the path `isa` (an error if this CPU lacks it).
    pub fn with_isa(
        spec: &ModelSpec,
        population: usize,
        capacity: usize,
        isa: Isa,
    ) -> Result<Self, EngineError> {
        let net = Network::with_isa(spec, population, capacity, isa)?;
        let n = spec.len();
        // The rules' layout (counters take the max) is built per call; checked once here.
        model::rule_options(&spec.tensor_specs())?;
        Ok(Self {
            net,
            params: model::zeroed("population", &[population, n])?,
            velocity: model::zeroed("momentum", &[population, n])?,
            has_gradients: false,
            trainable: spec.trainable_ranges(),
        })
    }

    /// The CPU path the kernels run on.
    pub fn isa(&self) -> Isa {
        self.net.isa()
    }

    fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), EngineError> {
        LengthMismatch::check(what, expected, found).map_err(model::Error::from)?;
        Ok(())
    }
}

/// Applies `rule` to one `P x N` buffer.
fn apply_rule(
    isa: Isa,
    buf: &mut [f32],
    p: usize,
    rule: Rule<'_>,
    opts: &Options<'_>,
) -> Result<(), EngineError> {
    let mut pop = Contiguous::new(buf, p)?;
    match rule {
        Rule::Gradual { weights, alpha } => rules::gradual(isa, &mut pop, weights, alpha, opts)?,
        Rule::All { weights } => rules::papa_all(isa, &mut pop, weights, opts)?,
        Rule::Pairs(pairs) => {
            let mut scratch = vec![0.0; papa2_scratch_len(p, pop.member_len())];
            rules::papa2(isa, &mut pop, pairs, &mut scratch, opts)?
        }
    }
    Ok(())
}

impl Engine for CpuEngine {
    fn spec(&self) -> &ModelSpec {
        self.net.spec()
    }

    fn population(&self) -> usize {
        self.net.population()
    }

    fn capacity(&self) -> usize {
        self.net.capacity()
    }

    fn path(&self) -> String {
        self.isa().name().into()
    }

    fn upload(&mut self, params: &[f32], velocity: &[f32]) -> Result<(), EngineError> {
        Self::check_len("params (P x N)", self.params.len(), params.len())?;
        Self::check_len("velocity (P x N)", self.velocity.len(), velocity.len())?;
        self.params.copy_from_slice(params);
        self.velocity.copy_from_slice(velocity);
        self.has_gradients = false;
        Ok(())
    }

    fn download(&self, params: &mut [f32], velocity: &mut [f32]) -> Result<(), EngineError> {
        Self::check_len("params (P x N)", self.params.len(), params.len())?;
        Self::check_len("velocity (P x N)", self.velocity.len(), velocity.len())?;
        params.copy_from_slice(&self.params);
        velocity.copy_from_slice(&self.velocity);
        Ok(())
    }

    fn forward(&mut self, input: Input<'_>, mode: Mode) -> Result<&[f32], EngineError> {
        // A refused forward leaves the last one (and its gradients) as they were.
        self.net.forward(&mut self.params, input, mode)?;
        self.has_gradients = false;
        Ok(self.net.logits())
    }

    fn backward(&mut self, dlogits: &[f32]) -> Result<&[f32], EngineError> {
        let grads = self.net.backward(&self.params, dlogits)?;
        self.has_gradients = true;
        Ok(grads)
    }

    fn sgd_step(&mut self, sgd: &Sgd, lr: f32) -> Result<(), EngineError> {
        if !self.has_gradients {
            return Err(EngineError::NoGradients);
        }
        let n = self.net.spec().len();
        let grads = self.net.gradients();
        sgd.step(
            &mut self.params,
            grads,
            &mut self.velocity,
            n,
            &self.trainable,
            lr,
        )?;
        // Used once: the next step needs the next backward.
        self.has_gradients = false;
        Ok(())
    }

    fn apply(&mut self, rule: Rule<'_>, momentum: bool) -> Result<(), EngineError> {
        let (isa, p) = (self.isa(), self.population());
        // Borrows the network's spec only, so that the population can change.
        let tensors = self.net.spec().tensor_specs();
        let opts = model::rule_options(&tensors)?;
        apply_rule(isa, &mut self.params, p, rule, &opts)?;
        if momentum {
            // A counter's velocity is zero: the velocity is averaged entry by entry.
            apply_rule(isa, &mut self.velocity, p, rule, &Options::default())?;
        }
        Ok(())
    }

    fn average(&self, weights: Weights<'_>) -> Result<Vec<f32>, EngineError> {
        let tensors = self.net.spec().tensor_specs();
        let opts = model::rule_options(&tensors)?;
        let mut out = vec![0.0; self.net.spec().len()];
        let pop = Contiguous::new(&self.params[..], self.population())?;
        rules::average(self.isa(), &pop, weights, &mut out, &opts)?;
        Ok(out)
    }

    fn diversity(&self) -> Result<Diversity, EngineError> {
        let (p, n) = (self.population(), self.net.spec().len());
        let trained: Vec<f32> = self
            .params
            .chunks_exact(n)
            .flat_map(|member| {
                self.trainable
                    .iter()
                    .flat_map(move |r| member[r.clone()].iter().copied())
            })
            .collect();
        let pop = Contiguous::new(&trained[..], p)?;
        let mut distance_to_mean = vec![0.0; p];
        distances_to_mean(&pop, Weights::Uniform, &mut distance_to_mean)?;
        let mut gram = vec![0.0; p * p];
        let mean_pairwise_cosine = mean_pairwise_cosine(&pop, &mut gram)?;
        Ok(Diversity {
            distance_to_mean,
            mean_pairwise_cosine,
        })
    }

    fn reestimate_batchnorm(
        &mut self,
        calibration: &[f32],
        batch: usize,
    ) -> Result<(), EngineError> {
        let batches = calibration_batches(calibration, batch, self.net.spec().input_len())?;
        self.has_gradients = false;
        if !reset_running_stats(self.net.spec(), &mut self.params) {
            return Ok(());
        }
        self.net.set_bn_momentum(None);
        let result = batches.into_iter().try_for_each(|input| {
            let input = Input::Shared(input);
            self.net
                .forward(&mut self.params, input, Mode::Train)
                .map(|_| ())
        });
        self.net.set_bn_momentum(Some(BN_MOMENTUM));
        Ok(result?)
    }

    fn layer_moments(
        &mut self,
        layer: usize,
        calibration: &[f32],
        batch: usize,
    ) -> Result<Vec<Moments>, EngineError> {
        let (p, spec) = (self.population(), self.net.spec());
        let channels = repair_target(spec, layer)?.0.channels;
        let batches = calibration_batches(calibration, batch, spec.input_len())?;
        self.has_gradients = false;
        let mut moments = vec![Moments::EMPTY; p * channels];
        for input in batches {
            self.net.evaluate(&self.params, Input::Shared(input))?;
            let out = self.net.pre_activation(layer)?;
            for (m, stats) in moments.chunks_exact_mut(channels).enumerate() {
                accumulate(stats, out.member(m), channels, 1).map_err(EngineError::Repair)?;
            }
        }
        Ok(moments)
    }

    fn fold(&mut self, layer: usize, corrections: &[Correction]) -> Result<(), EngineError> {
        fold_into_population(self.net.spec(), layer, &mut self.params, corrections)
    }
}
