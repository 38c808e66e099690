//! Whole-step CUDA graphs (`[training] cuda_graph = "auto"`, the default).
//!
//! On a CUDA device a training step (forward through host and seeds, loss, backward into
//! freshly allocated gradients, both optimizers, the seeds' finiteness flags) is captured
//! once as a CUDA graph and replayed for every batch of the same shape: one launch
//! instead of hundreds, no host work per kernel. The whole run (steps, validation,
//! lifecycle) goes on one side stream: a capture needs a stream other than the default
//! one, and the autograd engine keeps the stream a parameter was first used on.
//!
//! * **When it is recaptured.** A graph is kept while the topology stays the same: which
//!   seed runs where, its stage, its blend, isolation, a prune blend-out, which
//!   optimizers step and whether they are frozen ([`Trainer::topology_key`]). After a
//!   change (germinate, stage change, prune, fossilize, a seed contained) the next
//!   [`WARMUP_STEPS`] steps run eagerly (they are real steps; libtorch and the optimizers
//!   make what they make on first use), then the next one is captured. Alpha is a device
//!   scalar filled before each replay ([`crate::model::MorphogeneticModel::sync_alpha`]),
//!   so a moving alpha needs no recapture; Adam's step count lives on the device too.
//! * **Containment.** A replay runs no plugin code, only the kernels the plugin launched
//!   when captured, so what a seed can still do wrong is produce non-finite values: the
//!   flags, the host's loss and the gradients are read every `gradient_every` steps,
//!   after the replay, and non-finite values are handled as in the eager step (roll back
//!   to the last good state, judge who is at fault (see [`super::attribution`]), prune a
//!   seed at fault, re-run the batch eagerly). A plugin that fails while captured (an op that
//!   cannot be captured, a host sync) is not blamed: the capture is abandoned and that
//!   topology runs eagerly, the reason logged; the eager step then judges the seed.
//! * **Where it falls back.** The CPU, `cuda_graph = "off"`, a build without CUDA graph
//!   support, a batch of another shape (the last, partial one), a multi-process run whose
//!   ranks talk through Gloo: eager steps, as before.
//! * **On ranks** (a multi-process run on NCCL), the graph holds the whole data-parallel
//!   step: the gradient buckets' allreduces, started by the backward's hooks, and the
//!   synchronised BatchNorms' exchanges are captured with the kernels around them, on
//!   NCCL's own stream, and run at each replay. A capture runs no collective, so the
//!   ranks agree on its outcome before anything runs: if any rank's capture failed,
//!   every rank drops its graph and runs that topology eagerly, so every rank always runs
//!   the same collectives in the same order. Before each replay the ranks agree on a stop
//!   (as the eager step does after its backward), on the CPU group, so a stop asked of one
//!   rank ends every rank at the same step.
//!
//! The epoch's loss and accuracy sums are added inside the graph, into accumulators the
//! run keeps (zeroed each epoch); a rollback puts them back with the rest of the state
//! (steps it discards do not count), as in the eager step.

use super::{optim::Optimizer, step::cross_entropy, step::Totals, TrainError, Trainer};
use crate::{config::CudaGraphMode, lifecycle::LifecycleEvent, Result};
use esper_torch_shim::graph::{self as shim, CudaGraph, CudaStream, SideStream};
use serde::Serialize;
use std::{
    hash::{Hash, Hasher},
    time::Instant,
};
use tch::{Device, Tensor};

/// Eager steps after a topology change before the step is captured.
pub const WARMUP_STEPS: u32 = 2;

/// What the graphs did so far in this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GraphStats {
    /// Graphs captured (one per topology, and again after a change).
    pub captures: u32,
    /// Captures abandoned (the topology then ran eagerly).
    pub refusals: u32,
    /// Steps that were a graph replay.
    pub replays: u64,
    /// Steps run eagerly while graphs were on (warm-up, other shapes, refused topologies).
    pub eager_steps: u64,
    /// Milliseconds the last capture took (capture and instantiation, no replay).
    pub last_capture_ms: f64,
    /// Nodes (kernels, memsets, copies) of the last graph captured: the launches one
    /// replay stands for (0 where the CUDA runtime could not count them).
    pub last_graph_nodes: usize,
}

