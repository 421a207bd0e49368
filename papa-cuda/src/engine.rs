//! The GPU engine: papa-train's `Engine` on one GPU, the whole population as one batched
//! computation.
//!
//! Every layer of every member runs in one launch: the convolutions as im2col and a cuBLAS
//! strided-batched GEMM with the members as the batch (the weights read in place in the
//! P x N population buffer, stride N), the linear layers as the same GEMM, BatchNorm, ReLU,
//! max-pool and the transposes as kernels of `kernels/train.cu`, the SGD step as one pass
//! over the whole population. Deterministic: the kernels have no atomics and reduce in a
//! fixed order; cuBLAS gives the same bits on every run for the same problem, library,
//! GPU model and stream with atomics disallowed (its default) and TF32 off (the default here:
//! [`Precision::Fp32`]). The layouts are the CPU engine's, so the two agree to rounding.

use crate::members::DeviceMembers;
use crate::{probe, Error, Gpu};
use cudarc::cublas::sys::{cublasMath_t, cublasOperation_t};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{
    CudaFunction, CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};
use papa_core::repair::{accumulate, Correction, Moments};
use papa_core::rules::Weights;
use papa_model::plan::{ConvLayer, LinearLayer, Op};
use papa_train::engine::{fold_into_population, Diversity, Engine, EngineError, Rule};
use papa_train::model::{self, reset_running_stats, Input, Mode, ModelSpec, BN_EPS, BN_MOMENTUM};
use papa_train::optim::Sgd;
use std::sync::Arc;

/// Threads per block of the training kernels (grid-stride loops: any grid covers any size).
const THREADS: u32 = 256;
/// Rows (sample positions) per partial sum of the batch reductions.
const CHUNK_ROWS: usize = 256;

/// The GEMMs' arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// IEEE single precision throughout (cuBLAS's default math, no tensor-core TF32): the
    /// CPU engine's results to rounding.
    #[default]
    Fp32,
    /// Lets cuBLAS round the GEMMs' inputs to TF32 on tensor cores: faster, about 1e-3
    /// relative per product, still the same bits on every run.
    Tf32,
}

/// The training kernels, loaded by name from the PTX.
struct Kernels {
    transpose: CudaFunction,
    im2col: CudaFunction,
    col2im: CudaFunction,
    bias_fill: CudaFunction,
    partials: CudaFunction,
    reduce: CudaFunction,
    scatter: CudaFunction,
    bn_train: CudaFunction,
    bn_count: CudaFunction,
    bn_eval: CudaFunction,
    bn_apply: CudaFunction,
    bn_backward: CudaFunction,
    relu: CudaFunction,
    relu_backward: CudaFunction,
    maxpool: CudaFunction,
    maxpool_backward: CudaFunction,
    sgd: CudaFunction,
}

/// What train_channel_partials sums (the SUM_* of train.cu).
#[derive(Clone, Copy)]
enum Sum {
    Stats = 0,
    Bias = 1,
    BnGrad = 2,
}

/// A P-member population on one GPU, trained there.
///
/// ```no_run
/// use papa_cuda::{CudaEngine, Gpu, Precision};
/// use papa_model::zoo;
/// use papa_train::engine::Engine;
/// use papa_train::model::{Input, Mode, ModelSpec};
///
/// let spec = ModelSpec::new(&zoo::mlp(&[8], 3), [1, 4, 4], 3).unwrap();
/// let mut engine = CudaEngine::new(&Gpu::new(0)?, &spec, 2, 5, Precision::Fp32)?;
/// let logits = engine.forward(Input::Shared(&[0.5; 5 * 16]), Mode::Eval).unwrap();
/// assert_eq!(logits.len(), 2 * 5 * 3);
/// # Ok::<(), papa_cuda::Error>(())
/// ```
pub struct CudaEngine {
    gpu: Arc<Gpu>,
    blas: CudaBlas,
    kernels: Kernels,
    spec: ModelSpec,
    population: usize,
    capacity: usize,
    members: DeviceMembers,
    /// `acts[0]` the channel-last input, `acts[i + 1]` op `i`'s output, `P x B x len` each.
    acts: Vec<CudaSlice<f32>>,
    /// The host input before its transpose.
    staged: CudaSlice<f32>,
    /// Two gradient buffers, in turn.
    grad: [CudaSlice<f32>; 2],
    /// im2col rows of every member, and their gradient.
    cols: CudaSlice<f32>,
    dcols: CudaSlice<f32>,
    /// Per-op BatchNorm normalisation `(mean, 1/std)`, `P x C` each (empty elsewhere).
    norm: Vec<(CudaSlice<f32>, CudaSlice<f32>)>,
    partials: CudaSlice<f64>,
    sums: CudaSlice<f64>,
    /// Parameter gradients, `P x N` (zero at running statistics and counters).
    grads: CudaSlice<f32>,
    /// The trainable ranges of a member, `[start, end)` pairs for the SGD kernel.
    trainable: CudaSlice<u64>,
    ranges: usize,
    host_logits: Vec<f32>,
    host_grads: Vec<f32>,
    batch: usize,
    pending: Option<Mode>,
    has_gradients: bool,
    /// Running-statistics momentum; `None` is PyTorch's cumulative average.
    momentum: Option<f32>,
}

fn dev(e: impl Into<Error>) -> EngineError {
    EngineError::Device(Box::new(e.into()))
}

