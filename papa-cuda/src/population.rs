//! The device population: P members of N floats in one device buffer, member-major (row j is
//! member j, papa-core's `Contiguous` layout), and papa-core's rules and diversity metrics
//! applied to it by kernels.

use crate::{Error, Gpu};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg};
use papa_core::diversity::{distances_to_mean, mean_pairwise_cosine};
use papa_core::layout::{Layout, Policy};
use papa_core::population::{Contiguous, Population};
use papa_core::rules::{self, Options, Weights};
use papa_core::LengthMismatch;
use papa_train::engine::{Diversity, Rule};
use std::ops::Range;
use std::sync::Arc;

/// The most members a device population holds: PAPA-2 stages a column of every member in
/// 48 KiB of shared memory (32 columns of 256 members per block at the limit).
pub const MAX_MEMBERS: usize = 256;

/// The most floats per member: a launch covers at most 2^31 - 1 blocks of 32 columns.
pub const MAX_LEN: usize = (i32::MAX as usize) * 32;

/// Threads (columns) per block of the rules' kernels.
const THREADS: u32 = 256;
/// Threads per block of the reductions: `REDUCE_THREADS` of rules.cu.
pub(crate) const REDUCE_THREADS: u32 = 256;
/// The most blocks of the diversity's first pass. Fixed by the column count alone, so the
/// summation order, and the bits, are the same on every GPU.
const PARTIAL_BLOCKS: usize = 1024;
/// Shared memory a block may use without opting in.
const SHARED_BYTES: usize = 48 * 1024;

/// The entries of a member's vector that take the max instead of the average (counters,
/// from a papa-core [`Layout`]), as sorted ranges on the device.
#[derive(Debug)]
pub struct Counters {
    ranges: CudaSlice<u64>,
    count: u32,
    /// The layout's member length, checked against the population's as papa-core does.
    len: Option<usize>,
}

impl Counters {
    /// The counter ranges of `layout`; with none, every entry is averaged (papa-core's rules
    /// without a layout).
    pub fn new(gpu: &Gpu, layout: Option<&Layout<'_>>) -> Result<Self, Error> {
        let ranges: Vec<u64> = layout
            .into_iter()
            .flat_map(|layout| layout.segments())
            .filter(|(range, policy)| *policy == Policy::Max && !range.is_empty())
            .flat_map(|(range, _)| [range.start as u64, range.end as u64])
            .collect();
        Ok(Self {
            count: (ranges.len() / 2) as u32,
            ranges: upload_nonempty(gpu, &ranges)?,
            len: layout.map(|layout| layout.len()),
        })
    }

    /// Every entry averaged.
    pub fn none(gpu: &Gpu) -> Result<Self, Error> {
        Self::new(gpu, None)
    }

    fn check(&self, member_len: usize) -> Result<(), Error> {
        if let Some(len) = self.len {
            check_len("layout", member_len, len)?;
        }
        Ok(())
    }
}

/// A list of ranges of a member's vector (the trainable entries, say), on the device: the
/// columns the diversity metrics look at.
#[derive(Debug)]
pub struct Columns {
    ranges: Vec<Range<usize>>,
    /// One past the last column listed: checked against the population's length, since the
    /// kernel reads every listed column.
    end: usize,
    starts: CudaSlice<u64>,
    prefix: CudaSlice<u64>,
    total: usize,
}

impl Columns {
    /// The columns of `ranges`, in order (they must lie within a member and not overlap,
    /// as a model's trainable ranges do).
    pub fn new(gpu: &Gpu, ranges: &[Range<usize>]) -> Result<Self, Error> {
        let ranges: Vec<Range<usize>> = ranges.iter().filter(|r| !r.is_empty()).cloned().collect();
        let starts: Vec<u64> = ranges.iter().map(|r| r.start as u64).collect();
        let mut prefix = vec![0u64];
        for r in &ranges {
            prefix.push(prefix[prefix.len() - 1] + r.len() as u64);
        }
        Ok(Self {
            total: ranges.iter().map(|r| r.len()).sum(),
            end: ranges.iter().map(|r| r.end).max().unwrap_or(0),
            starts: upload_nonempty(gpu, &starts)?,
            prefix: upload_nonempty(gpu, &prefix)?,
            ranges,
        })
    }

