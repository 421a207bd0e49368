#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! papa-core: PopulAtion Parameter Averaging over plain slices.

pub mod rng;
