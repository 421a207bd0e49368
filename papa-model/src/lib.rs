#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! papa-model: the one model description that papa's trainers, GPU backend and exporters
//! share.
//!
//! - [`layer`]: the layers, with their parameters in fields, and the shapes they map.
//! - [`plan`]: where each layer's tensors sit in a member's flat vector (PyTorch
//!   `state_dict` order), computed without allocating.
//! - [`init`]: PyTorch's default initialisation.
//! - [`view`]: a model read in place (a layer table plus the parameter blob, no allocator):
//!   what a microcontroller reads from flash.
//! - `spec` (feature `alloc`): [`ModelSpec`], the owned description with tensor names.
//! - `zoo` (feature `alloc`): the named models (`cnn-s`, `mlp:W1,W2`).
//! - `card` (feature `serde`): the [`ModelCard`] saved in every model file.
//! - `file` (feature `safetensors`): model files (tensors plus the card) as bytes.
//!
//! Without features the crate is `no_std` with no allocator.
//!
//! ```
//! use papa_model::layer::{Layer, Shape};
//! use papa_model::view::ModelView;
//!
//! const LAYERS: [Layer; 3] = [Layer::Flatten, Layer::Linear { out_features: 3 }, Layer::Relu];
//! let input = Shape::Spatial { channels: 1, height: 2, width: 2 };
//! let params = [0.0f32; 4 * 3 + 3];
//! let view = ModelView::<8>::new(&LAYERS, input, 3, &params)?;
//! assert_eq!(view.ops().len(), 3); // flatten, linear, ReLU
//! # Ok::<(), papa_model::ModelError>(())
//! ```

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "serde")]
pub mod card;
mod error;
#[cfg(feature = "safetensors")]
pub mod file;
pub mod init;
pub mod layer;
pub mod plan;
#[cfg(feature = "alloc")]
mod spec;
pub mod view;
#[cfg(feature = "alloc")]
pub mod zoo;

#[cfg(feature = "serde")]
pub use card::ModelCard;
pub use error::ModelError;
pub use papa_core::LengthMismatch;
#[cfg(feature = "alloc")]
pub use spec::{ModelSpec, RepairableLayer, TensorInfo};

/// BatchNorm's epsilon (PyTorch's default).
pub const BN_EPS: f32 = 1e-5;
/// BatchNorm's running-statistics momentum (PyTorch's default).
pub const BN_MOMENTUM: f32 = 0.1;
