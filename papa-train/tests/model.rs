//! Checks of the population engine: layouts, initialisation, forward against direct
//! computations, every backward against central finite differences, population batching,
//! and identical bits on any thread count.

use papa_core::layout::{Layout, TensorKind};
use papa_core::rng::Rng;
use papa_cpu::Isa;
use papa_model::layer::Layer;
use papa_model::{zoo, ModelError};
use papa_train::model::{
    argmax, count_correct, soft_cross_entropy, Error, Input, Mode, ModelSpec, Network,
};

fn uniform(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|_| scale * (2.0 * rng.uniform_f32() - 1.0))
        .collect()
}

/// A population of `p` members initialised from `seed`, plus random BN affine parameters and
/// running statistics so that no gradient is trivially symmetric.
fn population(spec: &ModelSpec, p: usize, seed: u64) -> Vec<f32> {
    let n = spec.len();
    let mut params = vec![0.0; p * n];
    let rng = Rng::new(seed);
    let mut extra = rng.fork(1000);
    for (j, member) in params.chunks_mut(n).enumerate() {
        spec.init_member(&mut rng.fork(j as u64), member).unwrap();
        for t in spec.tensors() {
            let r = t.offset..t.offset + t.shape.iter().product::<usize>();
            match t.kind {
                TensorKind::BnScale => member[r]
                    .iter_mut()
                    .for_each(|v| *v = 0.5 + extra.uniform_f32()),
                TensorKind::BnShift | TensorKind::BnRunningMean => member[r]
                    .iter_mut()
                    .for_each(|v| *v = extra.uniform_f32() - 0.5),
                TensorKind::BnRunningVar => member[r]
                    .iter_mut()
                    .for_each(|v| *v = 0.5 + extra.uniform_f32()),
                _ => {}
            }
        }
    }
    params
}

fn seq(layers: Vec<Layer>, c: usize, h: usize, w: usize, classes: usize) -> ModelSpec {
    ModelSpec::new(&layers, [c, h, w], classes).unwrap()
}

fn trainable(spec: &ModelSpec, p: usize) -> Vec<usize> {
    let n = spec.len();
    (0..p)
        .flat_map(|m| {
            spec.tensors()
                .iter()
                .filter(|t| t.kind.trainable())
                .flat_map(move |t| {
                    (t.offset..t.offset + t.shape.iter().product::<usize>()).map(move |i| m * n + i)
                })
        })
        .collect()
}

/// Compares analytic gradients with central differences of `loss`; `Err` lists mismatches.
fn compare(analytic: &[f64], fd: &[f64], rtol: f64, atol: f64) -> Result<(), String> {
    let bad: Vec<String> = analytic
        .iter()
        .zip(fd)
        .enumerate()
        .filter(|(_, (a, f))| (*a - *f).abs() > rtol * a.abs().max(f.abs()) + atol)
        .map(|(i, (a, f))| format!("#{i}: analytic {a:.6} fd {f:.6}"))
        .collect();
    let scale = fd.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale < 10.0 * atol {
        return Err(format!(
            "gradients too small to be meaningful (max {scale})"
        ));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} mismatch: {}",
            bad.len(),
            analytic.len(),
            bad[..bad.len().min(8)].join(", ")
        ))
    }
}

