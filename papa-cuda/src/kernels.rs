//! The kernels: CUDA C in `kernels/rules.cu` (the rules and metrics) and `kernels/train.cu`
//! (the GPU engine's layers and optimizer), compiled as one module, and the PTX that runs,
//! committed beside them as `kernels/rules.ptx`.
//!
//! The PTX is NVRTC 12.9's output for [`ARCH`] with [`options`] (PTX ISA 8.8, which the
//! CUDA 12.9 and later drivers load; a newer NVRTC's PTX would be refused by an older
//! driver). The device machine needs no compiler, only the driver. `tests/compile.rs`
//! compiles the source again wherever NVRTC can be found, checks both with `ptxas`, and
//! fails when the committed PTX is stale (`PAPA_WRITE_PTX=1` rewrites it).

use crate::{probe, Error};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

/// The kernels' CUDA C source: the rules, then the training kernels.
pub const SOURCE: &str = concat!(
    include_str!("../kernels/rules.cu"),
    include_str!("../kernels/train.cu")
);

/// The committed PTX of [`SOURCE`], loaded by [`Gpu::new`](crate::Gpu::new).
pub const PTX: &str = include_str!("../kernels/rules.ptx");

/// The architecture the PTX is compiled for (Hopper: H100, H200; newer GPUs JIT it).
pub const ARCH: &str = "sm_90";

/// Every kernel of [`SOURCE`], each loaded by name.
pub const NAMES: [&str; 23] = [
    "papa_average",
    "papa_all",
    "papa_gradual",
    "papa_pairs",
    "papa_diversity_partials",
    "papa_sum_partials",
    "train_transpose",
    "train_im2col",
    "train_col2im",
    "train_bias_fill",
    "train_channel_partials",
    "train_reduce_partials",
    "train_scatter_sums",
    "train_bn_train_stats",
    "train_bn_count",
    "train_bn_eval_stats",
    "train_bn_apply",
    "train_bn_backward",
    "train_relu",
    "train_relu_backward",
    "train_maxpool",
    "train_maxpool_backward",
    "train_sgd",
];

/// NVRTC's options: [`ARCH`], and no contraction of a multiply and an add into an FMA
/// (papa-core rounds both; the kernels' intrinsics already forbid it, this keeps any other
/// expression honest too).
pub fn options() -> CompileOptions {
    CompileOptions {
        arch: Some(ARCH),
        fmad: Some(false),
        name: Some("rules.cu".into()),
        ..Default::default()
    }
}

/// Compiles [`SOURCE`] with NVRTC into PTX text; the library is probed first, so a machine
/// without NVRTC gets [`Error::NoLibrary`].
///
/// ```
/// match papa_cuda::kernels::compile() {
///     Ok(ptx) => assert!(ptx.contains(".entry papa_gradual")),
///     Err(e) => println!("no NVRTC here: {e}"),
/// }
/// ```
pub fn compile() -> Result<String, Error> {
    probe::nvrtc()?;
    let ptx =
        compile_ptx_with_opts(SOURCE, options()).map_err(|e| Error::Compile(e.to_string()))?;
    Ok(ptx.to_src())
}

#[cfg(test)]
mod tests {
    use super::SOURCE;

    /// The limits the host and the kernels share are the same numbers on both sides.
    #[test]
    fn the_source_shares_the_hosts_limits() {
        let members = format!("#define MAX_MEMBERS {}", crate::MAX_MEMBERS);
        assert!(SOURCE.contains(&members), "rules.cu lacks `{members}`");
        let threads = format!(
            "#define REDUCE_THREADS {}",
            crate::population::REDUCE_THREADS
        );
        assert!(SOURCE.contains(&threads), "rules.cu lacks `{threads}`");
    }
}
