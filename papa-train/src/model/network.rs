//! The population engine: every layer runs all P members at once, in parallel over
//! (member, chunk of samples) tasks whose decomposition never depends on the thread count.

use super::conv::{self, Conv};
use super::kernels::{
    self, chunks, fill_rows, matmul, par_sample_blocks, par_samples, Batched, Mat, CHUNK, ROW_BLOCK,
};
use super::ModelSpec;
use super::{zeroed, Error, BN_EPS, BN_MOMENTUM};
use papa_core::LengthMismatch;
use papa_cpu::Isa;
use papa_model::plan::{ConvLayer, LinearLayer, Op};
use rayon::prelude::*;

/// How BatchNorm behaves in a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics; running statistics and counters are updated in the parameters.
    Train,
    /// Running statistics; the parameters are only read.
    Eval,
}

/// The input of a forward pass, in PyTorch's `C x H x W` order per sample.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// `P x B x C x H x W`: each member its own batch.
    PerMember(&'a [f32]),
    /// `B x C x H x W`: the same batch for every member (evaluation of an ensemble).
    Shared(&'a [f32]),
}

/// Pre-activation outputs of a repairable layer after a forward pass, channel-last:
/// value `(member m, sample s, position q, channel c)` is
/// `data[((m * batch + s) * positions + q) * channels + c]`.
#[derive(Clone, Copy, Debug)]
pub struct LayerOutput<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Members.
    pub population: usize,
    /// Samples per member.
    pub batch: usize,
    /// Spatial positions per sample (`H x W` of a conv output, 1 for a linear layer).
    pub positions: usize,
    /// Channels (output features).
    pub channels: usize,
}

impl LayerOutput<'_> {
    /// Member `m`'s values (`batch x positions x channels`); empty when out of range.
    pub fn member(&self, m: usize) -> &[f32] {
        let len = self.batch * self.positions * self.channels;
        self.data.get(m * len..(m + 1) * len).unwrap_or(&[])
    }
}

/// One op of the network and the buffers it reads and writes.
struct Step {
    op: Op,
    input: usize,
    output: usize,
    /// A conv's weights for every member in the engine's order, refreshed by each forward.
    weights: Vec<f32>,
    /// BatchNorm batch statistics `[mean; P*C], [biased var; P*C]` (f64, for the running update).
    stats: Vec<f64>,
    /// BatchNorm normalisation actually applied: `[mean; P*C], [1/std; P*C]`.
    norm: Vec<f32>,
    /// A BatchNorm that also applies the in-place ReLU after it (saving a pass over the
    /// output), or that ReLU, whose forward is then a no-op.
    fused_relu: bool,
    /// A max-pool right after a ReLU, whose backward also applies the ReLU's mask (saving a
    /// pass over the larger input), or that ReLU, whose backward is then a no-op.
    pool_masks_relu: bool,
}

/// Workspace and engine for a population of `population` members and batches of up to
/// `batch` samples per member. Built once; a training step allocates nothing.
///
/// Every activation is kept from forward to backward (about 50 MB per member for the small
/// CNN at batch 128); a conv's im2col rows are built a few samples at a time in a per-thread
/// buffer that stays in cache, and rebuilt in the backward pass. Work is split into fixed
/// (member, 16-sample chunk) tasks wherever partial sums are reduced, added in a fixed order,
/// and into (member, 64-row block) tasks for the linear layers' gemms, whose rows are
/// computed on their own; so results are bit-identical on any number of threads and a
/// member gets the same bits whether it runs alone or in a population.
pub struct Network {
    spec: ModelSpec,
    population: usize,
    capacity: usize,
    steps: Vec<Step>,
    acts: Vec<Vec<f32>>,
    grad: [Vec<f32>; 2],
    param_grads: Vec<f32>,
    partials: Vec<f64>,
    /// Per-(member, chunk) conv weight and bias gradients, summed in chunk order.
    conv_partials: Vec<f32>,
    /// Batch of the last forward (0 before any).
    batch: usize,
    /// Mode of the last forward, while its backward is still allowed.
    pending: Option<Mode>,
    /// Running-statistics momentum; `None` is PyTorch's cumulative average.
    momentum: Option<f32>,
    /// The path the gemms run on.
    isa: Isa,
}

