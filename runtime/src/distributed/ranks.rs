//! One rank's link to the others: the c10d process group (through the torch shim) and
//! what the trainer does with it: start from rank 0's parameters, average gradients,
//! take rank 0's decisions, and check every epoch that the ranks still agree.

use super::{Backend, DistributedConfig, RankEnv, RankEnvError};
use crate::{
    data::Shard,
    isolation::{FaultKind, SeedFault},
    model::MorphogeneticModel,
};
use esper_torch_shim::{
    dist::{self, GradSync, ProcessGroup, Store},
    ShimError,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::{
    cell::{Cell, RefCell},
    path::PathBuf,
    time::Duration,
};
use tch::{Device, Tensor};
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DistError {
    #[error("reading this rank's environment")]
    Env(#[source] RankEnvError),
    #[error("[distributed] backend = \"nccl\" needs a CUDA device, and this run's device is the CPU")]
    NcclOnCpu,
    /// A rank of a CUDA run takes `cuda:LOCAL_RANK`, and this machine has fewer GPUs.
    #[error(
        "rank {rank} has LOCAL_RANK = {local_rank}, and each rank of a CUDA run takes the GPU cuda:LOCAL_RANK, but \
         this machine has {gpus} CUDA device(s): start at most {gpus} rank(s) on it, or set device = \"cpu\""
    )]
    NoGpuForRank { rank: usize, local_rank: usize, gpus: usize },
    #[error("rank {rank} of {world}: joining the other ranks at {addr}:{port}")]
    Join {
        rank: usize,
        world: usize,
        addr: String,
        port: u16,
        #[source]
        source: ShimError,
    },
    /// A collective failed: a rank died, hung past the timeout, or the link broke.
    #[error("rank {rank} of {world}: {what} failed (another rank ended or did not answer within [distributed] timeout_s = {timeout_s} s)")]
    Collective {
        rank: usize,
        world: usize,
        what: &'static str,
        timeout_s: f64,
        #[source]
        source: ShimError,
    },
    #[error("rank {rank}: rank 0's {what} cannot be read: {cause}")]
    Decode { rank: usize, what: &'static str, cause: String },
    /// A step of the exchange was asked for out of order (a bug of the trainer's).
    #[error("{0} was used before it was made")]
    Internal(&'static str),
    /// The ranks' models differ: the run cannot go on in lockstep.
    #[error("after epoch {epoch} the ranks disagree: {differences}")]
    Diverged { epoch: u32, differences: String },
}

/// A seed fault as it travels to the other ranks.
#[derive(Serialize, Deserialize)]
struct FaultReport {
    slot: String,
    seed_id: String,
    blueprint: String,
    plugin: PathBuf,
    code: String,
    detail: String,
}

impl From<&SeedFault> for FaultReport {
    fn from(f: &SeedFault) -> Self {
        Self {
            slot: f.slot.clone(),
            seed_id: f.seed_id.clone(),
            blueprint: f.blueprint.clone(),
            plugin: f.plugin.clone(),
            code: f.kind.code().to_string(),
            detail: f.kind.to_string(),
        }
    }
}

impl FaultReport {
    fn into_fault(self, rank: usize) -> SeedFault {
        let kind = FaultKind::OnRank { rank, code: FaultKind::known_code(&self.code), detail: self.detail };
        SeedFault { slot: self.slot, seed_id: self.seed_id, blueprint: self.blueprint, plugin: self.plugin, kind }
    }
}

/// This process's place in a multi-process run.
pub struct Ranks {
    /// The run's group: parameters, buffers, gradients (NCCL on CUDA, Gloo on the CPU).
    group: ProcessGroup,
    /// Gloo on the CPU for the step's small host-side agreements (seed faults, a stop),
    /// so a NCCL run does not wait on its GPU for them, and none runs on `group` while
    /// the backward's gradient exchanges are in flight there.
    control: ProcessGroup,
    /// The group for the host's synchronised BatchNorms (`[distributed] sync_batchnorm`),
    /// until the model takes it.
    batch_norm: Option<ProcessGroup>,
    /// Kept alive for the group (rank 0's may be the store's server).
    _store: Store,
    env: RankEnv,
    timeout_s: f64,
    /// The gradient exchange hooked into the backward of the model's trainable tensors
    /// (in name order), and the model generation they were listed at: rebuilt when a
    /// seed comes or goes, not per step.
    gradients: RefCell<Option<(u64, GradSync)>>,
    /// Whether the gradient exchange is armed (begun, not yet finished).
    exchanging: Cell<bool>,
    /// Whether the run's collectives are NCCL's (which a CUDA graph can capture).
    nccl: bool,
}

impl Ranks {
    /// Joins the run's other ranks: rendezvous through the store at `MASTER_ADDR:
    /// MASTER_PORT`, then the process group of `config`'s backend for `device`.
    pub fn join(env: RankEnv, config: &DistributedConfig, device: Device) -> Result<Self, DistError> {
        let backend = match (config.backend, device) {
            (Backend::Nccl, Device::Cpu) => return Err(DistError::NcclOnCpu),
            (Backend::Gloo, _) | (Backend::Auto, Device::Cpu) => dist::Backend::Gloo,
            (_, Device::Cuda(index)) => dist::Backend::Nccl { device: index },
            (_, other) => {
                tracing::warn!(device = ?other, "no NCCL for this device: the ranks talk through Gloo");
                dist::Backend::Gloo
            }
        };
        let timeout = Duration::from_secs_f64(config.timeout_s);
        let join = |source| DistError::Join {
            rank: env.rank,
            world: env.world_size,
            addr: env.master_addr.clone(),
            port: env.master_port,
            source,
        };
        let is_master = env.rank == 0 && !env.agent_store;
        let store = Store::new(&env.master_addr, env.master_port, env.world_size, is_master, timeout).map_err(join)?;
        let group = ProcessGroup::new(&store, backend, env.rank, env.world_size, timeout).map_err(join)?;
        let control =
            ProcessGroup::new(&store, dist::Backend::Gloo, env.rank, env.world_size, timeout).map_err(join)?;
        // The synchronised BatchNorms' own group, on the run's backend: their exchanges,
        // inside the forward and the backward, are ordered with nothing else's.
        let batch_norm = match config.sync_batchnorm {
            true => Some(ProcessGroup::new(&store, backend, env.rank, env.world_size, timeout).map_err(join)?),
            false => None,
        };
        tracing::info!(rank = env.rank, world = env.world_size, backend = ?backend, "joined the other ranks");
        let timeout_s = config.timeout_s;
        Ok(Self {
            group,
            control,
            batch_norm,
            _store: store,
            env,
            timeout_s,
            gradients: RefCell::new(None),
            exchanging: Cell::new(false),
            nccl: matches!(backend, dist::Backend::Nccl { .. }),
        })
    }

    pub fn rank(&self) -> usize {
        self.env.rank
    }

    pub fn world(&self) -> usize {
        self.env.world_size
    }

    /// Rank 0: the one that decides, writes checkpoints and reports.
    pub fn leads(&self) -> bool {
        self.env.rank == 0
    }

    /// Why this run's training steps cannot be captured in CUDA graphs, if they cannot:
    /// a graph captures NCCL's collectives, not Gloo's (which go through the host).
    pub fn why_not_captured(&self) -> Option<&'static str> {
        (!self.nccl).then_some(
            "the ranks talk through Gloo, whose collectives a CUDA graph cannot capture ([distributed] backend = \
             \"auto\" or \"nccl\" on CUDA)",
        )
    }

    /// The process group for synchronised BatchNorm statistics, where `[distributed]
    /// sync_batchnorm = true` (once: the model keeps it).
    pub fn take_batch_norm_group(&mut self) -> Option<ProcessGroup> {
        self.batch_norm.take()
    }

    /// This rank's share of each epoch's training data.
    pub fn shard(&self) -> Shard {
        Shard { rank: self.env.rank, world: self.env.world_size }
    }

    /// The group for the step's small host-side agreements.
    fn control(&self) -> &ProcessGroup {
        &self.control
    }

    /// A collective's failure as the run's error. The run ends: this process's NCCL
    /// groups are aborted when dropped, not drained (a kernel may wait for a peer that is
    /// gone).
    fn failed(&self, what: &'static str) -> impl FnOnce(ShimError) -> DistError + '_ {
        move |source| {
            dist::abort_groups_on_drop();
            DistError::Collective {
                rank: self.env.rank,
                world: self.env.world_size,
                what,
                timeout_s: self.timeout_s,
                source,
            }
        }
    }

    /// Makes every parameter and buffer of `model` (host, seeds, gates) rank 0's.
    pub fn share_model(&self, model: &MorphogeneticModel) -> Result<(), DistError> {
        let state = model.state();
        let tensors: Vec<&Tensor> = state.iter().map(|(_, t)| t).collect();
        self.group.broadcast(&tensors, 0).map_err(self.failed("sharing rank 0's parameters"))?;
        Ok(())
    }

    /// Makes the buffers of `model` (BatchNorm's running statistics) rank 0's, as DDP's
    /// `broadcast_buffers` does: each rank normalises its training batches with their own
    /// statistics, and every rank validates with rank 0's running ones.
    pub fn share_buffers(&self, model: &MorphogeneticModel) -> Result<(), DistError> {
        let buffers = model.buffers();
        let tensors: Vec<&Tensor> = buffers.iter().map(|(_, t)| t).collect();
        self.group.broadcast(&tensors, 0).map_err(self.failed("sharing rank 0's buffers"))?;
        Ok(())
    }

    /// Arms the gradient exchange for the step's backward, as DDP's: the gradients of
    /// `model`'s trainable tensors (lined up by name, so alike on every rank) are summed
    /// across the ranks in buckets, each bucket's all-reduce started as soon as the
    /// backward has made its gradients, while the rest of the backward runs. Every rank
    /// must then call [`Ranks::finish_gradients`], whatever the step's fate.
    pub fn begin_gradients(&self, model: &MorphogeneticModel) -> Result<(), DistError> {
        let mut cache = self.gradients.borrow_mut();
        let generation = model.generation();
        if cache.as_ref().is_none_or(|(listed, _)| *listed != generation) {
            // The old hooks go before the new ones are made (a seed's tensors may be in both).
            *cache = None;
            let state = model.state();
            let trainable: Vec<&Tensor> = state.iter().map(|(_, t)| t).filter(|t| t.requires_grad()).collect();
            let sync = GradSync::new(&self.group, &trainable, dist::BUCKET_BYTES);
            *cache = Some((generation, sync.map_err(self.failed("hooking the gradient exchange"))?));
        }
        let (_, sync) = cache.as_mut().ok_or(DistError::Internal("the gradient exchange"))?;
        sync.begin().map_err(self.failed("starting the gradient exchange"))?;
        self.exchanging.set(true);
        Ok(())
    }

    /// Ends the step's gradient exchange: with `kept`, waits for every bucket and leaves
    /// in each gradient its mean over the ranks (every rank steps with the same
    /// gradients, so the gradient telemetry is the same on every rank too); without (a
    /// step this rank discards: a fault in its forward or backward), sends its share of
    /// the buckets not yet sent (zeros where no gradient was made) so that the others'
    /// exchange completes, and writes no gradient. The ranks' agreement on the step
    /// (after this) discards it on every rank. Once per step: a second call does nothing
    /// (a backward after it, such as one to find a failing seed, exchanges nothing).
    pub fn finish_gradients(&self, kept: bool) -> Result<(), DistError> {
        let end = if kept { GradSync::finish } else { GradSync::abandon };
        self.end_gradients(end, "averaging the gradients")
    }

    /// Ends the step's gradient exchange inside a CUDA graph capture: the buckets'
    /// collectives, the waits and the means written into the gradients are captured with
    /// the backward, and run at each replay (see `GradSync::finish_captured`).
    pub fn finish_gradients_captured(&self) -> Result<(), DistError> {
        self.end_gradients(GradSync::finish_captured, "capturing the gradient exchange")
    }

    /// Ends, without any exchange, a gradient exchange armed for a capture that failed
    /// (no collective ran: a capture runs nothing). Nothing to do where none is armed.
    pub fn discard_gradients(&self) -> Result<(), DistError> {
        self.end_gradients(GradSync::discard, "discarding a captured gradient exchange")
    }

    fn end_gradients(
        &self,
        end: fn(&mut GradSync) -> Result<usize, ShimError>,
        what: &'static str,
    ) -> Result<(), DistError> {
        if !self.exchanging.replace(false) {
            return Ok(());
        }
        let mut cache = self.gradients.borrow_mut();
        let (_, sync) = cache.as_mut().ok_or(DistError::Internal("the gradient exchange"))?;
        end(sync).map(drop).map_err(self.failed(what))
    }

    /// Every rank's seed faults of this step, `local` (this rank's) among them: each
    /// slot once, the lowest rank's fault first (this rank's own as it is, another's as
    /// [`FaultKind::OnRank`]), so every rank contains the same seeds at the same step;
    /// and whether any rank was asked to stop (`stop` is this rank's), so every rank
    /// stops at the same step and none is left waiting in an exchange. One exchange of
    /// two numbers when no rank has a fault.
    pub fn agree_on_step(&self, local: Vec<SeedFault>, stop: bool) -> Result<(Vec<SeedFault>, bool), DistError> {
        let control = self.control();
        let what = "agreeing on the step";
        let counts =
            control.allreduce_scalars(&[local.len() as f64, f64::from(u8::from(stop))]).map_err(self.failed(what))?;
        let stop = counts.get(1).copied().unwrap_or(0.0) > 0.0;
        if counts.first().copied().unwrap_or(0.0) == 0.0 {
            return Ok((local, stop));
        }
        Ok((self.gather_faults(local)?, stop))
    }

    /// [`Ranks::agree_on_step`]'s faults alone (outside the training step: validation).
    pub fn faults_of_all(&self, local: Vec<SeedFault>) -> Result<Vec<SeedFault>, DistError> {
        self.agree_on_step(local, false).map(|(faults, _)| faults)
    }

    fn gather_faults(&self, local: Vec<SeedFault>) -> Result<Vec<SeedFault>, DistError> {
        let control = self.control();
        let what = "agreeing on the seeds at fault";
        let mine: Vec<FaultReport> = local.iter().map(FaultReport::from).collect();
        let all = control.all_gather_bytes(serde_json::to_vec(&mine).unwrap_or_default()).map_err(self.failed(what))?;
        let mut faults: Vec<SeedFault> = Vec::new();
        for (rank, bytes) in all.iter().enumerate() {
            let theirs: Vec<SeedFault> = if rank == self.rank() {
                local.clone()
            } else {
                let reports: Vec<FaultReport> = serde_json::from_slice(bytes).map_err(|e| DistError::Decode {
                    rank: self.rank(),
                    what,
                    cause: e.to_string(),
                })?;
                reports.into_iter().map(|r| r.into_fault(rank)).collect()
            };
            for fault in theirs {
                if !faults.iter().any(|f| f.slot == fault.slot) {
                    faults.push(fault);
                }
            }
        }
        Ok(faults)
    }

    /// Whether `holds` is true on every rank (a host-side scalar exchange).
    pub fn on_all(&self, holds: bool) -> Result<bool, DistError> {
        let control = self.control();
        let failing = control
            .allreduce_scalars(&[if holds { 0.0 } else { 1.0 }])
            .map_err(self.failed("agreeing on a finding"))?;
        Ok(failing.first().copied() == Some(0.0))
    }

    /// `flags` (booleans) true where they are true on every rank: a false anywhere is
    /// false everywhere. One all-reduce on the run's group (the flags stay on their device).
    pub fn all_true(&self, flags: &Tensor) -> Result<Tensor, DistError> {
        let what = "agreeing on the seeds' health";
        let torch = |e: tch::TchError| self.failed(what)(ShimError(e.to_string()));
        let failing = flags.f_logical_not().and_then(|f| f.f_to_kind(tch::Kind::Float)).map_err(torch)?;
        self.group.allreduce_sum(&[&failing]).map_err(self.failed(what))?;
        failing.f_eq(0.0).map_err(torch)
    }

    /// Sums `values` across the ranks.
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>, DistError> {
        self.group.allreduce_scalars(values).map_err(self.failed("summing the epoch's totals"))
    }

    /// Rank 0's `value` on every rank: rank 0 computes it (`decide` runs there only).
    pub fn from_leader<T: Serialize + DeserializeOwned>(
        &self,
        what: &'static str,
        decide: impl FnOnce() -> T,
    ) -> Result<T, DistError> {
        let bytes = if self.leads() { serde_json::to_vec(&decide()).unwrap_or_default() } else { Vec::new() };
        let bytes = self.group.broadcast_bytes(0, bytes).map_err(self.failed(what))?;
        serde_json::from_slice(&bytes).map_err(|e| DistError::Decode { rank: self.rank(), what, cause: e.to_string() })
    }

    /// Compares every rank's `fingerprint` of its model after `epoch`: a difference
    /// names the ranks and what each has.
    pub fn check_lockstep(&self, epoch: u32, fingerprint: &str) -> Result<(), DistError> {
        let all = self
            .group
            .all_gather_bytes(fingerprint.as_bytes().to_vec())
            .map_err(self.failed("comparing the ranks' models"))?;
        let texts: Vec<String> = all.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
        if texts.iter().all(|t| t == &texts[0]) {
            return Ok(());
        }
        let differences = texts
            .iter()
            .enumerate()
            .filter(|(_, t)| *t != &texts[0])
            .map(|(r, t)| format!("rank {r} has {t}, rank 0 has {}", texts[0]))
            .collect::<Vec<_>>()
            .join("; ");
        Err(DistError::Diverged { epoch, differences })
    }

    /// Waits for every rank (around rank 0's checkpoint writes).
    pub fn barrier(&self, what: &'static str) -> Result<(), DistError> {
        self.group.barrier().map_err(self.failed(what))
    }
}
