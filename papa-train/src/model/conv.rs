//! 3x3, padding-1 convolutions of channel-last images, population-batched.
//!
//! Wide inputs go through im2col and the gemm, a few samples at a time in a per-thread
//! buffer that stays in cache (the rows are rebuilt in the backward pass rather than kept:
//! for the small CNN they would be 9x the conv's input). Narrow inputs (an image's first
//! layer: 1 to 3 channels) use a direct loop, since a gemm of depth 9 to 27 spends its time
//! loading and storing its output tile.
//!
//! Weights are used in the engine's order, taps outermost (`[tap][cin]` along the depth),
//! and inputs are read from copies with a zero border: the three taps of a kernel row are
//! then one contiguous span of `3 cin` values, read without a bounds test.

use super::kernels::{chunks, elementwise, fill_rows, matmul, par_samples, Batched, Mat, CHUNK};
use papa_model::plan::ConvLayer;
use rayon::prelude::*;
use std::cell::RefCell;

/// A conv layer in a population (derefs to its [`ConvLayer`]: `c.cin`, `c.h`, ...).
pub(crate) type Conv = Batched<ConvLayer>;

/// im2col values built at once: a group of samples whose rows (and their gradient in the
/// backward pass) stay in L2. Fixed by the shape alone, like every summation order.
const COL_BUDGET: usize = 1 << 16;

thread_local! {
    /// Per-thread scratch, reused across calls: im2col rows, their gradient (or a padded
    /// input gradient) and padded images.
    static COLUMNS: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

impl Conv {
    /// Floats of the engine-order weights of every member (see [`forward`]).
    pub fn weights_len(p: usize, cin: usize, cout: usize) -> usize {
        p * 2 * cout * 9 * cin
    }

    /// Gemm depth: one im2col row.
    fn fin(&self) -> usize {
        9 * self.cin
    }

    /// One member's weight tensor.
    fn wlen(&self) -> usize {
        self.cout * self.fin()
    }

    /// Samples per im2col group (at least 1, at most a chunk).
    fn group(&self) -> usize {
        (COL_BUDGET / (self.h * self.w * self.fin())).clamp(1, CHUNK)
    }

    /// Member `m`'s weights as `[cout][tap][cin]` and as `[tap][cin][cout]`.
    fn member_weights<'a>(&self, weights: &'a [f32], m: usize) -> (&'a [f32], &'a [f32]) {
        weights[m * 2 * self.wlen()..][..2 * self.wlen()].split_at(self.wlen())
    }
}

papa_cpu::multiversion! {
    /// `y = conv(x) + bias` for every member; first refreshes `weights`
    /// ([`Conv::weights_len`] floats), the engine-order copy that [`backward`] reuses.
    #[isa(c.isa)]
    pub(crate) fn forward(x: &[f32], y: &mut [f32], params: &[f32], weights: &mut [f32], c: Conv) {
        let (fin, wlen) = (c.fin(), c.wlen());
        for (m, wm) in weights.chunks_exact_mut(2 * wlen).enumerate().take(c.p) {
            let (w, wt) = wm.split_at_mut(wlen);
            let torch = &params[m * c.n + c.weight..][..wlen];
            for co in 0..c.cout {
                for ci in 0..c.cin {
                    for tap in 0..9 {
                        let v = torch[(co * c.cin + ci) * 9 + tap];
                        w[co * fin + tap * c.cin + ci] = v;
                        wt[(tap * c.cin + ci) * c.cout + co] = v;
                    }
                }
            }
        }
        let weights = &*weights;
        let (in_len, out_len) = (c.h * c.w * c.cin, c.h * c.w * c.cout);
        par_samples(y, c.p, c.b, out_len, |m, s, out| {
            let bias = &params[m * c.n + c.bias..][..c.cout];
            let wt = c.member_weights(weights, m).1;
            let xs = &x[(m * c.b + s.start) * in_len..][..s.len() * in_len];
            match c.cin {
                1 => return direct_forward::<9>(xs, out, wt, bias, c),
                2 => return direct_forward::<18>(xs, out, wt, bias, c),
                3 => return direct_forward::<27>(xs, out, wt, bias, c),
                _ => {}
            }
            fill_rows(out, bias);
            let wt = Mat::rows(wt, fin, c.cout);
            COLUMNS.with_borrow_mut(|[col, _, padded]| {
                let groups = xs.chunks(c.group() * in_len);
                for (xg, yg) in groups.zip(out.chunks_mut(c.group() * out_len)) {
                    let r = yg.len() / c.cout;
                    col.resize(r * fin, 0.0);
                    im2col(xg, col, padded, c);
                    matmul(c.isa, yg, c.cout, Mat::rows(col, r, fin), wt, true);
                }
            });
        });
    }
}

