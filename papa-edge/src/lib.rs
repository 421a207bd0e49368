#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! papa-edge: deploy the one averaged model that papa trains.
//!
//! - `onnx` (feature `export`): a papa model file as an ONNX graph, BatchNorm folded into
//!   the conv/linear layer before it and the input normalisation inside the graph, so that
//!   a runtime is fed the input as the dataset stores it.
//! - `tract` (feature `tract`): run such an ONNX model with tract: load it, predict one
//!   sample or a batch.
//!
//! - [`quant`]: the int8 quantiser (TensorFlow Lite Micro's scheme and fixed-point
//!   requantisation), `no_std` without an allocator; one layer's tensors and a model's
//!   calibration ranges with `alloc`. `onnx::export_int8` writes it as a QDQ graph;
//!   `onnx::calibrate` (feature `calibrate`) measures the ranges with papa's own forward.
//! - [`names`]: the graph's input, output and metadata names.
//! - `kit` (feature `hal`): an embedded-hal 1.0 firmware loop: a sample from an SPI or
//!   I2C sensor, an int8 inference, the class on output pins, a delay; `defmt` logging with
//!   the feature `defmt`.
//!
//! - [`flash`]: the flash image (header, layer table, aligned tensors, CRC-32), checked
//!   once by `FlashModel::parse`; `flash::write` (feature `export`) writes it, and as C.
//! - [`runtime`]: the microcontroller runtime, int8 and f32, run in place from flash in a
//!   caller-owned arena.
//! - `fpga` (feature `export`): the int8 image as `$readmemh` memory files, a Verilog/C
//!   parameter header and golden per-layer vectors for the RTL in papa-edge/fpga.
//!
//! Without features the crate is `no_std` with no allocator: the flash image, the runtime
//! and the quantiser are what a firmware links.
//!
//! ```
//! use papa_edge::{onnx, tract::Model};
//! use papa_model::card::{ModelCard, Normalization};
//! use papa_model::file::ModelFile;
//! use papa_model::{zoo, ModelSpec};
//!
//! // A tiny model: 4 features in, 3 classes out.
//! let spec = ModelSpec::new(&zoo::mlp(&[8], 3), [4, 1, 1], 3)?;
//! let card = ModelCard::new("mlp:8", &spec, 1.0, Normalization::identity(4), vec![]);
//! let params: Vec<f32> = (0..spec.len()).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
//! let bytes = onnx::to_bytes(&onnx::export(&ModelFile { card, params }, onnx::Opset::DEFAULT)?);
//!
//! let model = Model::from_bytes(&bytes)?;
//! let prediction = model.predict(&[0.5, 1.0, 1.5, 2.0])?;
//! assert_eq!(prediction.logits.len(), 3);
//! assert!(prediction.class < 3);
//! let batch = model.predict_batch(&[0.0; 8])?; // two samples
//! assert_eq!(batch.len(), 2);
//! assert!(model.predict(&[1.0; 5]).is_err()); // not 4 values: an error, not a panic
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod flash;
#[cfg(feature = "export")]
pub mod fpga;
#[cfg(feature = "hal")]
pub mod kit;
pub mod names;
#[cfg(feature = "export")]
pub mod onnx;
pub mod quant;
pub mod runtime;
#[cfg(feature = "tract")]
pub mod tract;
