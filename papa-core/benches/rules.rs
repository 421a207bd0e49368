//! PAPA rules against a plain copy of the same bytes, single-threaded.
//!
//! Run: `cargo bench -p papa-core --bench rules` (add `-- --quick` for a short run).
//! Sizes: 10 members x 11.19M floats (ResNet-18) and 10 x 0.42M (the small CNN).
//! Besides criterion's own report, the end prints each rule's time as a ratio to the copy
//! measured in the same run: the share of copy bandwidth a rule reaches. Every rule runs on
//! each path this CPU supports (papa-cpu's run-time dispatch), the fastest first: the one a
//! default build takes.

use criterion::{black_box, Criterion, Throughput};
use papa_core::population::Contiguous;
use papa_core::rng::Rng;
use papa_core::rules::{draw_pairs, papa2_scratch_len, Options, Weights};
use papa_cpu::rules::{average, gradual, papa2, papa_all};
use papa_cpu::Isa;
use std::time::{Duration, Instant};

const MEMBERS: usize = 10;
const SIZES: [(&str, usize); 2] = [
    ("resnet18 10x11.19M", 11_189_962),
    ("cnn-s 10x0.42M", 422_026),
];

/// The operations compared, each on a population buffer `pop` (and a copy target `dst`).
struct Workload {
    pop: Vec<f32>,
    dst: Vec<f32>,
    out: Vec<f32>,
    scratch: Vec<f32>,
    pairs: Vec<(usize, usize)>,
    weights: Vec<f32>,
    isa: Isa,
}

type Op = fn(&mut Workload);

const OPS: [(&str, Op); 5] = [
    ("copy", |w| w.dst.copy_from_slice(&w.pop)),
    ("gradual", |w| {
        let mut pop = Contiguous::new(&mut w.pop[..], MEMBERS).unwrap();
        gradual(w.isa, &mut pop, Weights::Uniform, 0.99, &Options::default()).unwrap()
    }),
    ("papa-all", |w| {
        let mut pop = Contiguous::new(&mut w.pop[..], MEMBERS).unwrap();
        papa_all(w.isa, &mut pop, Weights::Uniform, &Options::default()).unwrap()
    }),
    ("weighted average", |w| {
        let pop = Contiguous::new(&w.pop[..], MEMBERS).unwrap();
        average(
            w.isa,
            &pop,
            Weights::Given(&w.weights),
            &mut w.out,
            &Options::default(),
        )
        .unwrap()
    }),
    ("papa-2", |w| {
        let mut pop = Contiguous::new(&mut w.pop[..], MEMBERS).unwrap();
        papa2(
            w.isa,
            &mut pop,
            &w.pairs,
            &mut w.scratch,
            &Options::default(),
        )
        .unwrap()
    }),
];

fn workload(n: usize) -> Workload {
    let mut rng = Rng::new(1);
    let pop: Vec<f32> = (0..MEMBERS * n).map(|_| rng.uniform_f32() - 0.5).collect();
    let mut pairs = vec![(0, 0); MEMBERS];
    draw_pairs(&mut rng, MEMBERS, &mut pairs).unwrap();
    Workload {
        dst: vec![0.0; pop.len()],
        pop,
        out: vec![0.0; n],
        scratch: vec![0.0; papa2_scratch_len(MEMBERS, n)],
        pairs,
        weights: (1..=MEMBERS)
            .map(|j| (2 * j) as f32 / (MEMBERS * (MEMBERS + 1)) as f32)
            .collect(),
        isa: Isa::Portable,
    }
}

/// Best of `runs` timings: the least disturbed run, the usual figure for bandwidth.
fn best_time(w: &mut Workload, op: Op, runs: usize) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            op(black_box(&mut *w));
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // The fastest path first: the one a default build runs.
    let mut paths: Vec<Isa> = Isa::supported().collect();
    paths.reverse();
    let mut summary = Vec::new();
    for (label, n) in SIZES {
        let mut w = workload(n);
        let bytes = (2 * MEMBERS * n * std::mem::size_of::<f32>()) as u64;
        for &isa in &paths {
            w.isa = isa;
            let mut group = criterion.benchmark_group(format!("{label} {isa}"));
            group.throughput(Throughput::Bytes(bytes));
            for (name, op) in OPS {
                group.bench_function(name, |b| b.iter(|| op(black_box(&mut w))));
            }
            group.finish();
            let runs = if n > 1_000_000 { 7 } else { 50 };
            let times: Vec<Duration> = OPS
                .iter()
                .map(|&(_, op)| best_time(&mut w, op, runs))
                .collect();
            let copy = times[0];
            for ((name, _), t) in OPS.into_iter().zip(times) {
                summary.push((
                    label,
                    isa,
                    name,
                    t,
                    copy.as_secs_f64() / t.as_secs_f64(),
                    bytes as f64 / t.as_secs_f64() / 1e9,
                ));
            }
        }
    }
    println!(
        "\n| size | path | operation | best time | share of copy bandwidth | GB/s (read+write of P*N) |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, isa, name, t, ratio, gbs) in summary {
        println!(
            "| {label} | {isa} | {name} | {:.2} ms | {:.0}% | {gbs:.1} |",
            t.as_secs_f64() * 1e3,
            ratio * 100.0
        );
    }
}
