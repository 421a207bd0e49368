//! Times every rule on a device population against the device-to-device copy of the same
//! buffer, measured in the same run (CUDA events around back-to-back launches).
//!
//! `rules_bench [--members P] [--len N] [--reps R] [--json FILE]` (default 10 x 11,190,000
//! floats, ResNet-18's size). An in-place rule moves what a copy moves (P x N floats read and
//! written), so its share of the copy's bandwidth is copy time / rule time; the average reads
//! P x N and writes N. Exits with 1 without a GPU (the reason printed).

use papa_core::rng::Rng;
use papa_core::rules::{draw_pairs, Weights};
use papa_cuda::{Counters, DevicePopulation, Error, Gpu};
use papa_train::engine::Rule;
use std::process::ExitCode;

/// The bar: every rule at 90% of the copy's bandwidth or more.
const BAR: f64 = 0.90;

struct Args {
    members: usize,
    len: usize,
    reps: usize,
    json: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        members: 10,
        len: 11_190_000,
        reps: 50,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--members" => args.members = number()?,
            "--len" => args.len = number()?,
            "--reps" => args.reps = number()?.max(1),
            "--json" => args.json = Some(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// One timed operation: milliseconds per launch and bytes it moves.
struct Timing {
    name: &'static str,
    ms: f64,
    bytes: f64,
}

impl Timing {
    fn gbps(&self) -> f64 {
        self.bytes / (self.ms * 1e-3) / 1e9
    }
}

/// Milliseconds per call of `op`: 3 untimed calls, then `reps` timed back to back.
fn time(gpu: &Gpu, reps: usize, mut op: impl FnMut() -> Result<(), Error>) -> Result<f64, Error> {
    for _ in 0..3 {
        op()?;
    }
    gpu.synchronize()?;
    let ms = gpu.time_ms(|| (0..reps).try_for_each(|_| op()))?;
    Ok(f64::from(ms) / reps as f64)
}

fn run(args: &Args) -> Result<Vec<Timing>, Error> {
    let gpu = Gpu::new(0)?;
    let (p, n) = (args.members, args.len);
    println!(
        "{}: {p} members x {n} floats ({:.1} MB), {} launches per figure",
        gpu.name(),
        (p * n * 4) as f64 / 1e6,
        args.reps
    );
    let mut rng = Rng::new(17);
    let host: Vec<f32> = (0..p * n).map(|_| rng.uniform_f32() - 0.5).collect();
    let mut pop = DevicePopulation::from_host(&gpu, &host, p)?;
    drop(host);
    let mut copy = DevicePopulation::zeros(&gpu, p, n)?;
    let mut soup = DevicePopulation::zeros(&gpu, 1, n)?;
    let none = Counters::none(&gpu)?;
    let weights: Vec<f32> = vec![1.0 / p as f32; p];
    let mut pairs = vec![(0, 0); p];
    draw_pairs(&mut Rng::new(5), p, &mut pairs)?;
    let moved = (2 * p * n * 4) as f64;
    let mut timings = Vec::new();
    let copy_ms = time(&gpu, args.reps, || copy.copy_from(&pop))?;
    timings.push(Timing {
        name: "device copy",
        ms: copy_ms,
        bytes: moved,
    });
    let rules: [(&'static str, Rule<'_>); 5] = [
        (
            "gradual (uniform)",
            Rule::Gradual {
                weights: Weights::Uniform,
                alpha: 0.99,
            },
        ),
        (
            "gradual (weights)",
            Rule::Gradual {
                weights: Weights::Given(&weights),
                alpha: 0.99,
            },
        ),
        (
            "PAPA-all",
            Rule::All {
                weights: Weights::Uniform,
            },
        ),
        (
            "PAPA-all (weights)",
            Rule::All {
                weights: Weights::Given(&weights),
            },
        ),
        ("PAPA-2", Rule::Pairs(&pairs)),
    ];
    for (name, rule) in rules {
        let ms = time(&gpu, args.reps, || pop.apply(rule, &none))?;
        timings.push(Timing {
            name,
            ms,
            bytes: moved,
        });
    }
    let ms = time(&gpu, args.reps, || {
        pop.average_into(Weights::Uniform, &none, &mut soup)
    })?;
    timings.push(Timing {
        name: "average",
        ms,
        bytes: ((p + 1) * n * 4) as f64,
    });
    Ok(timings)
}

fn report(args: &Args, timings: &[Timing]) -> bool {
    let copy = timings[0].gbps();
    println!(
        "{:<20} {:>9} {:>9} {:>8}",
        "operation", "ms", "GB/s", "of copy"
    );
    let mut all_pass = true;
    for t in timings {
        let share = t.gbps() / copy;
        let pass = t.name == "device copy" || share >= BAR;
        all_pass &= pass;
        println!(
            "{:<20} {:>9.3} {:>9.0} {:>7.1}%{}",
            t.name,
            t.ms,
            t.gbps(),
            100.0 * share,
            if pass { "" } else { "  < 90%" }
        );
    }
    if let Some(path) = &args.json {
        let ops: Vec<String> = timings
            .iter()
            .map(|t| {
                format!(
                    "{{\"name\": \"{}\", \"ms\": {}, \"gbps\": {}, \"of_copy\": {}}}",
                    t.name,
                    t.ms,
                    t.gbps(),
                    t.gbps() / copy
                )
            })
            .collect();
        let json = format!(
            "{{\"members\": {}, \"len\": {}, \"reps\": {}, \"ops\": [{}]}}\n",
            args.members,
            args.len,
            args.reps,
            ops.join(", ")
        );
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("cannot write {path}: {e}");
            return false;
        }
    }
    println!(
        "{}",
        if all_pass {
            "every rule at >= 90% of the copy's bandwidth"
        } else {
            "FAIL: a rule under 90% of the copy's bandwidth"
        }
    );
    all_pass
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rules_bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(timings) if report(&args, &timings) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rules_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
