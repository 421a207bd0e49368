#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! papa-core: PopulAtion Parameter Averaging (PAPA, arXiv 2304.03094) over plain slices.
//!
//! `#![no_std]`, no allocator, no panics on bad input: every function checks its arguments
//! and returns an [`Error`] saying what was wrong and where. Link it into any trainer that
//! can hand over its parameters as `&mut [f32]`.
//!
//! - [`population`]: a population as one contiguous P x N buffer ([`population::Contiguous`])
//!   or as separately allocated members ([`population::Members`]).
//! - [`rules`]: weighted average, PAPA-all, PAPA gradual, PAPA-2 (each one streaming pass).
//! - [`layout`]: named tensors in a member's vector and how each kind is averaged.
//! - [`repair`]: REPAIR's per-channel statistics, corrections and weight folding.
//! - [`soup`]: uniform and greedy soups.
//! - [`schedule`]: when to average, and the effective coefficient under lr scaling.
//! - [`diversity`]: distances to the mean and pairwise cosine similarity.
//! - [`rng`]: the seeded generator every crate draws from.
//!
//! ```
//! use papa_core::population::Contiguous;
//! use papa_core::rules::{gradual, Options, Weights};
//!
//! // Three members of four parameters, member-major.
//! let mut population = [
//!     1.0f32, 2.0, 3.0, 4.0, //
//!     3.0, 2.0, 1.0, 0.0, //
//!     2.0, 2.0, 2.0, 2.0,
//! ];
//! let mut pop = Contiguous::new(&mut population[..], 3)?;
//! gradual(&mut pop, Weights::Uniform, 0.5, &Options::default())?;
//! assert_eq!(&population[..4], &[1.5, 2.0, 2.5, 3.0]);
//! # Ok::<(), papa_core::Error>(())
//! ```

pub mod diversity;
mod error;
pub mod layout;
pub mod population;
pub mod repair;
pub mod rng;
pub mod rules;
pub mod schedule;
pub mod soup;

pub use error::{Error, LengthMismatch};

/// How far the sum of averaging weights may stray from 1.
pub const WEIGHT_SUM_TOLERANCE: f32 = 1e-4;
