//! papa-cuda's kernels against papa-core on the same inputs, on a GPU: every rule bit for bit
//! (and within the bar, 1e-6 of each tensor's norm), the same bits on every launch,
//! the diversity metrics to rounding, and the population half of the CPU engine.
//!
//! Without a GPU each test prints `SKIP:` and passes; with `PAPA_REQUIRE_GPU=1` (the GPU
//! check script) a missing GPU fails instead.

use papa_core::diversity::{distances_to_mean, mean_pairwise_cosine};
use papa_core::layout::{Layout, TensorKind, TensorSpec};
use papa_core::population::Contiguous;
use papa_core::rng::Rng;
use papa_core::rules::{self, Options, Weights};
use papa_core::schedule::effective_alpha;
use papa_cuda::{Columns, Counters, DeviceMembers, DevicePopulation, Error};
use papa_model::zoo;
use papa_train::engine::{CpuEngine, Engine, Rule};
use papa_train::model::ModelSpec;

mod case;
mod gpu_common;
use case::{values, Case};
use gpu_common::gpu;

/// papa-core's result of `rule` on `host`.
fn on_cpu(host: &[f32], members: usize, rule: Rule<'_>, opts: &Options<'_>) -> Vec<f32> {
    let mut out = host.to_vec();
    let mut pop = Contiguous::new(&mut out[..], members).unwrap();
    match rule {
        Rule::Gradual { weights, alpha } => rules::gradual(&mut pop, weights, alpha, opts).unwrap(),
        Rule::All { weights } => rules::papa_all(&mut pop, weights, opts).unwrap(),
        Rule::Pairs(pairs) => {
            let mut scratch = vec![0.0; rules::papa2_scratch_len(members, host.len() / members)];
            rules::papa2(&mut pop, pairs, &mut scratch, opts).unwrap()
        }
    }
    out
}

