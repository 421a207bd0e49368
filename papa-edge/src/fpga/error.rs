//! Why a model does not go onto the FPGA blocks.

use crate::flash::{ImageError, Precision, RunError};
use crate::onnx::ExportError;
use std::string::String;

/// Why [`export`](super::export) refused: nothing is written then, so no broken Verilog
/// input reaches a synthesis or simulation run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FpgaError {
    /// The model has a layer the blocks cannot express (the flash image's rule: conv and
    /// linear layers, a ReLU and a max-pool fused into the conv before them).
    #[error("the FPGA blocks take the flash image's layers: {0}")]
    Model(#[from] ExportError),
    /// An image that does not parse.
    #[error("not a flash image: {0}")]
    Image(#[from] ImageError),
    /// An f32 image: the blocks are integer hardware.
    #[error("the FPGA blocks run int8 images; this image is {0}")]
    Precision(Precision),
    /// A size beyond the hardware's fixed widths ([`limits`](super::limits)).
    #[error("{what} = {value} is beyond the FPGA blocks' {max} ({why})")]
    Size {
        /// What is too large (with the layer, when one is concerned).
        what: String,
        /// Its value.
        value: usize,
        /// The largest the hardware takes.
        max: usize,
        /// Which width sets that bound.
        why: &'static str,
    },
    /// Golden samples that are not whole inputs.
    #[error("{found} golden sample bytes are not a whole number of {input_len}-byte inputs")]
    Samples {
        /// Bytes per input.
        input_len: usize,
        /// Bytes given.
        found: usize,
    },
    /// A golden sample value that is not a stored byte (the input port takes 0-255).
    #[error("the FPGA input port takes stored bytes (integers 0 to 255); a sample holds {value}")]
    NotBytes {
        /// The value.
        value: f32,
    },
    /// The runtime refused a golden sample.
    #[error("the int8 runtime: {0}")]
    Run(#[from] RunError),
}
