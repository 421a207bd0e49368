//! Population-batched models on the CPU: forward and backward of papa-model's descriptions.
//!
//! A population of P members is one contiguous `P x N` buffer of `f32` (member-major: row `j`
//! is member `j`'s flat parameter vector, BatchNorm running statistics and counters included,
//! in PyTorch `state_dict` order). [`Network`] runs all P members through each layer together.
//!
//! ```
//! use papa_core::rng::Rng;
//! use papa_model::zoo;
//! use papa_train::model::{Input, Mode, ModelSpec, Network};
//!
//! let spec = ModelSpec::new(&zoo::mlp(&[8], 3), [1, 4, 4], 3).unwrap();
//! let (p, b) = (2, 5);
//! let mut params = vec![0.0; p * spec.len()];
//! let rng = Rng::new(1);
//! for (j, member) in params.chunks_mut(spec.len()).enumerate() {
//!     spec.init_member(&mut rng.fork(j as u64), member).unwrap();
//! }
//! let mut net = Network::new(&spec, p, b).unwrap();
//! let input = vec![0.5; p * b * 16];
//! let logits = net.forward(&mut params, Input::PerMember(&input), Mode::Train).unwrap();
//! assert_eq!(logits.len(), p * b * 3);
//! let grads = net.backward(&params, &vec![0.1; p * b * 3]).unwrap();
//! assert_eq!(grads.len(), p * spec.len());
//! ```

mod conv;
mod kernels;
mod loss;
mod network;

pub use loss::{argmax, count_correct, soft_cross_entropy};
pub use network::{Input, LayerOutput, Mode, Network};
pub use papa_model::{ModelSpec, RepairableLayer, TensorInfo, BN_EPS, BN_MOMENTUM};

use papa_core::layout::TensorKind;
use papa_core::LengthMismatch;
use papa_model::ModelError;

/// The rules' options over `tensors` (a spec's `tensor_specs()`): its layout, so that
/// counters take the max instead of being averaged, and no finiteness scan (the engine's
/// values are its own).
pub(crate) fn rule_options<'a>(
    tensors: &'a [papa_core::layout::TensorSpec<'a>],
) -> Result<papa_core::rules::Options<'a>, papa_core::Error> {
    Ok(papa_core::rules::Options {
        layout: Some(papa_core::layout::Layout::new(tensors)?),
        check_finite: false,
    })
}

/// A zeroed buffer of `factors` multiplied values, or [`Error::OutOfMemory`] naming it.
pub(crate) fn zeroed<T: Clone + Default>(
    what: &'static str,
    factors: &[usize],
) -> Result<Vec<T>, Error> {
    let elem = std::mem::size_of::<T>() as u64;
    let count = factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f));
    let too_big = || Error::OutOfMemory {
        what,
        bytes: factors
            .iter()
            .try_fold(elem, |acc, &f| acc.checked_mul(f as u64))
            .unwrap_or(u64::MAX),
    };
    let len = count.ok_or_else(too_big)?;
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| too_big())?;
    buffer.resize(len, T::default());
    Ok(buffer)
}

/// Resets the BatchNorm running statistics and counters of every member of `params`
/// (`P x N`) as PyTorch's `reset_running_stats` does: mean 0, variance 1, count 0.
/// Whether the model has a BatchNorm at all (nothing to re-estimate otherwise).
pub fn reset_running_stats(spec: &ModelSpec, params: &mut [f32]) -> bool {
    let mut any = false;
    for member in params.chunks_exact_mut(spec.len().max(1)) {
        for t in spec.tensors() {
            let fill = match t.kind {
                TensorKind::BnRunningMean | TensorKind::Counter => 0.0,
                TensorKind::BnRunningVar => 1.0,
                _ => continue,
            };
            any |= t.kind == TensorKind::BnRunningMean;
            member[t.offset..t.offset + t.shape.iter().product::<usize>()].fill(fill);
        }
    }
    any
}

/// What went wrong in a model call; every public entry point checks its buffers and returns
/// this instead of panicking.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer had the wrong length.
    #[error(transparent)]
    Length(#[from] LengthMismatch),
    /// The model description is not buildable.
    #[error("invalid model: {0}")]
    Model(#[from] ModelError),
    /// A layer the CPU engine has no kernel for (it runs 3x3 stride-1 padding-1 convolutions
    /// and 2x2 stride-2 max-pools).
    #[error("the CPU engine cannot run op {op} ({what})")]
    Unsupported {
        /// Index of the op in the model's plan.
        op: usize,
        /// What it lacks.
        what: &'static str,
    },
    /// A network was asked for zero members or a zero batch.
    #[error("a network needs at least one member and one sample per batch (got {population} and {batch})")]
    Empty {
        /// Members asked for.
        population: usize,
        /// Samples per member asked for.
        batch: usize,
    },
    /// A batch was empty or larger than the network was sized for.
    #[error("batch of {batch} samples does not fit a network sized for 1..={capacity}")]
    Batch {
        /// Samples per member in the call.
        batch: usize,
        /// The most the network was built for.
        capacity: usize,
    },
    /// Train-mode BatchNorm needs more than one value per channel (the unbiased variance
    /// divides by `count - 1`).
    #[error("train-mode BatchNorm needs more than one value per channel, got {values}")]
    TooFewForBatchNorm {
        /// Values per channel in the batch.
        values: usize,
    },
    /// `backward` was called without a preceding forward (each forward allows one backward).
    #[error("backward needs a preceding forward of the same network")]
    NoForward,
    /// The CPU cannot run the path asked for.
    #[error(transparent)]
    Isa(#[from] papa_cpu::IsaError),
    /// A buffer does not fit in memory (or its size overflows): refused instead of letting
    /// the allocator abort the process.
    #[error("the {what} buffer needs {bytes} bytes, more than this machine can allocate (fewer members, a smaller batch or a smaller model)")]
    OutOfMemory {
        /// The buffer.
        what: &'static str,
        /// Its size (`u64::MAX` when that overflows too).
        bytes: u64,
    },
    /// A repairable layer index was out of range.
    #[error("no repairable layer {0}")]
    NoSuchLayer(usize),
}
