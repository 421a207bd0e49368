//! Per-chunk kernels and the one gemm entry point. Activations are channel-last
//! (`sample x H x W x C`): per-channel reductions stream along rows, and a conv is a gemm
//! over rows `(sample, y, x)` (see `conv`).

use papa_cpu::Isa;
use rayon::prelude::*;
use std::ops::Range;

/// Samples per parallel task. Fixed so that every reduction over the batch is summed in the
/// same order whatever the number of threads.
pub(crate) const CHUNK: usize = 16;
/// Rows per task of a linear layer's gemms: each output row is computed on its own, so the
/// split changes no bits; big blocks pack the (large) weight fewer times.
pub(crate) const ROW_BLOCK: usize = 64;

/// A layer's shape (`L`) in a population of `p` members, `b` samples each, `n` parameters
/// per member, and the path its gemms run on: what a layer's kernels are given. Derefs to
/// the layer.
#[derive(Clone, Copy)]
pub(crate) struct Batched<L> {
    pub p: usize,
    pub b: usize,
    pub n: usize,
    pub isa: Isa,
    pub layer: L,
}

impl Batched<()> {
    /// These sizes and path for `layer`.
    pub fn of<L>(self, layer: L) -> Batched<L> {
        let Batched { p, b, n, isa, .. } = self;
        Batched {
            p,
            b,
            n,
            isa,
            layer,
        }
    }
}

impl<L> std::ops::Deref for Batched<L> {
    type Target = L;

    fn deref(&self) -> &L {
        &self.layer
    }
}

