//! Golden vectors: each sample's stored bytes and every layer's int8 output, from the
//! microcontroller runtime's int8 path itself ([`FlashModel::infer_int8_traced`]), so the
//! integer reference the hardware is held to is the runtime, not a second implementation.

use super::FpgaError;
use crate::flash::FlashModel;
use crate::runtime::Input;
use std::vec;
use std::vec::Vec;

/// One sample: what goes in, what each layer gives, the class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoldenSample {
    /// The stored bytes (channel-major), as the hardware's input port takes them.
    pub input: Vec<u8>,
    /// Each layer's output, in the arena's order (channel-major).
    pub layers: Vec<Vec<i8>>,
    /// The class (the first largest logit).
    pub class: usize,
}

/// Stored sample values (as a dataset holds them, in f32) as the bytes the input port
/// takes; refuses a value that is not an integer in 0..=255 (CSV features, say).
pub fn stored_bytes(values: &[f32]) -> Result<Vec<u8>, FpgaError> {
    values
        .iter()
        .map(|&value| {
            if (0.0..=255.0).contains(&value) && value.fract() == 0.0 {
                Ok(value as u8)
            } else {
                Err(FpgaError::NotBytes { value })
            }
        })
        .collect()
}

/// The golden vectors of `samples` (whole inputs of stored bytes, one after another).
pub fn run(model: &FlashModel<'_>, samples: &[u8]) -> Result<Vec<GoldenSample>, FpgaError> {
    let input_len = model.input_len();
    if input_len == 0 || !samples.len().is_multiple_of(input_len) {
        return Err(FpgaError::Samples {
            input_len,
            found: samples.len(),
        });
    }
    let mut arena = vec![0i8; model.arena_len()];
    samples
        .chunks_exact(input_len)
        .map(|input| {
            let mut layers = vec![Vec::new(); model.layer_count()];
            let class = model
                .infer_int8_traced(Input::Bytes(input), &mut arena, |i, y| {
                    if let Some(out) = layers.get_mut(i) {
                        *out = y.to_vec();
                    }
                })?
                .class;
            Ok(GoldenSample {
                input: input.to_vec(),
                layers,
                class,
            })
        })
        .collect()
}
