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
    // A 3 x 3 kernel at stride 1 (padding up to 2, the zoo's convs) runs as one sliding
    // window along the columns: each column reads one new input per kernel row and adds its
    // nine products at once, with no per-tap set-up (what the loop's cost is made of on a
    // microcontroller). Other kernels run a tap at a time.
    let sliding = k == 3 && s == 1 && p <= 2 && ky0 < ky1;
    for ci in 0..g.cin {
        let row = |ky: usize| {
            let start = (ci * g.h + top + ky - p) * g.w;
            x.get(start..start + g.w).unwrap_or_default()
        };
        if sliding {
            // A kernel row above or below the image: a row inside it with zero weights.
            let rows = [0, 1, 2].map(|ky| row(ky.clamp(ky0, ky1 - 1)));
            let w9 = core::array::from_fn(|t| {
                if (ky0..ky1).contains(&(t / 3)) {
                    A::weight(w, ci * 9 + t)
                } else {
                    A::ZERO
                }
            });
            kernel3::<A>(ch, acc, rows, ox0, p, w9);
        } else {
            for ky in ky0..ky1 {
                kernel_row::<A>(l, row(ky), w, (ci * k + ky) * k, ch, ox0, acc);
            }
        }
    }
}

/// `acc[j] += sum over kernel rows r and columns t of x_r(c - p + t) w[3 r + t]` for conv
/// column `c = ox0 + j`, the nine products added in that order, where `x_r(i)` is
/// `rows[r][i]` inside the row and the padding outside it (an operand of zero); `p` is at
/// most 2. A padded product adds zero (for f32 a signed zero: the same value).
fn kernel3<A: Arithmetic>(
    ch: &A::Channel,
    acc: &mut [A::Acc],
    rows: [&[A::Act]; 3],
    ox0: usize,
    p: usize,
    w: [A::Weight; 9],
) {
    let at = |row: &[A::Act], i: usize| {
        i.checked_sub(p)
            .and_then(|i| row.get(i))
            .map_or(A::ZERO, |&x| A::operand(ch, x))
    };
    // Each row's two inputs before the column's third.
    let [mut a, mut b, mut c] = rows.map(|r| [at(r, ox0), at(r, ox0 + 1)]);
    let inside = rows.map(|r| {
        (ox0 + 2)
            .checked_sub(p)
            .and_then(|i| r.get(i..))
            .unwrap_or_default()
    });
    let n = inside
        .iter()
        .map(|r| r.len())
        .min()
        .unwrap_or(0)
        .min(acc.len());
    let (within, past) = acc.split_at_mut(n);
    let [w0, w1, w2] = [[w[0], w[1], w[2]], [w[3], w[4], w[5]], [w[6], w[7], w[8]]];
    let mut column = |acc: &mut A::Acc, [xa, xb, xc]: [A::Weight; 3]| {
        let v = A::mac3(*acc, [a[0], a[1], xa], w0);
        let v = A::mac3(v, [b[0], b[1], xb], w1);
        *acc = A::mac3(v, [c[0], c[1], xc], w2);
        (a, b, c) = ([a[1], xa], [b[1], xb], [c[1], xc]);
    };
    let [r0, r1, r2] = inside;
    for (((acc, &x0), &x1), &x2) in within.iter_mut().zip(r0).zip(r1).zip(r2) {
        column(acc, [x0, x1, x2].map(|x| A::operand(ch, x)));
    }
    for acc in past {
        column(acc, [A::ZERO; 3]);
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