/// Analytic and finite-difference gradients of `L = sum_i r_i * logits_i` (or the soft
/// cross-entropy summed over members when `targets` is given) for every trainable entry.
fn network_gradients(
    spec: &ModelSpec,
    p: usize,
    b: usize,
    mode: Mode,
    targets: Option<&[f32]>,
    seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let mut params = population(spec, p, seed);
    let input = uniform(&mut rng, p * b * spec.input_len(), 1.0);
    let weights = uniform(&mut rng, p * b * spec.classes(), 1.0);
    let mut net = Network::new(spec, p, b).unwrap();
    let classes = spec.classes();
    let loss_and_grad = |net: &mut Network, params: &mut Vec<f32>| -> (f64, Vec<f32>) {
        let logits = match mode {
            Mode::Train => net
                .forward(params, Input::PerMember(&input), Mode::Train)
                .unwrap(),
            Mode::Eval => net.evaluate(params, Input::PerMember(&input)).unwrap(),
        };
        match targets {
            None => {
                let l = logits
                    .iter()
                    .zip(&weights)
                    .map(|(&z, &r)| z as f64 * r as f64)
                    .sum();
                (l, weights.clone())
            }
            Some(t) => {
                let mut d = vec![0.0; logits.len()];
                let mut losses = vec![0.0; p];
                soft_cross_entropy(logits, t, classes, &mut d, &mut losses).unwrap();
                (losses.iter().map(|&l| l as f64).sum(), d)
            }
        }
    };
    let (_, dlogits) = loss_and_grad(&mut net, &mut params);
    let grads = net.backward(&params, &dlogits).unwrap().to_vec();
    let idx = trainable(spec, p);
    let eps = if targets.is_some() { 3e-4f32 } else { 1e-3 };
    let mut fd = Vec::with_capacity(idx.len());
    for &i in &idx {
        let orig = params[i];
        params[i] = orig + eps;
        let (lp, _) = loss_and_grad(&mut net, &mut params);
        params[i] = orig - eps;
        let (lm, _) = loss_and_grad(&mut net, &mut params);
        params[i] = orig;
        fd.push((lp - lm) / (2.0 * eps as f64));
    }
    let analytic = idx.iter().map(|&i| grads[i] as f64).collect();
    // Running statistics and counters get no gradient.
    for (i, g) in grads.iter().enumerate() {
        if !idx.contains(&i) {
            assert_eq!(*g, 0.0, "non-trainable entry {i} has a gradient");
        }
    }
    (analytic, fd)
}

fn check_network(spec: &ModelSpec, p: usize, b: usize, mode: Mode, seed: u64) {
    let (a, fd) = network_gradients(spec, p, b, mode, None, seed);
    compare(&a, &fd, 2e-2, 2e-3).unwrap();
}

#[test]
fn cnn_s_layout_matches_pytorch() {
    let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10).unwrap();
    // 422,026 numbers plus the two `num_batches_tracked` counters.
    assert_eq!(spec.len(), 422_028);
    let counters = spec
        .tensors()
        .iter()
        .filter(|t| t.kind == TensorKind::Counter)
        .count();
    assert_eq!(spec.len() - counters, 422_026);
    let names: Vec<&str> = spec.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv1.weight",
            "conv1.bias",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.num_batches_tracked",
            "conv2.weight",
            "conv2.bias",
            "bn2.weight",
            "bn2.bias",
            "bn2.running_mean",
            "bn2.running_var",
            "bn2.num_batches_tracked",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias",
        ]
    );
    assert_eq!(spec.find("conv2.weight").unwrap().shape, [64, 32, 3, 3]);
    assert_eq!(spec.find("fc1.weight").unwrap().shape, [128, 3136]);
    let specs = spec.tensor_specs();
    assert_eq!(Layout::new(&specs).unwrap().len(), 422_028);
    let rep: Vec<_> = spec
        .repairable()
        .map(|l| (l.weight.as_str(), l.channels, l.batch_norm.clone()))
        .collect();
    assert_eq!(
        rep,
        [
            ("conv1.weight", 32, Some("bn1".to_string())),
            ("conv2.weight", 64, Some("bn2".to_string())),
            ("fc1.weight", 128, None),
        ]
    );
    let mlp = ModelSpec::new(&zoo::mlp(&[100, 50], 10), [1, 28, 28], 10).unwrap();
    assert_eq!(mlp.len(), 784 * 100 + 100 + 100 * 50 + 50 + 50 * 10 + 10);
    assert_eq!(mlp.repairable().count(), 2);
}

