#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! papa-core: PopulAtion Parameter Averaging over plain slices.

pub mod diversity;
mod error;
pub mod layout;
pub mod population;
pub mod repair;
pub mod rng;
pub mod rules;
pub mod schedule;
pub mod soup;

pub use error::Error;

/// How far the sum of averaging weights may stray from 1.
pub const WEIGHT_SUM_TOLERANCE: f32 = 1e-4;