impl Network {
    /// Allocates the workspace for `population` members and up to `batch` samples each, on
    /// the fastest path this CPU has ([`Isa::detect`]).
    pub fn new(spec: &ModelSpec, population: usize, batch: usize) -> Result<Self, Error> {
        Self::with_isa(spec, population, batch, Isa::detect())
    }

    /// [`Network::new`] on the path `isa`; an error if this CPU cannot run it. Paths agree
    /// to rounding; each gives the same bits on every call and thread count.
    pub fn with_isa(
        spec: &ModelSpec,
        population: usize,
        batch: usize,
        isa: Isa,
    ) -> Result<Self, Error> {
        let isa = isa.checked()?;
        if population == 0 || batch == 0 {
            return Err(Error::Empty { population, batch });
        }
        supported(spec)?;
        let mut acts = vec![zeroed("input", &[population, batch, spec.input_len()])?];
        let mut steps: Vec<Step> = Vec::with_capacity(spec.ops().len());
        let (mut max_c, mut max_conv) = (0, 0);
        for &op in spec.ops() {
            let input = acts.len() - 1;
            // ReLU after BatchNorm overwrites the BN output: nothing reads it later, while a
            // conv/linear output must survive for REPAIR's statistics.
            let in_place = matches!(op, Op::Relu { .. })
                && matches!(
                    steps.last(),
                    Some(Step {
                        op: Op::BatchNorm { .. },
                        ..
                    })
                );
            // A max-pool's input is then exactly the ReLU's output: the pool's backward can
            // apply the ReLU's mask to the one gradient per window it writes.
            let pool_after_relu = matches!(op, Op::MaxPool { .. })
                && matches!(
                    steps.last(),
                    Some(Step {
                        op: Op::Relu { .. },
                        ..
                    })
                );
            if pool_after_relu {
                if let Some(relu) = steps.last_mut() {
                    relu.pool_masks_relu = true;
                }
            }
            if in_place {
                if let Some(bn) = steps.last_mut() {
                    bn.fused_relu = true;
                }
            } else {
                acts.push(zeroed("activation", &[population, batch, op.out_len()])?);
            }
            let (weights, stats, norm) = match op {
                Op::Conv(ConvLayer { cin, cout, .. }) => {
                    max_conv = max_conv.max(cout * (cin * 9 + 1));
                    (
                        zeroed("conv weight", &[Conv::weights_len(population, cin, cout)])?,
                        vec![],
                        vec![],
                    )
                }
                Op::BatchNorm { c, .. } => {
                    max_c = max_c.max(c);
                    (
                        vec![],
                        zeroed("BatchNorm statistics", &[2, population, c])?,
                        zeroed("BatchNorm normalisation", &[2, population, c])?,
                    )
                }
                _ => (vec![], vec![], vec![]),
            };
            steps.push(Step {
                op,
                input,
                output: acts.len() - 1,
                weights,
                stats,
                norm,
                fused_relu: in_place,
                pool_masks_relu: pool_after_relu,
            });
        }
        let max_act = acts.iter().map(Vec::len).max().unwrap_or(0);
        Ok(Self {
            spec: spec.clone(),
            population,
            capacity: batch,
            steps,
            acts,
            grad: [
                zeroed("gradient", &[max_act])?,
                zeroed("gradient", &[max_act])?,
            ],
            param_grads: zeroed("parameter gradient", &[population, spec.len()])?,
            partials: zeroed(
                "BatchNorm partial sums",
                &[population, chunks(batch), 2, max_c],
            )?,
            conv_partials: zeroed("conv partial sums", &[population, chunks(batch), max_conv])?,
            batch: 0,
            pending: None,
            momentum: Some(BN_MOMENTUM),
            isa,
        })
    }

    /// Sets BatchNorm's running-statistics momentum for later train-mode forwards:
    /// `Some(m)` is PyTorch's exponential average (default 0.1); `None` is PyTorch's
    /// `momentum=None`, the cumulative average `1 / num_batches_tracked`, used to re-estimate
    /// statistics from reset running statistics and counters.
    pub fn set_bn_momentum(&mut self, momentum: Option<f32>) {
        self.momentum = momentum;
    }

    /// The path its gemms run on.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The model this network runs.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Members per call.
    pub fn population(&self) -> usize {
        self.population
    }

