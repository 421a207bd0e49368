//! papa-train: population training on the CPU with PAPA.
//!
//! The data flows one way: [`data`] -> [`augment`] -> [`model`] (population-batched
//! forward/backward) -> [`optim`] -> papa-core's rules -> one model.

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod engine;
pub mod eval;
pub mod model;
pub mod optim;
pub mod report;
pub mod train;
