//! The f64 reference engine checked on its own: gradients against finite differences,
//! forwards, BatchNorm statistics, SGD and the rules against hand-computed values, and the
//! errors of bad inputs (the same variants papa-core returns).

use papa_core::layout::TensorKind;
use papa_core::population::Contiguous;
use papa_core::rng::Rng;
use papa_core::rules::{self, Options, Weights};
use papa_model::layer::Layer;
use papa_train::engine::{Engine, EngineError, Reference, Rule};
use papa_train::model::{self, Input, Mode, ModelSpec};
use papa_train::optim::{OptimError, Sgd};

/// The finite-difference step: a power of two, so that `x +- H` is exact in f32 for every
/// parameter on the grid of [`quantise`].
const H: f64 = 1.0 / (1u64 << 20) as f64;

/// Rounds to a multiple of 2^-12: with |x| < 16, `x +- H` then needs at most 24 bits, so the
/// f32 upload holds exactly the f64 point the difference is taken at.
fn quantise(x: f32) -> f32 {
    (x * 4096.0).round() / 4096.0
}

fn uniform(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.uniform_f32()
}

/// PyTorch's initialisation of every member, with BatchNorm's affine parameters and running
/// statistics moved off 1 and 0 so that no member, channel or sign is symmetric.
fn population(spec: &ModelSpec, p: usize, seed: u64) -> Vec<f32> {
    let n = spec.len();
    let mut params = vec![0.0; p * n];
    let mut rng = Rng::new(seed ^ 0xbadc0de);
    for (j, member) in params.chunks_mut(n).enumerate() {
        spec.init_member(&mut Rng::new(seed).fork(j as u64), member)
            .unwrap();
        for t in spec.tensors() {
            for x in &mut member[t.range()] {
                *x = match t.kind {
                    TensorKind::BnScale => uniform(&mut rng, 0.6, 1.4),
                    TensorKind::BnShift => uniform(&mut rng, -0.3, 0.3),
                    TensorKind::BnRunningMean => uniform(&mut rng, -0.2, 0.2),
                    TensorKind::BnRunningVar => uniform(&mut rng, 0.5, 1.5),
                    TensorKind::Counter => 3.0,
                    _ => *x,
                };
            }
        }
    }
    params.iter().map(|&x| quantise(x)).collect()
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| uniform(&mut rng, -1.0, 1.0)).collect()
}

/// `sum(dlogits * logits)` of a forward of `params`, in f64.
fn loss(engine: &mut Reference, params: &[f32], input: &[f32], dlogits: &[f32], mode: Mode) -> f64 {
    let velocity = vec![0.0; params.len()];
    engine.upload(params, &velocity).unwrap();
    engine.forward(Input::PerMember(input), mode).unwrap();
    engine
        .logits_f64()
        .iter()
        .zip(dlogits)
        .map(|(&y, &d)| y * f64::from(d))
        .sum()
}

/// Every trainable gradient of `spec` against central differences, every other one zero.
fn check_gradients(spec: &ModelSpec, mode: Mode, seed: u64) {
    let (p, b, n) = (2, 3, spec.len());
    let params = population(spec, p, seed);
    let input = random(p * b * spec.input_len(), seed + 1);
    let dlogits = random(p * b * spec.classes(), seed + 2);
    let mut engine = Reference::new(spec, p, b).unwrap();
    engine.upload(&params, &vec![0.0; p * n]).unwrap();
    engine.forward(Input::PerMember(&input), mode).unwrap();
    let returned = engine.backward(&dlogits).unwrap().to_vec();
    let grads = engine.gradients_f64().to_vec();
    let rounded: Vec<f32> = grads.iter().map(|&g| g as f32).collect();
    assert_eq!(
        returned, rounded,
        "the f32 gradients are the f64 ones rounded"
    );
    for m in 0..p {
        for t in spec.tensors() {
            let mut largest: f64 = 0.0;
            for i in t.range() {
                let g = grads[m * n + i];
                if !t.kind.trainable() {
                    assert_eq!(g, 0.0, "member {m} {} [{i}]", t.name);
                    continue;
                }
                let mut shifted = params.clone();
                shifted[m * n + i] = (f64::from(params[m * n + i]) + H) as f32;
                let up = loss(&mut engine, &shifted, &input, &dlogits, mode);
                shifted[m * n + i] = (f64::from(params[m * n + i]) - H) as f32;
                let down = loss(&mut engine, &shifted, &input, &dlogits, mode);
                let fd = (up - down) / (2.0 * H);
                let tol = 1e-6 * g.abs().max(fd.abs()) + 1e-8;
                assert!(
                    (fd - g).abs() <= tol,
                    "{mode:?} member {m} {} [{i}]: backward {g}, finite difference {fd}",
                    t.name
                );
                largest = largest.max(g.abs());
            }
            // A tensor whose gradients are all zero would pass the check above vacuously;
            // but the batch mean of a Train-mode BatchNorm cancels the bias before it.
            if cancelled_by_batch_norm(spec, &t.name, mode) {
                assert!(largest < 1e-10, "{mode:?} member {m} {}: {largest}", t.name);
            } else if t.kind.trainable() {
                assert!(largest > 1e-4, "{mode:?} member {m} {}: all zero", t.name);
            }
        }
    }
}