    /// The largest batch per member.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forward pass of all members; returns the logits, `P x B x classes`.
    ///
    /// `params` is the `P x N` population. In [`Mode::Train`] BatchNorm normalises with batch
    /// statistics and updates `running_mean`/`running_var` (momentum 0.1, unbiased variance)
    /// and `num_batches_tracked` in `params`, as PyTorch does.
    pub fn forward(
        &mut self,
        params: &mut [f32],
        input: Input,
        mode: Mode,
    ) -> Result<&[f32], Error> {
        self.run(params, input, mode)?;
        if mode == Mode::Train {
            self.update_running_stats(params);
        }
        Ok(self.logits())
    }

    /// Eval-mode forward that only reads `params` (single models, ensembles, validation).
    pub fn evaluate(&mut self, params: &[f32], input: Input) -> Result<&[f32], Error> {
        self.run(params, input, Mode::Eval)?;
        Ok(self.logits())
    }

    /// Logits of the last forward (`P x B x classes`).
    pub fn logits(&self) -> &[f32] {
        let len = self.population * self.batch * self.spec.classes();
        &self.acts[self.acts.len() - 1][..len]
    }

    /// Pre-activation output of repairable layer `layer` (see
    /// [`ModelSpec::repairable`]) in the last forward pass.
    pub fn pre_activation(&self, layer: usize) -> Result<LayerOutput<'_>, Error> {
        let step = &self.steps[self
            .spec
            .repairable()
            .nth(layer)
            .ok_or(Error::NoSuchLayer(layer))?
            .op];
        let (positions, channels) = match step.op {
            Op::Conv(ConvLayer { cout, h, w, .. }) => (h * w, cout),
            Op::Linear(LinearLayer { fout, .. }) => (1, fout),
            _ => return Err(Error::NoSuchLayer(layer)),
        };
        let len = self.population * self.batch * positions * channels;
        Ok(LayerOutput {
            data: &self.acts[step.output][..len],
            population: self.population,
            batch: self.batch,
            positions,
            channels,
        })
    }

    fn run(&mut self, params: &[f32], input: Input, mode: Mode) -> Result<(), Error> {
        let (p, n) = (self.population, self.spec.len());
        check_len("params", p * n, params.len())?;
        let per = self.spec.input_len();
        let (data, unit) = match input {
            Input::PerMember(d) => (d, p * per),
            Input::Shared(d) => (d, per),
        };
        let b = data.len() / unit;
        check_len("input", b.max(1) * unit, data.len())?;
        if b > self.capacity {
            return Err(Error::Batch {
                batch: b,
                capacity: self.capacity,
            });
        }
        if mode == Mode::Train {
            for step in &self.steps {
                if let Op::BatchNorm { spatial, .. } = step.op {
                    if b * spatial < 2 {
                        return Err(Error::TooFewForBatchNorm {
                            values: b * spatial,
                        });
                    }
                }
            }
        }
        self.batch = b;
        self.pending = None;
        let [c, h, w] = self.spec.input_shape();
        par_samples(&mut self.acts[0], p, b, per, |m, s, dst| {
            let first = match input {
                Input::PerMember(_) => m * b + s.start,
                Input::Shared(_) => s.start,
            };
            // PyTorch's C x H x W to the engine's channel-last layout.
            kernels::flatten(&data[first * per..][..s.len() * per], dst, c, h * w, true);
        });
        for step in &mut self.steps {
            let (x, y) = io(&mut self.acts, step.input, step.output);
            let dims = Batched {
                p,
                b,
                n,
                isa: self.isa,
                layer: (),
            };
            forward_step(step, x, y, params, &mut self.partials, dims, mode);
        }
        self.pending = Some(mode);
        Ok(())
    }

    fn update_running_stats(&self, params: &mut [f32]) {
        let (p, n, b) = (self.population, self.spec.len(), self.batch);
        for step in &self.steps {
            if let Op::BatchNorm {
                c,
                spatial,
                mean,
                var,
                count,
                ..
            } = step.op
            {
                let values = (b * spatial) as f64;
                for (m, member) in params.chunks_exact_mut(n).enumerate().take(p) {
                    member[count] += 1.0;
                    let mom = self.momentum.map_or(1.0 / member[count] as f64, f64::from);
                    for ch in 0..c {
                        let (bm, bv) = (step.stats[m * c + ch], step.stats[(p + m) * c + ch]);
                        let rm = &mut member[mean + ch];
                        *rm = ((1.0 - mom) * *rm as f64 + mom * bm) as f32;
                        let rv = &mut member[var + ch];
                        *rv =
                            ((1.0 - mom) * *rv as f64 + mom * bv * values / (values - 1.0)) as f32;
                    }
                }
            }
        }
    }

    /// The parameter gradients of the last backward (`P x N`; zeros before any).
    pub fn gradients(&self) -> &[f32] {
        &self.param_grads
    }

    /// Backward pass of the last forward; returns the parameter gradients, `P x N` (zero
    /// for running statistics and counters). `dlogits` is `P x B x classes`.
    ///
    /// Each forward allows one backward (it reuses the forward's buffers). After an
    /// [`evaluate`](Self::evaluate) or an eval-mode forward, BatchNorm is differentiated as the
    /// fixed affine map it then is.
    pub fn backward(&mut self, params: &[f32], dlogits: &[f32]) -> Result<&[f32], Error> {
        let (p, n, b) = (self.population, self.spec.len(), self.batch);
        check_len("params", p * n, params.len())?;
        let mode = self.pending.take().ok_or(Error::NoForward)?;
        check_len("dlogits", p * b * self.spec.classes(), dlogits.len())?;
        self.grad[0][..dlogits.len()].copy_from_slice(dlogits);
        let mut cur = 0;
        for (i, step) in self.steps.iter_mut().enumerate().rev() {
            let (a, z) = self.grad.split_at_mut(1);
            let (dout, din) = if cur == 0 {
                (&mut a[0], &mut z[0])
            } else {
                (&mut z[0], &mut a[0])
            };
            let ctx = Ctx {
                params,
                grads: &mut self.param_grads,
                partials: &mut self.partials,
                conv_partials: &mut self.conv_partials,
                dims: Batched {
                    p,
                    b,
                    n,
                    isa: self.isa,
                    layer: (),
                },
            };
            // The first layer's input gradient is never needed.
            let din = (i > 0).then_some(&mut din[..]);
            if backward_step(step, &self.acts, dout, din, ctx, mode) {
                cur = 1 - cur;
            }
        }
        Ok(&self.param_grads)
    }
}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), Error> {
    Ok(LengthMismatch::check(what, expected, found)?)
}

