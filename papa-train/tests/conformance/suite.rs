//! The conformance suite every engine runs: forward, every gradient, running statistics, one
//! SGD step, each PAPA rule, soups, diversity, BatchNorm re-estimation and REPAIR's
//! statistics and folding against the f64 [`Reference`] engine (whose
//! own gradients are checked against finite differences in tests/reference.rs, and here
//! again through the engine's), and PyTorch's parameter names and order.
//!
//! [`conformance`] takes a constructor; the CPU engine runs it on every CPU path this machine
//! has (tests/conformance.rs), papa-cuda's GPU engine unchanged with its own
//! (papa-cuda/tests/engine.rs includes this file).

use papa_core::layout::TensorKind;
use papa_core::repair::Correction;
use papa_core::rng::Rng;
use papa_core::rules::Weights;
use papa_model::layer::Layer;
use papa_model::zoo;
use papa_train::engine::{Engine, EngineError, Reference, Rule};
use papa_train::eval::RepairGoal;
use papa_train::model::{soft_cross_entropy, Input, Mode, ModelSpec};
use papa_train::optim::Sgd;

const P: usize = 3;
const B: usize = 6;

/// Builds the engine under test for a model, P members and batches of up to B.
type Make<'a, E> = &'a dyn Fn(&ModelSpec, usize, usize) -> Result<E, EngineError>;

include!("small_cnn.rs");

/// The models of the suite: a CNN with every op the zoo uses, and an MLP.
fn models() -> Vec<(&'static str, ModelSpec)> {
    vec![
        ("cnn", small_cnn()),
        (
            "mlp",
            ModelSpec::new(&zoo::mlp(&[7, 5], 4), [1, 5, 5], 4).unwrap(),
        ),
    ]
}

/// A population with random BatchNorm affine parameters and running statistics (nothing
/// symmetric), and a non-zero momentum.
fn population(spec: &ModelSpec, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let n = spec.len();
    let (mut params, rng) = (vec![0.0; P * n], Rng::new(seed));
    let mut extra = rng.fork(99);
    for (j, member) in params.chunks_mut(n).enumerate() {
        spec.init_member(&mut rng.fork(j as u64), member).unwrap();
        for t in spec.tensors() {
            let range = t.offset..t.offset + t.shape.iter().product::<usize>();
            let (low, width) = match t.kind {
                TensorKind::BnScale | TensorKind::BnRunningVar => (0.5, 1.0),
                TensorKind::BnShift | TensorKind::BnRunningMean => (-0.5, 1.0),
                TensorKind::Counter => (j as f32 + 2.0, 0.0),
                _ => continue,
            };
            for v in &mut member[range] {
                *v = low + width * extra.uniform_f32();
            }
        }
    }
    let velocity = (0..P * n)
        .map(|_| 0.1 * (extra.uniform_f32() - 0.5))
        .collect();
    (params, velocity)
}

fn input(spec: &ModelSpec, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..P * B * spec.input_len())
        .map(|_| rng.uniform_f32() * 2.0 - 1.0)
        .collect()
}

fn targets(spec: &ModelSpec) -> Vec<f32> {
    let k = spec.classes();
    let mut t = vec![0.0; P * B * k];
    for (i, row) in t.chunks_mut(k).enumerate() {
        row[(i * 5 + 1) % k] = 1.0;
    }
    t
}

/// `|a - b| <= tol * (1 + |b|)` entry by entry, naming the worst.
fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let (at, err) = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .enumerate()
        .fold(
            (0, 0.0f32),
            |w, (i, e)| if e > w.1 || e.is_nan() { (i, e) } else { w },
        );
    assert!(
        err <= tol,
        "{what}: entry {at} is {} against {} (tolerance {tol})",
        a[at],
        b[at]
    );
}

/// Both engines with the same population and momentum.
fn pair<E: Engine>(make: Make<'_, E>, spec: &ModelSpec, seed: u64) -> (E, Reference) {
    let (params, velocity) = population(spec, seed);
    let mut engine = make(spec, P, B).unwrap();
    let mut reference = Reference::new(spec, P, B).unwrap();
    engine.upload(&params, &velocity).unwrap();
    reference.upload(&params, &velocity).unwrap();
    (engine, reference)
}