papa_cpu::multiversion! {
    /// Weight and bias gradients into `grads` (PyTorch's order), and the input gradient when
    /// `din` is given, from the output gradient `dy` and the forward's input `x` and `weights`.
    /// Each (member, chunk) task accumulates its partial sums in `partials` (`P x chunks x
    /// cout * (9 cin + 1)`), added in chunk order afterwards.
    #[isa(c.isa)]
    pub(crate) fn backward(
        x: &[f32],
        dy: &[f32],
        din: Option<&mut [f32]>,
        buffers: (&[f32], &mut [f32]),
        grads: &mut [f32],
        c: Conv,
    ) {
        let (weights, partials) = buffers;
        let (wlen, nchunks) = (c.wlen(), chunks(c.b));
        let len = wlen + c.cout;
        let (in_len, out_len) = (c.h * c.w * c.cin, c.h * c.w * c.cout);
        let task = |m: usize, k: usize, part: &mut [f32], di: Option<&mut [f32]>| {
            let first = m * c.b + k * CHUNK;
            let samples = CHUNK.min(c.b - k * CHUNK);
            let xs = &x[first * in_len..][..samples * in_len];
            let dys = &dy[first * out_len..][..samples * out_len];
            let (w, wt) = c.member_weights(weights, m);
            let (pw, pb) = part.split_at_mut(wlen);
            pb.fill(0.0);
            for row in dys.chunks_exact(c.cout) {
                pb.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            match c.cin {
                1 => direct_backward::<9>(xs, dys, di, wt, pw, c),
                2 => direct_backward::<18>(xs, dys, di, wt, pw, c),
                3 => direct_backward::<27>(xs, dys, di, wt, pw, c),
                _ => gemm_backward(xs, dys, di, w, pw, c),
            }
        };
        let partials = &mut partials[..c.p * nchunks * len];
        match din {
            Some(din) => din[..c.p * c.b * in_len]
                .par_chunks_mut(c.b * in_len)
                .zip(partials.par_chunks_mut(nchunks * len))
                .enumerate()
                .for_each(|(m, (dm, pm))| {
                    dm.par_chunks_mut(CHUNK * in_len)
                        .zip(pm.par_chunks_mut(len))
                        .enumerate()
                        .for_each(|(k, (di, part))| task(m, k, part, Some(di)))
                }),
            None => partials
                .par_chunks_mut(len)
                .enumerate()
                .for_each(|(t, part)| task(t / nchunks, t % nchunks, part, None)),
        }
        grads
            .par_chunks_mut(c.n)
            .zip(partials.par_chunks_mut(nchunks * len))
            .for_each(|(gm, pm)| {
                let (sum, rest) = pm.split_at_mut(len);
                for part in rest.chunks_exact(len) {
                    sum.iter_mut().zip(part).for_each(|(s, &v)| *s += v);
                }
                let (sw, sb) = sum.split_at(wlen);
                let torch = &mut gm[c.weight..][..wlen];
                for co in 0..c.cout {
                    for ci in 0..c.cin {
                        for tap in 0..9 {
                            torch[(co * c.cin + ci) * 9 + tap] = sw[(tap * c.cin + ci) * c.cout + co];
                        }
                    }
                }
                gm[c.bias..][..c.cout].copy_from_slice(sb);
            });
    }
}

/// The gemm path of [`backward`] for one chunk: `pw[tap, cin][cout] = col^T dy` and, with
/// `din`, `din = col2im(dy w)`, one im2col group at a time.
#[inline(always)]
fn gemm_backward(
    xs: &[f32],
    dys: &[f32],
    mut din: Option<&mut [f32]>,
    w: &[f32],
    pw: &mut [f32],
    c: Conv,
) {
    let (fin, group) = (c.fin(), c.group());
    let (in_len, out_len) = (c.h * c.w * c.cin, c.h * c.w * c.cout);
    COLUMNS.with_borrow_mut(|[col, dcol, padded]| {
        let groups = xs.chunks(group * in_len).zip(dys.chunks(group * out_len));
        for (g, (xg, dyg)) in groups.enumerate() {
            let r = dyg.len() / c.cout;
            col.resize(r * fin, 0.0);
            im2col(xg, col, padded, c);
            let colt = Mat {
                data: col,
                rows: fin,
                cols: r,
                rs: 1,
                cs: fin,
            };
            matmul(c.isa, pw, c.cout, colt, Mat::rows(dyg, r, c.cout), g > 0);
            if let Some(din) = din.as_deref_mut() {
                dcol.resize(r * fin, 0.0);
                let w = Mat::rows(w, c.cout, fin);
                matmul(c.isa, dcol, fin, Mat::rows(dyg, r, c.cout), w, false);
                col2im(dcol, &mut din[g * group * in_len..][..xg.len()], padded, c);
            }
        }
    });
}

/// `out = conv(xs) + bias` computed directly: per output position, its `K = 9 cin`
/// inputs gathered once, then 16 output channels at a time in an accumulator that stays in
/// registers. `K` is a constant so that the inputs stay in registers too.
#[inline(always)]
fn direct_forward<const K: usize>(xs: &[f32], out: &mut [f32], wt: &[f32], bias: &[f32], c: Conv) {
    COLUMNS.with_borrow_mut(|[_, _, buf]| {
        let cout = c.cout;
        let padded = Padded::copy_of(buf, xs, c);
        let mut inputs = [0.0f32; K];
        each_position(padded.samples(), c, |px, s, y, x| {
            padded.gather(&mut inputs, s, y, x);
            let o = &mut out[px * cout..][..cout];
            let mut blocks = o.chunks_exact_mut(16);
            for (b, block) in (&mut blocks).enumerate() {
                let mut acc = [0.0f32; 16];
                acc.copy_from_slice(&bias[16 * b..][..16]);
                for (k, &v) in inputs.iter().enumerate() {
                    let mut w = [0.0f32; 16];
                    w.copy_from_slice(&wt[k * cout + 16 * b..][..16]);
                    for i in 0..16 {
                        acc[i] += v * w[i];
                    }
                }
                block.copy_from_slice(&acc);
            }
            let rest = blocks.into_remainder();
            let first = cout - rest.len();
            for (j, o) in rest.iter_mut().enumerate() {
                *o = bias[first + j];
                for (k, &v) in inputs.iter().enumerate() {
                    *o += v * wt[k * cout + first + j];
                }
            }
        });
    });
}

/// Images with a zero border of one pixel (`(h + 2) x (w + 2) x cin` each, in storage the
/// caller owns): the three taps of a kernel row then read one contiguous span of `3 cin`
/// values, and no tap needs a bounds test.
struct Padded<'a> {
    data: &'a mut [f32],
    c: Conv,
}

