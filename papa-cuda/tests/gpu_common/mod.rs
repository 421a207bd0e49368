//! Shared by the GPU tests (tests/device.rs, tests/engine.rs): the GPU, or a `SKIP:` line.

use papa_cuda::Gpu;
use std::sync::Arc;

/// GPU 0; without one `None` after a `SKIP:` line, or a panic when `PAPA_REQUIRE_GPU` is set
/// (the GPU check script).
pub fn gpu() -> Option<Arc<Gpu>> {
    match Gpu::new(0) {
        Ok(gpu) => Some(gpu),
        Err(e) if std::env::var_os("PAPA_REQUIRE_GPU").is_some() => {
            panic!("PAPA_REQUIRE_GPU is set but there is no usable GPU: {e}")
        }
        Err(e) => {
            println!("SKIP: no GPU: {e}");
            None
        }
    }
}
