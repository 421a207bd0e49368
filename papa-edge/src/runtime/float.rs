//! The f32 arithmetic: the folded model as papa's forward computes it.

use super::kernel::Arithmetic;
use crate::flash::Layer;

pub(super) struct F32;

impl Arithmetic for F32 {
    type Act = f32;
    type Acc = f32;
    type Weight = f32;
    /// Whether a ReLU follows.
    type Channel = bool;
    const WEIGHT_BYTES: usize = 4;
    const LOWEST: f32 = f32::NEG_INFINITY;

    fn channel(l: &Layer<'_>, c: usize) -> Option<(f32, bool)> {
        let bias = f32::from_le_bytes(l.bias.get(4 * c..4 * c + 4)?.try_into().ok()?);
        Some((bias, l.geometry.relu))
    }

    fn dot(_: &bool, acc: f32, x: &[f32], w: &[u8]) -> f32 {
        x.iter().zip(w.chunks_exact(4)).fold(acc, |acc, (&x, w)| {
            acc + x * w.try_into().map_or(0.0, f32::from_le_bytes)
        })
    }

    fn weight(w: &[u8], i: usize) -> f32 {
        w.get(4 * i..4 * i + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0.0, f32::from_le_bytes)
    }

    fn axpy(_: &bool, acc: &mut [f32], x: impl Iterator<Item = f32>, w: f32) {
        for (a, x) in acc.iter_mut().zip(x) {
            *a += x * w;
        }
    }

    const ZERO: f32 = 0.0;

    fn operand(_: &bool, x: f32) -> f32 {
        x
    }

    fn mac3(acc: f32, [x0, x1, x2]: [f32; 3], [w0, w1, w2]: [f32; 3]) -> f32 {
        acc + x0 * w0 + x1 * w1 + x2 * w2
    }

    fn output(relu: &bool, acc: f32) -> f32 {
        if *relu {
            acc.max(0.0)
        } else {
            acc
        }
    }
}
