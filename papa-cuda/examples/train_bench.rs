//! Member-steps per second of the GPU engine on the small CNN (28 x 28 x 1, batch 128 per
//! member): forward, soft cross-entropy on the host, backward and SGD, at P = 1 to 64, TF32
//! off (`--tf32` allows it). One line per P; `PAPA_BENCH_STEPS` steps timed after 3 warm-up
//! steps (default 20).
//!
//! `cargo run --release -p papa-cuda --example train_bench [-- --tf32]`

use papa_core::rng::Rng;
use papa_cuda::{CudaEngine, Gpu, Precision};
use papa_model::zoo;
use papa_train::engine::Engine;
use papa_train::model::{soft_cross_entropy, Input, Mode, ModelSpec};
use papa_train::optim::Sgd;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let precision = if std::env::args().any(|a| a == "--tf32") {
        Precision::Tf32
    } else {
        Precision::Fp32
    };
    let steps: usize = std::env::var("PAPA_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let gpu = Gpu::new(0)?;
    let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10)?;
    let (b, n) = (128, spec.len());
    println!(
        "GPU engine, cnn-s, batch 128, {precision:?}, {}",
        gpu.name()
    );
    for p in [1, 2, 4, 8, 16, 32, 64] {
        let rng = Rng::new(1);
        let mut params = vec![0.0; p * n];
        for (j, member) in params.chunks_mut(n).enumerate() {
            spec.init_member(&mut rng.fork(j as u64), member)?;
        }
        let mut engine = CudaEngine::new(&gpu, &spec, p, b, precision)?;
        engine.upload(&params, &vec![0.0; p * n])?;
        let mut data = rng.fork(100);
        let x: Vec<f32> = (0..p * b * spec.input_len())
            .map(|_| data.uniform_f32())
            .collect();
        let mut targets = vec![0.0; p * b * 10];
        for (i, row) in targets.chunks_mut(10).enumerate() {
            row[i % 10] = 1.0;
        }
        let (mut d, mut losses) = (vec![0.0; p * b * 10], vec![0.0; p]);
        let mut one = |engine: &mut CudaEngine| -> Result<(), Box<dyn std::error::Error>> {
            let logits = engine.forward(Input::PerMember(&x), Mode::Train)?;
            soft_cross_entropy(logits, &targets, 10, &mut d, &mut losses)?;
            engine.backward_for_sgd(&d)?;
            engine.sgd_step(&Sgd::default(), 0.05)?;
            Ok(())
        };
        for _ in 0..3 {
            one(&mut engine)?;
        }
        gpu.synchronize()?;
        let start = Instant::now();
        for _ in 0..steps {
            one(&mut engine)?;
        }
        gpu.synchronize()?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "P = {p:2}: {:8.1} member-steps/s ({:.2} ms per step)",
            (p * steps) as f64 / secs,
            secs * 1e3 / steps as f64
        );
    }
    Ok(())
}
