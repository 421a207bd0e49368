//! Puts the memory map on the linker's path as memory.x (`PAPA_MEMORY`, default
//! memory-mps2-an386.x: QEMU's machine; memory-stm32f446.x links for a real part, and the
//! link fails when the firmware does not fit it) and rebuilds when the embedded files
//! change. No file here is named memory.x: ld would find it before this one.
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let memory = std::env::var("PAPA_MEMORY").unwrap_or_else(|_| "memory-mps2-an386.x".into());
    std::fs::copy(&memory, out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={memory}");
    for var in ["PAPA_MODEL", "PAPA_SAMPLES", "PAPA_LABELS", "PAPA_MEMORY"] {
        println!("cargo:rerun-if-env-changed={var}");
        if let Ok(path) = std::env::var(var) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