/// Checks that every op has a kernel here: the convs and pools of the zoo, which keep (conv)
/// or halve (pool) the image size.
fn supported(spec: &ModelSpec) -> Result<(), Error> {
    for (i, op) in spec.ops().iter().enumerate() {
        let what = match *op {
            Op::Conv(c) if (c.kernel, c.stride, c.padding) != (3, 1, 1) => {
                "only 3x3 convolutions with stride 1 and padding 1"
            }
            Op::MaxPool { kernel, stride, .. } if (kernel, stride) != (2, 2) => {
                "only 2x2 max-pools with stride 2"
            }
            _ => continue,
        };
        return Err(Error::Unsupported { op: i, what });
    }
    Ok(())
}

/// The input and output buffers of a step (the same buffer for an in-place op, whose input
/// is then not needed).
fn io(acts: &mut [Vec<f32>], input: usize, output: usize) -> (&[f32], &mut [f32]) {
    if input == output {
        return (&[], &mut acts[output]);
    }
    let (lo, hi) = acts.split_at_mut(output);
    (&lo[input], &mut hi[0])
}

papa_cpu::multiversion! {
    #[isa(dims.isa)]
    #[allow(clippy::too_many_arguments)]
    fn forward_step(
        step: &mut Step,
        x: &[f32],
        y: &mut [f32],
        params: &[f32],
        partials: &mut [f64],
        dims: Batched<()>,
        mode: Mode,
    ) {
        let Batched { p, b, n, .. } = dims;
        let (in_len, out_len) = (step.op.in_len(), step.op.out_len());
        let sample_in =
            |m: usize, s: &std::ops::Range<usize>| &x[(m * b + s.start) * in_len..][..s.len() * in_len];
        match step.op {
            Op::Conv(layer) => conv::forward(x, y, params, &mut step.weights, dims.of(layer)),
            Op::Linear(layer) => dense_forward(x, y, params, dims.of(layer)),
            Op::BatchNorm {
                c,
                spatial,
                scale,
                shift,
                mean,
                var,
                ..
            } => {
                let (nmean, ninv) = step.norm.split_at_mut(p * c);
                match mode {
                    Mode::Train => {
                        let (bmean, bvar) = step.stats.split_at_mut(p * c);
                        let rows = (b * spatial) as f64;
                        // Sums and sums of squares in one pass; in f64 the cancellation in
                        // `E[x^2] - E[x]^2` costs nothing at f32 precision.
                        channel_sums(partials, p, b, 2 * c, |m, s, acc| {
                            let (sum, sq) = acc.split_at_mut(c);
                            for row in sample_in(m, &s).chunks_exact(c) {
                                for ((a, q), &v) in sum.iter_mut().zip(sq.iter_mut()).zip(row) {
                                    let v = v as f64;
                                    *a += v;
                                    *q += v * v;
                                }
                            }
                        });
                        reduce_chunks(partials, p, b, 2 * c, |m, ch, sum| {
                            if ch < c {
                                bmean[m * c + ch] = sum / rows;
                            } else {
                                bvar[m * c + ch - c] = sum / rows;
                            }
                        });
                        for (v, &u) in bvar.iter_mut().zip(&*bmean) {
                            *v = (*v - u * u).max(0.0);
                        }
                        for i in 0..p * c {
                            nmean[i] = bmean[i] as f32;
                            ninv[i] = (1.0 / (bvar[i] + BN_EPS as f64).sqrt()) as f32;
                        }
                    }
                    Mode::Eval => {
                        for m in 0..p {
                            for ch in 0..c {
                                nmean[m * c + ch] = params[m * n + mean + ch];
                                ninv[m * c + ch] = 1.0 / (params[m * n + var + ch] + BN_EPS).sqrt();
                            }
                        }
                    }
                }
                let (nmean, ninv) = (&*nmean, &*ninv);
                let relu = step.fused_relu;
                par_samples(y, p, b, out_len, |m, s, out| {
                    let (mu, inv) = (&nmean[m * c..][..c], &ninv[m * c..][..c]);
                    let (gamma, beta) = (&params[m * n + scale..][..c], &params[m * n + shift..][..c]);
                    for (o, xr) in out
                        .chunks_exact_mut(c)
                        .zip(sample_in(m, &s).chunks_exact(c))
                    {
                        for ch in 0..c {
                            let v = (xr[ch] - mu[ch]) * inv[ch] * gamma[ch] + beta[ch];
                            o[ch] = if relu { v.max(0.0) } else { v };
                        }
                    }
                });
            }
            Op::Relu { .. } if step.fused_relu => {}
            Op::Relu { len } => {
                y[..p * b * len]
                    .par_chunks_mut(1 << 14)
                    .zip(x[..p * b * len].par_chunks(1 << 14))
                    .for_each(|(o, i)| o.iter_mut().zip(i).for_each(|(o, &v)| *o = v.max(0.0)));
            }
            Op::MaxPool { c, h, w, .. } => {
                par_samples(y, p, b, out_len, |m, s, out| {
                    kernels::maxpool(sample_in(m, &s), out, c, h, w)
                });
            }
            Op::Flatten { c, h, w } => {
                par_samples(y, p, b, out_len, |m, s, out| {
                    kernels::flatten(sample_in(m, &s), out, c, h * w, false)
                });
            }
        }
    }
}