fn download(engine: &impl Engine) -> (Vec<f32>, Vec<f32>) {
    let len = engine.population() * engine.spec().len();
    let (mut params, mut velocity) = (vec![0.0; len], vec![0.0; len]);
    engine.download(&mut params, &mut velocity).unwrap();
    (params, velocity)
}

/// Forward, loss and backward; returns logits and gradients.
fn forward_backward(engine: &mut impl Engine, x: &[f32], mode: Mode) -> (Vec<f32>, Vec<f32>) {
    let spec = engine.spec().clone();
    let logits = engine.forward(Input::PerMember(x), mode).unwrap().to_vec();
    let (mut d, mut losses) = (vec![0.0; logits.len()], vec![0.0; P]);
    soft_cross_entropy(
        &logits,
        &targets(&spec),
        spec.classes(),
        &mut d,
        &mut losses,
    )
    .unwrap();
    (logits, engine.backward(&d).unwrap().to_vec())
}

/// Runs the whole suite on engines built by `make`.
pub fn conformance<E: Engine>(make: Make<'_, E>) {
    for (name, spec) in models() {
        pytorch_names(make, &spec);
        forward_and_gradients(make, &spec, name);
        gradients_match_finite_differences(make, &spec, name);
        sgd_step(make, &spec, name);
        rules(make, &spec, name);
        surgery(make, &spec, name);
        refusals(make, &spec);
    }
}

fn tensor_names(spec: &ModelSpec) -> Vec<&str> {
    spec.tensors().iter().map(|t| t.name.as_str()).collect()
}

/// The engine's model has PyTorch's `state_dict` names in PyTorch's order.
fn pytorch_names<E: Engine>(make: Make<'_, E>, spec: &ModelSpec) {
    let engine = make(spec, P, B).unwrap();
    let names = tensor_names(engine.spec());
    assert_eq!(names, tensor_names(spec));
    let cnn_s = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10).unwrap();
    let engine = make(&cnn_s, 1, 1).unwrap();
    let names = tensor_names(engine.spec());
    assert_eq!(
        names[..7],
        [
            "conv1.weight",
            "conv1.bias",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.num_batches_tracked"
        ]
    );
    assert_eq!(engine.spec().len(), cnn_s.len());
}

/// Logits, gradients and running statistics after train- and eval-mode passes.
fn forward_and_gradients<E: Engine>(make: Make<'_, E>, spec: &ModelSpec, name: &str) {
    for mode in [Mode::Train, Mode::Eval] {
        let (mut engine, mut reference) = pair(make, spec, 7);
        let x = input(spec, 8);
        let (logits, grads) = forward_backward(&mut engine, &x, mode);
        let (want_logits, want_grads) = forward_backward(&mut reference, &x, mode);
        assert_close(
            &format!("{name} {mode:?} logits"),
            &logits,
            &want_logits,
            1e-5,
        );
        assert_close(
            &format!("{name} {mode:?} gradients"),
            &grads,
            &want_grads,
            2e-4,
        );
        let (params, _) = download(&engine);
        let (want, _) = download(&reference);
        assert_close(
            &format!("{name} {mode:?} running statistics"),
            &params,
            &want,
            1e-6,
        );
        // A shared batch is every member's copy of it.
        let shared = &x[..B * spec.input_len()];
        let logits = engine
            .forward(Input::Shared(shared), Mode::Eval)
            .unwrap()
            .to_vec();
        let want = reference
            .forward(Input::Shared(shared), Mode::Eval)
            .unwrap();
        assert_close(&format!("{name} shared logits"), &logits, want, 1e-5);
    }
}