/// A launch of `total` outputs, grid-stride.
fn config(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(THREADS as usize).clamp(1, 1 << 16);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Queues `kernel` over `total` outputs with the arguments, in order.
macro_rules! launch {
    ($engine:expr, $kernel:ident, $total:expr; $($arg:expr),* $(,)?) => {{
        let mut builder = $engine.gpu.stream.launch_builder(&$engine.kernels.$kernel);
        $( builder.arg($arg); )*
        // SAFETY: the arguments are the kernel's of train.cu, in order and of its types; every
        // buffer holds what the sizes passed say (the engine sized them for its capacity and
        // checked the batch against it).
        unsafe { builder.launch(config($total)) }.map(|_| ()).map_err(dev)
    }};
}

/// `C[b] = op(A[b]) op(B[b]) + beta C[b]` for `b < batch`, row-major: `C` is `m x n`, `k` the
/// inner size, `*_t` a transposed operand, `ld*` the row lengths as stored.
#[derive(Clone, Copy)]
struct RowMajor {
    m: usize,
    n: usize,
    k: usize,
    a_t: bool,
    b_t: bool,
    lda: usize,
    ldb: usize,
    ldc: usize,
    stride: [usize; 3],
    batch: usize,
    beta: f32,
}

impl RowMajor {
    /// `y[m] = x[m] W[m]^T` for every member: `rows x fin` inputs (member stride
    /// `rows * fin`), the `fout x fin` weight of each member (stride `n`, the member length).
    fn forward(p: usize, n: usize, rows: usize, fin: usize, fout: usize) -> Self {
        RowMajor {
            m: rows,
            n: fout,
            k: fin,
            a_t: false,
            b_t: true,
            lda: fin,
            ldb: fin,
            ldc: fout,
            stride: [rows * fin, n, rows * fout],
            batch: p,
            // The bias was broadcast into y first.
            beta: 1.0,
        }
    }

    /// `dW[m] = dY[m]^T x[m]` (`fout x fin`, into the gradient buffer with stride `n`).
    fn weight_grad(p: usize, n: usize, rows: usize, fin: usize, fout: usize) -> Self {
        RowMajor {
            m: fout,
            n: fin,
            k: rows,
            a_t: true,
            b_t: false,
            lda: fout,
            ldb: fin,
            ldc: fin,
            stride: [rows * fout, rows * fin, n],
            batch: p,
            beta: 0.0,
        }
    }

    /// `dX[m] = dY[m] W[m]` (`rows x fin`).
    fn input_grad(p: usize, n: usize, rows: usize, fin: usize, fout: usize) -> Self {
        RowMajor {
            m: rows,
            n: fin,
            k: fout,
            a_t: false,
            b_t: false,
            lda: fout,
            ldb: fin,
            ldc: fin,
            stride: [rows * fout, n, rows * fin],
            batch: p,
            beta: 0.0,
        }
    }

    /// cuBLAS's (column-major) arguments: row-major `C = op(A) op(B)` is column-major
    /// `C^T = op(B)^T op(A)^T`, so cuBLAS's first operand is B and its second A, each with
    /// its own transpose flag. Sizes past `i32` are refused.
    fn cublas(&self) -> Result<StridedBatchedConfig<f32>, Error> {
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let int = |v: usize| {
            i32::try_from(v).map_err(|_| Error::TooLong {
                len: v,
                max: i32::MAX as usize,
            })
        };
        Ok(StridedBatchedConfig {
            gemm: GemmConfig {
                transa: op(self.b_t),
                transb: op(self.a_t),
                m: int(self.n)?,
                n: int(self.m)?,
                k: int(self.k)?,
                alpha: 1.0f32,
                lda: int(self.ldb)?,
                ldb: int(self.lda)?,
                beta: self.beta,
                ldc: int(self.ldc)?,
            },
            batch_size: int(self.batch)?,
            stride_a: self.stride[1] as i64,
            stride_b: self.stride[0] as i64,
            stride_c: self.stride[2] as i64,
        })
    }
}

/// Two distinct elements of `v`, the first shared, the second writable.
fn pair<T>(v: &mut [T], read: usize, write: usize) -> (&T, &mut T) {
    if read < write {
        let (a, b) = v.split_at_mut(write);
        (&a[read], &mut b[0])
    } else {
        let (a, b) = v.split_at_mut(read);
        (&b[0], &mut a[write])
    }
}

impl CudaEngine {
    /// A population of `population` zeroed members of `spec`, batches of up to `capacity`
    /// samples per member, on `gpu`. cuBLAS is probed first: without it, an [`Error`].
    pub fn new(
        gpu: &Arc<Gpu>,
        spec: &ModelSpec,
        population: usize,
        capacity: usize,
        precision: Precision,
    ) -> Result<Self, Error> {
        if population == 0 || capacity == 0 {
            return Err(papa_core::Error::EmptyPopulation.into());
        }
        probe::cublas()?;
        let blas = CudaBlas::new(gpu.stream.clone())?;
        let math = match precision {
            Precision::Fp32 => cublasMath_t::CUBLAS_DEFAULT_MATH,
            Precision::Tf32 => cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH,
        };
        // SAFETY: the handle is blas's own and alive.
        unsafe { cudarc::cublas::sys::cublasSetMathMode(*blas.handle(), math) }.result()?;
        let load = |name: &str| gpu.module.load_function(name);
        let kernels = Kernels {
            transpose: load("train_transpose")?,
            im2col: load("train_im2col")?,
            col2im: load("train_col2im")?,
            bias_fill: load("train_bias_fill")?,
            partials: load("train_channel_partials")?,
            reduce: load("train_reduce_partials")?,
            scatter: load("train_scatter_sums")?,
            bn_train: load("train_bn_train_stats")?,
            bn_count: load("train_bn_count")?,
            bn_eval: load("train_bn_eval_stats")?,
            bn_apply: load("train_bn_apply")?,
            bn_backward: load("train_bn_backward")?,
            relu: load("train_relu")?,
            relu_backward: load("train_relu_backward")?,
            maxpool: load("train_maxpool")?,
            maxpool_backward: load("train_maxpool_backward")?,
            sgd: load("train_sgd")?,
        };
        let (p, b, n) = (population, capacity, spec.len());
        let stream = &gpu.stream;
        let alloc = |len: usize| stream.alloc_zeros::<f32>(len.max(1));
        let mut acts = vec![alloc(p * b * spec.input_len())?];
        let (mut max_act, mut max_cols, mut max_part) = (p * b * spec.input_len(), 0, 0);
        let mut norm = Vec::new();
        for op in spec.ops() {
            acts.push(alloc(p * b * op.out_len())?);
            max_act = max_act.max(p * b * op.out_len());
            let (rows, c) = match *op {
                Op::Conv(ConvLayer {
                    cin, cout, h, w, ..
                }) => {
                    max_cols = max_cols.max(p * b * h * w * cin * 9);
                    (b * h * w, cout)
                }
                Op::Linear(LinearLayer { fout, .. }) => (b, fout),
                Op::BatchNorm { c, spatial, .. } => (b * spatial, c),
                _ => (0, 0),
            };
            max_part = max_part.max(p * rows.div_ceil(CHUNK_ROWS) * 2 * c);
            norm.push(match *op {
                Op::BatchNorm { c, .. } => (alloc(p * c)?, alloc(p * c)?),
                _ => (alloc(0)?, alloc(0)?),
            });
        }
        let ranges: Vec<u64> = spec
            .trainable_ranges()
            .iter()
            .flat_map(|r| [r.start as u64, r.end as u64])
            .collect();
        Ok(Self {
            blas,
            kernels,
            spec: spec.clone(),
            population,
            capacity,
            members: DeviceMembers::new(gpu, spec, population)?,
            staged: alloc(p * b * spec.input_len())?,
            grad: [alloc(max_act)?, alloc(max_act)?],
            cols: alloc(max_cols)?,
            dcols: alloc(max_cols)?,
            norm,
            partials: stream.alloc_zeros::<f64>(max_part.max(1))?,
            sums: stream.alloc_zeros::<f64>(max_part.max(1))?,
            grads: alloc(p * n)?,
            trainable: stream.clone_htod(&ranges)?,
            ranges: ranges.len() / 2,
            acts,
            host_logits: vec![0.0; p * b * spec.classes()],
            host_grads: vec![0.0; p * n],
            batch: 0,
            pending: None,
            has_gradients: false,
            momentum: Some(BN_MOMENTUM),
            gpu: gpu.clone(),
        })
    }

    /// The GPU.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), EngineError> {
        papa_core::LengthMismatch::check(what, expected, found).map_err(model::Error::from)?;
        Ok(())
    }

    /// The strided-batched GEMM of `g` on `a`, `b`, `c` (views at their first matrix).
    fn gemm(
        blas: &CudaBlas,
        g: RowMajor,
        a: &impl DevicePtr<f32>,
        b: &impl DevicePtr<f32>,
        c: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), EngineError> {
        let cfg = g.cublas().map_err(dev)?;
        // SAFETY: every matrix of the batch lies within its buffer: the engine sized the
        // activations for its capacity, and a weight at offset `o` of a member spans
        // `rows x cols` floats within the member (its spec's tensor). cuBLAS's first operand
        // is B (see `RowMajor::cublas`).
        unsafe { blas.gemm_strided_batched(cfg, b, a, c) }.map_err(dev)
    }

    /// Sums over each member's `rows` rows of `c` channels into `self.sums`
    /// (`P x width`, f64, fixed order).
    fn channel_sums(
        &mut self,
        x: Option<usize>,
        dy: Option<usize>,
        norm: Option<usize>,
        rows: usize,
        c: usize,
        kind: Sum,
    ) -> Result<usize, EngineError> {
        let p = self.population;
        let chunks = rows.div_ceil(CHUNK_ROWS);
        let width = if matches!(kind, Sum::Bias) { c } else { 2 * c };
        let (pu, ru, cu, chunk, chu, k) = (
            p as u64,
            rows as u64,
            c as u64,
            CHUNK_ROWS as u64,
            chunks as u64,
            kind as i32,
        );
        // Unused inputs point at any buffer: the kernel does not read them for this kind.
        let x = x.map_or(&self.grad[1], |i| &self.acts[i]);
        let dy = dy.map_or(&self.grad[1], |i| &self.grad[i]);
        let (mean, inv) = norm.map_or((&self.grad[1], &self.grad[1]), |i| {
            (&self.norm[i].0, &self.norm[i].1)
        });
        launch!(self, partials, p * chunks * c;
            x, dy, mean, inv, &mut self.partials, &pu, &ru, &cu, &chunk, &chu, &k)?;
        let wu = width as u64;
        launch!(self, reduce, p * width; &self.partials, &mut self.sums, &pu, &chu, &wu)?;
        Ok(width)
    }

    /// Writes `count` of the sums (from column `from` of `width`) to every member's gradient
    /// at `offset`.
    fn scatter(
        &mut self,
        width: usize,
        from: usize,
        count: usize,
        offset: usize,
    ) -> Result<(), EngineError> {
        let (p, n) = (self.population as u64, self.spec.len() as u64);
        let (w, f, c, o) = (width as u64, from as u64, count as u64, offset as u64);
        launch!(self, scatter, self.population * count;
            &self.sums, &w, &f, &c, &mut self.grads, &n, &o, &p)
    }

    fn run(&mut self, input: Input<'_>, mode: Mode) -> Result<(), EngineError> {
        let (p, per) = (self.population, self.spec.input_len());
        let (data, unit) = match input {
            Input::PerMember(d) => (d, p * per),
            Input::Shared(d) => (d, per),
        };
        let b = data.len() / unit.max(1);
        Self::check_len("input", b.max(1) * unit, data.len())?;
        if b > self.capacity {
            return Err(model::Error::Batch {
                batch: b,
                capacity: self.capacity,
            }
            .into());
        }
        if mode == Mode::Train {
            for op in self.spec.ops() {
                if let Op::BatchNorm { spatial, .. } = *op {
                    if b * spatial < 2 {
                        let values = b * spatial;
                        return Err(model::Error::TooFewForBatchNorm { values }.into());
                    }
                }
            }
        }
        self.pending = None;
        self.batch = b;
        let stream = self.gpu.stream.clone();
        stream
            .memcpy_htod(data, &mut self.staged.slice_mut(..data.len()))
            .map_err(dev)?;
        let [c, h, w] = self.spec.input_shape();
        let rows = (p * b) as u64;
        let src = (data.len() / per) as u64;
        let (a, bb) = (c as u64, (h * w) as u64);
        launch!(self, transpose, p * b * per; &self.staged, &mut self.acts[0], &rows, &src, &a, &bb)?;
        let ops = self.spec.ops().to_vec();
        for (i, op) in ops.iter().enumerate() {
            self.forward_op(i, *op, mode)?;
        }
        let logits = p * b * self.spec.classes();
        let last = self.acts.len() - 1;
        stream
            .memcpy_dtoh(
                &self.acts[last].slice(..logits),
                &mut self.host_logits[..logits],
            )
            .map_err(dev)?;
        self.pending = Some(mode);
        Ok(())
    }

    fn forward_op(&mut self, i: usize, op: Op, mode: Mode) -> Result<(), EngineError> {
        let (p, b, n) = (self.population, self.batch, self.spec.len());
        let (pu, nu) = (p as u64, n as u64);
        match op {
            Op::Conv(ConvLayer {
                cin,
                cout,
                h,
                w,
                weight,
                bias,
                ..
            }) => {
                let rows = b * h * w;
                let (imgs, hu, wu, cu) = ((p * b) as u64, h as u64, w as u64, cin as u64);
                launch!(self, im2col, p * rows * cin * 9; &self.acts[i], &mut self.cols, &imgs, &hu, &wu, &cu)?;
                self.linear_forward(i, rows, cin * 9, cout, weight, bias, true)
            }
            Op::Linear(LinearLayer {
                fin,
                fout,
                weight,
                bias,
            }) => self.linear_forward(i, b, fin, fout, weight, bias, false),
            Op::BatchNorm {
                c,
                spatial,
                scale,
                shift,
                mean,
                var,
                count,
            } => {
                let rows = b * spatial;
                let cu = c as u64;
                let (mo, vo) = (mean as u64, var as u64);
                let eps = BN_EPS;
                match mode {
                    Mode::Train => {
                        self.channel_sums(Some(i), None, None, rows, c, Sum::Stats)?;
                        let co = count as u64;
                        let values = rows as f64;
                        // A negative momentum is the cumulative average (train.cu).
                        let momentum = self.momentum.unwrap_or(-1.0);
                        let (params, _) = self.members.both_mut();
                        let (nm, ni) = &mut self.norm[i];
                        let mut builder = self.gpu.stream.launch_builder(&self.kernels.bn_train);
                        builder
                            .arg(&self.sums)
                            .arg(params.buf_mut())
                            .arg(&nu)
                            .arg(&pu)
                            .arg(&cu);
                        builder
                            .arg(&mo)
                            .arg(&vo)
                            .arg(&co)
                            .arg(&values)
                            .arg(&momentum)
                            .arg(&eps);
                        builder.arg(nm).arg(ni);
                        // SAFETY: train_bn_train_stats' arguments, in order; sums holds P x 2C.
                        unsafe { builder.launch(config(p * c)) }.map_err(dev)?;
                        let mut builder = self.gpu.stream.launch_builder(&self.kernels.bn_count);
                        builder.arg(params.buf_mut()).arg(&nu).arg(&pu).arg(&co);
                        // SAFETY: train_bn_count's arguments; the counter lies in a member.
                        unsafe { builder.launch(config(p)) }.map_err(dev)?;
                    }
                    Mode::Eval => {
                        let (nm, ni) = &mut self.norm[i];
                        let params = self.members.params().buf();
                        let mut builder = self.gpu.stream.launch_builder(&self.kernels.bn_eval);
                        builder
                            .arg(params)
                            .arg(&nu)
                            .arg(&pu)
                            .arg(&cu)
                            .arg(&mo)
                            .arg(&vo);
                        builder.arg(&eps).arg(nm).arg(ni);
                        // SAFETY: train_bn_eval_stats' arguments, in order.
                        unsafe { builder.launch(config(p * c)) }.map_err(dev)?;
                    }
                }
                let (so, sh, ru, relu) = (scale as u64, shift as u64, rows as u64, 0i32);
                let (x, y) = pair(&mut self.acts, i, i + 1);
                let (nm, ni) = &self.norm[i];
                let params = self.members.params().buf();
                let mut builder = self.gpu.stream.launch_builder(&self.kernels.bn_apply);
                builder
                    .arg(x)
                    .arg(y)
                    .arg(nm)
                    .arg(ni)
                    .arg(params)
                    .arg(&nu)
                    .arg(&so)
                    .arg(&sh);
                builder.arg(&pu).arg(&ru).arg(&cu).arg(&relu);
                // SAFETY: train_bn_apply's arguments; x and y hold P x rows x C.
                unsafe { builder.launch(config(p * rows * c)) }.map_err(dev)?;
                Ok(())
            }
            Op::Relu { len } => {
                let total = p * b * len;
                let lu = total as u64;
                let (x, y) = pair(&mut self.acts, i, i + 1);
                let mut builder = self.gpu.stream.launch_builder(&self.kernels.relu);
                builder.arg(x).arg(y).arg(&lu);
                // SAFETY: train_relu's arguments; both hold `total` floats.
                unsafe { builder.launch(config(total)) }.map_err(dev)?;
                Ok(())
            }
            Op::MaxPool { c, h, w, .. } => {
                let (imgs, hu, wu, cu) = ((p * b) as u64, h as u64, w as u64, c as u64);
                let (x, y) = pair(&mut self.acts, i, i + 1);
                let mut builder = self.gpu.stream.launch_builder(&self.kernels.maxpool);
                builder.arg(x).arg(y).arg(&imgs).arg(&hu).arg(&wu).arg(&cu);
                // SAFETY: train_maxpool's arguments; x holds the images, y their windows.
                unsafe { builder.launch(config(p * b * (h / 2) * (w / 2) * c)) }.map_err(dev)?;
                Ok(())
            }
            Op::Flatten { c, h, w } => {
                // Channel-last to PyTorch's C x H x W order, the linear layer's.
                let (rows, a, bb) = ((p * b) as u64, (h * w) as u64, c as u64);
                let (x, y) = pair(&mut self.acts, i, i + 1);
                let mut builder = self.gpu.stream.launch_builder(&self.kernels.transpose);
                builder.arg(x).arg(y).arg(&rows).arg(&rows).arg(&a).arg(&bb);
                // SAFETY: train_transpose's arguments; both hold P x B x C x H x W floats.
                unsafe { builder.launch(config(p * b * c * h * w)) }.map_err(dev)?;
                Ok(())
            }
        }
    }

    /// `y[m] = x[m] W[m]^T + bias[m]` for every member: `rows x fin` inputs (the im2col rows
    /// of a convolution when `conv`), the weight `fout x fin` at `weight` in each member.
    #[allow(clippy::too_many_arguments)]
    fn linear_forward(
        &mut self,
        i: usize,
        rows: usize,
        fin: usize,
        fout: usize,
        weight: usize,
        bias: usize,
        conv: bool,
    ) -> Result<(), EngineError> {
        let (p, n) = (self.population, self.spec.len());
        let (nu, bo, pu, ru, cu) = (n as u64, bias as u64, p as u64, rows as u64, fout as u64);
        let params = self.members.params().buf();
        let (x, y) = pair(&mut self.acts, i, i + 1);
        let x = if conv { &self.cols } else { x };
        let mut builder = self.gpu.stream.launch_builder(&self.kernels.bias_fill);
        builder
            .arg(&mut *y)
            .arg(params)
            .arg(&nu)
            .arg(&bo)
            .arg(&pu)
            .arg(&ru)
            .arg(&cu);
        // SAFETY: train_bias_fill's arguments; y holds P x rows x fout floats.
        unsafe { builder.launch(config(p * rows * fout)) }.map_err(dev)?;
        let g = RowMajor::forward(p, n, rows, fin, fout);
        Self::gemm(&self.blas, g, x, &params.slice(weight..), y)
    }

    /// The backward of `linear_forward`: the weight and bias gradients, and the input
    /// gradient (`rows x fin`, the im2col rows' when `conv`) into `din` when asked.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &mut self,
        i: usize,
        dout: usize,
        rows: usize,
        fin: usize,
        fout: usize,
        weight: usize,
        bias: usize,
        conv: bool,
        din: bool,
    ) -> Result<(), EngineError> {
        let (p, n) = (self.population, self.spec.len());
        let g = RowMajor::weight_grad(p, n, rows, fin, fout);
        let x = if conv { &self.cols } else { &self.acts[i] };
        Self::gemm(
            &self.blas,
            g,
            &self.grad[dout],
            x,
            &mut self.grads.slice_mut(weight..),
        )?;
        let width = self.channel_sums(None, Some(dout), None, rows, fout, Sum::Bias)?;
        self.scatter(width, 0, fout, bias)?;
        if din {
            let g = RowMajor::input_grad(p, n, rows, fin, fout);
            let params = self.members.params().buf();
            let (dy, dx) = pair(&mut self.grad, dout, 1 - dout);
            let out = if conv { &mut self.dcols } else { dx };
            Self::gemm(&self.blas, g, dy, &params.slice(weight..), out)?;
        }
        Ok(())
    }

    /// Backward of op `i` from `self.grad[cur]`; returns where the gradient now is.
    fn backward_op(
        &mut self,
        i: usize,
        op: Op,
        cur: usize,
        mode: Mode,
    ) -> Result<usize, EngineError> {
        let (p, b, n) = (self.population, self.batch, self.spec.len());
        let din = i > 0;
        let next = 1 - cur;
        match op {
            Op::Conv(ConvLayer {
                cin,
                cout,
                h,
                w,
                weight,
                bias,
                ..
            }) => {
                let rows = b * h * w;
                let (imgs, hu, wu, cu) = ((p * b) as u64, h as u64, w as u64, cin as u64);
                // The im2col rows are shared by every convolution: rebuilt for this one.
                launch!(self, im2col, p * rows * cin * 9; &self.acts[i], &mut self.cols, &imgs, &hu, &wu, &cu)?;
                self.linear_backward(i, cur, rows, cin * 9, cout, weight, bias, true, din)?;
                if din {
                    launch!(self, col2im, p * rows * cin; &self.dcols, &mut self.grad[next], &imgs, &hu, &wu, &cu)?;
                }
                Ok(next)
            }
            Op::Linear(LinearLayer {
                fin,
                fout,
                weight,
                bias,
            }) => {
                self.linear_backward(i, cur, b, fin, fout, weight, bias, false, din)?;
                Ok(next)
            }
            Op::BatchNorm {
                c,
                spatial,
                scale,
                shift,
                ..
            } => {
                let rows = b * spatial;
                let width = self.channel_sums(Some(i), Some(cur), Some(i), rows, c, Sum::BnGrad)?;
                self.scatter(width, 0, c, shift)?;
                self.scatter(width, c, c, scale)?;
                if din {
                    let (nu, so, sh, pu, ru, cu) = (
                        n as u64,
                        scale as u64,
                        shift as u64,
                        p as u64,
                        rows as u64,
                        c as u64,
                    );
                    let train = i32::from(mode == Mode::Train);
                    let (dy, dx) = pair(&mut self.grad, cur, next);
                    let (nm, ni) = &self.norm[i];
                    let params = self.members.params().buf();
                    let mut builder = self.gpu.stream.launch_builder(&self.kernels.bn_backward);
                    builder
                        .arg(&self.acts[i])
                        .arg(dy)
                        .arg(dx)
                        .arg(nm)
                        .arg(ni)
                        .arg(params);
                    builder
                        .arg(&self.grads)
                        .arg(&nu)
                        .arg(&so)
                        .arg(&sh)
                        .arg(&pu)
                        .arg(&ru);
                    builder.arg(&cu).arg(&train);
                    // SAFETY: train_bn_backward's arguments; x, dy, dx hold P x rows x C.
                    unsafe { builder.launch(config(p * rows * c)) }.map_err(dev)?;
                }
                Ok(next)
            }
            Op::Relu { len } => {
                let total = (p * b * len) as u64;
                launch!(self, relu_backward, p * b * len; &mut self.grad[cur], &self.acts[i + 1], &total)?;
                Ok(cur)
            }
            Op::MaxPool { c, h, w, .. } => {
                if din {
                    let (imgs, hu, wu, cu, mask) =
                        ((p * b) as u64, h as u64, w as u64, c as u64, 0i32);
                    let (dy, dx) = pair(&mut self.grad, cur, next);
                    let mut builder = self
                        .gpu
                        .stream
                        .launch_builder(&self.kernels.maxpool_backward);
                    builder
                        .arg(&self.acts[i])
                        .arg(dy)
                        .arg(dx)
                        .arg(&imgs)
                        .arg(&hu)
                        .arg(&wu);
                    builder.arg(&cu).arg(&mask);
                    // SAFETY: train_maxpool_backward's arguments; dx holds the input's size.
                    unsafe { builder.launch(config(p * b * h * w * c)) }.map_err(dev)?;
                }
                Ok(next)
            }
            Op::Flatten { c, h, w } => {
                if din {
                    let (rows, a, bb) = ((p * b) as u64, c as u64, (h * w) as u64);
                    let (dy, dx) = pair(&mut self.grad, cur, next);
                    let mut builder = self.gpu.stream.launch_builder(&self.kernels.transpose);
                    builder
                        .arg(dy)
                        .arg(dx)
                        .arg(&rows)
                        .arg(&rows)
                        .arg(&a)
                        .arg(&bb);
                    // SAFETY: train_transpose's arguments; both hold P x B x C x H x W.
                    unsafe { builder.launch(config(p * b * c * h * w)) }.map_err(dev)?;
                }
                Ok(next)
            }
        }
    }

    /// The population on the host (REPAIR's rare host-side steps).
    fn host_params(&self) -> Result<(Vec<f32>, Vec<f32>), EngineError> {
        let len = self.population * self.spec.len();
        let (mut params, mut velocity) = (vec![0.0; len], vec![0.0; len]);
        self.members
            .download(&mut params, &mut velocity)
            .map_err(dev)?;
        Ok((params, velocity))
    }
}