impl<'a> Padded<'a> {
    /// `buf` resized to `samples` padded images of zeros.
    fn zeros(buf: &'a mut Vec<f32>, samples: usize, c: Conv) -> Self {
        buf.clear();
        buf.resize(samples * (c.h + 2) * (c.w + 2) * c.cin, 0.0);
        Self { data: buf, c }
    }

    /// The images of `xs`, padded, in `buf`.
    fn copy_of(buf: &'a mut Vec<f32>, xs: &[f32], c: Conv) -> Self {
        let mut padded = Self::zeros(buf, xs.len() / (c.h * c.w * c.cin), c);
        for (row, pad) in xs.chunks_exact(c.w * c.cin).zip(padded.interior_rows()) {
            pad.copy_from_slice(row);
        }
        padded
    }

    /// The images inside the border, into `out` (unpadded images).
    fn copy_interior_to(&mut self, out: &mut [f32]) {
        let row = self.c.w * self.c.cin;
        for (out, pad) in out.chunks_exact_mut(row).zip(self.interior_rows()) {
            out.copy_from_slice(pad);
        }
    }

    /// The image rows inside the border, in order (`w cin` values each).
    fn interior_rows(&mut self) -> impl Iterator<Item = &mut [f32]> {
        let (c, row) = (self.c, (self.c.w + 2) * self.c.cin);
        self.data
            .chunks_exact_mut((c.h + 2) * row)
            .flat_map(move |img| img.chunks_exact_mut(row).skip(1).take(c.h))
            .map(move |r| &mut r[c.cin..][..c.w * c.cin])
    }

    fn samples(&self) -> usize {
        self.data.len() / ((self.c.h + 2) * (self.c.w + 2) * self.c.cin)
    }

    /// Where kernel row `ky` of output `(y, x)` of sample `s` starts reading.
    #[inline(always)]
    fn span(&self, s: usize, y: usize, x: usize, ky: usize) -> usize {
        ((s * (self.c.h + 2) + y + ky) * (self.c.w + 2) + x) * self.c.cin
    }

    /// `row[(tap, ci)]`: what the 9 taps of output `(y, x)` of sample `s` read (one im2col
    /// row). Inlined where `row` has a constant length, the copies are register moves.
    #[inline(always)]
    fn gather(&self, row: &mut [f32], s: usize, y: usize, x: usize) {
        let len = row.len() / 3;
        for (ky, dst) in row.chunks_exact_mut(len).enumerate() {
            elementwise(dst, &self.data[self.span(s, y, x, ky)..][..len], |d, v| {
                *d = v
            });
        }
    }