    /// Every column of members of `len` floats.
    pub fn all(gpu: &Gpu, len: usize) -> Result<Self, Error> {
        Self::new(gpu, std::slice::from_ref(&(0..len)))
    }
}

/// P members of N floats in one device buffer.
///
/// ```no_run
/// use papa_core::rules::Weights;
/// use papa_cuda::{Counters, DevicePopulation, Gpu};
/// use papa_train::engine::Rule;
///
/// let gpu = Gpu::new(0)?;
/// let mut pop = DevicePopulation::from_host(&gpu, &[0.0, 4.0], 2)?;
/// let rule = Rule::Gradual { weights: Weights::Uniform, alpha: 0.75 };
/// pop.apply(rule, &Counters::none(&gpu)?)?;
/// assert_eq!(pop.to_host()?, [0.5, 3.5]); // papa-core's bits
/// # Ok::<(), papa_cuda::Error>(())
/// ```
#[derive(Debug)]
pub struct DevicePopulation {
    gpu: Arc<Gpu>,
    /// `members * len` floats (one more when that is 0: the driver allocates no 0 bytes).
    buf: CudaSlice<f32>,
    members: usize,
    len: usize,
}

impl DevicePopulation {
    /// A population of `members` zeroed members of `len` floats.
    pub fn zeros(gpu: &Arc<Gpu>, members: usize, len: usize) -> Result<Self, Error> {
        if members == 0 {
            return Err(papa_core::Error::EmptyPopulation.into());
        }
        if members > MAX_MEMBERS {
            return Err(Error::TooManyMembers {
                members,
                max: MAX_MEMBERS,
            });
        }
        if len > MAX_LEN {
            return Err(Error::TooLong { len, max: MAX_LEN });
        }
        let buf = gpu.stream.alloc_zeros::<f32>((members * len).max(1))?;
        Ok(Self {
            gpu: gpu.clone(),
            buf,
            members,
            len,
        })
    }

    /// A population holding a copy of `host`, `members` rows of equal length.
    pub fn from_host(gpu: &Arc<Gpu>, host: &[f32], members: usize) -> Result<Self, Error> {
        let len = Contiguous::new(host, members)?.member_len();
        let mut pop = Self::zeros(gpu, members, len)?;
        pop.upload(host)?;
        Ok(pop)
    }

    /// The device buffer, `members x len` floats (the GPU engine's kernels and GEMMs read and
    /// write it in place).
    pub(crate) fn buf(&self) -> &CudaSlice<f32> {
        &self.buf
    }

    /// The device buffer, writable.
    pub(crate) fn buf_mut(&mut self) -> &mut CudaSlice<f32> {
        &mut self.buf
    }

    /// Members P.
    pub fn members(&self) -> usize {
        self.members
    }

    /// Floats per member N.
    pub fn member_len(&self) -> usize {
        self.len
    }