/// A read-only strided matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `cols x rows` matrix, with leading dimension `ld`.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: 1,
            cs: ld,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst (row-major, m x n, leading dimension ld) = [dst +] lhs * rhs`, single-threaded so
/// that the parallelism (and hence the summation order) is decided by the caller.
///
/// [`Isa::Avx512`] runs this crate's AVX-512 kernel; every other path runs the `gemm` crate
/// (which picks its own AVX2/FMA or SSE kernels at run time). The two sum in different
/// orders: results agree to rounding, not bit for bit.
pub(crate) fn matmul(isa: Isa, dst: &mut [f32], ld: usize, lhs: Mat, rhs: Mat, accumulate: bool) {
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    // Bounds are checked here once so that the kernels below stay in range.
    assert!(lhs.fits() && rhs.fits() && rhs.rows == k && n <= ld);
    assert!(m == 0 || n == 0 || (m - 1) * ld + n <= dst.len());
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && isa.is_supported() {
        // SAFETY: the CPU has AVX-512F (checked just now); the bounds were checked above.
        return unsafe { avx512::matmul(dst, ld, lhs, rhs, accumulate) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    // SAFETY: every index gemm touches was checked to lie inside the three slices above,
    // and `dst` is borrowed mutably so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// An AVX-512 gemm: the `gemm` crate only uses 256-bit kernels on stable Rust, half of
/// what these cores can do. The right operand is packed into zero-padded panels of `16 * NV`
/// columns; the left one is read in place (row-major and transposed operands both stream
/// well). Blocking depends only on the shape, so every output is summed in the same order
/// on every call of the same shape.
/// Compiled on every x86-64 build (the AVX-512 intrinsics need Rust 1.89) and called only
/// where the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Mat;
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    /// Most depth per block (a packed block then stays in L2).
    const KC: usize = 384;

    thread_local! {
        /// The packed right operand, reused across calls.
        static PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn matmul(dst: &mut [f32], ld: usize, lhs: Mat, rhs: Mat, accumulate: bool) {
        // The tile width that wastes the fewest padded columns; 24 accumulators each.
        match rhs.cols {
            n if n % 64 == 0 || n > 48 && n % 48 != 0 => {
                blocked::<6, 4>(dst, ld, lhs, rhs, accumulate)
            }
            n if n > 32 => blocked::<8, 3>(dst, ld, lhs, rhs, accumulate),
            _ => blocked::<12, 2>(dst, ld, lhs, rhs, accumulate),
        }
    }

    #[target_feature(enable = "avx512f")]
    fn blocked<const MR: usize, const NV: usize>(
        dst: &mut [f32],
        ld: usize,
        lhs: Mat,
        rhs: Mat,
        accumulate: bool,
    ) {
        let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
        let nr = 16 * NV;
        let panels = n.div_ceil(nr);
        if k == 0 {
            if !accumulate {
                dst.chunks_mut(ld).take(m).for_each(|r| r[..n].fill(0.0));
            }
            return;
        }
        // Equal blocks no deeper than KC.
        let kc_max = k.div_ceil(k.div_ceil(KC));
        PACK.with_borrow_mut(|pb| {
            pb.resize(panels * nr * kc_max, 0.0);
            for k0 in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - k0);
                let pb = &mut pb[..panels * nr * kc];
                pack(pb, rhs, nr, k0, kc);
                let add = accumulate || k0 > 0;
                for (j, bp) in pb.chunks_exact(nr * kc).enumerate() {
                    let cols = nr.min(n - j * nr);
                    for i in (0..m).step_by(MR) {
                        let rows = MR.min(m - i);
                        tile::<MR, NV>(dst, ld, lhs, bp, (i, rows), (j * nr, cols), (k0, kc), add);
                    }
                }
            }
        });
    }

    /// `pb[panel][kk][jj] = rhs[k0 + kk, panel * nr + jj]`, zero past the last column.
    fn pack(pb: &mut [f32], rhs: Mat, nr: usize, k0: usize, kc: usize) {
        for (j, panel) in pb.chunks_exact_mut(nr * kc).enumerate() {
            let j0 = j * nr;
            let cols = nr.min(rhs.cols - j0);
            for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                let base = (k0 + kk) * rhs.rs + j0 * rhs.cs;
                if rhs.cs == 1 {
                    row[..cols].copy_from_slice(&rhs.data[base..base + cols]);
                } else {
                    for (jj, v) in row[..cols].iter_mut().enumerate() {
                        *v = rhs.data[base + jj * rhs.cs];
                    }
                }
                row[cols..].fill(0.0);
            }
        }
    }

    /// `dst[rows, cols] (+)= lhs[rows, k0..k0 + kc] * panel`, each output summed in `k` order.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn tile<const MR: usize, const NV: usize>(
        dst: &mut [f32],
        ld: usize,
        lhs: Mat,
        bp: &[f32],
        (i0, rows): (usize, usize),
        (j0, cols): (usize, usize),
        (k0, kc): (usize, usize),
        add: bool,
    ) {
        // Rows past the end repeat the last row, whose results are then not stored.
        let offs: [usize; MR] = std::array::from_fn(|r| (i0 + r.min(rows - 1)) * lhs.rs);
        let a_last = offs[MR - 1].max(offs[0]) + (k0 + kc - 1) * lhs.cs;
        assert!(bp.len() >= 16 * NV * kc && a_last < lhs.data.len());
        assert!((i0 + rows - 1) * ld + j0 + cols <= dst.len());
        let a = lhs.data.as_ptr();
        // SAFETY: AVX-512F is enabled for this function (its callers checked the CPU).
        // Reads of `lhs` are at `offs[r] + kk * cs` with `kk < k0 + kc`, at most `a_last`;
        // reads of `bp` are below `16 * NV * kc`; both were checked above. Stores go to rows
        // `i0..i0 + rows` and columns `j0..j0 + cols` of `dst` (masked to `cols`), also
        // checked above.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; MR];
            for kk in 0..kc {
                let b = bp.as_ptr().add(kk * 16 * NV);
                let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(16 * v)));
                let ak = a.add((k0 + kk) * lhs.cs);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let ar = _mm512_set1_ps(*ak.add(offs[r]));
                    for v in 0..NV {
                        acc[v] = _mm512_fmadd_ps(ar, bv[v], acc[v]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let c = dst.as_mut_ptr().add((i0 + r) * ld + j0);
                for (v, &acc) in acc.iter().enumerate() {
                    let left = cols.saturating_sub(16 * v).min(16);
                    if left == 0 {
                        break;
                    }
                    let mask = ((1u32 << left) - 1) as __mmask16;
                    let out = if add {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, c.add(16 * v)), acc)
                    } else {
                        acc
                    };
                    _mm512_mask_storeu_ps(c.add(16 * v), mask, out);
                }
            }
        }
    }
}

/// Runs `f(member, samples, block)` in parallel over every (member, chunk of [`CHUNK`]
/// samples) of a member-major buffer holding `per_sample` values per sample and `batch`
/// samples per member (`out` may be longer; the tail is untouched).
pub(crate) fn par_samples<T: Send>(
    out: &mut [T],
    population: usize,
    batch: usize,
    per_sample: usize,
    f: impl Fn(usize, Range<usize>, &mut [T]) + Sync,
) {
    par_sample_blocks(out, (population, batch, per_sample), CHUNK, f)
}

/// [`par_samples`] with blocks of `samples` samples: for work whose results do not depend
/// on the split (each output row computed on its own), where bigger blocks cost less.
pub(crate) fn par_sample_blocks<T: Send>(
    out: &mut [T],
    (population, batch, per_sample): (usize, usize, usize),
    samples: usize,
    f: impl Fn(usize, Range<usize>, &mut [T]) + Sync,
) {
    let member = batch * per_sample;
    out[..population * member]
        .par_chunks_mut(member)
        .enumerate()
        .for_each(|(m, block)| {
            block
                .par_chunks_mut(samples * per_sample)
                .enumerate()
                .for_each(|(c, chunk)| {
                    let start = c * samples;
                    f(m, start..start + chunk.len() / per_sample, chunk)
                })
        });
}

/// `f(y[i], x[i])` for every `i`, in blocks of 16: channel vectors are short (32, 64), and
/// a plain loop's vector body wants more iterations than that (or calls `memcpy`).
#[inline(always)]
pub(crate) fn elementwise(y: &mut [f32], x: &[f32], f: impl Fn(&mut f32, f32)) {
    let mut ys = y.chunks_exact_mut(16);
    let mut xs = x.chunks_exact(16);
    for (y, x) in (&mut ys).zip(&mut xs) {
        // Copies in registers, so that the compiler sees no aliasing and vectorizes.
        let (mut yv, mut xv) = ([0.0f32; 16], [0.0f32; 16]);
        yv.copy_from_slice(y);
        xv.copy_from_slice(x);
        for i in 0..16 {
            f(&mut yv[i], xv[i]);
        }
        y.copy_from_slice(&yv);
    }
    for (y, &x) in ys.into_remainder().iter_mut().zip(xs.remainder()) {
        f(y, x);
    }
}

/// Copies `row` into every row of `out` (a bias before a gemm accumulates onto it).
#[inline(always)]
pub(crate) fn fill_rows(out: &mut [f32], row: &[f32]) {
    for o in out.chunks_exact_mut(row.len()) {
        elementwise(o, row, |o, v| *o = v);
    }
}

/// Number of sample chunks in a batch.
pub(crate) fn chunks(batch: usize) -> usize {
    batch.div_ceil(CHUNK)
}

/// Calls `f(window, out_index)` for each 2x2 window of a channel-last image: `window` holds
/// the offsets of its four channel vectors (row-major in the window), `out_index` the offset
/// of the output channel vector.
#[inline(always)]
fn pool_windows(c: usize, h: usize, w: usize, mut f: impl FnMut([usize; 4], usize)) {
    let (oh, ow) = (h / 2, w / 2);
    for y in 0..oh {
        for x in 0..ow {
            let top = (2 * y * w + 2 * x) * c;
            let bottom = top + w * c;
            f([top, top + c, bottom, bottom + c], (y * ow + x) * c);
        }
    }
}

/// The winner of a window, as `(value, index 0..4)`: the first maximum (NaN wins), as
/// PyTorch picks it. Selects rather than branches, since the winner is random.
#[inline(always)]
fn first_max(v: [f32; 4]) -> (f32, usize) {
    let (mut best, mut at) = (v[0], 0);
    for (i, &x) in v.iter().enumerate().skip(1) {
        let take = x > best || x.is_nan();
        best = if take { x } else { best };
        at = if take { i } else { at };
    }
    (best, at)
}

/// 2x2, stride-2 max pooling of channel-last samples.
#[inline(always)]
pub(crate) fn maxpool(input: &[f32], out: &mut [f32], c: usize, h: usize, w: usize) {
    let per_out = c * (h / 2) * (w / 2);
    for (img, o) in input
        .chunks_exact(c * h * w)
        .zip(out.chunks_exact_mut(per_out))
    {
        pool_windows(c, h, w, |[a, b, d, e], at| {
            let rows = img[a..a + c]
                .iter()
                .zip(&img[b..b + c])
                .zip(img[d..d + c].iter().zip(&img[e..e + c]));
            for (o, ((&a, &b), (&d, &e))) in o[at..at + c].iter_mut().zip(rows) {
                *o = first_max([a, b, d, e]).0;
            }
        });
    }
}

/// Gradient of [`maxpool`]: each output gradient goes to the position that won the window
/// (nowhere when `relu_mask` and the winner is not positive: the gradient of a ReLU that
/// produced `input`).
#[inline(always)]
pub(crate) fn maxpool_backward(
    input: &[f32],
    dout: &[f32],
    din: &mut [f32],
    (c, h, w): (usize, usize, usize),
    relu_mask: bool,
) {
    let (per_in, per_out) = (c * h * w, c * (h / 2) * (w / 2));
    if h % 2 == 1 || w % 2 == 1 {
        // Rows and columns that no window covers get no gradient.
        din.fill(0.0);
    }
    let samples = input.chunks_exact(per_in).zip(din.chunks_exact_mut(per_in));
    for ((img, d), g) in samples.zip(dout.chunks_exact(per_out)) {
        pool_windows(c, h, w, |[a, _, e, _], at| {
            let (top, bottom) = d.split_at_mut(e);
            let (top, bottom) = (&mut top[a..a + 2 * c], &mut bottom[..2 * c]);
            let (t0, t1) = top.split_at_mut(c);
            let (b0, b1) = bottom.split_at_mut(c);
            let (x0, x1) = img[a..a + 2 * c].split_at(c);
            let (x2, x3) = img[e..e + 2 * c].split_at(c);
            // The four gradients of one window position, given its inputs and gradient.
            let route = |x: [f32; 4], g: f32| -> [f32; 4] {
                let (best, k) = first_max(x);
                // `|` rather than `||`: a select, not a branch, keeps the loop vectorized.
                let g = if !relu_mask | (best > 0.0) { g } else { 0.0 };
                std::array::from_fn(|j| if k == j { g } else { 0.0 })
            };
            let mut ci = 0;
            // 16 channels at a time in arrays, so that the loop compiles to vector selects.
            while ci + 16 <= c {
                let mut x = [[0.0f32; 16]; 4];
                for (x, src) in x.iter_mut().zip([x0, x1, x2, x3]) {
                    x.copy_from_slice(&src[ci..ci + 16]);
                }
                let mut gv = [0.0f32; 16];
                gv.copy_from_slice(&g[at + ci..at + ci + 16]);
                let mut out = [[0.0f32; 16]; 4];
                for i in 0..16 {
                    let r = route([x[0][i], x[1][i], x[2][i], x[3][i]], gv[i]);
                    for j in 0..4 {
                        out[j][i] = r[j];
                    }
                }
                for (dst, o) in [&mut *t0, &mut *t1, &mut *b0, &mut *b1]
                    .into_iter()
                    .zip(&out)
                {
                    dst[ci..ci + 16].copy_from_slice(o);
                }
                ci += 16;
            }
            for ci in ci..c {
                let r = route([x0[ci], x1[ci], x2[ci], x3[ci]], g[at + ci]);
                [t0[ci], t1[ci], b0[ci], b1[ci]] = r;
            }
        });
    }
}

/// Channel-last `H x W x C` to PyTorch's flat `C x H x W` order, per sample (`inverse`
/// goes back, for the gradient).
#[inline(always)]
pub(crate) fn flatten(src: &[f32], dst: &mut [f32], c: usize, hw: usize, inverse: bool) {
    let per = c * hw;
    for (s, d) in src.chunks_exact(per).zip(dst.chunks_exact_mut(per)) {
        for p in 0..hw {
            for ci in 0..c {
                if inverse {
                    d[p * c + ci] = s[ci * hw + p];
                } else {
                    d[ci * hw + p] = s[p * c + ci];
                }
            }
        }
    }
}