/// A captured step: the graph and the tensors it reads and writes.
struct Captured {
    graph: CudaGraph,
    /// The inputs it reads: each batch is copied in before a replay.
    x: Tensor,
    y: Tensor,
}

/// The trainer's graph state.
pub(super) struct StepGraphs {
    /// Why graphs are off for the whole run; None when they are on.
    off: Option<String>,
    /// The stream every step of the run goes on (one for the run: autograd remembers
    /// the stream a parameter was first used on, and a capture needs them all the same).
    stream: Option<CudaStream>,
    key: Option<u64>,
    warm: u32,
    current: Option<Captured>,
    /// Why the current topology runs eagerly (its capture failed).
    refused: Option<String>,
    /// Why the last refused capture was refused (kept across topologies).
    last_refusal: Option<String>,
    /// The epoch totals' device tensors, the same for the whole run (a graph adds into
    /// them).
    totals: Option<Totals>,
    stats: GraphStats,
}

impl StepGraphs {
    /// Graphs as `mode` asks on `device`; off where `not_captured` says why (a run of
    /// several ranks whose collectives a graph cannot capture).
    pub fn new(mode: CudaGraphMode, device: Device, not_captured: Option<&str>) -> Self {
        let stream = match (mode, device, not_captured) {
            (CudaGraphMode::Off, _, _) => Err("off in the config ([training] cuda_graph = \"off\")".to_string()),
            (_, Device::Cpu | Device::Mps | Device::Vulkan, _) => Err(format!("the device is {device:?}, not CUDA")),
            (_, Device::Cuda(_), Some(why)) => Err(why.to_string()),
            (CudaGraphMode::Auto, Device::Cuda(index), None) => CudaStream::new(index).map_err(|e| e.to_string()),
        };
        let (stream, off) = match stream {
            Ok(s) => (Some(s), None),
            Err(why) => (None, Some(why)),
        };
        match &off {
            None => {
                tracing::info!(event = "cuda_graphs", "CUDA graphs on: each training step topology is captured once")
            }
            Some(why) => tracing::info!(event = "cuda_graphs", reason = %why, "CUDA graphs off: eager steps"),
        }
        Self {
            off,
            stream,
            key: None,
            warm: 0,
            current: None,
            refused: None,
            last_refusal: None,
            totals: None,
            stats: GraphStats::default(),
        }
    }

    pub fn on(&self) -> bool {
        self.off.is_none()
    }

    /// Makes the run's stream current while graphs are on (None when off).
    pub fn side_stream(&self) -> Result<Option<SideStream>> {
        match &self.stream {
            Some(stream) => Ok(Some(SideStream::enter(stream).map_err(TrainError::Stream)?)),
            None => Ok(None),
        }
    }

    /// A new epoch's totals: while graphs are on, the run's accumulators zeroed (a captured
    /// step adds into them); else new ones.
    pub fn epoch_totals(&mut self, device: Device) -> Result<Totals> {
        if !self.on() {
            return Ok(Totals::new(device));
        }
        Ok(self.totals.get_or_insert_with(|| Totals::new(device)).restarted()?)
    }

    /// Forgets the graph of another topology.
    fn follow(&mut self, key: u64) {
        if self.key != Some(key) {
            self.key = Some(key);
            self.warm = 0;
            self.current = None;
            self.refused = None;
        }
    }
}

impl Trainer {
    /// What decides the kernels of a training step, as a hash (see the module docs).
    pub(super) fn topology_key(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.model.hash_topology(&mut h);
        self.host_opt.frozen().hash(&mut h);
        for (id, opt) in &self.seed_opts {
            id.hash(&mut h);
            opt.frozen().hash(&mut h);
        }
        h.finish()
    }

    pub fn graph_stats(&self) -> GraphStats {
        self.graphs.stats
    }

    /// Why CUDA graphs are off for this run, if they are.
    pub fn graphs_off(&self) -> Option<&str> {
        self.graphs.off.as_deref()
    }

    /// Why the last capture that failed failed, if one did.
    pub fn last_graph_refusal(&self) -> Option<&str> {
        self.graphs.last_refusal.as_deref()
    }