/// The engine's gradient of `sum(g * logits)` against central differences of the same
/// function computed by the f64 reference, at a few entries of every trainable tensor.
fn gradients_match_finite_differences<E: Engine>(make: Make<'_, E>, spec: &ModelSpec, name: &str) {
    let (params, velocity) = population(spec, 11);
    // Parameters on a grid of 2^-12 and steps of 2^-20: every shifted point is exact in f32.
    let params: Vec<f32> = params
        .iter()
        .map(|v| (v * 4096.0).round() / 4096.0)
        .collect();
    let x = input(spec, 12);
    let mut rng = Rng::new(13);
    let g: Vec<f32> = (0..P * B * spec.classes())
        .map(|_| rng.uniform_f32() - 0.5)
        .collect();
    let mut engine = make(spec, P, B).unwrap();
    engine.upload(&params, &velocity).unwrap();
    engine.forward(Input::PerMember(&x), Mode::Train).unwrap();
    let grads = engine.backward(&g).unwrap().to_vec();
    let mut reference = Reference::new(spec, P, B).unwrap();
    let mut objective = |p: &[f32]| -> f64 {
        reference.upload(p, &velocity).unwrap();
        reference
            .forward(Input::PerMember(&x), Mode::Train)
            .unwrap();
        reference
            .logits_f64()
            .iter()
            .zip(&g)
            .map(|(z, &g)| z * f64::from(g))
            .sum()
    };
    let (n, h) = (spec.len(), 2f32.powi(-20));
    let mut checked = 0;
    for t in spec.tensors().iter().filter(|t| t.kind.trainable()) {
        let len: usize = t.shape.iter().product();
        for k in [0, len / 2, len - 1] {
            let i = (k % P) * n + t.offset + k;
            let (mut up, mut down) = (params.clone(), params.clone());
            up[i] += h;
            down[i] -= h;
            let fd = (objective(&up) - objective(&down)) / (2.0 * f64::from(h));
            let tol = 2e-3 * (1.0 + fd.abs());
            assert!(
                (f64::from(grads[i]) - fd).abs() <= tol,
                "{name} {}[{k}] (member {}): engine {} against finite differences {fd}",
                t.name,
                k % P,
                grads[i]
            );
            checked += 1;
        }
    }
    assert!(checked >= 9, "{name}: only {checked} entries checked");
}

/// One SGD step with momentum, weight decay and Nesterov from the same gradients.
fn sgd_step<E: Engine>(make: Make<'_, E>, spec: &ModelSpec, name: &str) {
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 1e-3,
        nesterov: true,
    };
    let (mut engine, mut reference) = pair(make, spec, 21);
    let x = input(spec, 22);
    forward_backward(&mut engine, &x, Mode::Train);
    forward_backward(&mut reference, &x, Mode::Train);
    engine.sgd_step(&sgd, 0.05).unwrap();
    reference.sgd_step(&sgd, 0.05).unwrap();
    let ((params, velocity), (want_params, want_velocity)) =
        (download(&engine), download(&reference));
    assert_close(
        &format!("{name} params after SGD"),
        &params,
        &want_params,
        1e-5,
    );
    assert_close(
        &format!("{name} velocity after SGD"),
        &velocity,
        &want_velocity,
        2e-4,
    );
    assert!(matches!(
        engine.sgd_step(&sgd, 0.05),
        Err(EngineError::NoGradients)
    ));
}

/// Each rule, with and without the momentum, and the soups and diversity they are judged by.
fn rules<E: Engine>(make: Make<'_, E>, spec: &ModelSpec, name: &str) {
    let given = [0.2, 0.5, 0.3];
    let pairs = [(0, 2), (1, 2), (0, 1)];
    let cases = [
        Rule::Gradual {
            weights: Weights::Uniform,
            alpha: 0.8,
        },
        Rule::Gradual {
            weights: Weights::Given(&given),
            alpha: 0.3,
        },
        Rule::All {
            weights: Weights::Given(&given),
        },
        Rule::Pairs(&pairs),
    ];
    for rule in cases {
        for momentum in [false, true] {
            let (mut engine, mut reference) = pair(make, spec, 31);
            engine.apply(rule, momentum).unwrap();
            reference.apply(rule, momentum).unwrap();
            let ((params, velocity), (want_params, want_velocity)) =
                (download(&engine), download(&reference));
            assert_close(
                &format!("{name} {rule:?} params"),
                &params,
                &want_params,
                1e-6,
            );
            assert_close(
                &format!("{name} {rule:?} velocity"),
                &velocity,
                &want_velocity,
                1e-6,
            );
        }
    }
    let (engine, reference) = pair(make, spec, 41);
    for weights in [Weights::Uniform, Weights::Given(&given)] {
        let soup = engine.average(weights).unwrap();
        assert_close(
            &format!("{name} soup"),
            &soup,
            &reference.average(weights).unwrap(),
            1e-6,
        );
    }
    let (d, want) = (engine.diversity().unwrap(), reference.diversity().unwrap());
    let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    assert_close(
        &format!("{name} distances"),
        &to_f32(&d.distance_to_mean),
        &to_f32(&want.distance_to_mean),
        1e-5,
    );
    assert!(
        (d.mean_pairwise_cosine - want.mean_pairwise_cosine).abs() < 1e-5,
        "{name} cosine"
    );
}