impl Engine for CudaEngine {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn population(&self) -> usize {
        self.population
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn path(&self) -> String {
        format!("cuda ({})", self.gpu.name())
    }

    fn upload(&mut self, params: &[f32], velocity: &[f32]) -> Result<(), EngineError> {
        let len = self.population * self.spec.len();
        Self::check_len("params (P x N)", len, params.len())?;
        Self::check_len("velocity (P x N)", len, velocity.len())?;
        self.members.upload(params, velocity).map_err(dev)?;
        self.has_gradients = false;
        Ok(())
    }

    fn download(&self, params: &mut [f32], velocity: &mut [f32]) -> Result<(), EngineError> {
        let len = self.population * self.spec.len();
        Self::check_len("params (P x N)", len, params.len())?;
        Self::check_len("velocity (P x N)", len, velocity.len())?;
        self.members.download(params, velocity).map_err(dev)
    }

    fn forward(&mut self, input: Input<'_>, mode: Mode) -> Result<&[f32], EngineError> {
        self.run(input, mode)?;
        self.has_gradients = false;
        let len = self.population * self.batch * self.spec.classes();
        Ok(&self.host_logits[..len])
    }

    fn backward(&mut self, dlogits: &[f32]) -> Result<&[f32], EngineError> {
        self.backward_for_sgd(dlogits)?;
        // The gradients to the host, for the caller who asked for them.
        let stream = self.gpu.stream.clone();
        stream
            .memcpy_dtoh(&self.grads, &mut self.host_grads)
            .map_err(dev)?;
        Ok(&self.host_grads)
    }