/// What a backward step may touch besides its own buffers.
struct Ctx<'a> {
    params: &'a [f32],
    grads: &'a mut [f32],
    partials: &'a mut [f64],
    conv_partials: &'a mut [f32],
    dims: Batched<()>,
}

papa_cpu::multiversion! {
    /// Backward of one step: reads `dout`, writes the parameter gradients and, when `din` is
    /// given, the input gradient. Returns whether the gradient moved to `din` (false when it
    /// was updated in place in `dout`).
    #[isa(ctx.dims.isa)]
    fn backward_step(
        step: &mut Step,
        acts: &[Vec<f32>],
        dout: &mut [f32],
        din: Option<&mut [f32]>,
        ctx: Ctx,
        mode: Mode,
    ) -> bool {
        let Ctx {
            params,
            grads,
            partials,
            conv_partials,
            dims,
        } = ctx;
        let Batched { p, b, n, .. } = dims;
        let (x, y) = (&acts[step.input], &acts[step.output]);
        let (in_len, out_len) = (step.op.in_len(), step.op.out_len());
        let sample_out = |m: usize, s: &std::ops::Range<usize>| {
            &dout[(m * b + s.start) * out_len..][..s.len() * out_len]
        };
        match step.op {
            Op::Relu { .. } if step.pool_masks_relu => return false,
            Op::Relu { len } => {
                let len = p * b * len;
                dout[..len]
                    .par_chunks_mut(1 << 14)
                    .zip(y[..len].par_chunks(1 << 14))
                    .for_each(|(g, y)| {
                        // A select rather than a branch: the sign pattern is random.
                        g.iter_mut()
                            .zip(y)
                            .for_each(|(g, &y)| *g = if y > 0.0 { *g } else { 0.0 })
                    });
                return false;
            }
            Op::Conv(layer) => conv::backward(
                x,
                dout,
                din,
                (&step.weights, conv_partials),
                grads,
                dims.of(layer),
            ),
            Op::Linear(layer) => {
                let d = dims.of(layer);
                dense_weight_grads(x, dout, grads, d);
                if let Some(din) = din {
                    dense_input_grads(dout, din, params, d);
                }
            }
            Op::BatchNorm {
                c,
                spatial,
                scale,
                shift,
                ..
            } => {
                let (nmean, ninv) = step.norm.split_at(p * c);
                let sample_in = |m: usize, s: &std::ops::Range<usize>| {
                    &x[(m * b + s.start) * in_len..][..s.len() * in_len]
                };
                // Partial sums of dy and dy * xhat per (member, chunk, channel).
                channel_sums(partials, p, b, 2 * c, |m, s, acc| {
                    let (mu, inv) = (&nmean[m * c..][..c], &ninv[m * c..][..c]);
                    for (xr, gr) in sample_in(m, &s)
                        .chunks_exact(c)
                        .zip(sample_out(m, &s).chunks_exact(c))
                    {
                        for ch in 0..c {
                            let xhat = (xr[ch] - mu[ch]) * inv[ch];
                            acc[ch] += gr[ch] as f64;
                            acc[c + ch] += (gr[ch] * xhat) as f64;
                        }
                    }
                });
                reduce_chunks(partials, p, b, 2 * c, |m, ch, sum| {
                    let at = if ch < c { shift + ch } else { scale + ch - c };
                    grads[m * n + at] = sum as f32;
                });
                if let Some(din) = din {
                    let grads = &*grads;
                    let rows = (b * spatial) as f32;
                    par_samples(din, p, b, in_len, |m, s, di| {
                        let (mu, inv) = (&nmean[m * c..][..c], &ninv[m * c..][..c]);
                        let gamma = &params[m * n + scale..][..c];
                        let (dbeta, dgamma) =
                            (&grads[m * n + shift..][..c], &grads[m * n + scale..][..c]);
                        let rows_in = sample_in(m, &s)
                            .chunks_exact(c)
                            .zip(sample_out(m, &s).chunks_exact(c));
                        for (dr, (xr, gr)) in di.chunks_exact_mut(c).zip(rows_in) {
                            for ch in 0..c {
                                let k = gamma[ch] * inv[ch];
                                dr[ch] = match mode {
                                    Mode::Train => {
                                        let xhat = (xr[ch] - mu[ch]) * inv[ch];
                                        k * (gr[ch] - dbeta[ch] / rows - xhat * dgamma[ch] / rows)
                                    }
                                    Mode::Eval => k * gr[ch],
                                };
                            }
                        }
                    });
                }
            }
            Op::MaxPool { c, h, w, .. } => {
                if let Some(din) = din {
                    par_samples(din, p, b, in_len, |m, s, di| {
                        kernels::maxpool_backward(
                            &x[(m * b + s.start) * in_len..][..s.len() * in_len],
                            sample_out(m, &s),
                            di,
                            (c, h, w),
                            step.pool_masks_relu,
                        )
                    });
                }
            }
            Op::Flatten { c, h, w } => {
                if let Some(din) = din {
                    par_samples(din, p, b, in_len, |m, s, di| {
                        kernels::flatten(sample_out(m, &s), di, c, h * w, true)
                    });
                }
            }
        }
        true
    }
}