/// Whether `tensor` is the bias of a layer whose Train-mode BatchNorm subtracts it again.
fn cancelled_by_batch_norm(spec: &ModelSpec, tensor: &str, mode: Mode) -> bool {
    mode == Mode::Train
        && spec
            .repairable()
            .any(|l| l.bias == tensor && l.batch_norm.is_some())
}

/// Conv (stride 1 padding 1, stride 2 padding 0), 2d and 1d BatchNorm, ReLU, an
/// overlapping max-pool, flatten, linear.
fn deep_spec() -> ModelSpec {
    let layers = [
        Layer::conv3x3(3),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::MaxPool2d {
            kernel: 2,
            stride: 1,
        },
        Layer::Conv2d {
            out_channels: 4,
            kernel: 3,
            stride: 2,
            padding: 0,
        },
        Layer::BatchNorm,
        Layer::Relu,
        Layer::Flatten,
        Layer::Linear { out_features: 5 },
        Layer::BatchNorm,
        Layer::Relu,
        Layer::Linear { out_features: 3 },
    ];
    ModelSpec::new(&layers, [2, 6, 6], 3).unwrap()
}

/// A stride-2 padding-1 conv and PyTorch's 2x2 pool on an odd image (floor drops a row).
fn strided_spec() -> ModelSpec {
    let layers = [
        Layer::Conv2d {
            out_channels: 3,
            kernel: 3,
            stride: 2,
            padding: 1,
        },
        Layer::BatchNorm,
        Layer::Relu,
        Layer::max_pool2(),
        Layer::Flatten,
        Layer::Linear { out_features: 3 },
    ];
    ModelSpec::new(&layers, [2, 6, 6], 3).unwrap()
}

#[test]
fn gradients_match_finite_differences_in_train_mode() {
    check_gradients(&deep_spec(), Mode::Train, 11);
    check_gradients(&strided_spec(), Mode::Train, 12);
}

#[test]
fn gradients_match_finite_differences_in_eval_mode() {
    check_gradients(&deep_spec(), Mode::Eval, 21);
    check_gradients(&strided_spec(), Mode::Eval, 22);
}

#[test]
fn conv_forward_matches_hand_computation() {
    // 2 x 3 x 3 input, conv 2 -> 2 channels, kernel 2, stride 2, padding 1: output 2 x 2 x 2,
    // whose window (oy, ox) covers input rows 2 oy - 1 ..= 2 oy and columns likewise.
    let layers = [
        Layer::Conv2d {
            out_channels: 2,
            kernel: 2,
            stride: 2,
            padding: 1,
        },
        Layer::Flatten,
    ];
    let spec = ModelSpec::new(&layers, [2, 3, 3], 8).unwrap();
    assert_eq!(spec.len(), 2 * 2 * 2 * 2 + 2);
    // weight [cout, cin, ky, kx]: out 0 reads the top-left tap of channel 0 and the
    // top-right tap of channel 1; out 1 the bottom-right tap of channel 1.
    let mut member = vec![0.0; spec.len()];
    member[0] = 1.0; // [0, 0, 0, 0]
    member[4 + 1] = 1.0; // [0, 1, 0, 1]
    member[8 + 4 + 3] = 1.0; // [1, 1, 1, 1]
    member[16] = 0.5;
    member[17] = -1.0;
    // Member 1 is member 0 doubled: its outputs are doubled.
    let doubled: Vec<f32> = member.iter().map(|x| 2.0 * x).collect();
    let params = [member, doubled].concat();
    let mut engine = Reference::new(&spec, 2, 1).unwrap();
    engine.upload(&params, &vec![0.0; params.len()]).unwrap();
    let channel0 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let channel1 = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0];
    let input = [channel0, channel1].concat();
    let logits = engine.forward(Input::Shared(&input), Mode::Eval).unwrap();
    // out 0: the top-left tap of channel 0 reads (2oy-1, 2ox-1), inside only at (1, 1): 5;
    // the top-right tap of channel 1 reads (2oy-1, 2ox), inside for oy = 1: 40 and 60.
    // out 1: the bottom-right tap reads (2oy, 2ox): 10, 30, 70, 90.
    let expected = [0.5, 0.5, 40.5, 65.5, 9.0, 29.0, 69.0, 89.0];
    let twice = expected.map(|x| 2.0 * x);
    assert_eq!(logits, [expected, twice].concat());
}