    fn backward_for_sgd(&mut self, dlogits: &[f32]) -> Result<(), EngineError> {
        let (p, b) = (self.population, self.batch);
        let mode = self.pending.ok_or(model::Error::NoForward)?;
        Self::check_len("dlogits", p * b * self.spec.classes(), dlogits.len())?;
        self.pending = None;
        let stream = self.gpu.stream.clone();
        stream
            .memcpy_htod(dlogits, &mut self.grad[0].slice_mut(..dlogits.len()))
            .map_err(dev)?;
        let ops = self.spec.ops().to_vec();
        let mut cur = 0;
        for (i, op) in ops.iter().enumerate().rev() {
            cur = self.backward_op(i, *op, cur, mode)?;
        }
        self.has_gradients = true;
        Ok(())
    }

    fn sgd_step(&mut self, sgd: &Sgd, lr: f32) -> Result<(), EngineError> {
        if !self.has_gradients {
            return Err(EngineError::NoGradients);
        }
        // The CPU optimizer's checks, on an empty population of the same shape.
        sgd.step(
            &mut [],
            &[],
            &mut [],
            self.spec.len(),
            &self.spec.trainable_ranges(),
            lr,
        )?;
        let (p, n) = (self.population, self.spec.len());
        let (nu, pu, count) = (n as u64, p as u64, self.ranges as u32);
        let (mu, wd, nesterov) = (sgd.momentum, sgd.weight_decay, i32::from(sgd.nesterov));
        let (params, velocity) = self.members.both_mut();
        let mut builder = self.gpu.stream.launch_builder(&self.kernels.sgd);
        builder
            .arg(params.buf_mut())
            .arg(&self.grads)
            .arg(velocity.buf_mut());
        builder
            .arg(&nu)
            .arg(&pu)
            .arg(&self.trainable)
            .arg(&count)
            .arg(&lr)
            .arg(&mu);
        builder.arg(&wd).arg(&nesterov);
        // SAFETY: train_sgd's arguments; all three buffers hold P x N floats and the ranges
        // lie within a member (the spec's trainable ranges, checked above).
        unsafe { builder.launch(config(p * n)) }.map_err(dev)?;
        self.has_gradients = false;
        Ok(())
    }

