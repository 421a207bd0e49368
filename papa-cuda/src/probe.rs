//! Checks, before cudarc is touched, that the libraries it will load are there and export
//! every function papa-cuda makes it call.
//!
//! cudarc 0.19 (dynamic loading) opens a library on its first call into it and looks each
//! function up on that function's first call, panicking when either is missing. So papa-cuda
//! opens the library itself, with the names in the order cudarc tries them
//! ([`cudarc::get_lib_name_candidates`]): the first that loads is the one cudarc will get in
//! this process. Every function papa-cuda's calls reach is then looked up; only when all are
//! there does cudarc run. The handle stays open for the life of the process, so a library
//! loaded by path ([`NVRTC_ENV`]) is the one cudarc later finds by name.

use crate::Error;
use std::ffi::c_int;
use std::sync::OnceLock;

/// The CUDA driver functions that papa-cuda's calls into cudarc reach (context, stream,
/// events, memory, module and launch), under the names cudarc 0.19 looks up with the
/// `cuda-13000` feature.
pub const DRIVER_SYMBOLS: &[&str] = &[
    "cuInit",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetAttribute",
    "cuDeviceGetName",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxGetCurrent",
    "cuCtxSetCurrent",
    "cuCtxSynchronize",
    "cuStreamSynchronize",
    "cuStreamWaitEvent",
    "cuEventCreate",
    "cuEventRecord",
    "cuEventSynchronize",
    "cuEventQuery",
    "cuEventElapsedTime_v2",
    "cuEventDestroy_v2",
    "cuMemAllocAsync",
    "cuMemFreeAsync",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemsetD8Async",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuMemcpyDtoDAsync_v2",
    "cuModuleLoadData",
    "cuModuleGetFunction",
    "cuModuleUnload",
    "cuLaunchKernel",
];

/// The NVRTC functions that compiling the kernels reaches (`nvrtcVersion` is papa-cuda's own
/// call, to name the compiler).
pub const NVRTC_SYMBOLS: &[&str] = &[
    "nvrtcVersion",
    "nvrtcCreateProgram",
    "nvrtcCompileProgram",
    "nvrtcGetProgramLogSize",
    "nvrtcGetProgramLog",
    "nvrtcGetPTXSize",
    "nvrtcGetPTX",
    "nvrtcDestroyProgram",
];

/// An environment variable naming an NVRTC library file to use (e.g. the one of the
/// `nvidia-cuda-nvrtc-cu12` wheel, `.../nvidia/cuda_nvrtc/lib/libnvrtc.so.12`), loaded before
/// the names cudarc searches.
pub const NVRTC_ENV: &str = "PAPA_NVRTC_LIB";

/// A library that loads and exports every function papa-cuda calls, kept open.
#[derive(Debug)]
pub struct Library {
    name: String,
    lib: libloading::Library,
}

impl Library {
    /// The name it was loaded by.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A failed probe, kept for later calls.
#[derive(Clone, Debug)]
enum Failure {
    NoLibrary {
        what: &'static str,
        tried: String,
    },
    MissingSymbol {
        library: String,
        symbol: &'static str,
    },
}

impl From<&Failure> for Error {
    fn from(failure: &Failure) -> Self {
        match failure.clone() {
            Failure::NoLibrary { what, tried } => Error::NoLibrary { what, tried },
            Failure::MissingSymbol { library, symbol } => Error::MissingSymbol { library, symbol },
        }
    }
}

/// The CUDA driver library (`libcuda.so.1` on Linux), checked once per process.
///
/// ```
/// // On a machine without the driver this is an error, not a panic.
/// match papa_cuda::probe::driver() {
///     Ok(lib) => println!("CUDA driver: {}", lib.name()),
///     Err(e) => println!("{e}"),
/// }
/// ```
pub fn driver() -> Result<&'static Library, Error> {
    static DRIVER: OnceLock<Result<Library, Failure>> = OnceLock::new();
    DRIVER
        .get_or_init(|| open("CUDA driver", &["cuda", "nvcuda"], None, DRIVER_SYMBOLS))
        .as_ref()
        .map_err(Error::from)
}

/// The NVRTC library (the file of [`NVRTC_ENV`] if set, else cudarc's search), checked once
/// per process.
pub fn nvrtc() -> Result<&'static Library, Error> {
    static NVRTC: OnceLock<Result<Library, Failure>> = OnceLock::new();
    // Held open so that cudarc's dlopen by name finds this very file (by its soname).
    static PRELOADED: OnceLock<Option<libloading::Library>> = OnceLock::new();
    NVRTC
        .get_or_init(|| {
            let path = std::env::var(NVRTC_ENV).ok().filter(|p| !p.is_empty());
            if let Some(path) = &path {
                // SAFETY: loading runs the library's initialisers; NVRTC's only set up its
                // own state.
                let lib = unsafe { libloading::Library::new(path) }.ok();
                if lib.is_none() {
                    return Err(Failure::NoLibrary {
                        what: "NVRTC",
                        tried: format!("{path} ({NVRTC_ENV})"),
                    });
                }
                PRELOADED.get_or_init(|| lib);
            }
            open("NVRTC", &["nvrtc"], path.as_deref(), NVRTC_SYMBOLS)
        })
        .as_ref()
        .map_err(Error::from)
}

/// The cuBLAS functions the GPU engine's calls into cudarc reach (handle, stream, math mode,
/// the strided-batched single-precision GEMM).
pub const CUBLAS_SYMBOLS: &[&str] = &[
    "cublasCreate_v2",
    "cublasDestroy_v2",
    "cublasSetStream_v2",
    "cublasSetMathMode",
    "cublasSgemmStridedBatched",
];