#[test]
fn linear_forward_matches_hand_computation() {
    let layers = [Layer::Flatten, Layer::Linear { out_features: 2 }];
    let spec = ModelSpec::new(&layers, [1, 1, 3], 2).unwrap();
    // weight [[1, 2, 3], [-1, 0, 0.5]], bias [0.25, -0.5].
    let params = [1.0, 2.0, 3.0, -1.0, 0.0, 0.5, 0.25, -0.5];
    let mut engine = Reference::new(&spec, 1, 2).unwrap();
    engine.upload(&params, &[0.0; 8]).unwrap();
    let input = [1.0, -2.0, 4.0, 0.0, 1.0, 0.0];
    let logits = engine
        .forward(Input::PerMember(&input), Mode::Eval)
        .unwrap();
    // [1 - 4 + 12 + 0.25, -1 + 0 + 2 - 0.5] and [2 + 0.25, 0 - 0.5].
    assert_eq!(logits, [9.25, 0.5, 2.25, -0.5]);
}

#[test]
fn max_pool_takes_the_first_maximum_and_relu_clips() {
    // A 1x1 conv copies channel 0 (weight [1, 0]) and ignores channel 1, whose values mark
    // the positions: the pool's gradient of the conv weight of channel 1 then sums the
    // markers of the winners.
    let layers = [
        Layer::Conv2d {
            out_channels: 1,
            kernel: 1,
            stride: 1,
            padding: 0,
        },
        Layer::Relu,
        Layer::MaxPool2d {
            kernel: 2,
            stride: 1,
        },
        Layer::Flatten,
    ];
    let spec = ModelSpec::new(&layers, [2, 3, 3], 4).unwrap();
    let mut engine = Reference::new(&spec, 1, 1).unwrap();
    engine.upload(&[1.0, 0.0, 0.0], &[0.0; 3]).unwrap();
    let values = [-1.0, 5.0, 2.0, -3.0, 5.0, -4.0, -9.0, -1.0, -2.0];
    let markers = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
    let input = [values, markers].concat();
    let logits = engine.forward(Input::Shared(&input), Mode::Eval).unwrap();
    // ReLU: [[0, 5, 2], [0, 5, 0], [0, 0, 0]]; windows (0,0) and (0,1) tie at 5: the first
    // (row 0, column 1) wins both; window (1,0) ties at 5 with nothing else; (1,1) too.
    assert_eq!(logits, [5.0, 5.0, 5.0, 5.0]);
    let grads = engine.backward(&[1.0, 10.0, 100.0, 1000.0]).unwrap();
    // Winners: (0,0) -> marker 2, (0,1) -> 2, (1,0) -> 16, (1,1) -> 16; all positive.
    assert_eq!(grads[1], 2.0 + 10.0 * 2.0 + 100.0 * 16.0 + 1000.0 * 16.0);
    // Channel 0's gradient: the winners' values.
    assert_eq!(grads[0], 5.0 * 1111.0);
    assert_eq!(grads[2], 1111.0);

    // With every value of a window negative the ReLU gives zeros: the winner's gradient
    // does not pass the ReLU.
    let negative = [values.map(|v| -v.abs() - 1.0), markers].concat();
    engine
        .forward(Input::Shared(&negative), Mode::Eval)
        .unwrap();
    assert_eq!(engine.logits_f64(), [0.0; 4]);
    assert_eq!(engine.backward(&[1.0; 4]).unwrap(), [0.0; 3]);
}