    fn apply(&mut self, rule: Rule<'_>, momentum: bool) -> Result<(), EngineError> {
        self.members.apply(rule, momentum).map_err(dev)
    }

    fn average(&self, weights: Weights<'_>) -> Result<Vec<f32>, EngineError> {
        self.members.average(weights).map_err(dev)
    }

    fn diversity(&self) -> Result<Diversity, EngineError> {
        self.members.diversity().map_err(dev)
    }

    fn reestimate_batchnorm(
        &mut self,
        calibration: &[f32],
        batch: usize,
    ) -> Result<(), EngineError> {
        let per = (batch * self.spec.input_len()).max(1);
        Self::check_len(
            "calibration (whole batches)",
            calibration.len() / per * per,
            calibration.len(),
        )?;
        self.has_gradients = false;
        let (mut params, velocity) = self.host_params()?;
        if !reset_running_stats(&self.spec, &mut params) {
            return Ok(());
        }
        self.members.upload(&params, &velocity).map_err(dev)?;
        self.momentum = None;
        let result = calibration
            .chunks_exact(per)
            .try_for_each(|input| self.run(Input::Shared(input), Mode::Train));
        self.momentum = Some(BN_MOMENTUM);
        self.pending = None;
        result
    }

    fn layer_moments(
        &mut self,
        layer: usize,
        calibration: &[f32],
        batch: usize,
    ) -> Result<Vec<Moments>, EngineError> {
        let target = self
            .spec
            .repairable()
            .nth(layer)
            .ok_or(EngineError::NoSuchLayer(layer))?;
        let (op, channels) = (target.op, target.channels);
        let positions = match self.spec.ops().get(op) {
            Some(Op::Conv(ConvLayer { h, w, .. })) => h * w,
            Some(Op::Linear(_)) => 1,
            _ => return Err(EngineError::NoSuchLayer(layer)),
        };
        let per = (batch * self.spec.input_len()).max(1);
        Self::check_len(
            "calibration (whole batches)",
            calibration.len() / per * per,
            calibration.len(),
        )?;
        self.has_gradients = false;
        let p = self.population;
        let mut moments = vec![Moments::EMPTY; p * channels];
        let mut host = Vec::new();
        for input in calibration.chunks_exact(per) {
            self.run(Input::Shared(input), Mode::Eval)?;
            let len = p * self.batch * positions * channels;
            host.resize(len, 0.0);
            self.gpu
                .stream
                .memcpy_dtoh(&self.acts[op + 1].slice(..len), &mut host[..])
                .map_err(dev)?;
            for (m, stats) in moments.chunks_exact_mut(channels).enumerate() {
                let member = &host[m * len / p..(m + 1) * len / p];
                accumulate(stats, member, channels, 1).map_err(EngineError::Repair)?;
            }
        }
        self.pending = None;
        Ok(moments)
    }