    /// One training step on `x`, `y`: a graph replay where one can be used, else the
    /// eager contained step ([`Trainer::train_batch`]).
    pub(super) fn train_step(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        capture: bool,
        totals: &mut Totals,
        events: &mut Vec<LifecycleEvent>,
    ) -> Result<()> {
        if !self.graphs.on() {
            return self.train_batch(x, y, capture, totals, events);
        }
        self.graphs.follow(self.topology_key());
        let same_shape = |c: &Captured| c.x.size() == x.size() && c.y.size() == y.size();
        match &self.graphs.current {
            Some(c) if same_shape(c) => return self.replay(x, y, capture, totals, events),
            Some(_) => return self.eager_step(x, y, capture, totals, events),
            None => {}
        }
        let ready = self.host_opt.ready_for_capture() && self.seed_opts.values().all(|o| o.ready_for_capture());
        if self.graphs.refused.is_some() || self.graphs.warm < WARMUP_STEPS || !ready {
            self.graphs.warm += 1;
            return self.eager_step(x, y, capture, totals, events);
        }
        let captured = self.capture(x, y, totals);
        match self.agree_on_capture(captured)? {
            Ok(()) => self.replay(x, y, capture, totals, events),
            Err(why) => {
                tracing::warn!(event = "cuda_graph_refused", reason = %why, "capturing the training step failed: this topology runs eagerly");
                self.graphs.last_refusal = Some(why.clone());
                self.graphs.refused = Some(why);
                self.graphs.stats.refusals += 1;
                self.eager_step(x, y, capture, totals, events)
            }
        }
    }

    /// In a multi-process run, whether every rank captured the step: where one did not,
    /// the others drop their graph too (with why), so every rank runs the same
    /// collectives; a capture runs none, so none is pending. A single process's outcome
    /// is as it is.
    fn agree_on_capture(&mut self, captured: Result<(), String>) -> Result<Result<(), String>> {
        let Some(ranks) = &self.ranks else { return Ok(captured) };
        if ranks.on_all(captured.is_ok())? {
            return Ok(captured);
        }
        if captured.is_ok() {
            self.graphs.current = None;
            self.graphs.stats.captures -= 1;
            return Ok(Err("another rank could not capture this step (its log says why)".into()));
        }
        Ok(captured)
    }

    fn eager_step(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        capture: bool,
        totals: &mut Totals,
        events: &mut Vec<LifecycleEvent>,
    ) -> Result<()> {
        self.graphs.stats.eager_steps += 1;
        self.train_batch(x, y, capture, totals, events)
    }