#[test]
fn bad_specs_and_buffers_are_errors() {
    let conv_after_flatten = vec![Layer::Flatten, Layer::conv3x3(2)];
    assert!(matches!(
        ModelSpec::new(&conv_after_flatten, [1, 4, 4], 2),
        Err(ModelError::LayerDoesNotFit { index: 1, .. })
    ));
    assert!(ModelSpec::new(&[Layer::Linear { out_features: 3 }], [1, 4, 4], 3).is_err());
    // A layer the model description allows but the CPU engine has no kernel for.
    let wide = [
        Layer::Conv2d {
            out_channels: 2,
            kernel: 5,
            stride: 1,
            padding: 2,
        },
        Layer::Flatten,
    ];
    let wide = ModelSpec::new(&wide, [1, 4, 4], 32).unwrap();
    assert!(matches!(
        Network::new(&wide, 1, 2),
        Err(Error::Unsupported { op: 0, .. })
    ));
    assert!(ModelSpec::new(&zoo::cnn_s(0), [1, 28, 28], 0).is_err());
    let spec = ModelSpec::new(&zoo::mlp(&[4], 3), [1, 2, 2], 3).unwrap();
    let mut net = Network::new(&spec, 2, 4).unwrap();
    let mut params = population(&spec, 2, 1);
    assert!(matches!(
        net.backward(&params, &[0.0; 24]),
        Err(Error::NoForward)
    ));
    assert!(matches!(
        net.forward(&mut params[1..], Input::Shared(&[0.0; 8]), Mode::Eval),
        Err(Error::Length(_))
    ));
    assert!(matches!(
        net.forward(&mut params, Input::Shared(&[0.0; 7]), Mode::Eval),
        Err(Error::Length(_))
    ));
    assert!(matches!(
        net.forward(&mut params, Input::Shared(&[0.0; 20]), Mode::Eval),
        Err(Error::Batch { .. })
    ));
    net.forward(&mut params, Input::Shared(&[0.0; 8]), Mode::Train)
        .unwrap();
    assert!(matches!(
        net.backward(&params, &[0.0; 5]),
        Err(Error::Length(_))
    ));
    assert!(net.pre_activation(2).is_err());
    let bn = seq(vec![Layer::Flatten, Layer::BatchNorm], 1, 1, 2, 2);
    let mut bn_net = Network::new(&bn, 1, 1).unwrap();
    let mut bn_params = population(&bn, 1, 1);
    let err = bn_net
        .forward(&mut bn_params, Input::Shared(&[1.0, 2.0]), Mode::Train)
        .unwrap_err();
    assert_eq!(err, Error::TooFewForBatchNorm { values: 1 });
}

#[test]
fn init_follows_pytorch_defaults() {
    let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10).unwrap();
    let mut member = vec![f32::NAN; spec.len()];
    spec.init_member(&mut Rng::new(3), &mut member).unwrap();
    let get = |name: &str| {
        let t = spec.find(name).unwrap();
        &member[t.offset..t.offset + t.shape.iter().product::<usize>()]
    };
    for (name, fan_in) in [
        ("conv1.weight", 9.0f32),
        ("conv2.bias", 288.0),
        ("fc1.weight", 3136.0),
        ("fc2.bias", 128.0),
    ] {
        let v = get(name);
        let bound = 1.0 / fan_in.sqrt();
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(
            max <= bound && max > 0.8 * bound,
            "{name}: max {max}, bound {bound}"
        );
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.2 * bound, "{name}: mean {mean}");
    }
    assert!(get("bn2.weight").iter().all(|&v| v == 1.0));
    assert!(get("bn2.bias").iter().all(|&v| v == 0.0));
    assert!(get("bn1.running_mean").iter().all(|&v| v == 0.0));
    assert!(get("bn1.running_var").iter().all(|&v| v == 1.0));
    assert_eq!(get("bn1.num_batches_tracked"), [0.0]);
    let mut again = vec![0.0; spec.len()];
    spec.init_member(&mut Rng::new(3), &mut again).unwrap();
    assert_eq!(member, again);
    assert!(spec.init_member(&mut Rng::new(3), &mut again[1..]).is_err());
}

#[test]
fn conv_forward_matches_direct_convolution() {
    // Three input channels run the direct conv, on one small chunk and on two 16-sample
    // chunks; four take the im2col gemm, which splits 28 x 28 images into groups of 2
    // samples (the second chunk of 5 ends with a partial group).
    conv_forward_case(3, 5, 4, 4, 3);
    conv_forward_case(3, 28, 28, 2, 20);
    conv_forward_case(4, 5, 4, 3, 3);
    conv_forward_case(4, 28, 28, 2, 21);
}

