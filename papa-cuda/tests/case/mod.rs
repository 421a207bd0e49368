//! Shared by tests/device.rs and tests/emulate.rs: the populations the rules run on.

use papa_core::layout::{TensorKind, TensorSpec};
use papa_core::rng::Rng;

/// Values of both signs over several magnitudes, a few exact zeros.
pub fn values(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| match i % 97 {
            0 => 0.0,
            _ => (rng.uniform_f32() - 0.5) * 10f32.powi((rng.below(7) as i32) - 3),
        })
        .collect()
}

/// A layout of `len` floats with counters in it (a BatchNorm network's shape of segments):
/// weight, counter, bias, counter, the rest.
fn tensors(len: usize) -> Vec<(usize, TensorKind)> {
    assert!(len >= 10);
    let w = len / 2;
    vec![
        (w, TensorKind::Weight),
        (1, TensorKind::Counter),
        (3, TensorKind::Bias),
        (1, TensorKind::Counter),
        (len - w - 5, TensorKind::Other),
    ]
}

/// A population of `members` x `len` floats from [`values`], its counters (at [`tensors`]'
/// counter offsets, when `len >= 10`) holding step counts.
pub struct Case {
    pub host: Vec<f32>,
    shapes: Vec<[usize; 1]>,
    kinds: Vec<TensorKind>,
}

impl Case {
    /// Draws one from `rng` (the values, then the counters).
    pub fn drawn(rng: &mut Rng, members: usize, len: usize) -> Self {
        let mut host = values(rng, members * len);
        let parts = if len >= 10 {
            tensors(len)
        } else {
            vec![(len, TensorKind::Weight)]
        };
        // Counters hold step counts, as BatchNorm's num_batches_tracked.
        let mut offset = 0;
        for &(n, kind) in &parts {
            if kind == TensorKind::Counter {
                for j in 0..members {
                    host[j * len + offset] = (100 + rng.below(50)) as f32;
                }
            }
            offset += n;
        }
        Self {
            host,
            shapes: parts.iter().map(|&(n, _)| [n]).collect(),
            kinds: parts.iter().map(|&(_, k)| k).collect(),
        }
    }

    /// The layout's tensors.
    pub fn specs(&self) -> Vec<TensorSpec<'_>> {
        let mut offset = 0;
        self.shapes
            .iter()
            .zip(&self.kinds)
            .map(|(shape, &kind)| {
                let spec = TensorSpec {
                    name: "t",
                    shape,
                    offset,
                    kind,
                };
                offset += shape[0];
                spec
            })
            .collect()
    }
}
