//! The conformance suite (tests/conformance/suite.rs) on papa-train's own engines.

#[path = "conformance/suite.rs"]
mod suite;

use papa_cpu::Isa;
use papa_train::engine::{CpuEngine, Reference};
use suite::conformance;

#[test]
fn cpu_engine_conforms_on_every_cpu_path() {
    for isa in Isa::supported() {
        println!("CPU engine on the {isa} path");
        conformance(&|spec, p, b| CpuEngine::with_isa(spec, p, b, isa));
    }
}

#[test]
fn the_reference_conforms_to_itself() {
    // The suite's own sanity: the reference against itself must pass exactly.
    conformance(&|spec, p, b| Reference::new(spec, p, b));
}
