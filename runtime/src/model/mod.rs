//! The morphogenetic model: a host network plus seed slots at chosen injection points.

mod error;
mod precision;
mod slot;

pub use error::ModelError;
pub use precision::Precision;
pub use slot::{SeedSlot, SlotConfig, SlotReport, PROBE_BATCH, PROBE_SIZE, PROBE_TOKENS};

use crate::{
    blend::BlendChoice,
    host::{BatchNormSync, Host, HostConfig, HostError, InjectionPoint, Segment},
    isolation::{GradientSample, SeedWatch, Watchdog},
    lifecycle::Lifecycle,
    plugin::PluginSeed,
};
use esper_torch_shim::autocast::Bf16Autocast;
use std::sync::Arc;
use tch::{nn, Device, Tensor};

pub struct MorphogeneticModel {
    host_vs: nn::VarStore,
    host: Box<dyn Host>,
    /// Slots in execution order.
    slots: Vec<SeedSlot>,
    /// `plan[i]` runs the host up to slot `i`; the last entry runs to the logits.
    /// Computed once: slots are fixed for the model's life.
    plan: Vec<Segment>,
    /// Bumped whenever a slot may have changed (seed added, removed, moved): lets
    /// callers cache per-topology lists (e.g. the buffers to snapshot each step).
    generation: u64,
    precision: Precision,
    /// The seed watchdog, once [`MorphogeneticModel::watch_seeds`] started it.
    watchdog: Option<Watchdog>,
    /// The host's BatchNorm statistics shared with the other ranks in the training
    /// step's forward, where `[distributed] sync_batchnorm` (see [`Self::forward_step`]).
    bn_sync: Option<Arc<BatchNormSync>>,
}

/// Whether a forward stops at the first seed at fault, or runs the host to the logits
/// regardless (see [`MorphogeneticModel::forward_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    UntilAFault,
    ToTheEnd,
}

/// The injection points of `slot_ids` on `host`, in execution order; each must be a
/// point, and only once.
fn slot_points(host: &dyn Host, slot_ids: &[&str]) -> Result<Vec<InjectionPoint>, ModelError> {
    let mut points: Vec<InjectionPoint> = Vec::new();
    for id in slot_ids {
        let point = host.point(id).map_err(|_| ModelError::UnknownSlot {
            name: id.to_string(),
            valid: host.injection_points().iter().map(|p| p.id.clone()).collect(),
        })?;
        if points.iter().any(|p| p.id == point.id) {
            return Err(ModelError::DuplicateSlot(id.to_string()));
        }
        points.push(point.clone());
    }
    points.sort_by_key(|p| p.order);
    Ok(points)
}

impl MorphogeneticModel {
    /// The built-in host made from `host_config` (a [`HostConfig`], or the settings of
    /// one host), with slots at `slot_ids` (any order; they run in execution order).
    pub fn new(
        host_config: impl Into<HostConfig>,
        slot_ids: &[&str],
        slot_config: SlotConfig,
        device: Device,
    ) -> Result<Self, ModelError> {
        let host_config = host_config.into();
        Self::with_host(device, |path| host_config.build(path), slot_ids, slot_config)
    }

    /// A host of the caller's own, built by `build` on the path it is given (the root of
    /// the host's variable store, which the model owns on `device`): every parameter and
    /// buffer of the host must be registered under that path (see [`crate::host::seam`]).
    /// Slots at `slot_ids` (any order; they run in execution order).
    pub fn with_host(
        device: Device,
        build: impl FnOnce(&nn::Path) -> Result<Box<dyn Host>, HostError>,
        slot_ids: &[&str],
        slot_config: SlotConfig,
    ) -> Result<Self, ModelError> {
        let host_vs = nn::VarStore::new(device);
        let host = build(&host_vs.root())?;
        let points = slot_points(host.as_ref(), slot_ids)?;
        let mut plan = Vec::with_capacity(points.len() + 1);
        let mut prev: Option<&str> = None;
        for p in &points {
            plan.push(host.segment(prev, Some(&p.id))?);
            prev = Some(&p.id);
        }
        plan.push(host.segment(prev, None)?);
        let layout = host.topology().layout();
        let slots = points.iter().map(|p| SeedSlot::new(&p.id, p.channels, layout, slot_config.clone())).collect();
        Ok(Self {
            host_vs,
            host,
            slots,
            plan,
            generation: 0,
            precision: Precision::Fp32,
            watchdog: None,
            bn_sync: None,
        })
    }

