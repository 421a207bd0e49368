//! The conv/linear layer loop both precisions share; [`Arithmetic`] is what differs (the
//! multiply-accumulate and the output stage).
//!
//! A convolution is computed a row segment at a time: for each weight, one pass along the
//! segment's accumulators (a contiguous run of the input row at stride 1), so the loop
//! overhead is paid per kernel tap and row segment, not per multiply.

use super::RunError;
use crate::flash::{ImageError, Layer};

/// Conv output columns accumulated at once (their accumulators live on the stack); a pool
/// window fits in one segment (the image checks it).
const SEGMENT: usize = crate::flash::format::MAX_POOL_WINDOW;

/// One precision's arithmetic.
pub(super) trait Arithmetic {
    /// An activation.
    type Act: Copy + PartialOrd;
    /// An accumulator.
    type Acc: Copy;
    /// A weight, read from its stored bytes, and an activation as a multiply's operand.
    type Weight: Copy;
    /// What one output channel's multiply-accumulates and output stage need.
    type Channel: Copy;
    /// Bytes per stored weight.
    const WEIGHT_BYTES: usize;
    /// Below every activation (the max-pool's start).
    const LOWEST: Self::Act;
    /// Channel `c`'s bias (the accumulator's start) and output stage.
    fn channel(l: &Layer<'_>, c: usize) -> Option<(Self::Acc, Self::Channel)>;
    /// Stored weight `i` of `w` (0 past the end, which a checked image never reaches).
    fn weight(w: &[u8], i: usize) -> Self::Weight;
    /// `acc + sum x * w` over a row of stored weights `w`.
    fn dot(ch: &Self::Channel, acc: Self::Acc, x: &[Self::Act], w: &[u8]) -> Self::Acc;
    /// `acc[j] += x[j] * w` for each `j`.
    fn axpy(
        ch: &Self::Channel,
        acc: &mut [Self::Acc],
        x: impl Iterator<Item = Self::Act>,
        w: Self::Weight,
    );
    /// An operand of zero: what the padding multiplies.
    const ZERO: Self::Weight;
    /// An activation as a multiply's operand (int8: less the input zero point).
    fn operand(ch: &Self::Channel, x: Self::Act) -> Self::Weight;
    /// `acc + x[0] w[0] + x[1] w[1] + x[2] w[2]`, the products added one after another.
    fn mac3(acc: Self::Acc, x: [Self::Weight; 3], w: [Self::Weight; 3]) -> Self::Acc;
    /// The output of an accumulator (requantised, activated).
    fn output(ch: &Self::Channel, acc: Self::Acc) -> Self::Act;
}

/// One conv (ReLU and max-pool fused) or linear layer: `x` in, `y` out.
pub(super) fn layer<A: Arithmetic>(
    l: &Layer<'_>,
    x: &[A::Act],
    y: &mut [A::Act],
) -> Result<(), RunError> {
    let row = A::WEIGHT_BYTES * l.row_len();
    let broken = RunError::Image(ImageError::Layer {
        index: usize::MAX,
        what: "changed after it was checked",
    });
    let channels = l
        .weights
        .chunks_exact(row)
        .zip(y.chunks_exact_mut(l.geometry.out_h * l.geometry.out_w));
    for (c, (w, y)) in channels.enumerate() {
        let (bias, ch) = A::channel(l, c).ok_or(broken)?;
        if l.geometry.conv {
            conv_channel::<A>(l, x, w, bias, &ch, y);
        } else if let Some(y) = y.first_mut() {
            *y = A::output(&ch, A::dot(&ch, bias, x, w));
        }
    }
    Ok(())
}

/// One output channel of a conv (weights `w`) into `y`, its pool fused: each pooled row
/// from the conv rows of its window, each in segments of at most [`SEGMENT`] columns.
fn conv_channel<A: Arithmetic>(
    l: &Layer<'_>,
    x: &[A::Act],
    w: &[u8],
    bias: A::Acc,
    ch: &A::Channel,
    y: &mut [A::Act],
) {
    let (pool, step) = l.geometry.pool.unwrap_or((1, 1));
    // Pooled columns per segment: their windows span at most SEGMENT conv columns.
    let per_segment = (SEGMENT.saturating_sub(pool) / step + 1).max(1);
    let mut acc = [bias; SEGMENT];
    let mut out = [A::LOWEST; SEGMENT];
    for (py, y) in y.chunks_exact_mut(l.geometry.out_w).enumerate() {
        for (s, y) in y.chunks_mut(per_segment).enumerate() {
            let px0 = s * per_segment;
            let ox0 = px0 * step;
            let len = ((y.len() - 1) * step + pool).min(SEGMENT);
            y.fill(A::LOWEST);
            for dy in 0..pool {
                let acc = acc.get_mut(..len).unwrap_or_default();
                acc.fill(bias);
                conv_row::<A>(l, x, w, ch, py * step + dy, ox0, acc);
                let out = out.get_mut(..len).unwrap_or_default();
                for (o, &a) in out.iter_mut().zip(acc.iter()) {
                    *o = A::output(ch, a);
                }
                for (j, y) in y.iter_mut().enumerate() {
                    let window = out.get(j * step..j * step + pool).unwrap_or_default();
                    for &v in window {
                        if v > *y {
                            *y = v;
                        }
                    }
                }
            }
        }
    }
}

/// Adds to `acc` (conv columns `ox0..ox0 + acc.len()` of conv row `oy`) every kernel tap
/// whose input lies inside the image (zero padding adds nothing). Each column's taps are
/// added in the order (input channel, kernel row, kernel column) whatever the path.
fn conv_row<A: Arithmetic>(
    l: &Layer<'_>,
    x: &[A::Act],
    w: &[u8],
    ch: &A::Channel,
    oy: usize,
    ox0: usize,
    acc: &mut [A::Acc],
) {
    let g = &l.geometry;
    let (k, p, s) = (g.kernel, g.padding, g.stride);
    let top = oy * s;
    let (ky0, ky1) = (p.saturating_sub(top), k.min((g.h + p).saturating_sub(top)));
    // A 3-wide kernel at stride 1 (padding up to 2) runs a kernel row as one sliding
    // window along the columns: one input read per column and no per-tap set-up, which
    // is what the loop's cost is made of on a microcontroller; other kernels a tap at a time.
    let sliding = k == 3 && s == 1 && p <= 2;
    for ci in 0..g.cin {
        for ky in ky0..ky1 {
            let start = (ci * g.h + top + ky - p) * g.w;
            let xrow = x.get(start..start + g.w).unwrap_or_default();
            let taps = (ci * k + ky) * k;
            if sliding {
                let w3 = [0, 1, 2].map(|kx| A::weight(w, taps + kx));
                row3::<A>(ch, acc, xrow, ox0, p, w3);
            } else {
                kernel_row::<A>(l, xrow, w, taps, ch, ox0, acc);
            }
        }
    }
}

/// `acc[j] += x(c - p) w[0] + x(c - p + 1) w[1] + x(c - p + 2) w[2]` for conv column
/// `c = ox0 + j`, where `x(i)` is `xrow[i]` inside the row and the padding outside it (an
/// operand of zero: for f32 the sum gains `+ 0.0`, the same value); `p` is at most 2.
fn row3<A: Arithmetic>(
    ch: &A::Channel,
    acc: &mut [A::Acc],
    xrow: &[A::Act],
    ox0: usize,
    p: usize,
    w: [A::Weight; 3],
) {
    let at = |i: usize| {
        i.checked_sub(p)
            .and_then(|i| xrow.get(i))
            .map_or(A::ZERO, |&x| A::operand(ch, x))
    };
    let (mut x0, mut x1) = (at(ox0), at(ox0 + 1));
    // The third tap's inputs from column ox0 on, while they lie inside the row.
    let inside = (ox0 + 2)
        .checked_sub(p)
        .and_then(|i| xrow.get(i..))
        .unwrap_or_default();
    let (within, past) = acc.split_at_mut(inside.len().min(acc.len()));
    for (a, &x2) in within.iter_mut().zip(inside) {
        let x2 = A::operand(ch, x2);
        *a = A::mac3(*a, [x0, x1, x2], w);
        (x0, x1) = (x1, x2);
    }
    // The columns whose third tap lies past the row's end.
    for a in past {
        *a = A::mac3(*a, [x0, x1, A::ZERO], w);
        (x0, x1) = (x1, A::ZERO);
    }
}

/// Adds one kernel row's taps (weights `taps..taps + k` of `w`) on input row `xrow` to
/// `acc`, the accumulators of conv columns `ox0..ox0 + acc.len()`, a tap at a time: each
/// tap along the columns whose input `ox * s + kx - p` lies in the row.
fn kernel_row<A: Arithmetic>(
    l: &Layer<'_>,
    xrow: &[A::Act],
    w: &[u8],
    taps: usize,
    ch: &A::Channel,
    ox0: usize,
    acc: &mut [A::Acc],
) {
    let g = &l.geometry;
    let (k, p, s) = (g.kernel, g.padding, g.stride);
    let ox1 = ox0 + acc.len();
    for kx in 0..k {
        let lo = ox0.max((p.saturating_sub(kx)).div_ceil(s));
        let hi = ox1.min((g.w + p).saturating_sub(kx).div_ceil(s));
        if lo >= hi {
            continue;
        }
        let wv = A::weight(w, taps + kx);
        let acc = acc.get_mut(lo - ox0..hi - ox0).unwrap_or_default();
        let first = lo * s + kx - p;
        let inputs = xrow.get(first..).unwrap_or_default();
        if s == 1 {
            A::axpy(ch, acc, inputs.iter().copied(), wv);
        } else {
            A::axpy(ch, acc, inputs.iter().step_by(s).copied(), wv);
        }
    }
}
