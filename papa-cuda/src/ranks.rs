//! Several GPUs of one process as NCCL ranks: the members split across them, the whole
//! population gathered where a rule needs it (docs/DESIGN-NOTES.md, "Several GPUs and
//! nodes"). Gathering the members themselves, in rank order, lets every rank apply papa-core's
//! rule to the same full population and keep its own slice: the single-GPU bits, with no
//! reduction inside NCCL whose order would depend on its algorithm.

use crate::{probe, DevicePopulation, Error, Gpu};
use cudarc::nccl::{group_end, group_start, Comm};
use std::sync::Arc;

/// One NCCL communicator per GPU of this process (rank r on `gpus[r]`).
///
/// ```no_run
/// use papa_cuda::{DevicePopulation, Gpu, Ranks};
///
/// let gpu = Gpu::new(0)?;
/// let ranks = Ranks::new(&[gpu.clone()])?;
/// let local = DevicePopulation::from_host(&gpu, &[1.0, 2.0, 3.0, 4.0], 2)?;
/// let mut full = DevicePopulation::zeros(&gpu, 2, 2)?;
/// ranks.gather(&[&local], &mut [&mut full])?;
/// # Ok::<(), papa_cuda::Error>(())
/// ```
pub struct Ranks {
    comms: Vec<Comm>,
    gpus: Vec<Arc<Gpu>>,
}

impl std::fmt::Debug for Ranks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ranks")
            .field("ranks", &self.comms.len())
            .finish()
    }
}

impl Ranks {
    /// Communicators over `gpus` (distinct devices: NCCL refuses two ranks on one GPU). NCCL
    /// is probed first: without it, an [`Error`].
    pub fn new(gpus: &[Arc<Gpu>]) -> Result<Self, Error> {
        if gpus.is_empty() {
            return Err(Error::Ranks("no GPU to make ranks of".into()));
        }
        probe::nccl()?;
        let streams = gpus.iter().map(|g| g.stream.clone()).collect();
        let comms = Comm::from_devices(streams).map_err(Error::Nccl)?;
        Ok(Self {
            comms,
            gpus: gpus.to_vec(),
        })
    }

    /// Ranks G.
    pub fn len(&self) -> usize {
        self.comms.len()
    }

    /// Always false: there is at least one rank.
    pub fn is_empty(&self) -> bool {
        self.comms.is_empty()
    }

    /// Copies every rank's members (`locals[r]`: the same number on every rank, N floats
    /// each) into every rank's full population (`full[r]`: G times as many members, rank
    /// r's at member offset r x local members), in rank order. Moves (G - 1) x local bytes
    /// into each rank.
    pub fn gather(
        &self,
        locals: &[&DevicePopulation],
        full: &mut [&mut DevicePopulation],
    ) -> Result<(), Error> {
        let g = self.comms.len();
        if locals.len() != g || full.len() != g {
            return Err(Error::Ranks(format!(
                "{g} ranks, {} local and {} full populations",
                locals.len(),
                full.len()
            )));
        }
        let (members, len) = (locals[0].members(), locals[0].member_len());
        for (r, (local, whole)) in locals.iter().zip(full.iter()).enumerate() {
            let fits = local.members() == members
                && local.member_len() == len
                && whole.members() == g * members
                && whole.member_len() == len;
            if !fits {
                return Err(Error::Ranks(format!(
                    "rank {r}: {} x {} local, {} x {} full; expected {members} x {len} and {} x {len}",
                    local.members(),
                    local.member_len(),
                    whole.members(),
                    whole.member_len(),
                    g * members
                )));
            }
            if !Arc::ptr_eq(local.gpu(), &self.gpus[r]) || !Arc::ptr_eq(whole.gpu(), &self.gpus[r])
            {
                return Err(Error::OtherGpu {
                    what: "a population of another rank's GPU",
                });
            }
        }
        // One thread drives every rank: the calls are grouped, as NCCL requires.
        group_start().map_err(Error::Nccl)?;
        let queued = self
            .comms
            .iter()
            .zip(locals)
            .zip(full.iter_mut())
            .try_for_each(|((comm, local), whole)| {
                let send = local.buf().slice(..members * len);
                comm.all_gather(&send, whole.buf_mut()).map(|_| ())
            });
        // The group is closed even when a call was refused.
        let ended = group_end();
        queued.map_err(Error::Nccl)?;
        ended.map_err(Error::Nccl)?;
        Ok(())
    }
}