    /// The host, through the seam (`host().downcast_ref::<CnnHost>()` for the built-in
    /// one's config).
    pub fn host(&self) -> &dyn Host {
        self.host.as_ref()
    }
    pub fn device(&self) -> Device {
        self.host_vs.device()
    }
    pub fn host_vars(&self) -> &nn::VarStore {
        &self.host_vs
    }
    pub fn host_vars_mut(&mut self) -> &mut nn::VarStore {
        &mut self.host_vs
    }

    /// Slots in execution order.
    pub fn slots(&self) -> &[SeedSlot] {
        &self.slots
    }
    pub fn slots_mut(&mut self) -> &mut [SeedSlot] {
        self.generation += 1;
        &mut self.slots
    }

    /// Changes whenever a slot may have changed (see the field).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn index(&self, id: &str) -> Result<usize, ModelError> {
        self.slots.iter().position(|s| s.id() == id).ok_or_else(|| ModelError::UnknownSlot {
            name: id.to_string(),
            valid: self.slots.iter().map(|s| s.id().to_string()).collect(),
        })
    }

    pub fn slot(&self, id: &str) -> Result<&SeedSlot, ModelError> {
        Ok(&self.slots[self.index(id)?])
    }
    pub fn slot_mut(&mut self, id: &str) -> Result<&mut SeedSlot, ModelError> {
        let i = self.index(id)?;
        self.generation += 1;
        Ok(&mut self.slots[i])
    }

    /// Logits for `x` (NCHW); the host's memory format is applied once, here.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.run(x, train, &|_| false, Run::UntilAFault)
    }

    /// The training step's forward (train mode). Where the host's BatchNorms are
    /// synchronised across ranks ([`Self::synchronise_batch_norm`]), this is the one
    /// forward that exchanges their statistics, and a seed at fault does not cut it
    /// short: the host runs to the logits with that seed passed over (and the seeds after
    /// it), so every rank makes the same exchanges, and the fault is returned after.
    pub fn forward_step(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let Some(sync) = &self.bn_sync else { return self.forward(x, true) };
        let armed = sync.arm();
        let logits = self.run(x, true, &|_| false, Run::ToTheEnd);
        drop(armed);
        match sync.take_failure() {
            Some(e) => Err(e.into()),
            None => logits,
        }
    }

    /// Synchronises the host's BatchNorm statistics in [`Self::forward_step`] through
    /// `sync` (refused by a host without BatchNorm).
    pub fn synchronise_batch_norm(&mut self, sync: BatchNormSync) -> Result<(), ModelError> {
        let sync = Arc::new(sync);
        self.host.synchronise_batch_norm(Arc::clone(&sync))?;
        self.bn_sync = Some(sync);
        Ok(())
    }

    /// After this rank's backward of [`Self::forward_step`] failed part way: makes, with
    /// zeros, the synchronised BatchNorms' backward exchanges it still owes, so the other
    /// ranks' backwards complete (see `BatchNormSync::release`). Nothing without them.
    pub fn release_batch_norm_exchanges(&self) -> Result<usize, ModelError> {
        match &self.bn_sync {
            Some(sync) => Ok(sync.release()?),
            None => Ok(0),
        }
    }

    /// Whether [`Self::forward_step`] exchanges BatchNorm statistics with other ranks.
    pub fn synchronises_batch_norm(&self) -> bool {
        self.bn_sync.is_some()
    }

    /// The counterfactual forward (eval mode): slot `id` with its alpha forced to 0,
    /// which for every blend is the host stream itself.
    pub fn forward_counterfactual(&self, x: &Tensor, id: &str) -> Result<Tensor, ModelError> {
        let bypass = self.index(id)?;
        self.run(x, false, &|i| i == bypass, Run::UntilAFault)
    }

    /// The forward with only slot `only` running its seed (the others pass the host
    /// through): to find which seed a failing backward belongs to.
    pub fn forward_only(&self, x: &Tensor, train: bool, only: usize) -> Result<Tensor, ModelError> {
        self.run(x, train, &|i| i != only, Run::UntilAFault)
    }

    /// Starts the seed watchdog (one thread, stopped with the model): every seed call
    /// from now on is timed against `limit` (see [`crate::isolation::watchdog`]).
    pub fn watch_seeds(&mut self, limit: std::time::Duration) -> std::io::Result<()> {
        let watchdog = Watchdog::start(limit)?;
        for slot in &mut self.slots {
            slot.set_watch(watchdog.handle());
        }
        self.watchdog = Some(watchdog);
        Ok(())
    }

    /// The seed watchdog's handle, when it runs.
    pub fn seed_watch(&self) -> Option<&SeedWatch> {
        self.watchdog.as_ref().map(Watchdog::watch)
    }

    /// The host alone: every slot passes the host's features through, whatever its seed
    /// (to tell a host's non-finite values from a seed's).
    pub fn forward_host_only(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.run(x, train, &|_| true, Run::UntilAFault)
    }

    /// Float32, or bfloat16 mixed precision for every forward from now on.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    fn run(&self, x: &Tensor, train: bool, bypass: &dyn Fn(usize) -> bool, run: Run) -> Result<Tensor, ModelError> {
        if self.precision == Precision::Fp32 {
            return self.run_in(x, train, bypass, run);
        }
        let autocast = Bf16Autocast::enter(self.device().is_cuda())?;
        let logits = self.run_in(x, train, bypass, run)?;
        drop(autocast);
        Ok(logits.f_to_kind(tch::Kind::Float)?)
    }

    fn run_in(&self, x: &Tensor, train: bool, bypass: &dyn Fn(usize) -> bool, run: Run) -> Result<Tensor, ModelError> {
        let mut h = self.host.prepare_input(x);
        let mut fault = None;
        for (i, slot) in self.slots.iter().enumerate() {
            h = self.host.run_segment(self.plan[i], &h, train);
            if bypass(i) || fault.is_some() {
                continue;
            }
            if run == Run::UntilAFault {
                h = slot.forward(h, train)?;
                continue;
            }
            match slot.forward(h.shallow_clone(), train) {
                Ok(out) => h = out,
                Err(e) => fault = Some(e),
            }
        }
        let logits = self.host.run_segment(self.plan[self.slots.len()], &h, train);
        fault.map_or(Ok(logits), Err)
    }

    /// Puts each running seed's alpha on the device where it changed (before a CUDA graph
    /// replay, which runs no forward; see [`SeedSlot::sync_alpha`]).
    pub fn sync_alpha(&self) -> Result<(), ModelError> {
        for slot in self.slots.iter().filter(|s| s.runs_seed()) {
            slot.sync_alpha()?;
        }
        Ok(())
    }

    /// Feeds every slot's topology (see [`SeedSlot::hash_topology`]) into `state`.
    pub fn hash_topology(&self, state: &mut impl std::hash::Hasher) {
        for slot in &self.slots {
            slot.hash_topology(state);
        }
    }

    /// Indices of the slots whose seed takes part in the forward pass.
    pub fn running_slots(&self) -> Vec<usize> {
        self.slots.iter().enumerate().filter(|(_, s)| s.runs_seed()).map(|(i, _)| i).collect()
    }

    /// The slots whose seed produced a non-finite output since it was installed: the
    /// flags of every running seed, read back in one transfer.
    pub fn non_finite_slots(&self) -> Result<Vec<usize>, ModelError> {
        let (idx, flags): (Vec<usize>, Vec<&Tensor>) =
            self.slots.iter().enumerate().filter_map(|(i, s)| s.finite_flag().map(|f| (i, f))).unzip();
        let Some(first) = flags.first() else { return Ok(Vec::new()) };
        // Stacked where the first flag lives (a no-op move for flags already there), then
        // one transfer to the host.
        let device = first.device();
        let on_one = flags.iter().map(|f| f.f_to_device(device)).collect::<Result<Vec<_>, _>>()?;
        let read = Tensor::f_stack(&on_one, 0)?.f_to_device(Device::Cpu)?;
        let ok = Vec::<bool>::try_from(&read)?;
        Ok(idx.into_iter().zip(ok).filter(|(_, ok)| !ok).map(|(i, _)| i).collect())
    }

    /// Buffers (non-trainable state: BatchNorm statistics) of the host and every live
    /// seed, sorted by name: what a discarded train-mode forward may have changed.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .host_vs
            .variables()
            .into_iter()
            .filter(|(_, t)| !t.requires_grad())
            .map(|(n, t)| (format!("host.{n}"), t))
            .collect();
        for slot in &self.slots {
            out.extend(
                slot.named_seed_tensors()
                    .into_iter()
                    .filter(|(_, t)| !t.requires_grad())
                    .map(|(n, t)| (format!("{}.{n}", slot.id()), t)),
            );
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every parameter and buffer of the host and the live seeds, sorted by name.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> =
            self.host_vs.variables().into_iter().map(|(n, t)| (format!("host.{n}"), t)).collect();
        for slot in &self.slots {
            out.extend(slot.named_seed_tensors().into_iter().map(|(n, t)| (format!("{}.{n}", slot.id()), t)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Germinates `seed` (created for slot `id` with `options`, see
    /// [`crate::train::germinate`]) into slot `id`, after the slot's probe.
    pub fn germinate(
        &mut self,
        id: &str,
        seed: PluginSeed,
        seed_id: &str,
        options: &serde_json::Value,
        choice: BlendChoice,
    ) -> Result<(), ModelError> {
        let host_params = self.host_parameters();
        self.slot_mut(id)?.germinate(seed, seed_id, options, choice, &host_params)
    }

    /// Restores slot `id` to a checkpointed `lifecycle`, with `seed` re-created from its
    /// live blueprint (see [`SeedSlot::restore`]).
    pub fn restore_slot(
        &mut self,
        id: &str,
        lifecycle: Lifecycle,
        seed: Option<PluginSeed>,
        options: serde_json::Value,
    ) -> Result<(), ModelError> {
        let host_params = self.host_parameters();
        self.slot_mut(id)?.restore(lifecycle, seed, options, &host_params)
    }

    pub fn prune(&mut self, id: &str, reason: &str) -> Result<(), ModelError> {
        self.slot_mut(id)?.prune(reason).map(drop)
    }

    /// Host parameters (trainable), apart from every seed's.
    pub fn host_parameters(&self) -> Vec<Tensor> {
        self.host_vs.trainable_variables()
    }

    /// Trainable parameters of every live seed (and blend gate).
    pub fn seed_parameters(&self) -> Vec<Tensor> {
        self.slots.iter().flat_map(|s| s.seed_parameters()).collect()
    }

    /// Measures gradients after backward in every slot with a running seed.
    /// Returns each slot's sample (by slot index).
    pub fn capture_gradients(&mut self) -> Vec<(usize, GradientSample)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, slot)| Some((i, slot.capture_gradients()?))).collect()
    }

    /// Advances every slot's clock by one epoch.
    pub fn step_epoch(&mut self) -> Result<(), ModelError> {
        self.generation += 1;
        for slot in &mut self.slots {
            slot.step_epoch()?;
        }
        Ok(())
    }

    /// Moves host, seeds, gates and monitors to `device`.
    pub fn set_device(&mut self, device: Device) {
        self.generation += 1;
        self.host_vs.set_device(device);
        for slot in &mut self.slots {
            slot.set_device(device);
        }
    }

    /// Per-slot reports, in execution order.
    pub fn report(&self) -> Vec<SlotReport> {
        self.slots.iter().map(SeedSlot::report).collect()
    }
}