fn conv_forward_case(cin: usize, h: usize, w: usize, cout: usize, b: usize) {
    let spec = seq(
        vec![Layer::conv3x3(cout), Layer::Flatten],
        cin,
        h,
        w,
        cout * h * w,
    );
    let params = population(&spec, 1, 7);
    let input = uniform(&mut Rng::new(8), b * cin * h * w, 1.0);
    let mut net = Network::new(&spec, 1, b).unwrap();
    let out = net
        .evaluate(&params, Input::Shared(&input))
        .unwrap()
        .to_vec();
    let (wt, bias) = (&params[..cout * cin * 9], &params[cout * cin * 9..]);
    for s in 0..b {
        for co in 0..cout {
            for y in 0..h {
                for x in 0..w {
                    let mut acc = bias[co] as f64;
                    for ci in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) =
                                    (y as isize + ky as isize - 1, x as isize + kx as isize - 1);
                                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                    let v =
                                        input[((s * cin + ci) * h + iy as usize) * w + ix as usize];
                                    acc +=
                                        wt[((co * cin + ci) * 3 + ky) * 3 + kx] as f64 * v as f64;
                                }
                            }
                        }
                    }
                    let got = out[((s * cout + co) * h + y) * w + x] as f64;
                    assert!(
                        (got - acc).abs() < 1e-5,
                        "s{s} c{co} y{y} x{x}: {got} vs {acc}"
                    );
                }
            }
        }
    }
    // Pre-activation accessor: the same values, channel-last (sample 1, last channel,
    // position 7).
    let pre = net.pre_activation(0).unwrap();
    assert_eq!((pre.positions, pre.channels), (h * w, cout));
    let co = cout - 1;
    assert_eq!(
        pre.member(0)[(h * w + 7) * cout + co],
        out[(cout + co) * h * w + 7]
    );
}

#[test]
fn maxpool_and_mlp_forward_match_direct_computation() {
    let (c, h, w) = (2, 5, 4);
    let spec = seq(vec![Layer::max_pool2(), Layer::Flatten], c, h, w, c * 2 * 2);
    let input = uniform(&mut Rng::new(2), c * h * w, 1.0);
    let mut net = Network::new(&spec, 1, 1).unwrap();
    let out = net.evaluate(&[], Input::Shared(&input)).unwrap();
    for ci in 0..c {
        for y in 0..2 {
            for x in 0..2 {
                let window = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .map(|(dy, dx)| input[(ci * h + 2 * y + dy) * w + 2 * x + dx]);
                assert_eq!(
                    out[(ci * 2 + y) * 2 + x],
                    window.iter().fold(f32::MIN, |a, &v| a.max(v))
                );
            }
        }
    }
    let mlp = ModelSpec::new(&zoo::mlp(&[3], 2), [2, 1, 2], 2).unwrap();
    let params = population(&mlp, 1, 4);
    let x = [0.3f32, -0.7, 0.2, 0.9];
    let out = Network::new(&mlp, 1, 1)
        .unwrap()
        .evaluate(&params, Input::Shared(&x))
        .unwrap()
        .to_vec();
    let (w1, rest) = params.split_at(12);
    let (b1, rest) = rest.split_at(3);
    let (w2, b2) = rest.split_at(6);
    let hidden: Vec<f32> = (0..3)
        .map(|o| (b1[o] + (0..4).map(|i| w1[o * 4 + i] * x[i]).sum::<f32>()).max(0.0))
        .collect();
    for o in 0..2 {
        let expect = b2[o] + (0..3).map(|i| w2[o * 3 + i] * hidden[i]).sum::<f32>();
        assert!((out[o] - expect).abs() < 1e-6);
    }
}

