//! Population-batched models: specification, parameter layout, forward and backward.
//!
//! A population of P members is one contiguous `P x N` buffer of `f32` (member-major: row `j`
//! is member `j`'s flat parameter vector, BatchNorm running statistics and counters included,
//! in PyTorch `state_dict` order). [`Network`] runs all P members through each layer together.
//!
//! ```
//! use papa_core::rng::Rng;
//! use papa_train::model::{init_member, Input, Mode, ModelKind, ModelSpec, Network};
//!
//! let spec = ModelSpec::new(ModelKind::Mlp { hidden: vec![8] }, 1, 4, 4, 3).unwrap();
//! let (p, b) = (2, 5);
//! let mut params = vec![0.0; p * spec.len()];
//! let rng = Rng::new(1);
//! for (j, member) in params.chunks_mut(spec.len()).enumerate() {
//!     init_member(&spec, &mut rng.fork(j as u64), member).unwrap();
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
mod spec;

pub use loss::{argmax, count_correct, ensemble_probabilities, soft_cross_entropy};
pub use network::{Input, LayerOutput, Mode, Network};
pub use spec::{init_member, Layer, ModelKind, ModelSpec, RepairableLayer, TensorInfo};

/// BatchNorm's epsilon (PyTorch's default).
pub const BN_EPS: f32 = 1e-5;
/// BatchNorm's running-statistics momentum (PyTorch's default).
pub const BN_MOMENTUM: f32 = 0.1;

/// What went wrong in a model call; every public entry point checks its buffers and returns
/// this instead of panicking.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer had the wrong length.
    #[error("{what}: expected {expected} values, got {found}")]
    Length {
        /// Which argument (e.g. `"params"`, `"input"`).
        what: &'static str,
        /// The length needed.
        expected: usize,
        /// The length given.
        found: usize,
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
    /// `backward` was called without a preceding `forward` (each forward allows one backward).
    #[error("backward needs a preceding forward of the same network")]
    NoForward,
    /// The model description is not buildable (zero size, layer on the wrong kind of input).
    #[error("invalid model: {0}")]
    Spec(String),
    /// A repairable layer index was out of range.
    #[error("no repairable layer {0}")]
    NoSuchLayer(usize),
}
