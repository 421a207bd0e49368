//! One GPU: its context, the stream every launch goes to, and the kernels loaded from the
//! committed PTX.

use crate::{kernels, probe, Error};
use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;

/// The kernels of [`kernels::NAMES`], loaded.
#[derive(Debug)]
pub(crate) struct Functions {
    pub(crate) average: CudaFunction,
    pub(crate) all: CudaFunction,
    pub(crate) gradual: CudaFunction,
    pub(crate) pairs: CudaFunction,
    pub(crate) partials: CudaFunction,
    pub(crate) sum: CudaFunction,
}

/// A GPU ready to run papa-cuda's kernels. Every operation goes to its one stream, in
/// order, so results never depend on timing.
#[derive(Debug)]
pub struct Gpu {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) functions: Functions,
    /// The loaded PTX, for the GPU engine's kernels.
    pub(crate) module: Arc<CudaModule>,
    name: String,
}

impl Gpu {
    /// Opens device `ordinal` and loads the kernels. Without a driver, a library function
    /// or a device this is an [`Error`] ([`Error::NoLibrary`], [`Error::MissingSymbol`],
    /// [`Error::Driver`] with `CUDA_ERROR_NO_DEVICE`, [`Error::NoDevice`]), never a panic.
    ///
    /// ```
    /// match papa_cuda::Gpu::new(0) {
    ///     Ok(gpu) => println!("GPU: {}", gpu.name()),
    ///     Err(e) => println!("no GPU: {e}"),
    /// }
    /// ```
    pub fn new(ordinal: usize) -> Result<Arc<Self>, Error> {
        probe::driver()?;
        result::init()?;
        let count = usize::try_from(result::device::get_count()?).unwrap_or(0);
        if ordinal >= count {
            return Err(Error::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal)?;
        let module = ctx.load_module(Ptx::from_src(kernels::PTX))?;
        let load = |name: &str| module.load_function(name);
        let functions = Functions {
            average: load("papa_average")?,
            all: load("papa_all")?,
            gradual: load("papa_gradual")?,
            pairs: load("papa_pairs")?,
            partials: load("papa_diversity_partials")?,
            sum: load("papa_sum_partials")?,
        };
        Ok(Arc::new(Self {
            name: ctx.name()?,
            stream: ctx.default_stream(),
            functions,
            module,
        }))
    }

    /// The device's name (e.g. `NVIDIA H200`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until everything queued on the device has finished.
    pub fn synchronize(&self) -> Result<(), Error> {
        Ok(self.stream.synchronize()?)
    }

    /// The device time, in milliseconds, of the work `queue` puts on the stream: CUDA events
    /// recorded before and after it, so host overhead between launches is not counted unless
    /// it starves the device.
    pub fn time_ms(&self, queue: impl FnOnce() -> Result<(), Error>) -> Result<f32, Error> {
        let timed = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.stream.record_event(timed)?;
        queue()?;
        let end = self.stream.record_event(timed)?;
        Ok(start.elapsed_ms(&end)?)
    }
}
