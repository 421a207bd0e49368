//! Every path of every rule gives papa-core's bits, under a layout with a counter and on
//! lengths that leave a partial chunk.

use papa_core::layout::{Layout, TensorKind, TensorSpec};
use papa_core::population::Contiguous;
use papa_core::rng::Rng;
use papa_core::rules::{self as core_rules, papa2_scratch_len, Options, Weights};
use papa_cpu::{rules, Isa};

const P: usize = 5;
const SHAPES: [[usize; 1]; 3] = [[150], [1], [37]];
const KINDS: [TensorKind; 3] = [TensorKind::Weight, TensorKind::Counter, TensorKind::Bias];

fn tensors() -> Vec<TensorSpec<'static>> {
    let mut offset = 0;
    SHAPES
        .iter()
        .zip(KINDS)
        .map(|(shape, kind)| {
            let t = TensorSpec {
                name: "t",
                shape,
                offset,
                kind,
            };
            offset += shape[0];
            t
        })
        .collect()
}

fn population(n: usize) -> Vec<f32> {
    let mut rng = Rng::new(9);
    (0..P * n).map(|_| rng.uniform_f32() * 4.0 - 2.0).collect()
}

#[test]
fn every_path_gives_papa_cores_bits() {
    let tensors = tensors();
    let n: usize = SHAPES.iter().map(|s| s[0]).sum();
    let opts = Options {
        layout: Some(Layout::new(&tensors).unwrap()),
        check_finite: false,
    };
    let weights = [0.1, 0.2, 0.3, 0.15, 0.25];
    let pairs = [(0, 1), (2, 4), (1, 3), (0, 4), (2, 3)];
    let supported: Vec<Isa> = Isa::supported().collect();
    println!("paths on this CPU: {supported:?}");
    for isa in supported {
        let (mut want, mut got) = (population(n), population(n));
        let (mut pw, mut pg) = (
            Contiguous::new(&mut want[..], P).unwrap(),
            Contiguous::new(&mut got[..], P).unwrap(),
        );
        core_rules::gradual(&mut pw, Weights::Given(&weights), 0.7, &opts).unwrap();
        rules::gradual(isa, &mut pg, Weights::Given(&weights), 0.7, &opts).unwrap();
        core_rules::papa_all(&mut pw, Weights::Uniform, &opts).unwrap();
        rules::papa_all(isa, &mut pg, Weights::Uniform, &opts).unwrap();
        let mut scratch = vec![0.0; papa2_scratch_len(P, n)];
        core_rules::papa2(&mut pw, &pairs, &mut scratch, &opts).unwrap();
        rules::papa2(isa, &mut pg, &pairs, &mut scratch, &opts).unwrap();
        let (mut aw, mut ag) = (vec![0.0; n], vec![0.0; n]);
        let fresh = population(n);
        let fresh = Contiguous::new(&fresh[..], P).unwrap();
        core_rules::average(&fresh, Weights::Given(&weights), &mut aw, &opts).unwrap();
        rules::average(isa, &fresh, Weights::Given(&weights), &mut ag, &opts).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&want), bits(&got), "{isa}: rules");
        assert_eq!(bits(&aw), bits(&ag), "{isa}: average");
    }
}

#[test]
fn errors_are_papa_cores_on_every_path() {
    for isa in Isa::ALL {
        let mut buf = [0.0f32; 4];
        let mut pop = Contiguous::new(&mut buf[..], 2).unwrap();
        let err = rules::gradual(isa, &mut pop, Weights::Uniform, 1.5, &Options::default());
        assert_eq!(err, Err(papa_core::Error::AlphaOutOfRange { alpha: 1.5 }));
    }
}

#[test]
fn names_round_trip_and_unknown_paths_are_errors() {
    for isa in Isa::ALL {
        assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
    }
    assert!("sse9".parse::<Isa>().is_err());
    assert!(Isa::detect().is_supported());
    assert_eq!(Isa::Portable.checked(), Ok(Isa::Portable));
}