/// A linear layer in a population (derefs to its [`LinearLayer`]).
type Dense = Batched<LinearLayer>;

papa_cpu::multiversion! {
    /// `y[s, fout] = x[s, fin] * W^T + bias`, per (member, block of samples).
    #[isa(d.isa)]
    fn dense_forward(x: &[f32], y: &mut [f32], params: &[f32], d: Dense) {
        let (b, n, fin, fout, weight, bias) = (d.b, d.n, d.fin, d.fout, d.weight, d.bias);
        par_sample_blocks(y, (d.p, b, fout), ROW_BLOCK, |m, s, out| {
            let member = &params[m * n..][..n];
            fill_rows(out, &member[bias..bias + fout]);
            let xr = &x[(m * b + s.start) * fin..][..s.len() * fin];
            matmul(
                d.isa,
                out,
                fout,
                Mat::rows(xr, s.len(), fin),
                Mat::transposed(&member[weight..weight + fout * fin], fin, fout, fin),
                true,
            );
        });
    }
}

papa_cpu::multiversion! {
    /// Linear weight and bias gradients, `dW = dy^T x` and `db = sum of dy rows`: each member
    /// one gemm over its whole batch, split over fixed blocks of output rows (a linear weight
    /// can be large, so per-chunk partials as for a conv would cost memory, and the batch is a
    /// short `k`).
    #[isa(d.isa)]
    fn dense_weight_grads(x: &[f32], dy: &[f32], grads: &mut [f32], d: Dense) {
        let (b, n, fin, fout, weight, bias) = (d.b, d.n, d.fin, d.fout, d.weight, d.bias);
        grads
            .par_chunks_mut(n)
            .take(d.p)
            .enumerate()
            .for_each(|(m, gm)| {
                // The bias directly follows the weight in every layout this crate builds.
                let (gw, gb) = gm[weight..bias + fout].split_at_mut(fout * fin);
                let (dym, xm) = (
                    &dy[m * b * fout..][..b * fout],
                    &x[m * b * fin..][..b * fin],
                );
                gw.par_chunks_mut(ROW_BLOCK * fin)
                    .zip(gb.par_chunks_mut(ROW_BLOCK))
                    .enumerate()
                    .for_each(|(k, (gw, gb))| {
                        let o0 = k * ROW_BLOCK;
                        let lhs = Mat {
                            data: &dym[o0..],
                            rows: gb.len(),
                            cols: b,
                            rs: 1,
                            cs: fout,
                        };
                        matmul(d.isa, gw, fin, lhs, Mat::rows(xm, b, fin), false);
                        let mut acc = [0.0f64; ROW_BLOCK];
                        for row in dym.chunks_exact(fout) {
                            acc.iter_mut()
                                .zip(&row[o0..o0 + gb.len()])
                                .for_each(|(a, &v)| *a += v as f64);
                        }
                        gb.iter_mut().zip(acc).for_each(|(g, a)| *g = a as f32);
                    });
            });
    }
}