#[test]
fn batchnorm_matches_pytorch_update() {
    let (c, h, w, b) = (3, 2, 3, 4);
    let spec = seq(vec![Layer::BatchNorm, Layer::Flatten], c, h, w, c * h * w);
    let mut params = population(&spec, 1, 5);
    let before = params.clone();
    let input = uniform(&mut Rng::new(6), b * c * h * w, 2.0);
    let mut net = Network::new(&spec, 1, b).unwrap();
    let out = net
        .forward(&mut params, Input::Shared(&input), Mode::Train)
        .unwrap()
        .to_vec();
    let (hw, count) = (h * w, (b * h * w) as f64);
    for ch in 0..c {
        let vals: Vec<f64> = (0..b)
            .flat_map(|s| (0..hw).map(move |q| (s, q)))
            .map(|(s, q)| input[(s * c + ch) * hw + q] as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / count;
        let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / count;
        let (gamma, beta) = (before[ch] as f64, before[c + ch] as f64);
        for s in 0..b {
            for q in 0..hw {
                let x = input[(s * c + ch) * hw + q] as f64;
                let expect = (x - mean) / (var + 1e-5).sqrt() * gamma + beta;
                assert!((out[(s * c + ch) * hw + q] as f64 - expect).abs() < 1e-5);
            }
        }
        let rm = 0.9 * before[2 * c + ch] as f64 + 0.1 * mean;
        let rv = 0.9 * before[3 * c + ch] as f64 + 0.1 * var * count / (count - 1.0);
        assert!(
            (params[2 * c + ch] as f64 - rm).abs() < 1e-6,
            "running mean"
        );
        assert!((params[3 * c + ch] as f64 - rv).abs() < 1e-6, "running var");
    }
    assert_eq!(params[4 * c], 1.0, "num_batches_tracked");
    // Eval mode normalises with the running statistics and changes nothing.
    let frozen = params.clone();
    let eval = net
        .forward(&mut params, Input::Shared(&input), Mode::Eval)
        .unwrap()
        .to_vec();
    assert_eq!(params, frozen);
    let x = input[hw + 1] as f64; // sample 0, channel 1, position 1
    let expect = (x - params[2 * c + 1] as f64) / (params[3 * c + 1] as f64 + 1e-5).sqrt()
        * params[1] as f64
        + params[c + 1] as f64;
    assert!((eval[hw + 1] as f64 - expect).abs() < 1e-5);
    // momentum None (PyTorch's cumulative average): after two batches from reset statistics
    // the running mean is the mean of the two batch means.
    let mut fresh = population(&spec, 1, 5);
    fresh[2 * c..4 * c]
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = if i < c { 0.0 } else { 1.0 });
    fresh[4 * c] = 0.0;
    net.set_bn_momentum(None);
    let second: Vec<f32> = input.iter().map(|v| 2.0 * v + 1.0).collect();
    net.forward(&mut fresh, Input::Shared(&input), Mode::Train)
        .unwrap();
    net.forward(&mut fresh, Input::Shared(&second), Mode::Train)
        .unwrap();
    let first = &input;
    let mean0: f64 = (0..b)
        .flat_map(|s| (0..hw).map(move |q| first[s * c * hw + q] as f64))
        .sum::<f64>()
        / count;
    let expect = (mean0 + (2.0 * mean0 + 1.0)) / 2.0;
    assert!(
        (fresh[2 * c] as f64 - expect).abs() < 1e-5,
        "{} vs {expect}",
        fresh[2 * c]
    );
    assert_eq!(fresh[4 * c], 2.0);
}

#[test]
fn linear_backward_matches_finite_differences() {
    let spec = seq(
        vec![
            Layer::Flatten,
            Layer::Linear { out_features: 4 },
            Layer::Linear { out_features: 3 },
        ],
        2,
        1,
        3,
        3,
    );
    check_network(&spec, 2, 5, Mode::Train, 11);
}

#[test]
fn conv_backward_with_padding_matches_finite_differences() {
    let spec = seq(
        vec![Layer::conv3x3(3), Layer::conv3x3(2), Layer::Flatten],
        2,
        4,
        5,
        40,
    );
    check_network(&spec, 2, 3, Mode::Train, 12);
}

#[test]
fn conv_backward_over_several_im2col_groups_matches_finite_differences() {
    // Two im2col-gemm convs (4 input channels) on 28 x 28 images: groups of 2 samples over
    // two chunks, the last group partial; the second conv also takes the input gradient.
    let spec = seq(
        vec![Layer::conv3x3(4), Layer::conv3x3(2), Layer::Flatten],
        4,
        28,
        28,
        2 * 28 * 28,
    );
    check_network(&spec, 1, 21, Mode::Train, 15);
}

#[test]
fn batchnorm_backward_matches_finite_differences() {
    let spatial = seq(
        vec![Layer::conv3x3(3), Layer::BatchNorm, Layer::Flatten],
        2,
        3,
        3,
        27,
    );
    check_network(&spatial, 2, 4, Mode::Train, 13);
    check_network(&spatial, 1, 3, Mode::Eval, 14);
    let flat = seq(
        vec![
            Layer::Flatten,
            Layer::Linear { out_features: 4 },
            Layer::BatchNorm,
            Layer::Linear { out_features: 3 },
        ],
        1,
        2,
        3,
        3,
    );
    check_network(&flat, 2, 6, Mode::Train, 15);
}

