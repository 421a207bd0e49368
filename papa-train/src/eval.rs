//! Evaluation and model surgery with the engine: accuracies of members and ensembles,
//! BatchNorm re-estimation, and REPAIR of averaged children (papa-core's arithmetic, the
//! engine's activations).

use crate::data::Dataset;
use crate::model::{self, count_correct, Input, Mode, ModelSpec, Network, BN_MOMENTUM};
use papa_core::layout::TensorKind;
use papa_core::repair::{
    accumulate, channel_stats, corrections, fold_correction, goal_stats, Bias, ChannelStats,
    Correction, Moments,
};
use papa_core::LengthMismatch;

/// Samples per evaluation forward.
pub const EVAL_BATCH: usize = 500;

/// What went wrong while evaluating or repairing.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The engine refused a call.
    #[error(transparent)]
    Model(#[from] model::Error),
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

/// Evaluation and model surgery of one model's populations, with one engine workspace per
/// population size kept across calls (a run evaluates soups and members dozens of times).
pub struct Evaluator {
    spec: ModelSpec,
    /// Networks by population size, each for batches of up to its capacity.
    nets: Vec<Network>,
}

impl Evaluator {
    /// No workspace yet: each is built on first use.
    pub fn new(spec: &ModelSpec) -> Self {
        Self {
            spec: spec.clone(),
            nets: vec![],
        }
    }

    /// The model evaluated.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Accuracy of every member of `params` (`P x N`) and of their ensemble on all of `data`.
    pub fn accuracy(
        &mut self,
        params: &[f32],
        data: &Dataset,
    ) -> Result<PopulationAccuracy, EvalError> {
        let Self { spec, nets } = self;
        let p = params.len() / spec.len().max(1);
        // At least one member, and whole members.
        LengthMismatch::check("params (P x N)", p.max(1) * spec.len(), params.len())
            .map_err(model::Error::from)?;
        check_data(spec, data)?;
        let net = workspace(spec, nets, p, EVAL_BATCH)?;
        let classes = spec.classes();
        let (mut correct, mut ensemble_correct) = (vec![0usize; p], 0usize);
        let (mut hits, mut ensemble_hits) = (vec![0usize; p], [0usize]);
        for range in crate::data::eval_ranges(data.len(), EVAL_BATCH) {
            let input =
                &data.images[range.start * data.sample_len()..range.end * data.sample_len()];
            let labels: Vec<usize> = data.labels[range].iter().map(|&l| usize::from(l)).collect();
            let logits = net.evaluate(params, Input::Shared(input))?;
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

    /// Re-estimates the BatchNorm running statistics of every member of `params` on the
    /// calibration batches (`calibration` holds whole batches of `batch` samples): the
    /// statistics are reset and recomputed as a cumulative average (PyTorch's `momentum=None`),
    /// so that averaged weights get statistics that match them.
    pub fn reestimate_batchnorm(
        &mut self,
        params: &mut [f32],
        calibration: &[f32],
        batch: usize,
    ) -> Result<(), EvalError> {
        let Self { spec, nets } = self;
        let n = spec.len();
        let p = params.len() / n.max(1);
        let has_bn = spec
            .tensors()
            .iter()
            .any(|t| t.kind == TensorKind::BnRunningMean);
        if !has_bn || p == 0 {
            return Ok(());
        }
        for member in params.chunks_exact_mut(n) {
            for t in spec.tensors() {
                let fill = match t.kind {
                    TensorKind::BnRunningMean | TensorKind::Counter => 0.0,
                    TensorKind::BnRunningVar => 1.0,
                    _ => continue,
                };
                member[t.offset..t.offset + t.shape.iter().product::<usize>()].fill(fill);
            }
        }
        let net = workspace(spec, nets, p, batch)?;
        net.set_bn_momentum(None);
        let result = calibration
            .chunks_exact(batch * spec.input_len())
            .try_for_each(|input| {
                net.forward(params, Input::Shared(input), Mode::Train)
                    .map(|_| ())
            });
        net.set_bn_momentum(Some(BN_MOMENTUM));
        result?;
        Ok(())
    }

    /// REPAIR: gives each child's conv/linear outputs the per-channel mean and std that its
    /// parents' outputs have, combined with the child's weights (`weights[c]` has one entry per
    /// parent), then re-estimates BatchNorm statistics.
    ///
    /// Layers followed by a BatchNorm are left to it: re-estimated batch statistics undo any
    /// per-channel affine change of its input, so BatchNorm reset is REPAIR there. The other
    /// layers are corrected in network order, each measured after the earlier ones were fixed.
    pub fn repair(
        &mut self,
        children: &mut [f32],
        parents: &[f32],
        weights: &[Vec<f32>],
        calibration: &[f32],
        batch: usize,
    ) -> Result<(), EvalError> {
        let n = self.spec.len();
        let kids = children.len() / n.max(1);
        LengthMismatch::check("REPAIR weights (one row per child)", kids, weights.len())
            .map_err(model::Error::from)?;
        self.reestimate_batchnorm(children, calibration, batch)?;
        let layers: Vec<(usize, model::RepairableLayer)> = self
            .spec
            .repairable()
            .enumerate()
            .filter(|(_, l)| l.batch_norm.is_none())
            .map(|(i, l)| (i, l.clone()))
            .collect();
        if layers.is_empty() || kids == 0 {
            return Ok(());
        }
        let batches: Vec<&[f32]> = calibration
            .chunks_exact(batch * self.spec.input_len())
            .collect();
        // Each parent's statistics at every corrected layer: [layer][parent * C + c].
        let parent_stats = self
            .layer_moments(parents, &layers, &batches, batch)?
            .iter()
            .map(|m| stats_of(m))
            .collect::<Result<Vec<_>, _>>()?;
        for (at, goal_of_parents) in parent_stats.iter().enumerate() {
            let layer = &layers[at..=at];
            let moments = self.layer_moments(children, layer, &batches, batch)?;
            fold_layer(
                &self.spec,
                children,
                &moments[0],
                goal_of_parents,
                weights,
                &layer[0],
            )?;
        }
        // A BatchNorm after the first corrected layer saw uncorrected inputs; earlier ones (all of
        // the small CNN's) already hold the statistics a second pass would recompute.
        let first_corrected = layers[0].0;
        let later_batchnorm = self
            .spec
            .repairable()
            .enumerate()
            .any(|(i, l)| i > first_corrected && l.batch_norm.is_some());
        if later_batchnorm {
            self.reestimate_batchnorm(children, calibration, batch)?;
        }
        Ok(())
    }

    /// Each member's per-channel moments of the pre-activations of `layers` over `batches`
    /// (eval mode): `[layer][member * C + c]`.
    fn layer_moments(
        &mut self,
        params: &[f32],
        layers: &[(usize, model::RepairableLayer)],
        batches: &[&[f32]],
        batch: usize,
    ) -> Result<Vec<Vec<Moments>>, EvalError> {
        let Self { spec, nets } = self;
        let p = params.len() / spec.len().max(1);
        let net = workspace(spec, nets, p, batch)?;
        let mut moments: Vec<Vec<Moments>> = layers
            .iter()
            .map(|(_, l)| vec![Moments::EMPTY; p * l.channels])
            .collect();
        for input in batches {
            net.evaluate(params, Input::Shared(input))?;
            for ((index, layer), stats) in layers.iter().zip(&mut moments) {
                let out = net.pre_activation(*index)?;
                let c = layer.channels;
                for m in 0..p {
                    accumulate(&mut stats[m * c..][..c], out.member(m), c, 1)?;
                }
            }
        }
        Ok(moments)
    }
}

/// The network of `population` members for batches of `batch` among `nets`, built on first
/// use (capacity at least [`EVAL_BATCH`], so that accuracy and calibration share it).
fn workspace<'n>(
    spec: &ModelSpec,
    nets: &'n mut Vec<Network>,
    population: usize,
    batch: usize,
) -> Result<&'n mut Network, EvalError> {
    let fits = |net: &Network| net.population() == population && net.capacity() >= batch;
    let at = match nets.iter().position(fits) {
        Some(at) => at,
        None => {
            nets.push(Network::new(spec, population, batch.max(EVAL_BATCH))?);
            nets.len() - 1
        }
    };
    Ok(&mut nets[at])
}

/// Channel statistics of `moments`.
fn stats_of(moments: &[Moments]) -> Result<Vec<ChannelStats>, papa_core::Error> {
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

/// Folds into each child's weights and bias of `layer` the correction from its measured
/// `moments` (`kids x C`) to the goal: its parents' statistics combined with its weights.
fn fold_layer(
    spec: &ModelSpec,
    children: &mut [f32],
    moments: &[Moments],
    goal_of_parents: &[ChannelStats],
    weights: &[Vec<f32>],
    (index, layer): &(usize, model::RepairableLayer),
) -> Result<(), EvalError> {
    let (n, c) = (spec.len(), layer.channels);
    let missing = || model::Error::NoSuchLayer(*index);
    let weight = spec.find(&layer.weight).ok_or_else(missing)?;
    let bias = spec.find(&layer.bias).ok_or_else(missing)?;
    let mut goal = vec![
        ChannelStats {
            mean: 0.0,
            std: 0.0
        };
        c
    ];
    let mut fix = vec![
        Correction {
            scale: 1.0,
            shift: 0.0
        };
        c
    ];
    for (k, child) in children.chunks_exact_mut(n).enumerate() {
        let measured = stats_of(&moments[k * c..][..c])?;

        goal_stats(goal_of_parents, &weights[k], &mut goal)?;
        corrections(&goal, &measured, &mut fix)?;
        let (w, rest) = child.split_at_mut(bias.offset);
        let w = &mut w[weight.offset..weight.offset + weight.shape.iter().product::<usize>()];
        fold_correction(w, Bias::Existing(&mut rest[..c]), &fix)?;
    }
    Ok(())
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
