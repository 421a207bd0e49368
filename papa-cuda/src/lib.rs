#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]
//! papa-cuda: PAPA's population on an NVIDIA GPU.
//!
//! A population is one device buffer of P x N floats, member-major, as everywhere in papa
//! ([`DevicePopulation`]). Every papa-core rule (weighted average, PAPA-all, PAPA gradual,
//! PAPA-2 with pairs drawn on the host) and the diversity metrics run on it as CUDA kernels
//! ([`kernels`]) that give papa-core's bits (the rules) or its values to rounding (the
//! metrics), the same bits on every launch: no floating-point atomics, fixed reduction trees.
//! [`DeviceMembers`] is the population half of papa-train's `Engine`; [`CudaEngine`] is the
//! whole engine: every layer of every member in one launch (im2col and cuBLAS
//! strided-batched GEMMs with the members as the batch), SGD in one pass over the population.
//! [`Ranks`] gathers members across the GPUs of a process through NCCL.
//!
//! cudarc loads the CUDA libraries at run time and panics when one or a function is
//! missing, so [`probe`] checks them first: a machine without a driver or a GPU gets an
//! [`Error`], never a panic.
//!
//! ```
//! match papa_cuda::Gpu::new(0) {
//!     Ok(gpu) => println!("running on {}", gpu.name()),
//!     Err(e) => println!("no GPU: {e}"), // e.g. "no CUDA driver library: none of ... loads"
//! }
//! ```

mod engine;
mod error;
mod gpu;
pub mod kernels;
mod members;
mod population;
pub mod probe;
mod ranks;

pub use engine::{CudaEngine, Precision};
pub use error::Error;
pub use gpu::Gpu;
pub use members::DeviceMembers;
pub use population::{Columns, Counters, DevicePopulation, MAX_LEN, MAX_MEMBERS};
pub use ranks::Ranks;
