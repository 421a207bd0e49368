//! How much each layer loses to int8 (feature `export`): the int8 image's outputs,
//! dequantised, against the f32 image's, layer by layer, over samples.

// Host-side code (feature `export`): it builds images from checked models and never reads
// one, so the runtime's no-indexing rule does not apply.
#![allow(clippy::indexing_slicing)]

use super::{FlashModel, Precision, RunError};
use crate::runtime::Input;
use std::vec;
use std::vec::Vec;

/// One layer's int8 error over the samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerError {
    /// The root mean square of the f32 outputs: the scale the error is read against.
    pub f32_rms: f64,
    /// The root mean square of `dequantised int8 - f32`.
    pub rms: f64,
    /// The largest `|dequantised int8 - f32|`.
    pub max: f64,
    /// The output's int8 step (its scale).
    pub step: f32,
}

impl LayerError {
    /// `rms / f32_rms` (0 for an all-zero f32 output).
    pub fn relative(&self) -> f64 {
        if self.f32_rms > 0.0 {
            self.rms / self.f32_rms
        } else {
            0.0
        }
    }
}

/// The int8 image against the f32 one on the same samples.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizationReport {
    /// Each layer's error, in order.
    pub layers: Vec<LayerError>,
    /// Samples compared.
    pub samples: usize,
    /// Accuracy (%) of the f32 image on them.
    pub f32_accuracy: f64,
    /// Accuracy (%) of the int8 image.
    pub int8_accuracy: f64,
    /// Samples on which both predict the same class (%).
    pub agreement: f64,
}

/// Runs the f32 and the int8 image of one model on `stored` (whole samples end to end, as
/// the dataset stores them) with `labels`, and compares every layer's output. Both images
/// must have the same layer table.
pub fn quantization_report(
    f32_image: &FlashModel<'_>,
    int8_image: &FlashModel<'_>,
    stored: &[f32],
    labels: &[u8],
) -> Result<QuantizationReport, RunError> {
    for (image, precision) in [(f32_image, Precision::F32), (int8_image, Precision::Int8)] {
        if image.precision() != precision {
            return Err(RunError::Precision {
                image: image.precision(),
            });
        }
    }
    let n = int8_image.layer_count();
    let sample = int8_image.input_len();
    if f32_image.layer_count() != n || f32_image.input_len() != sample {
        return Err(RunError::Input {
            expected: sample,
            found: f32_image.input_len(),
        });
    }
    let steps: Vec<_> = (0..n)
        .map(|i| int8_image.layer(i).map(|l| l.output))
        .collect::<Result<_, _>>()?;
    let mut f32_arena = vec![0.0f32; f32_image.arena_len()];
    let mut int8_arena = vec![0i8; int8_image.arena_len()];
    let (mut sums, mut f32_sums, mut max) = (vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]);
    let mut counts = vec![0usize; n];
    let (mut f32_correct, mut int8_correct, mut agree) = (0usize, 0usize, 0usize);
    let mut outputs: Vec<Vec<f32>> = vec![Vec::new(); n];
    for (x, &label) in stored.chunks_exact(sample.max(1)).zip(labels) {
        let f = f32_image.infer_f32_traced(Input::F32(x), &mut f32_arena, |i, y| {
            if let Some(o) = outputs.get_mut(i) {
                o.clear();
                o.extend_from_slice(y);
            }
        })?;
        let f_class = f.class;
        let q = int8_image.infer_int8_traced(Input::F32(x), &mut int8_arena, |i, y| {
            let (Some(reference), Some(Some(params))) = (outputs.get(i), steps.get(i)) else {
                return;
            };
            for (&q, &r) in y.iter().zip(reference) {
                let d = f64::from(params.dequantize(q)) - f64::from(r);
                sums[i] += d * d;
                f32_sums[i] += f64::from(r) * f64::from(r);
                max[i] = max[i].max(d.abs());
            }
            counts[i] += y.len();
        })?;
        f32_correct += usize::from(f_class == usize::from(label));
        int8_correct += usize::from(q.class == usize::from(label));
        agree += usize::from(q.class == f_class);
    }
    let samples = stored.len() / sample.max(1);
    let pct = |c: usize| 100.0 * c as f64 / samples.max(1) as f64;
    let layers = (0..n)
        .map(|i| {
            let count = counts[i].max(1) as f64;
            LayerError {
                f32_rms: (f32_sums[i] / count).sqrt(),
                rms: (sums[i] / count).sqrt(),
                max: max[i],
                step: steps[i].map_or(0.0, |p| p.scale()),
            }
        })
        .collect();
    Ok(QuantizationReport {
        layers,
        samples: samples.min(labels.len()),
        f32_accuracy: pct(f32_correct),
        int8_accuracy: pct(int8_correct),
        agreement: pct(agree),
    })
}