/// `[Flatten, BatchNorm]` on `c x 1 x 1` inputs: one BatchNorm1d of `c` features.
fn batch_norm_1d(c: usize) -> ModelSpec {
    ModelSpec::new(&[Layer::Flatten, Layer::BatchNorm], [c, 1, 1], c).unwrap()
}

#[test]
fn batch_norm_train_step_updates_running_statistics_as_pytorch() {
    // BatchNorm2d over 2 channels of 2 values: [BatchNorm, Flatten] on 2 x 1 x 2.
    let spec = ModelSpec::new(&[Layer::BatchNorm, Layer::Flatten], [2, 1, 2], 4).unwrap();
    // scale [2, 1], shift [0.5, 0], running mean [0.5, -1], running var [2, 3], counter 7.
    let params = [2.0, 1.0, 0.5, 0.0, 0.5, -1.0, 2.0, 3.0, 7.0];
    let mut engine = Reference::new(&spec, 1, 2).unwrap();
    engine.upload(&params, &[0.0; 9]).unwrap();
    // Sample 0: c0 [1, 2], c1 [0, 4]; sample 1: c0 [3, 6], c1 [4, 0].
    let input = [1.0, 2.0, 0.0, 4.0, 3.0, 6.0, 4.0, 0.0];
    engine
        .forward(Input::PerMember(&input), Mode::Train)
        .unwrap();
    // Channel 0: mean 3, biased var 14 / 4, unbiased 14 / 3; channel 1: mean 2, biased var
    // 4, unbiased 16 / 3.
    let eps = 1e-5;
    let (s0, s1) = ((3.5f64 + eps).sqrt(), (4.0f64 + eps).sqrt());
    let expected_logits = [
        2.0 * (1.0 - 3.0) / s0 + 0.5,
        2.0 * (2.0 - 3.0) / s0 + 0.5,
        (0.0 - 2.0) / s1,
        (4.0 - 2.0) / s1,
        2.0 * (3.0 - 3.0) / s0 + 0.5,
        2.0 * (6.0 - 3.0) / s0 + 0.5,
        (4.0 - 2.0) / s1,
        (0.0 - 2.0) / s1,
    ];
    assert_close(engine.logits_f64(), &expected_logits, 1e-9);
    let m = 0.1;
    let expected_params = [
        2.0,
        1.0,
        0.5,
        0.0,
        (1.0 - m) * 0.5 + m * 3.0,
        -(1.0 - m) + m * 2.0,
        (1.0 - m) * 2.0 + m * 14.0 / 3.0,
        (1.0 - m) * 3.0 + m * 16.0 / 3.0,
        8.0,
    ];
    assert_close(engine.params_f64(), &expected_params, 1e-7);

    // Eval mode normalises with the running statistics and changes nothing.
    let before = engine.params_f64().to_vec();
    engine
        .forward(Input::PerMember(&input), Mode::Eval)
        .unwrap();
    assert_eq!(engine.params_f64(), before);
    let (mean, var) = (&before[4..6], &before[6..8]);
    let expected_eval: Vec<f64> = input
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let ch = i / 2 % 2;
            before[ch] * (f64::from(x) - mean[ch]) / (var[ch] + eps).sqrt() + before[2 + ch]
        })
        .collect();
    assert_close(engine.logits_f64(), &expected_eval, 1e-9);
}

fn assert_close(found: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(found.len(), expected.len());
    for (i, (&f, &e)) in found.iter().zip(expected).enumerate() {
        assert!(
            (f - e).abs() <= tol * e.abs().max(1.0),
            "[{i}]: {f}, expected {e}"
        );
    }
}

/// `[Flatten, Linear(2)]` on one input value: `y_o = w_o x + b_o`, so the gradients are
/// `dy_o x` and `dy_o` whatever the parameters.
fn two_sgd_steps(sgd: Sgd) -> (Vec<f64>, Vec<f32>) {
    let spec = ModelSpec::new(
        &[Layer::Flatten, Layer::Linear { out_features: 2 }],
        [1, 1, 1],
        2,
    )
    .unwrap();
    let mut engine = Reference::new(&spec, 1, 1).unwrap();
    // weight [0.5, -0.25], bias [0.125, 1]; a velocity left from earlier steps.
    engine
        .upload(&[0.5, -0.25, 0.125, 1.0], &[0.1, 0.0, -0.2, 0.0])
        .unwrap();
    for _ in 0..2 {
        engine.forward(Input::Shared(&[2.0]), Mode::Train).unwrap();
        // Gradients [2, -1] for the weight and [1, -0.5] for the bias.
        engine.backward(&[1.0, -0.5]).unwrap();
        engine.sgd_step(&sgd, 0.1).unwrap();
    }
    let mut velocity = [0.0; 4];
    engine.download(&mut [0.0; 4], &mut velocity).unwrap();
    (engine.params_f64().to_vec(), velocity.to_vec())
}

