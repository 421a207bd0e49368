//! The reference engine: plain f64 loops over PyTorch's NCHW layout, written to be read and
//! believed rather than to be fast. It shares no kernel with [`CpuEngine`](super::CpuEngine)
//! and no rule with papa-core, so that the conformance suite compares two independent
//! implementations.

use super::{calibration_batches, repair_target, Diversity, Engine, EngineError, Rule};
use crate::model::{self, Input, Mode, ModelSpec, BN_EPS, BN_MOMENTUM};
use crate::optim::{OptimError, Sgd};
use papa_core::layout::TensorKind;
use papa_core::repair::{Correction, Moments};
use papa_core::rules::Weights;
use papa_core::{LengthMismatch, WEIGHT_SUM_TOLERANCE};
use papa_model::plan::{ConvLayer, LinearLayer, Op};
use std::ops::Range;

/// A population of `P` members of `N` floats kept in f64, with f64 forward, backward, SGD
/// and PAPA rules; only the slices the [`Engine`] trait returns are rounded to f32.
///
/// ```
/// use papa_model::zoo;
/// use papa_train::engine::{Engine, Reference};
/// use papa_train::model::{Input, Mode, ModelSpec};
///
/// let spec = ModelSpec::new(&zoo::mlp(&[8], 3), [1, 4, 4], 3).unwrap();
/// let mut engine = Reference::new(&spec, 2, 5).unwrap();
/// let logits = engine.forward(Input::Shared(&[0.5; 5 * 16]), Mode::Eval).unwrap();
/// assert_eq!(logits, [0.0; 2 * 5 * 3]); // a zero population gives zero logits
/// ```
#[derive(Clone, Debug)]
pub struct Reference {
    spec: ModelSpec,
    population: usize,
    capacity: usize,
    /// `P x N`, member-major.
    params: Vec<f64>,
    /// `P x N`, member-major.
    velocity: Vec<f64>,
    /// Whether entry `i` of a member is a counter (the rules take its max).
    counter: Vec<bool>,
    trainable: Vec<Range<usize>>,
    /// What the last forward left for its one backward.
    tape: Option<Tape>,
    logits: Vec<f64>,
    logits_f32: Vec<f32>,
    grads: Vec<f64>,
    grads_f32: Vec<f32>,
    /// Whether `grads` came from a backward that no step has used yet.
    fresh_grads: bool,
    /// BatchNorm's running-statistics momentum; `None` is the cumulative average.
    bn_momentum: Option<f64>,
}

/// A forward pass, as its backward needs it.
#[derive(Clone, Debug)]
struct Tape {
    batch: usize,
    mode: Mode,
    /// The population the forward read (before its running-statistics update), so that the
    /// backward differentiates exactly that forward.
    params: Vec<f64>,
    /// Per op, its input: `P x B x in_len`.
    inputs: Vec<Vec<f64>>,
}

/// The fields of [`Op::BatchNorm`].
#[derive(Clone, Copy, Debug)]
struct Bn {
    c: usize,
    spatial: usize,
    scale: usize,
    shift: usize,
    mean: usize,
    var: usize,
    count: usize,
}

/// The fields of [`Op::MaxPool`].
#[derive(Clone, Copy, Debug)]
struct Pool {
    c: usize,
    h: usize,
    w: usize,
    kernel: usize,
    stride: usize,
}

impl Reference {
    /// A population of `population` zero members, batches of up to `capacity` samples per
    /// member; [`model::Error::Empty`] when either is zero.
    pub fn new(spec: &ModelSpec, population: usize, capacity: usize) -> Result<Self, EngineError> {
        if population == 0 || capacity == 0 {
            return Err(model::Error::Empty {
                population,
                batch: capacity,
            }
            .into());
        }
        let n = spec.len();
        let mut counter = vec![false; n];
        for t in spec.tensors() {
            if t.kind == TensorKind::Counter {
                counter[t.range()].fill(true);
            }
        }
        Ok(Self {
            spec: spec.clone(),
            population,
            capacity,
            params: vec![0.0; population * n],
            velocity: vec![0.0; population * n],
            counter,
            trainable: spec.trainable_ranges(),
            tape: None,
            logits: Vec::new(),
            logits_f32: Vec::new(),
            grads: vec![0.0; population * n],
            grads_f32: vec![0.0; population * n],
            fresh_grads: false,
            bn_momentum: Some(f64::from(BN_MOMENTUM)),
        })
    }

