//! The GPU engine on a GPU: papa-train's conformance suite unchanged, one training step of the
//! small CNN against the CPU engine (1e-4 relative per tensor norm, TF32 off), and the same
//! bits on a second run; and a single-rank NCCL communicator.
//!
//! Without a GPU each test prints `SKIP:` and passes; with `PAPA_REQUIRE_GPU=1` (the GPU
//! check script) a missing GPU fails instead.

#[path = "../../papa-train/tests/conformance/suite.rs"]
mod suite;

use papa_core::rng::Rng;
use papa_cuda::{CudaEngine, DevicePopulation, Gpu, Precision, Ranks};
use papa_model::zoo;
use papa_train::engine::{CpuEngine, Engine, EngineError};
use papa_train::model::{soft_cross_entropy, Input, Mode, ModelSpec};
use papa_train::optim::Sgd;
use std::sync::Arc;

mod gpu_common;
use gpu_common::gpu;

fn make(gpu: &Arc<Gpu>, spec: &ModelSpec, p: usize, b: usize) -> Result<CudaEngine, EngineError> {
    CudaEngine::new(gpu, spec, p, b, Precision::Fp32).map_err(|e| EngineError::Device(Box::new(e)))
}

#[test]
fn the_gpu_engine_conforms() {
    let Some(gpu) = gpu() else { return };
    println!("GPU engine on {}", gpu.name());
    suite::conformance(&|spec, p, b| make(&gpu, spec, p, b));
}

/// One step: forward, soft cross-entropy, backward, SGD; the logits, gradients, parameters
/// and momentum after it.
fn step(engine: &mut impl Engine, x: &[f32], targets: &[f32]) -> Vec<Vec<f32>> {
    let spec = engine.spec().clone();
    let p = engine.population();
    let logits = engine
        .forward(Input::PerMember(x), Mode::Train)
        .unwrap()
        .to_vec();
    let (mut d, mut losses) = (vec![0.0; logits.len()], vec![0.0; p]);
    soft_cross_entropy(&logits, targets, spec.classes(), &mut d, &mut losses).unwrap();
    let grads = engine.backward(&d).unwrap().to_vec();
    engine.sgd_step(&Sgd::default(), 0.05).unwrap();
    let len = p * spec.len();
    let (mut params, mut velocity) = (vec![0.0; len], vec![0.0; len]);
    engine.download(&mut params, &mut velocity).unwrap();
    vec![logits, grads, params, velocity]
}

/// `|a - b| / |b|` over each tensor of each member (the logits as one tensor per member).
fn worst_relative(spec: &ModelSpec, what: usize, a: &[f32], b: &[f32], p: usize) -> f64 {
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let rel = |x: &[f32], y: &[f32]| {
        let diff: Vec<f32> = x.iter().zip(y).map(|(x, y)| x - y).collect();
        norm(&diff) / norm(y).max(1e-30)
    };
    if what == 0 {
        let per = a.len() / p;
        return (0..p)
            .map(|m| rel(&a[m * per..][..per], &b[m * per..][..per]))
            .fold(0.0, f64::max);
    }
    let n = spec.len();
    let mut worst = 0.0f64;
    for m in 0..p {
        for t in spec.tensors() {
            let r = m * n + t.offset..m * n + t.offset + t.shape.iter().product::<usize>();
            if norm(&b[r.clone()]) > 0.0 {
                worst = worst.max(rel(&a[r.clone()], &b[r]));
            }
        }
    }
    worst
}

#[test]
fn one_step_of_the_small_cnn_matches_the_cpu_engine() {
    let Some(gpu) = gpu() else { return };
    let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10).unwrap();
    let (p, b, n) = (4, 64, spec.len());
    let rng = Rng::new(7);
    let mut params = vec![0.0; p * n];
    for (j, member) in params.chunks_mut(n).enumerate() {
        spec.init_member(&mut rng.fork(j as u64), member).unwrap();
    }
    let mut data = rng.fork(100);
    let x: Vec<f32> = (0..p * b * spec.input_len())
        .map(|_| data.uniform_f32())
        .collect();
    let mut targets = vec![0.0; p * b * 10];
    for (i, row) in targets.chunks_mut(10).enumerate() {
        row[(i * 7 + 3) % 10] = 1.0;
    }
    let velocity = vec![0.0; p * n];
    let mut cpu = CpuEngine::new(&spec, p, b).unwrap();
    cpu.upload(&params, &velocity).unwrap();
    let want = step(&mut cpu, &x, &targets);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut engine = make(&gpu, &spec, p, b).unwrap();
        engine.upload(&params, &velocity).unwrap();
        runs.push(step(&mut engine, &x, &targets));
    }
    let names = ["logits", "gradients", "parameters", "momentum"];
    for (i, name) in names.iter().enumerate() {
        let worst = worst_relative(&spec, i, &runs[0][i], &want[i], p);
        println!("cnn-s step, {name}: worst relative difference per tensor {worst:.2e}");
        assert!(worst <= 1e-4, "{name}: {worst:.2e} > 1e-4");
        let same = runs[0][i]
            .iter()
            .zip(&runs[1][i])
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{name}: a second run gave other bits");
    }
}

/// A single-rank NCCL communicator (one GPU can hold one rank only): the gather of the
/// members is a copy of them, in order, and shapes that do not fit are refused.
#[test]
fn a_single_rank_gathers_its_members() {
    let Some(gpu) = gpu() else { return };
    // NCCL is a library beside the GPU: its absence is a skip even where the GPU is required
    // (scripts/gpu-check.sh links the wheel's libnccl.so.2 as the libnccl.so cudarc loads).
    let ranks = match Ranks::new(std::slice::from_ref(&gpu)) {
        Ok(ranks) => ranks,
        Err(e) => {
            println!("SKIP: no NCCL: {e}");
            return;
        }
    };
    assert_eq!(ranks.len(), 1);
    let host: Vec<f32> = (0..3 * 5).map(|i| i as f32 * 0.5 - 2.0).collect();
    let local = DevicePopulation::from_host(&gpu, &host, 3).unwrap();
    let mut full = DevicePopulation::zeros(&gpu, 3, 5).unwrap();
    ranks.gather(&[&local], &mut [&mut full]).unwrap();
    let mut back = vec![0.0; 3 * 5];
    full.download(&mut back).unwrap();
    assert_eq!(back, host);
    let mut wrong = DevicePopulation::zeros(&gpu, 2, 5).unwrap();
    assert!(ranks.gather(&[&local], &mut [&mut wrong]).is_err());
    println!("NCCL, one rank: the gathered population is the members, in order");
}
