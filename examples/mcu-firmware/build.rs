//! Puts memory.x on the linker's path and rebuilds when the embedded files change.
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    for var in ["PAPA_MODEL", "PAPA_SAMPLES", "PAPA_LABELS"] {
        println!("cargo:rerun-if-env-changed={var}");
        if let Ok(path) = std::env::var(var) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