    fn fold(&mut self, layer: usize, corrections: &[Correction]) -> Result<(), EngineError> {
        // REPAIR folds once per averaging: on the host, with the CPU engine's arithmetic.
        let (mut params, velocity) = self.host_params()?;
        fold_into_population(&self.spec, layer, &mut params, corrections)?;
        self.members.upload(&params, &velocity).map_err(dev)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// cuBLAS's `sgemmStridedBatched` on host slices, column-major as documented:
    /// `C_i = alpha op(A_i) op(B_i) + beta C_i`, `A_i` at `a[i * stride_a..]`.
    fn host_sgemm(cfg: &StridedBatchedConfig<f32>, a: &[f32], b: &[f32], c: &mut [f32]) {
        let g = &cfg.gemm;
        let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
        let (lda, ldb, ldc) = (g.lda as usize, g.ldb as usize, g.ldc as usize);
        let t = |op: cublasOperation_t| op == cublasOperation_t::CUBLAS_OP_T;
        for i in 0..cfg.batch_size as usize {
            let (a, b) = (
                &a[i * cfg.stride_a as usize..],
                &b[i * cfg.stride_b as usize..],
            );
            let c = &mut c[i * cfg.stride_c as usize..];
            for col in 0..n {
                for row in 0..m {
                    let mut sum = 0.0f64;
                    for kk in 0..k {
                        let x = if t(g.transa) {
                            a[kk + row * lda]
                        } else {
                            a[row + kk * lda]
                        };
                        let y = if t(g.transb) {
                            b[col + kk * ldb]
                        } else {
                            b[kk + col * ldb]
                        };
                        sum += f64::from(x) * f64::from(y);
                    }
                    let at = row + col * ldc;
                    c[at] =
                        (f64::from(g.alpha) * sum + f64::from(g.beta) * f64::from(c[at])) as f32;
                }
            }
        }
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 + seed * 11) % 23) as f32 / 7.0 - 1.5)
            .collect()
    }

    #[track_caller]
    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "entry {i}: {x} vs {y}"
            );
        }
    }

    /// The engine's three GEMMs, issued as cuBLAS would run them, give the row-major
    /// products the layers need: the weights read at their offset in each member (stride
    /// N), the weight gradients written there.
    #[test]
    fn the_layer_gemms_compute_the_row_major_products() {
        let (p, n, rows, fin, fout, off) = (3, 100, 5, 4, 6, 7);
        let x = values(p * rows * fin, 1);
        let params = values(p * n, 2);
        let dy = values(p * rows * fout, 3);
        let w = |m: usize, o: usize, i: usize| params[m * n + off + o * fin + i];

        // Forward: y = bias + x W^T (beta = 1 adds to what y holds).
        let bias = values(p * rows * fout, 4);
        let mut y = bias.clone();
        let cfg = RowMajor::forward(p, n, rows, fin, fout).cublas().unwrap();
        host_sgemm(&cfg, &params[off..], &x, &mut y);
        let mut want = bias;
        for m in 0..p {
            for r in 0..rows {
                for o in 0..fout {
                    let dot: f32 = (0..fin)
                        .map(|i| x[(m * rows + r) * fin + i] * w(m, o, i))
                        .sum();
                    want[(m * rows + r) * fout + o] += dot;
                }
            }
        }
        close(&y, &want);

        // Weight gradient: dW = dY^T x, into each member's weight.
        let mut grads = vec![0.0; p * n];
        let cfg = RowMajor::weight_grad(p, n, rows, fin, fout)
            .cublas()
            .unwrap();
        host_sgemm(&cfg, &x, &dy, &mut grads[off..]);
        let mut want = vec![0.0; p * n];
        for m in 0..p {
            for o in 0..fout {
                for i in 0..fin {
                    want[m * n + off + o * fin + i] = (0..rows)
                        .map(|r| dy[(m * rows + r) * fout + o] * x[(m * rows + r) * fin + i])
                        .sum();
                }
            }
        }
        close(&grads, &want);

        // Input gradient: dX = dY W.
        let mut dx = vec![0.0; p * rows * fin];
        let cfg = RowMajor::input_grad(p, n, rows, fin, fout)
            .cublas()
            .unwrap();
        host_sgemm(&cfg, &params[off..], &dy, &mut dx);
        let mut want = vec![0.0; p * rows * fin];
        for m in 0..p {
            for r in 0..rows {
                for i in 0..fin {
                    want[(m * rows + r) * fin + i] = (0..fout)
                        .map(|o| dy[(m * rows + r) * fout + o] * w(m, o, i))
                        .sum();
                }
            }
        }
        close(&dx, &want);
    }
}