    /// The adjoint of [`Padded::gather`]: adds `row` onto what its taps read.
    #[inline(always)]
    fn scatter_add(&mut self, row: &[f32], s: usize, y: usize, x: usize) {
        let len = row.len() / 3;
        for (ky, src) in row.chunks_exact(len).enumerate() {
            let at = self.span(s, y, x, ky);
            elementwise(&mut self.data[at..][..len], src, |d, g| *d += g);
        }
    }
}

/// The direct path of [`backward`] for one chunk: `pw[tap, cin][cout]` and, with `din`, the
/// input gradient. The weight gradient runs 16 output channels at a time over every position,
/// its `K x 16` sums held in registers (summed in position order, as a gemm over the chunk
/// would).
#[inline(always)]
fn direct_backward<const K: usize>(
    xs: &[f32],
    dys: &[f32],
    din: Option<&mut [f32]>,
    wt: &[f32],
    pw: &mut [f32],
    c: Conv,
) {
    COLUMNS.with_borrow_mut(|[_, grad_buf, buf]| {
        let cout = c.cout;
        let padded = Padded::copy_of(buf, xs, c);
        let mut inputs = [0.0f32; K];
        for b in 0..cout / 16 {
            let mut acc = [[0.0f32; 16]; K];
            each_position(padded.samples(), c, |px, s, y, x| {
                padded.gather(&mut inputs, s, y, x);
                let mut g = [0.0f32; 16];
                g.copy_from_slice(&dys[px * cout + 16 * b..][..16]);
                for (a, &v) in acc.iter_mut().zip(&inputs) {
                    for i in 0..16 {
                        a[i] += v * g[i];
                    }
                }
            });
            for (k, a) in acc.iter().enumerate() {
                pw[k * cout + 16 * b..][..16].copy_from_slice(a);
            }
        }
        for j in cout / 16 * 16..cout {
            let mut acc = [0.0f32; K];
            each_position(padded.samples(), c, |px, s, y, x| {
                padded.gather(&mut inputs, s, y, x);
                let g = dys[px * cout + j];
                acc.iter_mut().zip(&inputs).for_each(|(a, &v)| *a += v * g);
            });
            for (k, &a) in acc.iter().enumerate() {
                pw[k * cout + j] = a;
            }
        }
        if let Some(din) = din {
            let mut dpadded = Padded::zeros(grad_buf, padded.samples(), c);
            each_position(padded.samples(), c, |px, s, y, x| {
                // This position's column gradient `w g`, then added back like col2im does.
                let g = &dys[px * cout..][..cout];
                let mut dcol = [0.0f32; K];
                for (k, d) in dcol.iter_mut().enumerate() {
                    let w = &wt[k * cout..][..cout];
                    *d = g.iter().zip(w).map(|(&g, &w)| g * w).sum::<f32>();
                }
                dpadded.scatter_add(&dcol, s, y, x);
            });
            dpadded.copy_interior_to(din);
        }
    });
}

/// `col[(s, y, x), (tap, ci)] = input[s, y + ky - 1, x + kx - 1, ci]` (0 outside), with
/// `tap = ky * 3 + kx`: the rows of the conv for the samples of `input` (`buf`: scratch).
#[inline(always)]
fn im2col(input: &[f32], col: &mut [f32], buf: &mut Vec<f32>, c: Conv) {
    let padded = Padded::copy_of(buf, input, c);
    let fin = c.fin();
    each_position(padded.samples(), c, |row, s, y, x| {
        padded.gather(&mut col[row * fin..][..fin], s, y, x)
    });
}

/// The adjoint of [`im2col`]: sums the column gradients back onto the input positions.
#[inline(always)]
fn col2im(col: &[f32], dinput: &mut [f32], buf: &mut Vec<f32>, c: Conv) {
    let mut padded = Padded::zeros(buf, dinput.len() / (c.h * c.w * c.cin), c);
    let fin = c.fin();
    each_position(padded.samples(), c, |row, s, y, x| {
        padded.scatter_add(&col[row * fin..][..fin], s, y, x)
    });
    padded.copy_interior_to(dinput);
}

/// Calls `f(position, sample, y, x)` for every output position of `samples` images, in
/// row order (`position` counts from 0). Plain loops: an iterator chain here costs more
/// than the work of the smallest convs.
#[inline(always)]
fn each_position(samples: usize, c: Conv, mut f: impl FnMut(usize, usize, usize, usize)) {
    for s in 0..samples {
        for y in 0..c.h {
            for x in 0..c.w {
                f((s * c.h + y) * c.w + x, s, y, x);
            }
        }
    }
}
