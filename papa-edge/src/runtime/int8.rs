//! The int8 arithmetic: TFLM's reference convolution and fully-connected kernels
//! (`acc = bias + sum (x - input_zero_point) * w` in int32, then [`requantize`]).

use super::kernel::Arithmetic;
use crate::flash::Layer;
use crate::quant::{requantize, QuantizedMultiplier};

pub(super) struct Int8;

#[derive(Clone, Copy)]
pub(super) struct Channel {
    input_zero_point: i32,
    multiplier: QuantizedMultiplier,
    output_zero_point: i8,
    clamp: (i8, i8),
}

impl Arithmetic for Int8 {
    type Act = i8;
    type Acc = i32;
    type Weight = i32;
    type Channel = Channel;
    const WEIGHT_BYTES: usize = 1;
    const LOWEST: i8 = i8::MIN;

    fn channel(l: &Layer<'_>, c: usize) -> Option<(i32, Channel)> {
        let bias = i32::from_le_bytes(l.bias.get(4 * c..4 * c + 4)?.try_into().ok()?);
        let ch = Channel {
            input_zero_point: i32::from(l.geometry.input_zero_point),
            multiplier: l.multiplier(c)?,
            output_zero_point: l.output?.zero_point(),
            clamp: l.geometry.clamp,
        };
        Some((bias, ch))
    }

    /// Wrapping, as int32 hardware does.
    fn dot(ch: &Channel, acc: i32, x: &[i8], w: &[u8]) -> i32 {
        x.iter().zip(w).fold(acc, |acc, (&x, &w)| {
            acc.wrapping_add(Self::operand(ch, x) * i32::from(w as i8))
        })
    }

    fn weight(w: &[u8], i: usize) -> i32 {
        w.get(i).map_or(0, |&b| i32::from(b as i8))
    }

    fn axpy(ch: &Channel, acc: &mut [i32], x: impl Iterator<Item = i8>, w: i32) {
        for (a, x) in acc.iter_mut().zip(x) {
            *a = a.wrapping_add(Self::operand(ch, x) * w);
        }
    }

    const ZERO: i32 = 0;

    fn operand(ch: &Channel, x: i8) -> i32 {
        i32::from(x) - ch.input_zero_point
    }

    fn mac3(acc: i32, [x0, x1, x2]: [i32; 3], [w0, w1, w2]: [i32; 3]) -> i32 {
        acc.wrapping_add(x0 * w0)
            .wrapping_add(x1 * w1)
            .wrapping_add(x2 * w2)
    }

    fn output(ch: &Channel, acc: i32) -> i8 {
        let (min, max) = ch.clamp;
        requantize(acc, ch.multiplier, ch.output_zero_point, min, max)
    }
}