/// BatchNorm re-estimation, REPAIR's layer statistics, folding and a whole REPAIR.
fn surgery<E: Engine>(make: Make<'_, E>, spec: &ModelSpec, name: &str) {
    let calibration = &input(spec, 71)[..2 * B * spec.input_len()];
    let (mut engine, mut reference) = pair(make, spec, 72);
    engine.reestimate_batchnorm(calibration, B).unwrap();
    reference.reestimate_batchnorm(calibration, B).unwrap();
    let (params, want) = (download(&engine).0, download(&reference).0);
    assert_close(
        &format!("{name} re-estimated statistics"),
        &params,
        &want,
        1e-5,
    );
    let layers = spec.repairable().count();
    assert!(layers >= 2, "{name}: the suite needs repairable layers");
    for layer in 0..layers {
        let (m, w) = (
            engine.layer_moments(layer, calibration, B).unwrap(),
            reference.layer_moments(layer, calibration, B).unwrap(),
        );
        let stats = |m: &[papa_core::repair::Moments]| -> Vec<f32> {
            m.iter()
                .flat_map(|m| [m.mean() as f32, m.std() as f32, m.count() as f32])
                .collect()
        };
        assert_close(
            &format!("{name} layer {layer} moments"),
            &stats(&m),
            &stats(&w),
            1e-4,
        );
        let fixes: Vec<Correction> = (0..m.len())
            .map(|i| Correction {
                scale: 0.5 + (i % 7) as f64 / 7.0,
                shift: (i % 5) as f64 / 10.0 - 0.2,
            })
            .collect();
        engine.fold(layer, &fixes).unwrap();
        reference.fold(layer, &fixes).unwrap();
        let (params, want) = (download(&engine).0, download(&reference).0);
        assert_close(
            &format!("{name} layer {layer} folded"),
            &params,
            &want,
            1e-6,
        );
        assert!(engine.fold(layer, &fixes[1..]).is_err());
    }
    assert!(engine.layer_moments(layers, calibration, B).is_err());
    assert!(engine.reestimate_batchnorm(&calibration[1..], B).is_err());
    // A whole REPAIR of PAPA-2 children, measured on each engine.
    let pairs = [(0, 1), (1, 2), (0, 2)];
    let weights: Vec<Vec<f32>> = pairs
        .iter()
        .map(|&(a, b)| {
            (0..P)
                .map(|j| if j == a || j == b { 0.5 } else { 0.0 })
                .collect()
        })
        .collect();
    let (mut engine, mut reference) = pair(make, spec, 73);
    let goal = RepairGoal::measure(&mut engine, calibration, B).unwrap();
    engine.apply(Rule::Pairs(&pairs), false).unwrap();
    goal.repair(&mut engine, &weights, calibration, B).unwrap();
    let goal = RepairGoal::measure(&mut reference, calibration, B).unwrap();
    reference.apply(Rule::Pairs(&pairs), false).unwrap();
    goal.repair(&mut reference, &weights, calibration, B)
        .unwrap();
    let (params, want) = (download(&engine).0, download(&reference).0);
    assert_close(&format!("{name} REPAIRed children"), &params, &want, 1e-4);
}

/// Bad calls are errors, not panics, and leave the population as it was.
fn refusals<E: Engine>(make: Make<'_, E>, spec: &ModelSpec) {
    let (mut engine, _) = pair(make, spec, 51);
    let before = download(&engine);
    assert!(engine.upload(&[0.0; 3], &[0.0; 3]).is_err());
    assert!(engine
        .forward(Input::PerMember(&[0.0; 5]), Mode::Train)
        .is_err());
    assert!(engine.backward(&[0.0; 2]).is_err());
    assert!(engine
        .apply(
            Rule::Gradual {
                weights: Weights::Uniform,
                alpha: 1.5
            },
            true
        )
        .is_err());
    assert!(engine.apply(Rule::Pairs(&[(0, 1)]), false).is_err());
    assert!(engine
        .apply(
            Rule::All {
                weights: Weights::Given(&[0.5, 0.6, 0.1])
            },
            false
        )
        .is_err());
    assert!(engine.average(Weights::Given(&[1.0])).is_err());
    assert_eq!(download(&engine), before);
    assert!(make(spec, 0, B).is_err() && make(spec, P, 0).is_err());
}