/// The cuBLAS library (`libcublas.so.13` or `.12`, ...), checked once per process.
pub fn cublas() -> Result<&'static Library, Error> {
    static CUBLAS: OnceLock<Result<Library, Failure>> = OnceLock::new();
    CUBLAS
        .get_or_init(|| open("cuBLAS", &["cublas"], None, CUBLAS_SYMBOLS))
        .as_ref()
        .map_err(Error::from)
}

/// The NCCL functions [`Ranks`](crate::Ranks) reaches through cudarc (communicators of one
/// process, the all-gather, groups, teardown).
pub const NCCL_SYMBOLS: &[&str] = &[
    "ncclCommInitAll",
    "ncclCommAbort",
    "ncclAllGather",
    "ncclGroupStart",
    "ncclGroupEnd",
];

/// The NCCL library (`libnccl.so.2`, ...), checked once per process.
pub fn nccl() -> Result<&'static Library, Error> {
    static NCCL: OnceLock<Result<Library, Failure>> = OnceLock::new();
    NCCL.get_or_init(|| open("NCCL", &["nccl"], None, NCCL_SYMBOLS))
        .as_ref()
        .map_err(Error::from)
}

/// The version of the NVRTC that [`nvrtc`] found, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32), Error> {
    let lib = nvrtc()?;
    // SAFETY: nvrtcVersion(int*, int*) -> nvrtcResult is NVRTC's documented signature, and the
    // symbol was found by `nvrtc`.
    let (mut major, mut minor) = (0, 0);
    let status = unsafe {
        let version = lib
            .lib
            .get::<unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int>("nvrtcVersion")
            .map_err(|_| Error::MissingSymbol {
                library: lib.name.clone(),
                symbol: "nvrtcVersion",
            })?;
        version(&mut major, &mut minor)
    };
    if status != 0 {
        return Err(Error::Compile(format!("nvrtcVersion returned {status}")));
    }
    Ok((major, minor))
}

/// Opens the first of cudarc's candidate names for `stems` that loads (after `preloaded`,
/// reported by its path when it is the one found), then looks up every symbol.
fn open(
    what: &'static str,
    stems: &[&str],
    preloaded: Option<&str>,
    symbols: &[&'static str],
) -> Result<Library, Failure> {
    let names: Vec<String> = stems
        .iter()
        .flat_map(|stem| cudarc::get_lib_name_candidates(stem))
        .collect();
    // SAFETY: as in `nvrtc`: loading runs the driver's or NVRTC's own initialisers.
    let found = names
        .iter()
        .find_map(|name| Some((name, unsafe { libloading::Library::new(name) }.ok()?)));
    let Some((name, lib)) = found else {
        return Err(Failure::NoLibrary {
            what,
            tried: summary(&names, stems[0]),
        });
    };
    let name = match preloaded {
        Some(path) => format!("{name}, with {NVRTC_ENV}={path} loaded first"),
        None => name.clone(),
    };
    check_symbols(&lib, &name, symbols)?;
    Ok(Library { name, lib })
}

/// The Linux names of `names` for `stem` (`libcuda.so`, `libcuda.so.1`, ...), and how many
/// others were tried.
fn summary(names: &[String], stem: &str) -> String {
    let mut plain: Vec<&str> = Vec::new();
    let prefix = format!("lib{stem}.so");
    for name in names {
        if name.starts_with(&prefix) && !plain.contains(&name.as_str()) {
            plain.push(name);
        }
    }
    let others = names.len() - plain.len();
    format!("{} (and {others} other names)", plain.join(", "))
}

/// The first of `symbols` that `lib` (loaded as `name`) lacks, as the failure.
fn check_symbols(
    lib: &libloading::Library,
    name: &str,
    symbols: &[&'static str],
) -> Result<(), Failure> {
    for &symbol in symbols {
        // SAFETY: only the address is looked up; nothing is called through this type.
        if unsafe { lib.get::<*const ()>(symbol) }.is_err() {
            return Err(Failure::MissingSymbol {
                library: name.to_string(),
                symbol,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// A library without one of the functions is refused, naming the function (libm stands
    /// in for a driver too old to export one).
    #[test]
    fn a_missing_function_is_named() {
        // SAFETY: the C math library has no initialiser to speak of.
        let Ok(lib) = (unsafe { libloading::Library::new("libm.so.6") }) else {
            println!("SKIP: no libm.so.6 here");
            return;
        };
        assert!(check_symbols(&lib, "libm.so.6", &["cos"]).is_ok());
        let failure = check_symbols(&lib, "libm.so.6", &["cos", "cuInit"]);
        let error = Error::from(&failure.expect_err("cuInit is not in libm"));
        assert_eq!(
            error.to_string(),
            "libm.so.6 lacks cuInit, which papa-cuda calls (too old a driver or NVRTC?)"
        );
    }

    #[test]
    fn no_library_names_what_was_tried() {
        let failure = open("CUDA driver", &["papa_no_such_lib"], None, DRIVER_SYMBOLS);
        let error = Error::from(&failure.expect_err("no such library"));
        let text = error.to_string();
        assert!(
            text.starts_with("no CUDA driver library: none of libpapa_no_such_lib.so, "),
            "{text}"
        );
        assert!(text.contains("libpapa_no_such_lib.so.1 (and "), "{text}");
    }
}
