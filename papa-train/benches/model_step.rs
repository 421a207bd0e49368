//! Member-steps per second of the small CNN (forward + soft cross-entropy + backward, batch
//! 128 per member) for P = 1 and P = 8 on the global rayon pool.
//! Run with `cargo bench -p papa-train --bench model_step [-- P...]`.

use papa_core::rng::Rng;
use papa_model::zoo;
use papa_train::model::{soft_cross_entropy, Input, Mode, ModelSpec, Network};
use std::time::{Duration, Instant};

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![1, 8] } else { sizes };
    let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10).expect("CnnS spec");
    let batch = 128;
    for p in sizes {
        let n = spec.len();
        let mut params = vec![0.0; p * n];
        let rng = Rng::new(0);
        for (j, member) in params.chunks_mut(n).enumerate() {
            spec.init_member(&mut rng.fork(j as u64), member)
                .expect("member length");
        }
        let mut data = Rng::new(1);
        let input: Vec<f32> = (0..p * batch * spec.input_len())
            .map(|_| data.uniform_f32())
            .collect();
        let mut targets = vec![0.0; p * batch * 10];
        targets
            .chunks_mut(10)
            .for_each(|row| row[data.below(10) as usize] = 1.0);
        let mut net = Network::new(&spec, p, batch).expect("network");
        let mut dlogits = vec![0.0; p * batch * 10];
        let mut losses = vec![0.0; p];
        let mut step = |params: &mut Vec<f32>| {
            let logits = net
                .forward(params, Input::PerMember(&input), Mode::Train)
                .expect("forward");
            soft_cross_entropy(logits, &targets, 10, &mut dlogits, &mut losses).expect("loss");
            net.backward(params, &dlogits).expect("backward");
        };
        step(&mut params);
        let (start, mut times) = (Instant::now(), Vec::new());
        while start.elapsed() < Duration::from_secs(8) || times.len() < 3 {
            let t = Instant::now();
            step(&mut params);
            times.push(t.elapsed().as_secs_f64());
        }
        let secs = start.elapsed().as_secs_f64();
        // The fastest step is less sensitive to other load on the machine than the mean.
        let best = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "P = {p}: {:.1} ms per population step, {:.1} member-steps/s (best step {:.1} ms, \
             {:.1} member-steps/s; {} threads)",
            1e3 * secs / times.len() as f64,
            (times.len() * p) as f64 / secs,
            1e3 * best,
            p as f64 / best,
            rayon::current_num_threads()
        );
    }
}
