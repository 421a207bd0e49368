//! The parts of the `papa` command line that other tools may reuse: the accuracy plot.

#[cfg(feature = "plot")]
pub mod plot;