#[test]
fn relu_and_maxpool_backward_match_finite_differences() {
    let relu = seq(
        vec![
            Layer::conv3x3(3),
            Layer::Relu,
            Layer::conv3x3(2),
            Layer::Flatten,
        ],
        1,
        4,
        3,
        24,
    );
    check_network(&relu, 2, 3, Mode::Train, 16);
    let pool = seq(
        vec![
            Layer::conv3x3(3),
            Layer::max_pool2(),
            Layer::conv3x3(2),
            Layer::Flatten,
        ],
        2,
        5,
        4,
        8,
    );
    check_network(&pool, 2, 3, Mode::Train, 17);
    // A max-pool after a ReLU applies the ReLU's mask in its own backward.
    let relu_pool = seq(
        vec![
            Layer::conv3x3(3),
            Layer::Relu,
            Layer::max_pool2(),
            Layer::conv3x3(2),
            Layer::Flatten,
        ],
        2,
        5,
        4,
        8,
    );
    check_network(&relu_pool, 2, 3, Mode::Train, 18);
}

include!("conformance/small_cnn.rs");

#[test]
fn whole_network_with_cross_entropy_matches_finite_differences() {
    let spec = small_cnn();
    let (p, b) = (2, 6);
    let mut rng = Rng::new(21);
    let mut targets = vec![0.0f32; p * b * 3];
    for row in targets.chunks_mut(3) {
        let raw: Vec<f32> = (0..3).map(|_| rng.uniform_f32() + 0.05).collect();
        let sum: f32 = raw.iter().sum();
        row.iter_mut().zip(raw).for_each(|(t, r)| *t = r / sum);
    }
    let (a, fd) = network_gradients(&spec, p, b, Mode::Train, Some(&targets), 22);
    // Through BatchNorm every weight moves every ReLU/max-pool input, so a few of the 1,500
    // kinks fall inside any finite step: compare each tensor as a whole (the per-layer tests
    // above compare every entry).
    let mut start = 0;
    for _ in 0..p {
        for t in spec.tensors().iter().filter(|t| t.kind.trainable()) {
            let r = start..start + t.shape.iter().product::<usize>();
            start = r.end;
            let err: f64 = a[r.clone()]
                .iter()
                .zip(&fd[r.clone()])
                .map(|(x, y)| (x - y) * (x - y))
                .sum();
            let norm: f64 = fd[r].iter().map(|y| y * y).sum();
            // The absolute floor covers biases right before a BatchNorm, whose gradient is 0.
            assert!(
                err.sqrt() <= 0.05 * norm.sqrt() + 1e-3,
                "{}: error {} of {}",
                t.name,
                err.sqrt(),
                norm.sqrt()
            );
        }
    }
}

#[test]
fn gradient_check_catches_wrong_gradients() {
    let spec = small_cnn();
    let (a, fd) = network_gradients(&spec, 1, 4, Mode::Train, None, 23);
    compare(&a, &fd, 2e-2, 2e-3).unwrap();
    let flipped: Vec<f64> = a
        .iter()
        .enumerate()
        .map(|(i, &g)| if i == 40 { -g } else { g })
        .collect();
    assert!(a[40].abs() > 1e-2 && compare(&flipped, &fd, 2e-2, 2e-3).is_err());
    // A missing term: BatchNorm's gradient through the batch mean, i.e. dropping the
    // sum(dy)/R correction, shifts every conv1 gradient; model it by perturbing them all.
    let n_conv1 = 2 * 4 * 9 + 4;
    let shifted: Vec<f64> = a
        .iter()
        .enumerate()
        .map(|(i, &g)| if i < n_conv1 { g * 1.1 + 0.01 } else { g })
        .collect();
    assert!(compare(&shifted, &fd, 2e-2, 2e-3).is_err());
}