    /// The gradients of the last backward in f64, `P x N` (zeros before the first).
    pub fn gradients_f64(&self) -> &[f64] {
        &self.grads
    }

    /// The logits of the last forward in f64, `P x B x classes` (empty before the first).
    pub fn logits_f64(&self) -> &[f64] {
        &self.logits
    }

    /// The population in f64, `P x N`.
    pub fn params_f64(&self) -> &[f64] {
        &self.params
    }

    /// Samples per member in `input`, once its length and size are checked.
    fn batch_of(&self, input: Input<'_>) -> Result<usize, EngineError> {
        let per = self.spec.input_len();
        let (data, unit) = match input {
            Input::PerMember(d) => (d, self.population * per),
            Input::Shared(d) => (d, per),
        };
        let batch = data.len() / unit;
        check_len("input", batch.max(1) * unit, data.len())?;
        if batch > self.capacity {
            return Err(model::Error::Batch {
                batch,
                capacity: self.capacity,
            }
            .into());
        }
        Ok(batch)
    }

    /// Train-mode BatchNorm divides by `values - 1` for the unbiased variance.
    fn check_batch_norm(&self, batch: usize, mode: Mode) -> Result<(), EngineError> {
        if mode == Mode::Eval {
            return Ok(());
        }
        for op in self.spec.ops() {
            if let Op::BatchNorm { spatial, .. } = *op {
                if batch * spatial < 2 {
                    return Err(model::Error::TooFewForBatchNorm {
                        values: batch * spatial,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// The averaging coefficients c_j, checked as papa-core checks them.
    fn coefficients(&self, weights: Weights<'_>) -> Result<Vec<f64>, papa_core::Error> {
        let p = self.population;
        match weights {
            Weights::Uniform => Ok(vec![1.0 / p as f64; p]),
            Weights::Given(w) => {
                check_weights(w, p)?;
                Ok(w.iter().map(|&c| f64::from(c)).collect())
            }
        }
    }

    /// Whether entry `i` takes the max over members when `counters` are honoured.
    fn takes_max(&self, i: usize, counters: bool) -> bool {
        counters && self.counter[i]
    }

    /// The weighted mean of the members of `buf` (counters: the max, when `counters`).
    fn mean_of(&self, buf: &[f64], c: &[f64], counters: bool) -> Vec<f64> {
        let n = self.spec.len();
        (0..n)
            .map(|i| {
                let column = (0..self.population).map(|j| buf[j * n + i]);
                if self.takes_max(i, counters) {
                    column.fold(f64::NEG_INFINITY, f64::max)
                } else {
                    column.zip(c).map(|(x, &c)| c * x).sum()
                }
            })
            .collect()
    }

    /// `w_j <- keep w_j + (1 - keep) mean` for every member (counters: the max).
    fn pull_to_mean(&self, buf: &mut [f64], c: &[f64], keep: f64, counters: bool) {
        let n = self.spec.len();
        let mean = self.mean_of(buf, c, counters);
        for (k, w) in buf.iter_mut().enumerate() {
            let i = k % n;
            *w = if self.takes_max(i, counters) {
                mean[i]
            } else {
                keep * *w + (1.0 - keep) * mean[i]
            };
        }
    }

    /// Child `j <- (w_a + w_b) / 2` for `pairs[j] = (a, b)`, from the old `buf` (counters:
    /// the max of the two).
    fn breed(&self, buf: &mut [f64], pairs: &[(usize, usize)], counters: bool) {
        let n = self.spec.len();
        let old = buf.to_vec();
        for (j, &(a, b)) in pairs.iter().enumerate() {
            for i in 0..n {
                let (x, y) = (old[a * n + i], old[b * n + i]);
                buf[j * n + i] = if self.takes_max(i, counters) {
                    x.max(y)
                } else {
                    (x + y) / 2.0
                };
            }
        }
    }

    /// Applies a checked rule to `buf` (`P x N`).
    fn apply_checked(&self, buf: &mut [f64], rule: &Checked<'_>, counters: bool) {
        match *rule {
            Checked::Pull { ref c, keep } => self.pull_to_mean(buf, c, keep, counters),
            Checked::Pairs(pairs) => self.breed(buf, pairs, counters),
        }
    }

    /// Validates `rule` as papa-core would, before anything changes.
    fn check_rule<'r>(&self, rule: Rule<'r>) -> Result<Checked<'r>, papa_core::Error> {
        let p = self.population;
        match rule {
            Rule::Gradual { weights, alpha } => {
                if !(0.0..=1.0).contains(&alpha) {
                    return Err(papa_core::Error::AlphaOutOfRange { alpha });
                }
                Ok(Checked::Pull {
                    c: self.coefficients(weights)?,
                    keep: f64::from(alpha),
                })
            }
            Rule::All { weights } => Ok(Checked::Pull {
                c: self.coefficients(weights)?,
                keep: 0.0,
            }),
            Rule::Pairs(pairs) => {
                check_pairs(pairs, p)?;
                Ok(Checked::Pairs(pairs))
            }
        }
    }

    /// Each member's trainable entries, concatenated in order.
    fn trained(&self) -> Vec<Vec<f64>> {
        let n = self.spec.len();
        (0..self.population)
            .map(|m| {
                let member = &self.params[m * n..(m + 1) * n];
                self.trainable
                    .iter()
                    .flat_map(|r| member[r.clone()].iter().copied())
                    .collect()
            })
            .collect()
    }
}

/// A rule whose inputs were checked.
enum Checked<'r> {
    /// `w_j <- keep w_j + (1 - keep) sum_k c_k w_k` (PAPA gradual; PAPA-all with keep 0).
    Pull { c: Vec<f64>, keep: f64 },
    /// PAPA-2's pairs.
    Pairs(&'r [(usize, usize)]),
}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), EngineError> {
    LengthMismatch::check(what, expected, found).map_err(model::Error::from)?;
    Ok(())
}

/// papa-core's weight checks: one non-negative weight per member, summing to 1.
fn check_weights(weights: &[f32], members: usize) -> Result<(), papa_core::Error> {
    if weights.is_empty() {
        return Err(papa_core::Error::EmptyPopulation);
    }
    if weights.len() != members {
        return Err(papa_core::Error::LengthMismatch {
            what: "weights",
            index: None,
            expected: members,
            found: weights.len(),
        });
    }
    for (index, &value) in weights.iter().enumerate() {
        if value.is_nan() || value < 0.0 {
            return Err(papa_core::Error::NegativeWeight { index, value });
        }
    }
    let sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    if sum.is_nan() || (sum - 1.0).abs() > f64::from(WEIGHT_SUM_TOLERANCE) {
        return Err(papa_core::Error::WeightsDoNotSumToOne { sum: sum as f32 });
    }
    Ok(())
}

/// papa-core's PAPA-2 checks: one pair per member, every parent a member.
fn check_pairs(pairs: &[(usize, usize)], members: usize) -> Result<(), papa_core::Error> {
    if pairs.len() != members {
        return Err(papa_core::Error::LengthMismatch {
            what: "pairs",
            index: None,
            expected: members,
            found: pairs.len(),
        });
    }
    for (child, &(a, b)) in pairs.iter().enumerate() {
        if let Some(parent) = [a, b].into_iter().find(|&x| x >= members) {
            return Err(papa_core::Error::PairOutOfRange {
                child,
                parent,
                members,
            });
        }
    }
    Ok(())
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// An op with its fields gathered as the reference's per-op functions take them.
enum Layer<'o> {
    Conv(&'o ConvLayer),
    Linear(&'o LinearLayer),
    BatchNorm(Bn),
    Relu,
    MaxPool(Pool),
    Flatten,
}

impl<'o> Layer<'o> {
    fn of(op: &'o Op) -> Self {
        match *op {
            Op::Conv(ref c) => Layer::Conv(c),
            Op::Linear(ref l) => Layer::Linear(l),
            Op::BatchNorm {
                c,
                spatial,
                scale,
                shift,
                mean,
                var,
                count,
            } => Layer::BatchNorm(Bn {
                c,
                spatial,
                scale,
                shift,
                mean,
                var,
                count,
            }),
            Op::Relu { .. } => Layer::Relu,
            Op::MaxPool {
                c,
                h,
                w,
                kernel,
                stride,
            } => Layer::MaxPool(Pool {
                c,
                h,
                w,
                kernel,
                stride,
            }),
            Op::Flatten { .. } => Layer::Flatten,
        }
    }
}

/// One op's forward for one member's batch of `b` samples; Train-mode BatchNorm also updates
/// the running statistics in `params`.
fn forward_op(
    op: &Op,
    params: &mut [f64],
    x: &[f64],
    b: usize,
    (mode, momentum): (Mode, Option<f64>),
) -> Vec<f64> {
    match Layer::of(op) {
        Layer::Conv(c) => conv_forward(c, params, x, b),
        Layer::Linear(l) => linear_forward(l, params, x, b),
        Layer::BatchNorm(bn) => bn_forward(&bn, params, x, b, (mode, momentum)),
        Layer::Relu => relu_forward(x),
        Layer::MaxPool(pool) => pool_forward(&pool, x, b),
        // NCHW is already the flattened order.
        Layer::Flatten => x.to_vec(),
    }
}

/// One op's backward for one member: adds the parameter gradients to `g` and returns the
/// input's gradient. `x` is the op's forward input, `params` what the forward read.
fn backward_op(
    op: &Op,
    params: &[f64],
    x: &[f64],
    dy: &[f64],
    b: usize,
    mode: Mode,
    g: &mut [f64],
) -> Vec<f64> {
    match Layer::of(op) {
        Layer::Conv(c) => conv_backward(c, params, x, dy, b, g),
        Layer::Linear(l) => linear_backward(l, params, x, dy, b, g),
        Layer::BatchNorm(bn) => bn_backward(&bn, params, x, dy, b, mode, g),
        Layer::Relu => relu_backward(x, dy),
        Layer::MaxPool(pool) => pool_backward(&pool, x, dy, b),
        Layer::Flatten => dy.to_vec(),
    }
}

/// The input row or column that kernel offset `k` of output position `o` reads, or `None`
/// where it falls in the zero padding.
fn conv_tap(c: &ConvLayer, o: usize, k: usize, size: usize) -> Option<usize> {
    let i = (o * c.stride + k).checked_sub(c.padding)?;
    (i < size).then_some(i)
}

/// Calls `f(output index, weight index, input index)` for every product of a convolution
/// over `b` samples (taps in the padding are skipped: they multiply zero).
fn conv_products(c: &ConvLayer, b: usize, mut f: impl FnMut(usize, usize, usize)) {
    let k = c.kernel;
    for s in 0..b {
        for co in 0..c.cout {
            for oy in 0..c.out_h {
                for ox in 0..c.out_w {
                    let out = ((s * c.cout + co) * c.out_h + oy) * c.out_w + ox;
                    for ci in 0..c.cin {
                        for ky in 0..k {
                            let Some(iy) = conv_tap(c, oy, ky, c.h) else {
                                continue;
                            };
                            for kx in 0..k {
                                let Some(ix) = conv_tap(c, ox, kx, c.w) else {
                                    continue;
                                };
                                let wi = c.weight + ((co * c.cin + ci) * k + ky) * k + kx;
                                let xi = ((s * c.cin + ci) * c.h + iy) * c.w + ix;
                                f(out, wi, xi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The output channel of output index `out` of a convolution.
fn conv_channel(c: &ConvLayer, out: usize) -> usize {
    out / (c.out_h * c.out_w) % c.cout
}

/// `y = b + sum w x`, PyTorch's cross-correlation with zero padding.
fn conv_forward(c: &ConvLayer, p: &[f64], x: &[f64], b: usize) -> Vec<f64> {
    let mut y: Vec<f64> = (0..b * c.cout * c.out_h * c.out_w)
        .map(|out| p[c.bias + conv_channel(c, out)])
        .collect();
    conv_products(c, b, |out, wi, xi| y[out] += p[wi] * x[xi]);
    y
}

fn conv_backward(
    c: &ConvLayer,
    p: &[f64],
    x: &[f64],
    dy: &[f64],
    b: usize,
    g: &mut [f64],
) -> Vec<f64> {
    for (out, &d) in dy.iter().enumerate() {
        g[c.bias + conv_channel(c, out)] += d;
    }
    let mut dx = vec![0.0; x.len()];
    conv_products(c, b, |out, wi, xi| {
        g[wi] += dy[out] * x[xi];
        dx[xi] += dy[out] * p[wi];
    });
    dx
}

/// `y = x W^T + b`.
fn linear_forward(l: &LinearLayer, p: &[f64], x: &[f64], b: usize) -> Vec<f64> {
    let mut y = vec![0.0; b * l.fout];
    for s in 0..b {
        for o in 0..l.fout {
            let mut acc = p[l.bias + o];
            for i in 0..l.fin {
                acc += p[l.weight + o * l.fin + i] * x[s * l.fin + i];
            }
            y[s * l.fout + o] = acc;
        }
    }
    y
}

fn linear_backward(
    l: &LinearLayer,
    p: &[f64],
    x: &[f64],
    dy: &[f64],
    b: usize,
    g: &mut [f64],
) -> Vec<f64> {
    let mut dx = vec![0.0; x.len()];
    for s in 0..b {
        for o in 0..l.fout {
            let d = dy[s * l.fout + o];
            g[l.bias + o] += d;
            for i in 0..l.fin {
                g[l.weight + o * l.fin + i] += d * x[s * l.fin + i];
                dx[s * l.fin + i] += d * p[l.weight + o * l.fin + i];
            }
        }
    }
    dx
}

/// The indices of channel `ch`'s values in a batch of `b` samples (`B x C x spatial`).
fn channel_values(bn: &Bn, b: usize, ch: usize) -> impl Iterator<Item = usize> {
    let (c, spatial) = (bn.c, bn.spatial);
    (0..b).flat_map(move |s| (0..spatial).map(move |q| (s * c + ch) * spatial + q))
}

/// Channel `ch`'s batch mean and biased variance.
fn batch_stats(bn: &Bn, x: &[f64], b: usize, ch: usize) -> (f64, f64) {
    let count = (b * bn.spatial) as f64;
    let mean = channel_values(bn, b, ch).map(|i| x[i]).sum::<f64>() / count;
    let var = channel_values(bn, b, ch)
        .map(|i| (x[i] - mean).powi(2))
        .sum::<f64>()
        / count;
    (mean, var)
}

/// Channel `ch`'s mean and `1 / sqrt(var + eps)`: batch statistics in Train mode, running
/// statistics in Eval mode.
fn normaliser(bn: &Bn, p: &[f64], x: &[f64], b: usize, mode: Mode, ch: usize) -> (f64, f64) {
    let (mean, var) = match mode {
        Mode::Train => batch_stats(bn, x, b, ch),
        Mode::Eval => (p[bn.mean + ch], p[bn.var + ch]),
    };
    (mean, 1.0 / (var + f64::from(BN_EPS)).sqrt())
}

/// `y = gamma (x - mean) / sqrt(var + eps) + beta`; in Train mode, then PyTorch's update of
/// the running statistics (unbiased variance) and of `num_batches_tracked`.
fn bn_forward(
    bn: &Bn,
    p: &mut [f64],
    x: &[f64],
    b: usize,
    (mode, momentum): (Mode, Option<f64>),
) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for ch in 0..bn.c {
        let (mean, inv_std) = normaliser(bn, p, x, b, mode, ch);
        let (gamma, beta) = (p[bn.scale + ch], p[bn.shift + ch]);
        for i in channel_values(bn, b, ch) {
            y[i] = gamma * (x[i] - mean) * inv_std + beta;
        }
    }
    if mode == Mode::Train {
        update_running_stats(bn, p, x, b, momentum);
    }
    y
}

/// PyTorch's update: the counter first, then the running statistics with `momentum`, or with
/// `1 / counter` (the cumulative average) when it is `None`.
fn update_running_stats(bn: &Bn, p: &mut [f64], x: &[f64], b: usize, momentum: Option<f64>) {
    p[bn.count] += 1.0;
    let m = momentum.unwrap_or(1.0 / p[bn.count]);
    let count = (b * bn.spatial) as f64;
    for ch in 0..bn.c {
        let (mean, var) = batch_stats(bn, x, b, ch);
        let unbiased = var * count / (count - 1.0);
        p[bn.mean + ch] = (1.0 - m) * p[bn.mean + ch] + m * mean;
        p[bn.var + ch] = (1.0 - m) * p[bn.var + ch] + m * unbiased;
    }
}

/// Train mode: the gradient through the batch statistics,
/// `dx = gamma / (n std) (n dy - sum dy - xhat sum dy xhat)`; Eval mode: the fixed affine
/// map, `dx = gamma dy / std`.
fn bn_backward(
    bn: &Bn,
    p: &[f64],
    x: &[f64],
    dy: &[f64],
    b: usize,
    mode: Mode,
    g: &mut [f64],
) -> Vec<f64> {
    let n = (b * bn.spatial) as f64;
    let mut dx = vec![0.0; x.len()];
    for ch in 0..bn.c {
        let (mean, inv_std) = normaliser(bn, p, x, b, mode, ch);
        let gamma = p[bn.scale + ch];
        let xhat = |i: usize| (x[i] - mean) * inv_std;
        let sum_dy: f64 = channel_values(bn, b, ch).map(|i| dy[i]).sum();
        let sum_dy_xhat: f64 = channel_values(bn, b, ch).map(|i| dy[i] * xhat(i)).sum();
        g[bn.scale + ch] += sum_dy_xhat;
        g[bn.shift + ch] += sum_dy;
        for i in channel_values(bn, b, ch) {
            dx[i] = match mode {
                Mode::Train => gamma * inv_std / n * (n * dy[i] - sum_dy - xhat(i) * sum_dy_xhat),
                Mode::Eval => gamma * inv_std * dy[i],
            };
        }
    }
    dx
}

/// `max(0, x)`, with NaN passed through as PyTorch does.
fn relu_forward(x: &[f64]) -> Vec<f64> {
    x.iter()
        .map(|&v| if v > 0.0 || v.is_nan() { v } else { 0.0 })
        .collect()
}

/// The gradient passes where the input was positive.
fn relu_backward(x: &[f64], dy: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(&v, &d)| if v > 0.0 { d } else { 0.0 })
        .collect()
}

/// PyTorch's output size without padding: `floor((size - kernel) / stride) + 1`.
fn pool_out(size: usize, pool: &Pool) -> usize {
    (size - pool.kernel) / pool.stride + 1
}

/// The input index of each window's winner, in output order: the first maximum in row-major
/// window order, a NaN taking over as in PyTorch's `val > max || isnan(val)`.
fn pool_winners(pool: &Pool, x: &[f64], b: usize) -> Vec<usize> {
    let (oh, ow) = (pool_out(pool.h, pool), pool_out(pool.w, pool));
    let mut winners = Vec::with_capacity(b * pool.c * oh * ow);
    for plane in 0..b * pool.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<usize> = None;
                for ky in 0..pool.kernel {
                    for kx in 0..pool.kernel {
                        let (iy, ix) = (oy * pool.stride + ky, ox * pool.stride + kx);
                        let i = (plane * pool.h + iy) * pool.w + ix;
                        if best.is_none_or(|j| x[i] > x[j] || x[i].is_nan()) {
                            best = Some(i);
                        }
                    }
                }
                // A window has kernel >= 1 values (the planner refuses a zero kernel).
                winners.extend(best);
            }
        }
    }
    winners
}

fn pool_forward(pool: &Pool, x: &[f64], b: usize) -> Vec<f64> {
    pool_winners(pool, x, b).iter().map(|&i| x[i]).collect()
}

fn pool_backward(pool: &Pool, x: &[f64], dy: &[f64], b: usize) -> Vec<f64> {
    let mut dx = vec![0.0; x.len()];
    for (&i, &d) in pool_winners(pool, x, b).iter().zip(dy) {
        dx[i] += d;
    }
    dx
}

/// `Sgd`'s update of one entry, in f64: returns the new parameter and velocity.
fn sgd_entry(sgd: &Sgd, lr: f64, p: f64, g: f64, v: f64) -> (f64, f64) {
    let (mu, wd) = (f64::from(sgd.momentum), f64::from(sgd.weight_decay));
    let d = g + wd * p;
    let v = mu * v + d;
    let d = if sgd.nesterov { d + mu * v } else { v };
    (p - lr * d, v)
}

/// Each member's Euclidean distance to the uniform mean.
fn distances_to_mean(members: &[Vec<f64>]) -> Vec<f64> {
    let len = members.first().map_or(0, Vec::len);
    let mean: Vec<f64> = (0..len)
        .map(|i| members.iter().map(|w| w[i]).sum::<f64>() / members.len() as f64)
        .collect();
    members
        .iter()
        .map(|w| {
            let d: Vec<f64> = w.iter().zip(&mean).map(|(x, m)| x - m).collect();
            norm(&d)
        })
        .collect()
}

/// The mean cosine similarity over the pairs `j < k` (1 for a single member).
fn mean_pairwise_cosine(members: &[Vec<f64>]) -> Result<f64, papa_core::Error> {
    // A zero member has no direction: papa-core names it rather than guessing a cosine.
    if let Some(index) = members.iter().position(|w| norm(w) == 0.0) {
        return Err(papa_core::Error::Degenerate {
            what: "member norm",
            index,
        });
    }
    let p = members.len();
    let mut sum = 0.0;
    for j in 0..p {
        for k in j + 1..p {
            let dot: f64 = members[j].iter().zip(&members[k]).map(|(x, y)| x * y).sum();
            sum += dot / (norm(&members[j]) * norm(&members[k]));
        }
    }
    let pairs = p * (p - 1) / 2;
    Ok(if pairs == 0 { 1.0 } else { sum / pairs as f64 })
}

/// The Euclidean norm of `x`.
fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

impl Engine for Reference {
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
        "f64".into()
    }

    fn upload(&mut self, params: &[f32], velocity: &[f32]) -> Result<(), EngineError> {
        check_len("params (P x N)", self.params.len(), params.len())?;
        check_len("velocity (P x N)", self.velocity.len(), velocity.len())?;
        self.params = params.iter().map(|&x| f64::from(x)).collect();
        self.velocity = velocity.iter().map(|&x| f64::from(x)).collect();
        self.fresh_grads = false;
        Ok(())
    }

    fn download(&self, params: &mut [f32], velocity: &mut [f32]) -> Result<(), EngineError> {
        check_len("params (P x N)", self.params.len(), params.len())?;
        check_len("velocity (P x N)", self.velocity.len(), velocity.len())?;
        params.copy_from_slice(&to_f32(&self.params));
        velocity.copy_from_slice(&to_f32(&self.velocity));
        Ok(())
    }

    fn forward(&mut self, input: Input<'_>, mode: Mode) -> Result<&[f32], EngineError> {
        let b = self.batch_of(input)?;
        self.check_batch_norm(b, mode)?;
        let (p, n, per) = (self.population, self.spec.len(), self.spec.input_len());
        self.tape = None;
        self.fresh_grads = false;
        let before = self.params.clone();
        let mut inputs = vec![Vec::new(); self.spec.ops().len()];
        let mut logits = Vec::with_capacity(p * b * self.spec.classes());
        for m in 0..p {
            let member = &mut self.params[m * n..(m + 1) * n];
            let data = match input {
                Input::PerMember(d) => &d[m * b * per..(m + 1) * b * per],
                Input::Shared(d) => d,
            };
            let mut x: Vec<f64> = data.iter().map(|&v| f64::from(v)).collect();
            for (op, tape) in self.spec.ops().iter().zip(&mut inputs) {
                tape.extend_from_slice(&x);
                x = forward_op(op, member, &x, b, (mode, self.bn_momentum));
            }
            logits.extend(x);
        }
        self.logits_f32 = to_f32(&logits);
        self.logits = logits;
        self.tape = Some(Tape {
            batch: b,
            mode,
            params: before,
            inputs,
        });
        Ok(&self.logits_f32)
    }

    fn backward(&mut self, dlogits: &[f32]) -> Result<&[f32], EngineError> {
        let tape = self.tape.take().ok_or(model::Error::NoForward)?;
        let (p, n, b) = (self.population, self.spec.len(), tape.batch);
        let classes = self.spec.classes();
        check_len("dlogits", p * b * classes, dlogits.len())?;
        let mut grads = vec![0.0; p * n];
        for m in 0..p {
            let params = &tape.params[m * n..(m + 1) * n];
            let g = &mut grads[m * n..(m + 1) * n];
            let rows = m * b * classes..(m + 1) * b * classes;
            let mut dy: Vec<f64> = dlogits[rows].iter().map(|&v| f64::from(v)).collect();
            for (op, inputs) in self.spec.ops().iter().zip(&tape.inputs).rev() {
                let len = b * op.in_len();
                let x = &inputs[m * len..(m + 1) * len];
                dy = backward_op(op, params, x, &dy, b, tape.mode, g);
            }
        }
        self.grads_f32 = to_f32(&grads);
        self.grads = grads;
        self.fresh_grads = true;
        Ok(&self.grads_f32)
    }

    fn sgd_step(&mut self, sgd: &Sgd, lr: f32) -> Result<(), EngineError> {
        if !self.fresh_grads {
            return Err(EngineError::NoGradients);
        }
        if sgd.nesterov && sgd.momentum <= 0.0 {
            return Err(OptimError::NesterovWithoutMomentum {
                momentum: sgd.momentum,
            }
            .into());
        }
        let n = self.spec.len();
        for m in 0..self.population {
            for r in &self.trainable {
                for i in r.clone().map(|i| m * n + i) {
                    let (p, v) = sgd_entry(
                        sgd,
                        f64::from(lr),
                        self.params[i],
                        self.grads[i],
                        self.velocity[i],
                    );
                    self.params[i] = p;
                    self.velocity[i] = v;
                }
            }
        }
        self.fresh_grads = false;
        Ok(())
    }

    fn apply(&mut self, rule: Rule<'_>, momentum: bool) -> Result<(), EngineError> {
        let checked = self.check_rule(rule)?;
        let mut params = std::mem::take(&mut self.params);
        self.apply_checked(&mut params, &checked, true);
        self.params = params;
        if momentum {
            // The velocity of a counter is zero: every entry is combined alike.
            let mut velocity = std::mem::take(&mut self.velocity);
            self.apply_checked(&mut velocity, &checked, false);
            self.velocity = velocity;
        }
        Ok(())
    }

    fn average(&self, weights: Weights<'_>) -> Result<Vec<f32>, EngineError> {
        let c = self.coefficients(weights)?;
        Ok(to_f32(&self.mean_of(&self.params, &c, true)))
    }

    fn diversity(&self) -> Result<Diversity, EngineError> {
        let members = self.trained();
        // papa-core reports the first non-finite value of the concatenated entries.
        for (member, w) in members.iter().enumerate() {
            if let Some(index) = w.iter().position(|x| !x.is_finite()) {
                return Err(papa_core::Error::NonFinite { member, index }.into());
            }
        }
        Ok(Diversity {
            distance_to_mean: distances_to_mean(&members),
            mean_pairwise_cosine: mean_pairwise_cosine(&members)?,
        })
    }

    fn reestimate_batchnorm(
        &mut self,
        calibration: &[f32],
        batch: usize,
    ) -> Result<(), EngineError> {
        let batches = calibration_batches(calibration, batch, self.spec.input_len())?;
        let n = self.spec.len();
        for t in self.spec.tensors() {
            let fill = match t.kind {
                TensorKind::BnRunningMean | TensorKind::Counter => 0.0,
                TensorKind::BnRunningVar => 1.0,
                _ => continue,
            };
            let len: usize = t.shape.iter().product();
            for member in self.params.chunks_exact_mut(n) {
                member[t.offset..t.offset + len].fill(fill);
            }
        }
        self.bn_momentum = None;
        let result = batches
            .into_iter()
            .try_for_each(|x| self.forward(Input::Shared(x), Mode::Train).map(|_| ()));
        self.bn_momentum = Some(f64::from(BN_MOMENTUM));
        result
    }

    fn layer_moments(
        &mut self,
        layer: usize,
        calibration: &[f32],
        batch: usize,
    ) -> Result<Vec<Moments>, EngineError> {
        let target = repair_target(&self.spec, layer)?.0.clone();
        let (p, c) = (self.population, target.channels);
        let out_len = self.spec.ops()[target.op].out_len();
        let spatial = out_len / c.max(1);
        let batches = calibration_batches(calibration, batch, self.spec.input_len())?;
        let mut moments = vec![Moments::EMPTY; p * c];
        for x in batches {
            self.forward(Input::Shared(x), Mode::Eval)?;
            // The op's output is the next op's recorded input (or the logits after the last).
            let tape = self.tape.as_ref().ok_or(model::Error::NoForward)?;
            let outputs = match tape.inputs.get(target.op + 1) {
                Some(next) => next.as_slice(),
                None => self.logits.as_slice(),
            };
            for m in 0..p {
                for ch in 0..c {
                    let values: Vec<f32> = (0..batch)
                        .flat_map(|s| {
                            let at = (m * batch + s) * out_len + ch * spatial;
                            outputs[at..at + spatial].iter().map(|&v| v as f32)
                        })
                        .collect();
                    moments[m * c + ch].merge(&Moments::of(&values));
                }
            }
        }
        self.tape = None;
        Ok(moments)
    }

    fn fold(&mut self, layer: usize, corrections: &[Correction]) -> Result<(), EngineError> {
        let (target, weight, bias) = repair_target(&self.spec, layer)?;
        let (n, c) = (self.spec.len(), target.channels);
        check_len(
            "corrections (P x C)",
            self.population * c,
            corrections.len(),
        )?;
        let fan_in = weight.shape.iter().product::<usize>() / c.max(1);
        for (member, fix) in self
            .params
            .chunks_exact_mut(n)
            .zip(corrections.chunks_exact(c))
        {
            for (ch, f) in fix.iter().enumerate() {
                let row = weight.offset + ch * fan_in;
                member[row..row + fan_in]
                    .iter_mut()
                    .for_each(|w| *w *= f.scale);
                let b = &mut member[bias.offset + ch];
                *b = *b * f.scale + f.shift;
            }
        }
        Ok(())
    }
}
