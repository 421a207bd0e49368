//! The rule kernels' arithmetic against papa-core without a GPU: kernels/rules.cu compiled for
//! the host by a C++ compiler (tests/emulate/host.cpp: CUDA's names mocked, every thread run
//! in turn, no FMA contraction), run on the inputs papa-core gets; every rule must give
//! papa-core's bits. Catches what the GPU tests would (an index, a policy, an operation
//! order), on every CI run. `CXX` names the compiler (default `c++`); without one: `SKIP:`.

use papa_core::layout::{Layout, Policy};
use papa_core::population::Contiguous;
use papa_core::rng::Rng;
use papa_core::rules::{self, Options, Weights};
use papa_core::schedule::effective_alpha;
use std::path::Path;
use std::process::Command;

mod case;
mod common;
use case::Case;

fn f32s(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn the_rule_kernels_give_papa_core_bits_on_the_host() {
    let dir = std::env::temp_dir().join(format!("papa-cuda-emulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let built = common::compile("host", &dir);
    let Some(exe) = common::or_skip(&built) else {
        return;
    };
    // Sizes around the 256-column blocks, and populations whose staged blocks shrink (P > 48).
    let cases = [
        (1, 1),
        (2, 63),
        (3, 1000),
        (5, 4097),
        (10, 10_000),
        (4, 64),
        (7, 129),
        (49, 515),
        (64, 700),
        (256, 300),
    ];
    for (seed, &(p, n)) in cases.iter().enumerate() {
        let mut rng = Rng::new(seed as u64);
        let population = Case::drawn(&mut rng, p, n);
        let pop = &population.host;
        let specs = population.specs();
        let layout = Layout::new(&specs).unwrap();
        let opts = Options {
            layout: Some(layout),
            check_finite: false,
        };
        let raw: Vec<f64> = (0..p).map(|_| 0.1 + rng.uniform_f64()).collect();
        let sum: f64 = raw.iter().sum();
        let weights: Vec<f32> = raw.iter().map(|x| (x / sum) as f32).collect();
        let mut pairs = vec![(0, 0); p];
        rules::draw_pairs(&mut Rng::new(seed as u64 + 7), p, &mut pairs).unwrap();
        let alpha = effective_alpha(0.99, 0.013, 0.1).unwrap();
        let max: Vec<u64> = layout
            .segments()
            .filter(|(r, policy)| *policy == Policy::Max && !r.is_empty())
            .flat_map(|(r, _)| [r.start as u64, r.end as u64])
            .collect();
        let mut input = Vec::new();
        input.extend((p as u64).to_le_bytes());
        input.extend((n as u64).to_le_bytes());
        pop.iter().for_each(|x| input.extend(x.to_le_bytes()));
        weights.iter().for_each(|x| input.extend(x.to_le_bytes()));
        pairs.iter().for_each(|&(a, b)| {
            input.extend((a as u64).to_le_bytes());
            input.extend((b as u64).to_le_bytes());
        });
        input.extend(((max.len() / 2) as u64).to_le_bytes());
        max.iter().for_each(|r| input.extend(r.to_le_bytes()));
        input.extend(alpha.to_le_bytes());
        let case = dir.join(format!("case{seed}"));
        std::fs::create_dir_all(&case).unwrap();
        std::fs::write(case.join("in.bin"), &input).unwrap();
        let status = Command::new(exe)
            .arg(case.join("in.bin"))
            .arg(&case)
            .status()
            .unwrap();
        assert!(status.success(), "the emulator failed on P = {p}, N = {n}");

        for (given, w) in [(0, Weights::Uniform), (1, Weights::Given(&weights))] {
            let mut x = pop.clone();
            rules::gradual(
                &mut Contiguous::new(&mut x[..], p).unwrap(),
                w,
                alpha,
                &opts,
            )
            .unwrap();
            assert!(
                same_bits(&x, &f32s(&case.join(format!("gradual{given}.bin")))),
                "gradual {w:?}, P = {p}, N = {n}"
            );
            let mut x = pop.clone();
            rules::papa_all(&mut Contiguous::new(&mut x[..], p).unwrap(), w, &opts).unwrap();
            assert!(
                same_bits(&x, &f32s(&case.join(format!("all{given}.bin")))),
                "PAPA-all {w:?}, P = {p}, N = {n}"
            );
            let mut out = vec![0.0; n];
            rules::average(&Contiguous::new(&pop[..], p).unwrap(), w, &mut out, &opts).unwrap();
            assert!(
                same_bits(&out, &f32s(&case.join(format!("average{given}.bin")))),
                "average {w:?}, P = {p}, N = {n}"
            );
        }
        let mut x = pop.clone();
        let mut scratch = vec![0.0; rules::papa2_scratch_len(p, n)];
        rules::papa2(
            &mut Contiguous::new(&mut x[..], p).unwrap(),
            &pairs,
            &mut scratch,
            &opts,
        )
        .unwrap();
        assert!(
            same_bits(&x, &f32s(&case.join("pairs.bin"))),
            "PAPA-2, P = {p}, N = {n}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "{} populations: every rule kernel, run on the host, gives papa-core's bits",
        cases.len()
    );
}