#[test]
fn sgd_matches_hand_computation_over_two_steps() {
    // Entry 0, momentum 0.9, weight decay 0.01, lr 0.1: d = 2 + 0.005, v = 0.09 + 2.005 =
    // 2.095, p = 0.2905; then d = 2.002905, v = 1.8855 + 2.002905 = 3.888405,
    // p = 0.2905 - 0.3888405 = -0.0983405. The other entries alike.
    let heavy = Sgd {
        momentum: 0.9,
        weight_decay: 0.01,
        nesterov: false,
    };
    let (p, v) = two_sgd_steps(heavy);
    assert_close(&p, &[-0.0983405, 0.04062475, -0.131080375, 1.142051], 1e-6);
    let v: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
    assert_close(&v, &[3.888405, -1.9037475, 1.73955375, -0.93051], 1e-6);

    // Nesterov: p -= lr (d + mu v).
    let (p, v) = two_sgd_steps(Sgd {
        nesterov: true,
        ..heavy
    });
    assert_close(
        &p,
        &[-0.438955805, 0.2117905975, -0.30546557875, 1.22571311],
        1e-6,
    );
    let v: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
    assert_close(&v, &[3.8866095, -1.90284525, 1.738634625, -0.930069], 1e-6);

    // Plain SGD: p - 2 lr g, and the velocity is the last step's gradient.
    let (p, v) = two_sgd_steps(Sgd {
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    });
    assert_close(&p, &[0.1, -0.05, -0.075, 1.1], 1e-6);
    assert_eq!(v, [2.0, -1.0, 1.0, -0.5]);
}

#[test]
fn sgd_leaves_running_statistics_counters_and_their_velocity_alone() {
    let spec = batch_norm_1d(1);
    let mut engine = Reference::new(&spec, 2, 2).unwrap();
    // scale, shift, running mean, running var, counter.
    let params = [1.5, 0.25, 0.5, 2.0, 4.0, 0.75, -0.25, -0.5, 1.0, 6.0];
    let velocity = [0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, -1.0, -2.0, -3.0];
    engine.upload(&params, &velocity).unwrap();
    engine
        .forward(Input::PerMember(&[1.0, 3.0, -2.0, 0.0]), Mode::Eval)
        .unwrap();
    engine.backward(&[1.0, -2.0, 0.5, 1.0]).unwrap();
    engine.sgd_step(&Sgd::default(), 0.1).unwrap();
    let (mut p, mut v) = ([0.0; 10], [0.0; 10]);
    engine.download(&mut p, &mut v).unwrap();
    for m in 0..2 {
        let r = m * 5 + 2..m * 5 + 5;
        assert_eq!(p[r.clone()], params[r.clone()]);
        assert_eq!(v[r.clone()], velocity[r]);
        for i in m * 5..m * 5 + 2 {
            assert_ne!(p[i], params[i], "trainable entry {i} moved");
        }
    }
}

/// Three members of a BatchNorm1d of one feature: scale, shift, running mean, running
/// var, counter.
fn three_members() -> (Reference, [f32; 15], [f32; 15]) {
    let spec = batch_norm_1d(1);
    let mut engine = Reference::new(&spec, 3, 2).unwrap();
    let params = [
        1.0, 2.0, 3.0, 4.0, 5.0, // member 0
        4.0, 0.0, -3.0, 2.0, 9.0, // member 1
        -2.0, 1.0, 6.0, 0.0, 7.0, // member 2
    ];
    let velocity = [
        1.0, 0.0, 0.0, 0.0, 3.0, //
        0.0, 0.0, 0.0, 0.0, 0.0, //
        -1.0, 0.0, 0.0, 0.0, 6.0,
    ];
    engine.upload(&params, &velocity).unwrap();
    (engine, params, velocity)
}

fn download(engine: &Reference) -> (Vec<f32>, Vec<f32>) {
    let len = engine.population() * engine.spec().len();
    let (mut p, mut v) = (vec![0.0; len], vec![0.0; len]);
    engine.download(&mut p, &mut v).unwrap();
    (p, v)
}

