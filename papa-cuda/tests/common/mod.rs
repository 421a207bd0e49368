//! Shared by the emulator tests (tests/emulate.rs, tests/emulate_train.rs): a kernel source's
//! host build.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles `tests/emulate/{name}.cpp` for the host into `dir/{name}` with `CXX` (default
/// `c++`), no FMA contraction; or says why not (`failed:` in the message: the compiler ran
/// and refused the source).
pub fn compile(name: &str, dir: &Path) -> Result<PathBuf, String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let exe = dir.join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/emulate/{name}.cpp"));
    let out = Command::new(&cxx)
        .args(["-O2", "-ffp-contract=off", "-std=c++17", "-o"])
        .arg(&exe)
        .arg(&source)
        .output()
        .map_err(|e| format!("{cxx}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cxx} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(exe)
}

/// The emulator `built`, or `None` after a `SKIP:` line when there is no compiler; panics
/// when a compiler exists but fails (a broken kernel source, not a missing tool).
pub fn or_skip(built: &Result<PathBuf, String>) -> Option<&Path> {
    match built {
        Ok(exe) => Some(exe),
        Err(e) => {
            assert!(!e.contains("failed:"), "{e}");
            println!("SKIP: no C++ compiler: {e}");
            None
        }
    }
}