papa_cpu::multiversion! {
    /// `dx[s, fin] = dy[s, fout] * W`, per (member, block of samples).
    #[isa(d.isa)]
    fn dense_input_grads(dy: &[f32], dx: &mut [f32], params: &[f32], d: Dense) {
        let (b, n, fin, fout, weight) = (d.b, d.n, d.fin, d.fout, d.weight);
        par_sample_blocks(dx, (d.p, b, fin), ROW_BLOCK, |m, s, out| {
            let dyr = &dy[(m * b + s.start) * fout..][..s.len() * fout];
            let wt = &params[m * n + weight..][..fout * fin];
            matmul(
                d.isa,
                out,
                fin,
                Mat::rows(dyr, s.len(), fout),
                Mat::rows(wt, fout, fin),
                false,
            );
        });
    }
}

/// Fills `partials[(m, chunk), 0..width]` in parallel with `f(member, samples, acc)` (acc
/// zeroed first): per-chunk partial sums, later added in chunk order by [`reduce_chunks`].
#[inline(always)]
fn channel_sums(
    partials: &mut [f64],
    p: usize,
    b: usize,
    width: usize,
    f: impl Fn(usize, std::ops::Range<usize>, &mut [f64]) + Sync,
) {
    let nchunks = chunks(b);
    partials[..p * nchunks * width]
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(t, acc)| {
            let (m, k) = (t / nchunks, t % nchunks);
            acc.fill(0.0);
            f(m, k * CHUNK..((k + 1) * CHUNK).min(b), acc)
        });
}

/// Calls `emit(m, j, sum)` with the sum over chunks `k`, in chunk order, of
/// `partials[(m, k), j]`: the fixed order that makes the result independent of threads.
#[inline(always)]
fn reduce_chunks(
    partials: &[f64],
    p: usize,
    b: usize,
    width: usize,
    mut emit: impl FnMut(usize, usize, f64),
) {
    let nchunks = chunks(b);
    for m in 0..p {
        for j in 0..width {
            emit(
                m,
                j,
                (0..nchunks)
                    .map(|k| partials[(m * nchunks + k) * width + j])
                    .sum(),
            );
        }
    }
}