#[test]
fn gradual_pulls_to_the_mean_and_counters_take_the_max() {
    let (mut engine, _, _) = three_members();
    let rule = Rule::Gradual {
        weights: Weights::Uniform,
        alpha: 0.25,
    };
    engine.apply(rule, true).unwrap();
    let (p, v) = download(&engine);
    // Mean [1, 1, 2, 2], counter max 9; w <- 0.25 w + 0.75 mean.
    #[rustfmt::skip]
    assert_eq!(p, [
        1.0, 1.25, 2.25, 2.5, 9.0,
        1.75, 0.75, 0.75, 2.0, 9.0,
        0.25, 1.0, 3.0, 1.5, 9.0,
    ]);
    // The velocity's counter entry is averaged: mean 3.
    #[rustfmt::skip]
    assert_eq!(v, [
        0.25, 0.0, 0.0, 0.0, 3.0,
        0.0, 0.0, 0.0, 0.0, 2.25,
        -0.25, 0.0, 0.0, 0.0, 3.75,
    ]);
}

#[test]
fn all_and_average_take_the_weighted_mean() {
    let (mut engine, params, velocity) = three_members();
    let weights = [0.5, 0.25, 0.25];
    // [0.5 + 1 - 0.5, 1 + 0 + 0.25, 1.5 - 0.75 + 1.5, 2 + 0.5 + 0], counter max 9.
    let mean = [1.0, 1.25, 2.25, 2.5, 9.0];
    assert_eq!(engine.average(Weights::Given(&weights)).unwrap(), mean);
    assert_eq!(
        engine.average(Weights::Uniform).unwrap(),
        [1.0, 1.0, 2.0, 2.0, 9.0]
    );
    engine
        .apply(
            Rule::All {
                weights: Weights::Given(&weights),
            },
            false,
        )
        .unwrap();
    let (p, v) = download(&engine);
    assert_eq!(p, [mean, mean, mean].concat());
    assert_eq!(v, velocity, "momentum false leaves the velocity");
    assert_ne!(p, params);
}

#[test]
fn pairs_average_parents_from_the_old_population() {
    let (mut engine, _, _) = three_members();
    // Child 1 reads member 0, already replaced when children are written in place.
    engine
        .apply(Rule::Pairs(&[(1, 2), (0, 2), (0, 0)]), true)
        .unwrap();
    let (p, v) = download(&engine);
    #[rustfmt::skip]
    assert_eq!(p, [
        1.0, 0.5, 1.5, 1.0, 9.0,
        -0.5, 1.5, 4.5, 2.0, 7.0,
        1.0, 2.0, 3.0, 4.0, 5.0,
    ]);
    #[rustfmt::skip]
    assert_eq!(v, [
        -0.5, 0.0, 0.0, 0.0, 3.0,
        0.0, 0.0, 0.0, 0.0, 4.5,
        1.0, 0.0, 0.0, 0.0, 3.0,
    ]);
}

#[test]
fn diversity_covers_the_trainable_entries_only() {
    let (mut engine, mut params, velocity) = three_members();
    // Trainable: (1, 2), (4, 0), (-2, 1); mean (1, 1).
    let d = engine.diversity().unwrap();
    assert_close(&d.distance_to_mean, &[1.0, 10f64.sqrt(), 3.0], 1e-12);
    // cos(w0, w1) = 4 / (4 sqrt 5), cos(w0, w2) = 0, cos(w1, w2) = -8 / (4 sqrt 5).
    let expected = -1.0 / (3.0 * 5f64.sqrt());
    assert!((d.mean_pairwise_cosine - expected).abs() < 1e-12);

    // A zero member has no cosine; papa-core names it.
    params[5..7].fill(0.0);
    engine.upload(&params, &velocity).unwrap();
    assert!(matches!(
        engine.diversity(),
        Err(EngineError::Core(papa_core::Error::Degenerate {
            index: 1,
            ..
        }))
    ));
    params[11] = f32::NAN;
    engine.upload(&params, &velocity).unwrap();
    assert!(matches!(
        engine.diversity(),
        Err(EngineError::Core(papa_core::Error::NonFinite {
            member: 2,
            index: 1
        }))
    ));

    let mut single = Reference::new(&batch_norm_1d(1), 1, 1).unwrap();
    single
        .upload(&[1.0, 2.0, 0.0, 0.0, 0.0], &[0.0; 5])
        .unwrap();
    let d = single.diversity().unwrap();
    assert_eq!(
        (d.distance_to_mean, d.mean_pairwise_cosine),
        (vec![0.0], 1.0)
    );
}