#[test]
fn soft_cross_entropy_matches_finite_differences() {
    let (p, b, k) = (2, 3, 4);
    let mut rng = Rng::new(31);
    let logits = uniform(&mut rng, p * b * k, 3.0);
    let mut targets = uniform(&mut rng, p * b * k, 1.0)
        .iter()
        .map(|v| v.abs())
        .collect::<Vec<_>>();
    for row in targets.chunks_mut(k) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    let mut d = vec![0.0; logits.len()];
    let mut losses = vec![0.0; p];
    soft_cross_entropy(&logits, &targets, k, &mut d, &mut losses).unwrap();
    // Loss by hand in f64.
    let loss64 = |m: usize, z: &[f32]| -> f64 {
        z.chunks(k)
            .zip(targets[m * b * k..].chunks(k))
            .map(|(z, t)| {
                let lse = z.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
                -z.iter()
                    .zip(t)
                    .map(|(&v, &t)| t as f64 * (v as f64 - lse))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / b as f64
    };
    assert!((losses[1] as f64 - loss64(1, &logits[b * k..])).abs() < 1e-5);
    let eps = 1e-3;
    let fd: Vec<f64> = (0..logits.len())
        .map(|i| {
            let m = i / (b * k);
            let member = |delta: f32| {
                let mut z = logits[m * b * k..(m + 1) * b * k].to_vec();
                z[i - m * b * k] += delta;
                loss64(m, &z)
            };
            (member(eps) - member(-eps)) / (2.0 * eps as f64)
        })
        .collect();
    let analytic: Vec<f64> = d.iter().map(|&v| v as f64).collect();
    compare(&analytic, &fd, 1e-3, 1e-5).unwrap();
    assert!(soft_cross_entropy(&logits, &targets[1..], k, &mut d, &mut losses).is_err());
    assert!(soft_cross_entropy(&logits, &targets, 5, &mut d, &mut losses).is_err());
}

#[test]
fn accuracy_helpers() {
    assert_eq!(argmax(&[0.1, 0.7, 0.7, -1.0]), 1);
    // P = 2, B = 2, 3 classes.
    let logits = [
        0.0, 1.0, 0.0, 2.0, 0.0, 0.0, /* member 1 */ 0.0, 0.0, 1.0, 2.0, 0.0, 0.0,
    ];
    let mut correct = [0; 2];
    count_correct(&logits, 3, &[1, 0], &mut correct).unwrap();
    assert_eq!(correct, [2, 1]);
    count_correct(&logits, 3, &[1, 0, 2, 1], &mut correct).unwrap();
    assert_eq!(correct, [2, 1]);
    assert!(count_correct(&logits, 3, &[1, 0, 2], &mut correct).is_err());
}

/// One training step (forward, loss, backward) of the whole population.
fn step(
    net: &mut Network,
    params: &mut [f32],
    input: &[f32],
    targets: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let p = net.population();
    let classes = net.spec().classes();
    let logits = net
        .forward(params, Input::PerMember(input), Mode::Train)
        .unwrap()
        .to_vec();
    let mut d = vec![0.0; logits.len()];
    let mut losses = vec![0.0; p];
    soft_cross_entropy(&logits, targets, classes, &mut d, &mut losses).unwrap();
    (logits, net.backward(params, &d).unwrap().to_vec())
}

fn one_hot(p: usize, b: usize, k: usize) -> Vec<f32> {
    let mut t = vec![0.0; p * b * k];
    for (i, row) in t.chunks_mut(k).enumerate() {
        row[(i * 7) % k] = 1.0;
    }
    t
}

#[test]
fn population_equals_members_run_alone() {
    let spec = small_cnn();
    let (p, b) = (3, 20);
    let mut params = population(&spec, p, 41);
    let input = uniform(&mut Rng::new(42), p * b * spec.input_len(), 1.0);
    let targets = one_hot(p, b, 3);
    let mut net = Network::new(&spec, p, b).unwrap();
    let (logits, grads) = step(&mut net, &mut params, &input, &targets);
    let n = spec.len();
    let mut single = Network::new(&spec, 1, b).unwrap();
    let mut fresh = population(&spec, p, 41);
    for m in 0..p {
        let per = b * spec.input_len();
        let rows = b * 3;
        let member = &mut fresh[m * n..(m + 1) * n];
        let (l, g) = step(
            &mut single,
            member,
            &input[m * per..(m + 1) * per],
            &targets[m * rows..(m + 1) * rows],
        );
        assert_eq!(l, logits[m * rows..(m + 1) * rows], "member {m} logits");
        assert_eq!(g, grads[m * n..(m + 1) * n], "member {m} grads");
    }
    assert_eq!(fresh, params, "running statistics");
    // A shared input equals every member getting a copy of it.
    let shared = &input[..b * spec.input_len()];
    let copies: Vec<f32> = (0..p).flat_map(|_| shared.iter().copied()).collect();
    let a = net
        .evaluate(&params, Input::Shared(shared))
        .unwrap()
        .to_vec();
    assert_eq!(a, net.evaluate(&params, Input::PerMember(&copies)).unwrap());
    // Smaller batches than the capacity work too.
    assert_eq!(
        net.evaluate(&params, Input::Shared(&shared[..5 * spec.input_len()]))
            .unwrap()
            .len(),
        p * 5 * 3
    );
}

#[test]
fn same_bits_on_one_and_two_threads() {
    let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10).unwrap();
    let (p, b) = (2, 37);
    let input = uniform(&mut Rng::new(51), p * b * spec.input_len(), 1.0);
    let targets = one_hot(p, b, 10);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut params = population(&spec, p, 52);
            let mut net = Network::new(&spec, p, b).unwrap();
            let (logits, grads) = step(&mut net, &mut params, &input, &targets);
            let pre = net.pre_activation(1).unwrap().data.to_vec();
            (logits, grads, params, pre)
        })
    };
    let (one, two) = (run(1), run(2));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&one.0), bits(&two.0), "logits");
    assert_eq!(bits(&one.1), bits(&two.1), "grads");
    assert_eq!(bits(&one.2), bits(&two.2), "params (running statistics)");
    assert_eq!(bits(&one.3), bits(&two.3), "pre-activations");
    assert!(one.1.iter().any(|&g| g != 0.0));
}

