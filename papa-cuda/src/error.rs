//! Every way papa-cuda can fail, as values: a machine without a GPU, a driver or its
//! libraries gets one of these, never a panic.

use cudarc::driver::DriverError;

/// Why papa-cuda refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No library of that kind could be loaded (no driver installed, or not on the search
    /// path).
    #[error("no {what} library: none of {tried} loads (install the NVIDIA driver or CUDA libraries, or put them on LD_LIBRARY_PATH)")]
    NoLibrary {
        /// Which library (`CUDA driver`, `NVRTC`).
        what: &'static str,
        /// The names tried, comma-separated.
        tried: String,
    },
    /// A library loaded but lacks a function papa-cuda calls (an older driver or NVRTC).
    #[error("{library} lacks {symbol}, which papa-cuda calls (too old a driver or NVRTC?)")]
    MissingSymbol {
        /// The library file.
        library: String,
        /// The missing function.
        symbol: &'static str,
    },
    /// The driver works but has no device of that ordinal.
    #[error("no CUDA device {ordinal}: the driver sees {count}")]
    NoDevice {
        /// The device asked for.
        ordinal: usize,
        /// Devices the driver sees.
        count: usize,
    },
    /// A driver call failed (e.g. CUDA_ERROR_NO_DEVICE from cuInit, out of memory, a PTX
    /// the driver refuses).
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
    /// A cuBLAS call failed.
    #[error("cuBLAS: {0}")]
    Blas(#[from] cudarc::cublas::result::CublasError),
    /// An NCCL call failed.
    #[error("NCCL: {0:?}")]
    Nccl(cudarc::nccl::result::NcclError),
    /// Ranks and populations that do not fit together.
    #[error("{0}")]
    Ranks(String),
    /// NVRTC refused the kernels' source.
    #[error("NVRTC: {0}")]
    Compile(String),
    /// A rule of papa-core refused its input (lengths, weights, pairs, alpha).
    #[error(transparent)]
    Core(#[from] papa_core::Error),
    /// More members than the kernels take.
    #[error("{members} members: papa-cuda's kernels take at most {max}")]
    TooManyMembers {
        /// Members asked for.
        members: usize,
        /// The limit.
        max: usize,
    },
    /// Columns for the diversity that reach past the end of a member.
    #[error("the columns reach entry {end} of members of {len} floats")]
    ColumnsOutOfRange {
        /// One past the last column listed.
        end: usize,
        /// Floats per member.
        len: usize,
    },
    /// Two device buffers of different GPUs (or contexts) in one operation.
    #[error("{what} lives on another GPU context than the population")]
    OtherGpu {
        /// The other buffer.
        what: &'static str,
    },
    /// More columns than one launch covers.
    #[error("{len} floats per member: papa-cuda's kernels take at most {max}")]
    TooLong {
        /// Floats per member asked for.
        len: usize,
        /// The limit.
        max: usize,
    },
}