    /// Captures one step on copies of `x`, `y` (the graph's inputs from now on). Nothing
    /// runs: the step itself is the first replay. The optimizers' host counts are put
    /// back (each replay counts its step).
    fn capture(&mut self, x: &Tensor, y: &Tensor, totals: &Totals) -> Result<(), String> {
        let started = Instant::now();
        let inputs = x.f_detach_copy().and_then(|x| Ok((x, y.f_detach_copy()?))).map_err(|e| e.to_string())?;
        self.model.sync_alpha().map_err(|e| e.to_string())?;
        let counts = self.optimizer_counts();
        if let Some(ranks) = &self.ranks {
            // Armed before the capture: a first arming after a change lists the tensors and
            // makes the buckets, whose memory must not come from the graph's pool.
            ranks.begin_gradients(&self.model).map_err(|e| crate::error::chain(&e))?;
        }
        let capture = match shim::Capture::begin() {
            Ok(capture) => capture,
            Err(e) => {
                if let Some(ranks) = &self.ranks {
                    ranks.discard_gradients().map_err(|e| crate::error::chain(&e))?;
                }
                return Err(e.to_string());
            }
        };
        let attempt =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.captured_step(&inputs.0, &inputs.1, totals)))
                .unwrap_or_else(|payload| Err(esper_plugin_api::panic_message(payload.as_ref())));
        if let Some(ranks) = &self.ranks {
            // A step that failed before its exchange's end: the captured collectives go
            // with the capture (after a captured end this does nothing).
            ranks.discard_gradients().map_err(|e| crate::error::chain(&e))?;
        }
        let outcome = attempt.and_then(|outputs| capture.end().map(|g| (g, outputs)).map_err(|e| e.to_string()));
        self.set_optimizer_counts(&counts);
        let (graph, ()) = outcome.map_err(|e| crate::torch_error::summary(&e))?;
        self.graphs.stats.last_graph_nodes = graph.nodes();
        self.graphs.current = Some(Captured { graph, x: inputs.0, y: inputs.1 });
        self.graphs.stats.captures += 1;
        self.graphs.stats.last_capture_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(
            event = "cuda_graph_captured",
            ms = self.graphs.stats.last_capture_ms,
            "training step captured"
        );
        Ok(())
    }

    /// The step as captured: forward, loss, backward, the optimizer steps, the epoch's
    /// loss and accuracy sums. The gradients are dropped before the backward rather than
    /// zeroed: the backward then allocates them in the graph's memory and hands each over
    /// as computed, where zeroed ones would take a kernel and an add per parameter. They
    /// stay the parameters' gradients after capture (each replay rewrites them), and an
    /// eager step between replays (a partial batch) zeroes and fills these same tensors.
    ///
    /// On ranks, the gradient exchange armed before the capture ends inside it (its
    /// collectives captured), and the forward is the training step's, which exchanges the
    /// synchronised BatchNorms' statistics.
    fn captured_step(&mut self, x: &Tensor, y: &Tensor, totals: &Totals) -> Result<(), String> {
        let logits = self.model.forward_step(x).map_err(|e| crate::error::chain(&e))?;
        let loss = cross_entropy(&logits, y).map_err(|e| e.to_string())?;
        let had: Vec<Vec<bool>> =
            self.optimizers_mut().map(Optimizer::clear_grads).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        self.watched_backward(&loss).map_err(|e| e.to_string())?;
        if let Some(ranks) = &self.ranks {
            ranks.finish_gradients_captured().map_err(|e| crate::error::chain(&e))?;
        }
        for (opt, had) in self.optimizers_mut().zip(&had) {
            opt.zero_missing_grads(had).map_err(|e| e.to_string())?;
        }
        for opt in self.optimizers_mut() {
            opt.step().map_err(|e| e.to_string())?;
        }
        totals.add_on_device(&loss, &logits, y).map_err(|e| e.to_string())
    }

    fn optimizer_counts(&self) -> Vec<i64> {
        std::iter::once(&self.host_opt).chain(self.seed_opts.values()).map(|o| o.steps()).collect()
    }

    fn set_optimizer_counts(&mut self, counts: &[i64]) {
        for (opt, &n) in self.optimizers_mut().zip(counts) {
            opt.set_steps(n);
        }
    }

    /// The host's optimizer, then the seeds' (in the order of `optimizer_counts`).
    fn optimizers_mut(&mut self) -> impl Iterator<Item = &mut Optimizer> {
        std::iter::once(&mut self.host_opt).chain(self.seed_opts.values_mut())
    }

    /// Replays the captured step on `x`, `y`; reads the seeds' health where the eager
    /// step would, and handles a seed at fault as it does.
    fn replay(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        capture: bool,
        totals: &mut Totals,
        events: &mut Vec<LifecycleEvent>,
    ) -> Result<()> {
        if let Some(ranks) = &self.ranks {
            // A stop asked of any rank stops them all here, before the step, as the eager
            // step's agreement does after its backward.
            if ranks.agree_on_step(Vec::new(), self.stop.requested().is_some())?.1 {
                return Err(super::Stopped.into());
            }
        }
        let c = self.graphs.current.as_ref().ok_or(TrainError::Internal("no graph to replay"))?;
        c.x.shallow_clone().f_copy_(x)?;
        c.y.shallow_clone().f_copy_(y)?;
        self.model.sync_alpha()?;
        c.graph.replay().map_err(TrainError::Replay)?;
        self.host_opt.count_replayed_step();
        self.seed_opts.values_mut().for_each(|o| o.count_replayed_step());
        self.graphs.stats.replays += 1;
        if capture {
            // The graph added this step's loss to the epoch's sum already.
            let host_loss = || Ok(totals.loss.shallow_clone());
            let health = self.read_health(host_loss)?;
            if !health.is_clean() {
                self.recover(x, y, health, totals, events)?;
                // This batch again, eagerly (without the seed, if one was at fault).
                return self.eager_step(x, y, capture, totals, events);
            }
        }
        totals.count(y);
        if capture && self.model.slots().iter().any(|s| s.runs_seed()) {
            self.save_good(totals)?;
        }
        Ok(())
    }
}
