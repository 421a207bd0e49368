//! Without a GPU, a driver or the CUDA libraries, papa-cuda answers with an error, never a
//! panic (cudarc would panic on a missing library or function: the probe runs first).

use papa_cuda::{kernels, probe, Error, Gpu};

fn unusable(e: &Error) -> bool {
    matches!(
        e,
        Error::NoLibrary { .. }
            | Error::MissingSymbol { .. }
            | Error::Driver(_)
            | Error::NoDevice { .. }
    )
}

#[test]
fn without_a_usable_gpu_the_constructor_returns_an_error() {
    match Gpu::new(0) {
        Ok(gpu) => println!("SKIP: a GPU is usable here ({})", gpu.name()),
        Err(e) => {
            assert!(unusable(&e), "{e:?}");
            println!("no GPU, as an error: {e}");
        }
    }
}

#[test]
fn a_device_the_driver_does_not_have_is_an_error() {
    match Gpu::new(4096) {
        Ok(gpu) => panic!("device 4096 opened: {}", gpu.name()),
        Err(Error::NoDevice { ordinal, count }) => {
            assert_eq!((ordinal, count < 4096), (4096, true))
        }
        Err(e) => assert!(unusable(&e), "{e:?}"),
    }
}

#[test]
fn an_nvrtc_file_that_does_not_load_is_named() {
    // The only test of this binary that reaches NVRTC: the probe's answer is kept per process.
    std::env::set_var(probe::NVRTC_ENV, "/nonexistent/libnvrtc.so.12");
    match kernels::compile() {
        Err(Error::NoLibrary {
            what: "NVRTC",
            tried,
        }) => {
            assert!(tried.contains("/nonexistent/libnvrtc.so.12"), "{tried}")
        }
        other => panic!("expected NoLibrary, got {other:?}"),
    }
}

#[test]
fn cublas_is_probed_not_loaded_blindly() {
    // The GPU engine probes cuBLAS before cudarc calls into it: here it is either there with
    // every function the engine calls, or an error naming what is missing.
    match probe::cublas() {
        Ok(lib) => println!("SKIP: cuBLAS is here ({})", lib.name()),
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::NoLibrary { what: "cuBLAS", .. } | Error::MissingSymbol { .. }
                ),
                "{e:?}"
            );
            println!("no cuBLAS, as an error: {e}");
        }
    }
}

#[test]
fn nccl_is_probed_not_loaded_blindly() {
    match probe::nccl() {
        Ok(lib) => println!("SKIP: NCCL is here ({})", lib.name()),
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::NoLibrary { what: "NCCL", .. } | Error::MissingSymbol { .. }
                ),
                "{e:?}"
            );
            println!("no NCCL, as an error: {e}");
        }
    }
}
