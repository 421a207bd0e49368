//! A user-owned training loop that links papa-core: a population of logistic-regression
//! members, each in its own `Vec<f32>`, trained on Fashion-MNIST with PAPA gradual applied
//! through papa-core's slice-of-members API.
//!
//! Run: `cargo run --release -p papa-examples --bin logistic-population`

use papa_core::population::Members;
use papa_core::rng::Rng;
use papa_core::rules::{average, gradual, Options, Weights};
use papa_core::schedule::{effective_alpha, Schedule};
use papa_train::data::{self, Dataset};
use papa_train::model::argmax;

const MEMBERS: usize = 4;
const EPOCHS: usize = 3;
const BATCH: usize = 64;
const LR: f32 = 0.05;

/// Logistic regression: `classes x features` weights, then `classes` biases.
struct Shape {
    features: usize,
    classes: usize,
}

impl Shape {
    fn len(&self) -> usize {
        (self.features + 1) * self.classes
    }

    /// Class scores of one sample.
    fn logits(&self, w: &[f32], x: &[f32], out: &mut [f32]) {
        let (weights, bias) = w.split_at(self.features * self.classes);
        for (k, o) in out.iter_mut().enumerate() {
            let row = &weights[k * self.features..(k + 1) * self.features];
            *o = bias[k] + row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
        }
    }

    fn accuracy(&self, w: &[f32], data: &Dataset) -> f32 {
        let mut scores = vec![0.0; self.classes];
        let hits = (0..data.len())
            .filter(|&i| {
                self.logits(w, data.sample(i).unwrap_or(&[]), &mut scores);
                argmax(&scores) == usize::from(data.labels[i])
            })
            .count();
        100.0 * hits as f32 / data.len() as f32
    }

    /// One SGD step of softmax cross-entropy on a batch.
    fn sgd_step(&self, w: &mut [f32], data: &Dataset, batch: &[u32], grad: &mut [f32]) {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut p = vec![0.0; self.classes];
        let fc = self.features * self.classes;
        for &i in batch {
            let x = data.sample(i as usize).unwrap_or(&[]);
            self.logits(w, x, &mut p);
            let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            p.iter_mut().for_each(|v| *v = (*v - max).exp());
            let sum: f32 = p.iter().sum();
            for (k, pk) in p.iter().enumerate() {
                let d = pk / sum - f32::from(u8::from(k == usize::from(data.labels[i as usize])));
                grad[fc + k] += d;
                for (g, &xi) in grad[k * self.features..(k + 1) * self.features]
                    .iter_mut()
                    .zip(x)
                {
                    *g += d * xi;
                }
            }
        }
        let scale = LR / batch.len() as f32;
        w.iter_mut()
            .zip(grad.iter())
            .for_each(|(w, g)| *w -= scale * g);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut splits = data::load("fashion-mnist", 0.1, 0)?;
    splits.normalize()?;
    let (train, test) = (&splits.train, &splits.test);
    let shape = Shape {
        features: train.sample_len(),
        classes: train.classes,
    };

    // The user's own storage: one Vec per member, each from its own seed.
    let mut members: Vec<Vec<f32>> = (0..MEMBERS)
        .map(|j| {
            let mut rng = Rng::new(j as u64);
            let bound = 1.0 / (shape.features as f32).sqrt();
            (0..shape.len())
                .map(|_| (2.0 * rng.uniform_f32() - 1.0) * bound)
                .collect()
        })
        .collect();
    let mut grad = vec![0.0; shape.len()];
    let steps_per_epoch = data::batches_per_epoch(train.len(), BATCH);
    let every = Schedule::every_steps(10)?;
    let total = (EPOCHS * steps_per_epoch) as f32;
    let mut step = 0u64;
    for epoch in 0..EPOCHS {
        let orders: Vec<Vec<u32>> = (0..MEMBERS)
            .map(|j| data::epoch_order(7, j as u64, epoch as u64, train.len() as u32))
            .collect();
        for s in 0..steps_per_epoch {
            for (j, w) in members.iter_mut().enumerate() {
                shape.sgd_step(w, train, &orders[j][s * BATCH..(s + 1) * BATCH], &mut grad);
            }
            step += 1;
            if every.due_after_step(step) {
                // PAPA gradual with lr scaling (a linearly decaying lr, for the example).
                let lr_now = LR * (1.0 - step as f32 / total);
                let alpha = effective_alpha(0.9, lr_now, LR)?;
                gradual(
                    &mut Members::new(&mut members[..])?,
                    Weights::Uniform,
                    alpha,
                    &Options::default(),
                )?;
            }
        }
        let accs: Vec<String> = members
            .iter()
            .map(|w| format!("{:.2}", shape.accuracy(w, test)))
            .collect();
        println!("epoch {epoch}: members' test accuracy {}", accs.join(", "));
    }
    let mut averaged = vec![0.0; shape.len()];
    average(
        &Members::new(&members[..])?,
        Weights::Uniform,
        &mut averaged,
        &Options::default(),
    )?;
    let mean: f32 = members.iter().map(|w| shape.accuracy(w, test)).sum::<f32>() / MEMBERS as f32;
    println!("members' mean test accuracy: {mean:.2}%");
    println!(
        "averaged model test accuracy: {:.2}%",
        shape.accuracy(&averaged, test)
    );
    Ok(())
}