    /// The GPU it lives on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    fn total(&self) -> usize {
        self.members * self.len
    }

    /// Replaces the population with `host` (P x N floats).
    pub fn upload(&mut self, host: &[f32]) -> Result<(), Error> {
        check_len("population (P x N)", self.total(), host.len())?;
        if !host.is_empty() {
            self.gpu.stream.memcpy_htod(host, &mut self.buf)?;
        }
        Ok(())
    }

    /// Copies the population into `host` (P x N floats).
    pub fn download(&self, host: &mut [f32]) -> Result<(), Error> {
        check_len("population (P x N)", self.total(), host.len())?;
        if !host.is_empty() {
            let view = self.buf.slice(..host.len());
            self.gpu.stream.memcpy_dtoh(&view, host)?;
        }
        Ok(())
    }

    /// The population on the host (P x N floats).
    pub fn to_host(&self) -> Result<Vec<f32>, Error> {
        let mut host = vec![0.0; self.total()];
        self.download(&mut host)?;
        Ok(host)
    }

    /// Replaces the population with a device-to-device copy of `other` (same P and N): the
    /// bandwidth every rule is measured against.
    pub fn copy_from(&mut self, other: &DevicePopulation) -> Result<(), Error> {
        check_len("population (P x N)", self.total(), other.total())?;
        same_gpu(self, other, "the copy's source")?;
        self.gpu.stream.memcpy_dtod(&other.buf, &mut self.buf)?;
        Ok(())
    }

    /// Applies `rule` as papa-core does (the same bits), counters taking the max. Its
    /// arguments are checked by papa-core itself first (on an empty population of the same
    /// size: the same checks and errors as the CPU engine's).
    pub fn apply(&mut self, rule: Rule<'_>, counters: &Counters) -> Result<(), Error> {
        check_rule(self.members, rule)?;
        counters.check(self.len)?;
        if self.total() == 0 {
            return Ok(());
        }
        let (n, p) = (self.len as u64, self.members as u32);
        let stream = &self.gpu.stream;
        let functions = &self.gpu.functions;
        match rule {
            Rule::Gradual { weights, alpha } => {
                let weights = LaunchWeights::new(weights, self.members);
                let keep = f64::from(alpha);
                let pull = 1.0 - keep;
                let mut launch = stream.launch_builder(&functions.gradual);
                launch.arg(&mut self.buf).arg(&n).arg(&p);
                weights.push(&mut launch);
                launch.arg(&keep).arg(&pull);
                push_counters(&mut launch, counters);
                // SAFETY: the arguments are papa_gradual's (rules.cu), in order; `buf` holds
                // p x n floats and the weights p, the counter ranges lie within n, and the
                // shared memory holds p floats per thread.
                unsafe { launch.launch(staged_config(self.len, self.members)) }?;
            }
            Rule::All { weights } => {
                let weights = LaunchWeights::new(weights, self.members);
                let mut launch = stream.launch_builder(&functions.all);
                launch.arg(&mut self.buf).arg(&n).arg(&p);
                weights.push(&mut launch);
                push_counters(&mut launch, counters);
                // SAFETY: as above, papa_all's arguments.
                unsafe { launch.launch(columns_config(self.len, THREADS, 0)) }?;
            }
            Rule::Pairs(pairs) => {
                // By value in the launch's parameters (checked against p by papa-core).
                let mut parents = [0u16; 2 * MAX_MEMBERS];
                for (slot, &(a, b)) in parents.chunks_exact_mut(2).zip(pairs) {
                    slot.copy_from_slice(&[a as u16, b as u16]);
                }
                let mut launch = stream.launch_builder(&functions.pairs);
                launch.arg(&mut self.buf).arg(&n).arg(&p).arg(&parents);
                push_counters(&mut launch, counters);
                // SAFETY: papa_pairs' arguments; every pair was checked against p by
                // papa-core, and the shared memory holds p floats per thread.
                unsafe { launch.launch(staged_config(self.len, self.members)) }?;
            }
        }
        Ok(())
    }

    /// The weighted average of the members (counters: their max), N floats on the host:
    /// papa-core's `average`, bit for bit.
    pub fn average(&self, weights: Weights<'_>, counters: &Counters) -> Result<Vec<f32>, Error> {
        let mut soup = DevicePopulation::zeros(&self.gpu, 1, self.len)?;
        self.average_into(weights, counters, &mut soup)?;
        soup.to_host()
    }

    /// [`DevicePopulation::average`] into `out`, a population of one member of N floats on
    /// the same GPU: a soup that stays on the device.
    pub fn average_into(
        &self,
        weights: Weights<'_>,
        counters: &Counters,
        out: &mut DevicePopulation,
    ) -> Result<(), Error> {
        check_rule(self.members, Rule::All { weights })?;
        counters.check(self.len)?;
        check_len("average (1 x N)", self.len, out.total())?;
        same_gpu(self, out, "the average's destination")?;
        if self.len == 0 {
            return Ok(());
        }
        let (n, p) = (self.len as u64, self.members as u32);
        let weights = LaunchWeights::new(weights, self.members);
        let mut launch = self.gpu.stream.launch_builder(&self.gpu.functions.average);
        launch.arg(&self.buf).arg(&mut out.buf).arg(&n).arg(&p);
        weights.push(&mut launch);
        push_counters(&mut launch, counters);
        // SAFETY: papa_average's arguments; `out` holds n floats.
        unsafe { launch.launch(columns_config(self.len, THREADS, 0)) }?;
        Ok(())
    }

    /// Each member's distance to the uniform mean and the mean pairwise cosine, over
    /// `columns`: papa-core's `distances_to_mean` and `mean_pairwise_cosine` of those columns,
    /// summed in another (fixed) order, so equal to about 1e-12 relative rather than bit for
    /// bit. A non-finite value is located by papa-core on the host, with its error.
    pub fn diversity(&self, columns: &Columns) -> Result<Diversity, Error> {
        if columns.end > self.len {
            return Err(Error::ColumnsOutOfRange {
                end: columns.end,
                len: self.len,
            });
        }
        let p = self.members;
        let outputs = p + p * (p + 1) / 2;
        // Fewer blocks per output for large populations: the partials stay under 8 MiB.
        let blocks = columns
            .total
            .div_ceil(REDUCE_THREADS as usize)
            .min(PARTIAL_BLOCKS.min((1 << 20) / outputs))
            .max(1);
        let stream = &self.gpu.stream;
        let mut partials = stream.alloc_zeros::<f64>(outputs * blocks)?;
        let mut sums = stream.alloc_zeros::<f64>(outputs)?;
        let (n, members, m) = (self.len as u64, p as u32, columns.total as u64);
        let ranges = columns.ranges.len() as u32;
        let inv_p = 1.0 / p as f64;
        let mut launch = stream.launch_builder(&self.gpu.functions.partials);
        launch
            .arg(&self.buf)
            .arg(&n)
            .arg(&members)
            .arg(&m)
            .arg(&columns.starts)
            .arg(&columns.prefix)
            .arg(&ranges)
            .arg(&inv_p)
            .arg(&mut partials);
        let config = LaunchConfig {
            grid_dim: (blocks as u32, outputs as u32, 1),
            block_dim: (REDUCE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: papa_diversity_partials' arguments; `partials` holds outputs x blocks
        // doubles and the columns lie within a member.
        unsafe { launch.launch(config) }?;
        let blocks = blocks as u32;
        let mut launch = stream.launch_builder(&self.gpu.functions.sum);
        launch.arg(&partials).arg(&blocks).arg(&mut sums);
        let config = LaunchConfig {
            grid_dim: (outputs as u32, 1, 1),
            block_dim: (REDUCE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: papa_sum_partials' arguments; `sums` holds one double per output.
        unsafe { launch.launch(config) }?;
        let sums = stream.clone_dtoh(&sums)?;
        match diversity_from(&sums, p) {
            Some(diversity) => diversity,
            None => self.diversity_on_host(columns),
        }
    }

    /// papa-core's diversity of `columns`, on a host copy: for the error of a population
    /// holding a NaN or infinity, the very one the CPU engine gives.
    fn diversity_on_host(&self, columns: &Columns) -> Result<Diversity, Error> {
        let host = self.to_host()?;
        let chosen: Vec<f32> = host
            .chunks_exact(self.len.max(1))
            .flat_map(|member| {
                columns
                    .ranges
                    .iter()
                    .flat_map(move |r| member[r.clone()].iter().copied())
            })
            .collect();
        let pop = Contiguous::new(&chosen[..], self.members)?;
        let mut distance_to_mean = vec![0.0; self.members];
        distances_to_mean(&pop, Weights::Uniform, &mut distance_to_mean)?;
        let mut gram = vec![0.0; self.members * self.members];
        let mean_pairwise_cosine = mean_pairwise_cosine(&pop, &mut gram)?;
        Ok(Diversity {
            distance_to_mean,
            mean_pairwise_cosine,
        })
    }
}

/// The metrics from the reductions' sums (p squared distances, then the Gram matrix's upper
/// triangle row by row), with papa-core's checks; `None` when a sum is not finite.
fn diversity_from(sums: &[f64], p: usize) -> Option<Result<Diversity, Error>> {
    if sums.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let gram = |j: usize, k: usize| sums[p + j * p - j * j.saturating_sub(1) / 2 + (k - j)];
    let distance_to_mean = sums[..p].iter().map(|s| s.sqrt()).collect();
    if let Some(j) = (0..p).find(|&j| gram(j, j) == 0.0) {
        let degenerate = papa_core::Error::Degenerate {
            what: "member norm",
            index: j,
        };
        return Some(Err(degenerate.into()));
    }
    let mean_pairwise_cosine = if p == 1 {
        1.0
    } else {
        let mut sum = 0.0;
        for j in 0..p {
            for k in j + 1..p {
                sum += gram(j, k) / (gram(j, j).sqrt() * gram(k, k).sqrt());
            }
        }
        sum / (p * (p - 1) / 2) as f64
    };
    Some(Ok(Diversity {
        distance_to_mean,
        mean_pairwise_cosine,
    }))
}

/// papa-core's checks of a rule's arguments, run on an empty population of `members`.
fn check_rule(members: usize, rule: Rule<'_>) -> Result<(), Error> {
    let mut empty: [f32; 0] = [];
    let mut pop = Contiguous::new(&mut empty[..], members)?;
    let opts = Options::default();
    match rule {
        Rule::Gradual { weights, alpha } => rules::gradual(&mut pop, weights, alpha, &opts)?,
        Rule::All { weights } => rules::papa_all(&mut pop, weights, &opts)?,
        Rule::Pairs(pairs) => rules::papa2(&mut pop, pairs, &mut [], &opts)?,
    }
    Ok(())
}

/// Averaging weights as the kernels take them, by value: P floats, whether they are given
/// (else uniform, with 1/P).
struct LaunchWeights {
    weights: [f32; MAX_MEMBERS],
    given: u32,
    uniform: f64,
}

impl LaunchWeights {
    fn new(weights: Weights<'_>, members: usize) -> Self {
        let mut launch = Self {
            weights: [0.0; MAX_MEMBERS],
            given: 0,
            // papa-core's `1.0 / members as f64`: the same double.
            uniform: 1.0 / members as f64,
        };
        if let Weights::Given(w) = weights {
            // Checked by papa-core: one weight per member, at most MAX_MEMBERS.
            launch.weights[..w.len()].copy_from_slice(w);
            launch.given = 1;
        }
        launch
    }

    /// Pushes the kernels' `weights, given, uniform` arguments.
    fn push<'a>(&'a self, launch: &mut LaunchArgs<'a>) {
        launch
            .arg(&self.weights)
            .arg(&self.given)
            .arg(&self.uniform);
    }
}

/// Pushes the kernels' `max_ranges, max_count` arguments.
fn push_counters<'a>(launch: &mut LaunchArgs<'a>, counters: &'a Counters) {
    launch.arg(&counters.ranges).arg(&counters.count);
}

/// Refuses buffers of two GPUs in one launch or copy.
fn same_gpu(
    pop: &DevicePopulation,
    other: &DevicePopulation,
    what: &'static str,
) -> Result<(), Error> {
    if Arc::ptr_eq(&pop.gpu, &other.gpu) {
        Ok(())
    } else {
        Err(Error::OtherGpu { what })
    }
}

/// papa-core's length check, as this crate's error.
fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), Error> {
    LengthMismatch::check(what, expected, found).map_err(papa_core::Error::from)?;
    Ok(())
}

/// One thread per column, `threads` per block.
fn columns_config(len: usize, threads: u32, shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (len.div_ceil(threads as usize) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: shared,
    }
}

/// One thread per column for the kernels that stage their column of every member in shared
/// memory: as many threads per block (a multiple of a warp, 256 at most) as leave `members`
/// floats each within the 48 KiB a block may use.
fn staged_config(len: usize, members: usize) -> LaunchConfig {
    let fit = (SHARED_BYTES / (4 * members)) as u32 / 32 * 32;
    let threads = fit.clamp(32, THREADS);
    columns_config(len, threads, threads * 4 * members as u32)
}

/// `values` on the device, or one zero when there are none (the driver allocates no 0 bytes;
/// the kernels are told the count).
fn upload_nonempty<T: DeviceRepr + Default + Copy>(
    gpu: &Gpu,
    values: &[T],
) -> Result<CudaSlice<T>, Error> {
    let values = if values.is_empty() {
        &[T::default()][..]
    } else {
        values
    };
    Ok(gpu.stream.clone_htod(values)?)
}
