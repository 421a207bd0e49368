//! The kernels compile for sm_90 with NVRTC, ptxas accepts the PTX, and the committed PTX is
//! NVRTC's output for the committed source.
//!
//! NVRTC comes from `PAPA_NVRTC_LIB` (a file) or the library search path, ptxas from
//! `PAPA_PTXAS` or `PATH`; without them the checks print `SKIP:` and pass (CI installs the
//! `nvidia-cuda-nvrtc-cu12` and `nvidia-cuda-nvcc-cu12` 12.9 wheels and runs them).
//! `PAPA_WRITE_PTX=1` rewrites kernels/rules.ptx from the source.

use papa_cuda::{kernels, probe};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The NVRTC release that wrote the committed PTX (its header names it).
const COMMITTED_BY: &str = "Cuda compilation tools, release 12.9";

fn ptx_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/rules.ptx")
}

/// The committed PTX is in step with the source and runs through ptxas.
#[test]
fn kernels_compile_for_sm_90_and_the_committed_ptx_is_current() {
    let write = std::env::var_os("PAPA_WRITE_PTX").is_some();
    if !write {
        check_names(kernels::PTX);
        ptxas("committed", kernels::PTX);
    }
    let fresh = match kernels::compile() {
        Ok(ptx) => ptx,
        Err(e) => {
            assert!(!write && !required(), "NVRTC is required here: {e}");
            println!(
                "SKIP: NVRTC: {e} (set {}=/path/to/libnvrtc.so.12)",
                probe::NVRTC_ENV
            );
            return;
        }
    };
    let (major, minor) = probe::nvrtc_version().expect("nvrtcVersion");
    let library = probe::nvrtc().expect("probed").name().to_string();
    println!(
        "NVRTC {major}.{minor} ({library}): {} bytes of PTX for {}",
        fresh.len(),
        kernels::ARCH
    );
    check_names(&fresh);
    match ptxas_release() {
        // A ptxas older than the NVRTC cannot read its newer PTX: a mismatch of the machine's
        // tools, not of the kernels (the committed PTX was checked above).
        Some(release) if release < (major, minor) => println!(
            "SKIP: ptxas {}.{} is older than NVRTC {major}.{minor}; the fresh PTX was not assembled",
            release.0, release.1
        ),
        _ => ptxas("fresh", &fresh),
    }
    if write {
        std::fs::write(ptx_path(), &fresh).expect("write kernels/rules.ptx");
        println!("wrote {}", ptx_path().display());
        return;
    }
    if !fresh.contains(COMMITTED_BY) {
        println!("SKIP: the committed PTX is {COMMITTED_BY}'s; this NVRTC's output differs in its header, so it was only compiled and checked");
        return;
    }
    assert!(
        fresh == kernels::PTX,
        "kernels/rules.ptx is stale: PAPA_WRITE_PTX=1 cargo test -p papa-cuda --test compile rewrites it"
    );
}

/// Whether a missing NVRTC or ptxas fails the test (CI, where it installed them).
fn required() -> bool {
    std::env::var_os("PAPA_REQUIRE_CUDA_TOOLS").is_some()
}

/// Every kernel papa-cuda loads is an entry of the PTX.
fn check_names(ptx: &str) {
    for name in kernels::NAMES {
        assert!(
            ptx.contains(&format!(".entry {name}(")),
            "{name} missing from the PTX"
        );
    }
    assert!(ptx.contains(".target sm_90"), "PTX not for sm_90");
    // papa-core rounds every product and sum: a fused multiply-add would change the bits.
    assert!(!ptx.contains("fma."), "the PTX fuses a multiply and an add");
}

/// The ptxas to use.
fn ptxas_path() -> String {
    std::env::var("PAPA_PTXAS").unwrap_or_else(|_| "ptxas".into())
}

/// ptxas's CUDA release `(major, minor)`, from `ptxas --version` ("... release 12.9, ...").
fn ptxas_release() -> Option<(i32, i32)> {
    let out = Command::new(ptxas_path()).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let release = text.split("release ").nth(1)?.split(',').next()?;
    let (major, minor) = release.split_once('.')?;
    Some((major.trim().parse().ok()?, minor.trim().parse().ok()?))
}

/// `ptxas -arch=sm_90` on `ptx`, when ptxas is found.
fn ptxas(what: &str, ptx: &str) {
    let ptxas = ptxas_path();
    let dir = std::env::temp_dir().join(format!("papa-cuda-ptxas-{}-{what}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("rules.ptx");
    std::fs::write(&input, ptx).expect("write PTX");
    let output = Command::new(&ptxas)
        .args(["-arch=sm_90", "-v", "-o"])
        .arg(dir.join("rules.cubin"))
        .arg(&input)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    match output {
        Err(e) if required() => panic!("ptxas is required here: {ptxas}: {e}"),
        Err(e) => println!("SKIP: ptxas ({ptxas}): {e} (set PAPA_PTXAS)"),
        Ok(out) => {
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "ptxas refused the {what} PTX:\n{log}");
            // Registers and spills per kernel, for the record.
            for line in log
                .lines()
                .filter(|l| l.contains("registers") || l.contains("spill"))
            {
                println!("ptxas ({what}): {}", line.trim());
            }
            let spills = log
                .lines()
                .filter(|l| l.contains("spill stores") && !l.contains(" 0 bytes spill stores"));
            assert_eq!(spills.count(), 0, "a kernel spills registers:\n{log}");
        }
    }
}