/// The bar: per member and tensor, |gpu - cpu| <= 1e-6 * |cpu| (L2 norms).
fn assert_close(gpu: &[f32], cpu: &[f32], len: usize, specs: &[TensorSpec<'_>], what: &str) {
    for (j, (g, c)) in gpu.chunks(len).zip(cpu.chunks(len)).enumerate() {
        for t in specs {
            let r = t.range();
            let diff: f64 = g[r.clone()]
                .iter()
                .zip(&c[r.clone()])
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum();
            let norm: f64 = c[r.clone()].iter().map(|&b| f64::from(b).powi(2)).sum();
            assert!(
                diff.sqrt() <= 1e-6 * norm.sqrt(),
                "{what}: member {j}, tensor at {}: {} > 1e-6 x {}",
                t.offset,
                diff.sqrt(),
                norm.sqrt()
            );
        }
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn weights_for(members: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let raw: Vec<f64> = (0..members).map(|_| 0.1 + rng.uniform_f64()).collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|w| (w / sum) as f32).collect()
}

#[test]
fn every_rule_gives_papa_core_bits_on_every_launch() {
    let Some(gpu) = gpu() else { return };
    for (seed, &(members, len)) in [
        (1, 1),
        (2, 63),
        (3, 1000),
        (5, 4097),
        (10, 10_000),
        (4, 64),
        (7, 129),
    ]
    .iter()
    .enumerate()
    {
        let case = Case::drawn(&mut Rng::new(seed as u64), members, len);
        let specs = case.specs();
        let layout = Layout::new(&specs).unwrap();
        let opts = Options {
            layout: Some(layout),
            check_finite: false,
        };
        let counters = Counters::new(&gpu, Some(&layout)).unwrap();
        let given = weights_for(members, seed as u64 + 100);
        let mut pairs = vec![(0, 0); members];
        rules::draw_pairs(&mut Rng::new(seed as u64 + 7), members, &mut pairs).unwrap();
        let lr_scaled = effective_alpha(0.99, 0.013, 0.1).unwrap();
        let rules = [
            (
                "gradual, uniform",
                Rule::Gradual {
                    weights: Weights::Uniform,
                    alpha: 0.99,
                },
            ),
            (
                "gradual, lr-scaled alpha",
                Rule::Gradual {
                    weights: Weights::Uniform,
                    alpha: lr_scaled,
                },
            ),
            (
                "gradual, given weights",
                Rule::Gradual {
                    weights: Weights::Given(&given),
                    alpha: 0.9,
                },
            ),
            (
                "PAPA-all, uniform",
                Rule::All {
                    weights: Weights::Uniform,
                },
            ),
            (
                "PAPA-all, given weights",
                Rule::All {
                    weights: Weights::Given(&given),
                },
            ),
            ("PAPA-2", Rule::Pairs(&pairs)),
        ];
        let mut pop = DevicePopulation::from_host(&gpu, &case.host, members).unwrap();
        for (name, rule) in rules {
            let what = format!("{name}, P = {members}, N = {len}");
            let cpu = on_cpu(&case.host, members, rule, &opts);
            let mut first = None;
            for launch in 0..3 {
                pop.upload(&case.host).unwrap();
                pop.apply(rule, &counters).unwrap();
                let out = pop.to_host().unwrap();
                assert_close(&out, &cpu, len, &specs, &what);
                assert!(
                    same_bits(&out, &cpu),
                    "{what}: not papa-core's bits (launch {launch})"
                );
                match &first {
                    None => first = Some(out),
                    Some(f) => assert!(same_bits(f, &out), "{what}: launch {launch} differs"),
                }
            }
        }
        for weights in [Weights::Uniform, Weights::Given(&given)] {
            let mut cpu = vec![0.0; len];
            rules::average(
                &Contiguous::new(&case.host[..], members).unwrap(),
                weights,
                &mut cpu,
                &opts,
            )
            .unwrap();
            pop.upload(&case.host).unwrap();
            let out = pop.average(weights, &counters).unwrap();
            assert!(
                same_bits(&out, &cpu),
                "average {weights:?}, P = {members}, N = {len}"
            );
        }
        println!("P = {members}, N = {len}: every rule and the average equal papa-core bit for bit, 3 launches each");
    }
}

#[test]
fn diversity_equals_papa_core_to_rounding_and_repeats_its_bits() {
    let Some(gpu) = gpu() else { return };
    for &(members, len) in &[(1, 5), (2, 100), (3, 70_000), (10, 300_001)] {
        let host = values(&mut Rng::new(len as u64), members * len);
        let ranges = [0..len / 3, len / 2..len];
        let pop = DevicePopulation::from_host(&gpu, &host, members).unwrap();
        let columns = Columns::new(&gpu, &ranges).unwrap();
        let gpu_div = pop.diversity(&columns).unwrap();
        let again = pop.diversity(&columns).unwrap();
        assert_eq!(gpu_div, again, "diversity differs between launches");
        let chosen: Vec<f32> = host
            .chunks(len)
            .flat_map(|m| {
                ranges
                    .iter()
                    .flat_map(move |r| m[r.clone()].iter().copied())
            })
            .collect();
        let view = Contiguous::new(&chosen[..], members).unwrap();
        let mut distances = vec![0.0; members];
        distances_to_mean(&view, Weights::Uniform, &mut distances).unwrap();
        let mut gram = vec![0.0; members * members];
        let cosine = mean_pairwise_cosine(&view, &mut gram).unwrap();
        for (g, c) in gpu_div.distance_to_mean.iter().zip(&distances) {
            assert!(
                (g - c).abs() <= 1e-10 * c.abs().max(1e-300),
                "distance {g} vs papa-core {c}"
            );
        }
        assert!(
            (gpu_div.mean_pairwise_cosine - cosine).abs() <= 1e-10,
            "cosine {} vs {cosine}",
            gpu_div.mean_pairwise_cosine
        );
        println!("P = {members}, N = {len}: diversity within 1e-10 of papa-core, same bits twice");
    }
}

#[test]
fn the_device_members_equal_the_cpu_engine() {
    let Some(gpu) = gpu() else { return };
    let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10).unwrap();
    let (p, n) = (5, spec.len());
    let mut rng = Rng::new(42);
    let mut params = values(&mut rng, p * n);
    let velocity = values(&mut rng, p * n);
    // Counters (num_batches_tracked) as the engine keeps them.
    for t in spec
        .tensor_specs()
        .iter()
        .filter(|t| t.kind == TensorKind::Counter)
    {
        for j in 0..p {
            params[j * n + t.offset] = (j * 10) as f32;
        }
    }
    let mut cpu = CpuEngine::new(&spec, p, 1).unwrap();
    let mut dev = DeviceMembers::new(&gpu, &spec, p).unwrap();
    let mut pairs = vec![(0, 0); p];
    rules::draw_pairs(&mut Rng::new(3), p, &mut pairs).unwrap();
    let given = weights_for(p, 9);
    let rules = [
        Rule::Gradual {
            weights: Weights::Uniform,
            alpha: 0.99,
        },
        Rule::All {
            weights: Weights::Given(&given),
        },
        Rule::Pairs(&pairs),
    ];
    for rule in rules {
        for momentum in [false, true] {
            cpu.upload(&params, &velocity).unwrap();
            dev.upload(&params, &velocity).unwrap();
            cpu.apply(rule, momentum).unwrap();
            dev.apply(rule, momentum).unwrap();
            let (mut cp, mut cv, mut dp, mut dv) = (
                vec![0.0; p * n],
                vec![0.0; p * n],
                vec![0.0; p * n],
                vec![0.0; p * n],
            );
            cpu.download(&mut cp, &mut cv).unwrap();
            dev.download(&mut dp, &mut dv).unwrap();
            assert!(
                same_bits(&cp, &dp) && same_bits(&cv, &dv),
                "{rule:?}, momentum {momentum}"
            );
        }
    }
    cpu.upload(&params, &velocity).unwrap();
    dev.upload(&params, &velocity).unwrap();
    assert!(same_bits(
        &cpu.average(Weights::Given(&given)).unwrap(),
        &dev.average(Weights::Given(&given)).unwrap()
    ));
    let (c, d) = (cpu.diversity().unwrap(), dev.diversity().unwrap());
    for (x, y) in c.distance_to_mean.iter().zip(&d.distance_to_mean) {
        assert!((x - y).abs() <= 1e-10 * x.abs());
    }
    assert!((c.mean_pairwise_cosine - d.mean_pairwise_cosine).abs() <= 1e-10);
    println!("cnn-s, P = {p}: every rule with and without momentum and the soup equal the CPU engine's bits");
}

#[test]
fn refusals_are_papa_core_errors() {
    let Some(gpu) = gpu() else { return };
    let mut pop = DevicePopulation::from_host(&gpu, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3).unwrap();
    let none = Counters::none(&gpu).unwrap();
    let bad = pop.apply(
        Rule::All {
            weights: Weights::Given(&[0.5, 0.2, 0.2]),
        },
        &none,
    );
    assert!(
        matches!(
            bad,
            Err(Error::Core(papa_core::Error::WeightsDoNotSumToOne { .. }))
        ),
        "{bad:?}"
    );
    let bad = pop.apply(Rule::Pairs(&[(0, 3), (0, 1), (1, 2)]), &none);
    assert!(
        matches!(
            bad,
            Err(Error::Core(papa_core::Error::PairOutOfRange {
                child: 0,
                parent: 3,
                ..
            }))
        ),
        "{bad:?}"
    );
    let bad = pop.apply(
        Rule::Gradual {
            weights: Weights::Uniform,
            alpha: 1.5,
        },
        &none,
    );
    assert!(
        matches!(
            bad,
            Err(Error::Core(papa_core::Error::AlphaOutOfRange { .. }))
        ),
        "{bad:?}"
    );
    assert!(pop.upload(&[0.0; 5]).is_err());
    assert_eq!(
        pop.to_host().unwrap(),
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "a refused rule changed the population"
    );
    let bad = pop.diversity(&Columns::new(&gpu, &[0..1, 1..3]).unwrap());
    assert!(
        matches!(bad, Err(Error::ColumnsOutOfRange { end: 3, len: 2 })),
        "{bad:?}"
    );
    let mut with_nan = vec![1.0f32; 6];
    with_nan[4] = f32::NAN;
    pop.upload(&with_nan).unwrap();
    let bad = pop.diversity(&Columns::all(&gpu, 2).unwrap());
    assert!(
        matches!(
            bad,
            Err(Error::Core(papa_core::Error::NonFinite {
                member: 2,
                index: 0
            }))
        ),
        "{bad:?}"
    );
}