#[test]
fn plain_sgd_fits_a_fixed_batch() {
    // End to end: forward, loss, backward and an SGD step drive the loss of every member down.
    let spec = small_cnn();
    let (p, b) = (2, 16);
    let mut params = population(&spec, p, 61);
    let input = uniform(&mut Rng::new(62), p * b * spec.input_len(), 1.0);
    let targets = one_hot(p, b, 3);
    let mut net = Network::new(&spec, p, b).unwrap();
    let mut d = vec![0.0; p * b * 3];
    let mut losses = vec![0.0; p];
    let mut first = Vec::new();
    let trainable = trainable(&spec, p);
    for it in 0..60 {
        let logits = net
            .forward(&mut params, Input::PerMember(&input), Mode::Train)
            .unwrap();
        soft_cross_entropy(logits, &targets, 3, &mut d, &mut losses).unwrap();
        if it == 0 {
            first = losses.clone();
        }
        let grads = net.backward(&params, &d).unwrap();
        for &i in &trainable {
            params[i] -= 0.1 * grads[i];
        }
    }
    for (m, (&start, &end)) in first.iter().zip(&losses).enumerate() {
        assert!(end < 0.3 * start, "member {m}: loss {start} -> {end}");
    }
}

#[test]
fn every_cpu_path_agrees_with_the_portable_one() {
    // The AVX-512 gemm sums in another order than the `gemm` crate: agreement to rounding,
    // relative to the largest value (1e-4: a few f32 ulps over depth-576 sums, amplified by
    // BatchNorm's division by small batch deviations).
    let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10).unwrap();
    let (p, b) = (2, 19);
    let input = uniform(&mut Rng::new(61), p * b * spec.input_len(), 1.0);
    let targets = one_hot(p, b, 10);
    let run = |isa: Isa| {
        let mut params = population(&spec, p, 62);
        let mut net = Network::with_isa(&spec, p, b, isa).unwrap();
        assert_eq!(net.isa(), isa);
        let (logits, grads) = step(&mut net, &mut params, &input, &targets);
        (logits, grads, params)
    };
    let reference = run(Isa::Portable);
    let paths: Vec<Isa> = Isa::supported().filter(|&i| i != Isa::Portable).collect();
    if paths.is_empty() {
        println!("SKIP: this CPU has only the portable path; nothing to compare it with");
    }
    let close = |what: &str, isa: Isa, a: &[f32], b: &[f32]| {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "{isa} {what}: differs by {worst} (scale {scale})"
        );
    };
    for isa in paths {
        let (logits, grads, params) = run(isa);
        close("logits", isa, &logits, &reference.0);
        close("gradients", isa, &grads, &reference.1);
        close("running statistics", isa, &params, &reference.2);
    }
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_supported()) {
        assert!(matches!(
            Network::with_isa(&spec, p, b, isa),
            Err(Error::Isa(_))
        ));
    }
}
