//! The conv/linear layer loop both precisions share; [`Arithmetic`] is what differs (the
//! dot product and the output stage).

use super::RunError;
use crate::flash::{ImageError, Layer};

/// One precision's arithmetic.
pub(super) trait Arithmetic {
    /// An activation.
    type Act: Copy + PartialOrd;
    /// An accumulator.
    type Acc: Copy;
    /// What one output channel's dot products and output stage need.
    type Channel: Copy;
    /// Bytes per stored weight.
    const WEIGHT_BYTES: usize;
    /// Below every activation (the max-pool's start).
    const LOWEST: Self::Act;
    /// Channel `c`'s bias (the accumulator's start) and output stage.
    fn channel(l: &Layer<'_>, c: usize) -> Option<(Self::Acc, Self::Channel)>;
    /// `acc + sum x * w` over stored weights `w`.
    fn dot(ch: &Self::Channel, acc: Self::Acc, x: &[Self::Act], w: &[u8]) -> Self::Acc;
    /// The output of an accumulator (requantised, activated).
    fn output(ch: &Self::Channel, acc: Self::Acc) -> Self::Act;
}

/// One conv (ReLU and max-pool fused) or linear layer: `x` in, `y` out.
pub(super) fn layer<A: Arithmetic>(
    l: &Layer<'_>,
    x: &[A::Act],
    y: &mut [A::Act],
) -> Result<(), RunError> {
    let (pool, step) = l.pool.unwrap_or((1, 1));
    let row = A::WEIGHT_BYTES * l.row_len();
    let broken = RunError::Image(ImageError::Layer {
        index: usize::MAX,
        what: "changed after it was checked",
    });
    let channels = l
        .weights
        .chunks_exact(row)
        .zip(y.chunks_exact_mut(l.out_h * l.out_w));
    for (c, (w, y)) in channels.enumerate() {
        let (bias, ch) = A::channel(l, c).ok_or(broken)?;
        if !l.conv {
            if let Some(y) = y.first_mut() {
                *y = A::output(&ch, A::dot(&ch, bias, x, w));
            }
            continue;
        }
        for (py, y) in y.chunks_exact_mut(l.out_w).enumerate() {
            for (px, y) in y.iter_mut().enumerate() {
                let mut best = A::LOWEST;
                for dy in 0..pool {
                    for dx in 0..pool {
                        let mut acc = bias;
                        kernel_rows(l, py * step + dy, px * step + dx, |xi, wi, n| {
                            let ws = w.get(A::WEIGHT_BYTES * wi..A::WEIGHT_BYTES * (wi + n));
                            if let (Some(xs), Some(ws)) = (x.get(xi..xi + n), ws) {
                                acc = A::dot(&ch, acc, xs, ws);
                            }
                        });
                        let v = A::output(&ch, acc);
                        if v > best {
                            best = v;
                        }
                    }
                }
                *y = best;
            }
        }
    }
    Ok(())
}

/// The kernel rows of conv output position `(oy, ox)` that lie inside the input (zero
/// padding adds nothing): `f(input index, weight index, length)` for each.
fn kernel_rows(l: &Layer<'_>, oy: usize, ox: usize, mut f: impl FnMut(usize, usize, usize)) {
    let (k, p) = (l.kernel, l.padding);
    let (top, left) = (oy * l.stride, ox * l.stride);
    let (ky0, ky1) = (p.saturating_sub(top), k.min((l.h + p).saturating_sub(top)));
    let (kx0, kx1) = (
        p.saturating_sub(left),
        k.min((l.w + p).saturating_sub(left)),
    );
    if kx0 >= kx1 {
        return;
    }
    for ci in 0..l.cin {
        for ky in ky0..ky1 {
            let xi = (ci * l.h + top + ky - p) * l.w + left + kx0 - p;
            f(xi, (ci * k + ky) * k + kx0, kx1 - kx0);
        }
    }
}