#[test]
fn shared_input_equals_the_same_batch_per_member() {
    let spec = strided_spec();
    let (p, b) = (2, 3);
    let params = population(&spec, p, 5);
    let batch = random(b * spec.input_len(), 6);
    let mut engine = Reference::new(&spec, p, b).unwrap();
    engine.upload(&params, &vec![0.0; params.len()]).unwrap();
    let shared = engine
        .forward(Input::Shared(&batch), Mode::Train)
        .unwrap()
        .to_vec();
    engine.upload(&params, &vec![0.0; params.len()]).unwrap();
    let repeated = [batch.clone(), batch].concat();
    let per_member = engine
        .forward(Input::PerMember(&repeated), Mode::Train)
        .unwrap();
    assert_eq!(shared, per_member);
    assert_ne!(shared[..b * 3], shared[b * 3..], "the members differ");
    assert_eq!(engine.path(), "f64");
}

fn model_error(e: EngineError) -> model::Error {
    match e {
        EngineError::Model(e) => e,
        other => panic!("expected a model error, got {other:?}"),
    }
}

#[test]
fn bad_buffers_and_calls_are_refused() {
    let spec = deep_spec();
    let (p, b, n) = (2, 3, spec.len());
    assert!(matches!(
        Reference::new(&spec, 0, 3).map(|_| ()).map_err(model_error),
        Err(model::Error::Empty { population: 0, .. })
    ));
    assert!(matches!(
        Reference::new(&spec, 2, 0).map(|_| ()).map_err(model_error),
        Err(model::Error::Empty { batch: 0, .. })
    ));
    let mut engine = Reference::new(&spec, p, b).unwrap();
    let upload = engine.upload(&vec![0.0; p * n - 1], &vec![0.0; p * n]);
    assert!(matches!(
        model_error(upload.unwrap_err()),
        model::Error::Length(_)
    ));
    let upload = engine.upload(&vec![0.0; p * n], &vec![0.0; p * n + 1]);
    assert!(matches!(
        model_error(upload.unwrap_err()),
        model::Error::Length(_)
    ));
    let download = engine.download(&mut vec![0.0; n], &mut vec![0.0; p * n]);
    assert!(matches!(
        model_error(download.unwrap_err()),
        model::Error::Length(_)
    ));
    engine
        .upload(&population(&spec, p, 1), &vec![0.0; p * n])
        .unwrap();

    let per = spec.input_len();
    let forward = |engine: &mut Reference, input: Input<'_>, mode| {
        engine.forward(input, mode).map(|_| ()).map_err(model_error)
    };
    let err = forward(
        &mut engine,
        Input::PerMember(&vec![0.0; p * 2 * per + 1]),
        Mode::Eval,
    );
    assert!(matches!(err, Err(model::Error::Length(_))));
    let err = forward(&mut engine, Input::Shared(&[]), Mode::Eval);
    assert!(matches!(err, Err(model::Error::Length(_))));
    let err = forward(&mut engine, Input::Shared(&vec![0.0; 4 * per]), Mode::Eval);
    assert!(matches!(
        err,
        Err(model::Error::Batch {
            batch: 4,
            capacity: 3
        })
    ));
    // The BatchNorm1d sees one value per feature in a batch of one.
    let err = forward(&mut engine, Input::Shared(&vec![0.0; per]), Mode::Train);
    assert!(matches!(
        err,
        Err(model::Error::TooFewForBatchNorm { values: 1 })
    ));
    forward(&mut engine, Input::Shared(&vec![0.0; per]), Mode::Eval).unwrap();

    // One backward per forward; a refused forward changes nothing, the last one included.
    let dlogits = vec![0.5; p * spec.classes()];
    let grads = engine.backward(&dlogits).unwrap().to_vec();
    let err = engine.backward(&dlogits).map(|_| ()).map_err(model_error);
    assert!(matches!(err, Err(model::Error::NoForward)));
    forward(&mut engine, Input::Shared(&vec![0.0; per]), Mode::Eval).unwrap();
    let params = engine.params_f64().to_vec();
    let refused = forward(&mut engine, Input::Shared(&vec![1.0; 4 * per]), Mode::Train);
    assert!(refused.is_err());
    assert_eq!(engine.params_f64(), params);
    assert_eq!(engine.backward(&dlogits).unwrap(), grads);
    forward(&mut engine, Input::Shared(&vec![0.0; per]), Mode::Eval).unwrap();
    let err = engine
        .backward(&dlogits[1..])
        .map(|_| ())
        .map_err(model_error);
    assert!(matches!(err, Err(model::Error::Length(_))));
}

#[test]
fn sgd_needs_gradients_and_momentum_for_nesterov() {
    let spec = deep_spec();
    let mut engine = Reference::new(&spec, 1, 2).unwrap();
    let sgd = Sgd::default();
    assert!(matches!(
        engine.sgd_step(&sgd, 0.1),
        Err(EngineError::NoGradients)
    ));
    let input = vec![0.5; 2 * spec.input_len()];
    engine.forward(Input::Shared(&input), Mode::Train).unwrap();
    engine.backward(&[1.0; 6]).unwrap();
    let nesterov = Sgd {
        momentum: 0.0,
        nesterov: true,
        ..sgd
    };
    assert!(matches!(
        engine.sgd_step(&nesterov, 0.1),
        Err(EngineError::Optim(
            OptimError::NesterovWithoutMomentum { .. }
        ))
    ));
    engine.sgd_step(&sgd, 0.1).unwrap();
    // The gradients serve one step.
    assert!(matches!(
        engine.sgd_step(&sgd, 0.1),
        Err(EngineError::NoGradients)
    ));
}

/// The error papa-core's own rule gives for the same population and rule.
fn papa_core_error(params: &[f32], rule: Rule<'_>) -> papa_core::Error {
    let mut buf = params.to_vec();
    let mut pop = Contiguous::new(&mut buf[..], 3).unwrap();
    let opts = Options::default();
    match rule {
        Rule::Gradual { weights, alpha } => rules::gradual(&mut pop, weights, alpha, &opts),
        Rule::All { weights } => rules::papa_all(&mut pop, weights, &opts),
        Rule::Pairs(pairs) => {
            let mut scratch = vec![0.0; rules::papa2_scratch_len(3, 5)];
            rules::papa2(&mut pop, pairs, &mut scratch, &opts)
        }
    }
    .unwrap_err()
}

#[test]
fn bad_rules_are_refused_as_papa_core_refuses_them() {
    let (mut engine, params, velocity) = three_members();
    let all = |w: &'static [f32]| Rule::All {
        weights: Weights::Given(w),
    };
    let gradual = |alpha| Rule::Gradual {
        weights: Weights::Uniform,
        alpha,
    };
    let bad: [Rule<'_>; 9] = [
        all(&[0.5, 0.5]),
        all(&[]),
        all(&[1.5, -0.25, -0.25]),
        all(&[0.5, 0.25, 0.5]),
        all(&[f32::NAN, 0.5, 0.5]),
        gradual(1.5),
        gradual(f32::NAN),
        Rule::Pairs(&[(0, 1), (1, 2)]),
        Rule::Pairs(&[(0, 1), (1, 2), (0, 3)]),
    ];
    for rule in bad {
        let expected = papa_core_error(&params, rule);
        match engine.apply(rule, true) {
            Err(EngineError::Core(e)) => {
                assert_eq!(format!("{e:?}"), format!("{expected:?}"), "{rule:?}")
            }
            other => panic!("{rule:?}: {other:?}"),
        }
        // Nothing changed.
        assert_eq!(download(&engine), (params.to_vec(), velocity.to_vec()));
    }
    assert!(matches!(
        engine.apply(gradual(1.5), false),
        Err(EngineError::Core(papa_core::Error::AlphaOutOfRange { .. }))
    ));
    assert!(matches!(
        engine.apply(Rule::Pairs(&[(0, 1), (1, 2), (0, 3)]), false),
        Err(EngineError::Core(papa_core::Error::PairOutOfRange {
            child: 2,
            parent: 3,
            members: 3
        }))
    ));
    assert!(matches!(
        engine.average(Weights::Given(&[0.5, 0.25, 0.5])),
        Err(EngineError::Core(
            papa_core::Error::WeightsDoNotSumToOne { .. }
        ))
    ));
    assert!(matches!(
        engine.average(Weights::Given(&[1.0])),
        Err(EngineError::Core(papa_core::Error::LengthMismatch {
            what: "weights",
            ..
        }))
    ));
}
