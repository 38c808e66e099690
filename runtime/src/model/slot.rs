//! A seed slot: one injection point's lifecycle, its seed (from any plugin), the
//! isolation layer around it and its gradient monitor.

use super::ModelError;
use crate::{
    blend::{AlphaRamp, AlphaTarget, BlendChoice, BlendSettings, BlendTempo},
    host::FeatureLayout,
    isolation::{
        contract, seed_input, straight_through, watchdog::SeedIdentity, Blend, BlendAlgorithm, FaultKind,
        GradientHealthMonitor, GradientSample, SeedFault, SeedWatch, WatchedSeed,
    },
    lifecycle::{
        AlphaCurve, AlphaMode, GateResult, GradientHealth, Lifecycle, LifecycleError, LifecycleEvent, QualityGates,
        SeedStage, SeedState, StageChange,
    },
    plugin::PluginSeed,
};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use tch::{Device, Kind, Tensor};

/// How a slot runs its seed: gradient isolation and the blend settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "SlotKeys", into = "SlotKeys")]
pub struct SlotConfig {
    /// Detach the seed's input from the host graph (made contiguous first).
    pub isolate_gradients: bool,
    pub blend: BlendSettings,
}

impl Default for SlotConfig {
    fn default() -> Self {
        Self { isolate_gradients: true, blend: BlendSettings::default() }
    }
}

/// `[slot]` as a config (and a checkpoint's copy of it) writes it: one flat table.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SlotKeys {
    isolate_gradients: bool,
    blend: BlendAlgorithm,
    alpha_curve: AlphaCurve,
    blend_tempo: BlendTempo,
    alpha_target: AlphaTarget,
}

impl Default for SlotKeys {
    fn default() -> Self {
        SlotConfig::default().into()
    }
}

impl From<SlotConfig> for SlotKeys {
    fn from(c: SlotConfig) -> Self {
        let (algorithm, ramp) = (c.blend.algorithm, c.blend.ramp);
        SlotKeys {
            isolate_gradients: c.isolate_gradients,
            blend: algorithm,
            alpha_curve: ramp.curve,
            blend_tempo: ramp.tempo,
            alpha_target: ramp.target,
        }
    }
}

impl From<SlotKeys> for SlotConfig {
    fn from(k: SlotKeys) -> Self {
        let ramp = AlphaRamp { curve: k.alpha_curve, tempo: k.blend_tempo, target: k.alpha_target };
        SlotConfig { isolate_gradients: k.isolate_gradients, blend: BlendSettings { algorithm: k.blend, ramp } }
    }
}

/// Side of the germination probe at an image point (a random (PROBE_BATCH, C, 32, 32)
/// input, train and eval mode).
pub const PROBE_SIZE: i64 = 32;
/// Tokens of the germination probe at a sequence point (a random
/// (PROBE_BATCH, PROBE_TOKENS, C) input).
pub const PROBE_TOKENS: i64 = 16;
/// Batch of the germination probe: at least 2, so a seed that collapses the batch
/// (returns `(1, C, H, W)`, which would broadcast) is refused.
pub const PROBE_BATCH: i64 = 2;

/// What a slot reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotReport {
    pub slot: String,
    pub channels: i64,
    pub stage: SeedStage,
    pub stage_number: u8,
    pub alpha: f64,
    pub seed_parameters: i64,
    pub state: Option<SeedState>,
}

pub struct SeedSlot {
    id: String,
    channels: i64,
    layout: FeatureLayout,
    config: SlotConfig,
    lifecycle: Lifecycle,
    seed: Option<PluginSeed>,
    /// The live seed's blend, made from `config.blend.algorithm` when it enters BLENDING (none
    /// before: a TRAINING seed is not blended).
    blend: Option<Blend>,
    monitor: Option<GradientHealthMonitor>,
    /// On the seed's device: false once any output of the seed was NaN or infinite.
    /// Accumulated without a sync; read where the training loop already reads.
    finite: Option<Tensor>,
    /// On the seed's device: the blend's alpha (clamped to [0, 1]) as a 0-d tensor, and
    /// the value last put there. A changing alpha is a fill of this tensor, never a new
    /// kernel argument, so a CUDA graph of the step stays right (see [`SeedSlot::sync_alpha`]).
    alpha: Option<Tensor>,
    alpha_synced: Cell<f64>,
    /// The blueprint options the seed was created with (kept for checkpoints).
    options: serde_json::Value,
    /// What happened here since the trainer last collected (see [`SeedSlot::take_events`]).
    events: Vec<LifecycleEvent>,
    /// The run's seed watchdog (none outside a run: calls are not timed then).
    watch: Option<SeedWatch>,
    /// The live seed as the watchdog knows it.
    watched: Option<WatchedSeed>,
}

impl SeedSlot {
    /// A slot at injection point `id`, whose features have `channels` channels laid out
    /// as `layout`.
    pub fn new(id: &str, channels: i64, layout: FeatureLayout, config: SlotConfig) -> Self {
        Self {
            id: id.into(),
            channels,
            layout,
            config,
            lifecycle: Lifecycle::new(id),
            seed: None,
            blend: None,
            monitor: None,
            finite: None,
            alpha: None,
            alpha_synced: Cell::new(f64::NAN),
            options: serde_json::Value::Null,
            events: Vec::new(),
            watch: None,
            watched: None,
        }
    }

    /// Times this slot's seed calls with the run's watchdog (see
    /// [`crate::isolation::watchdog`]).
    pub fn set_watch(&mut self, watch: SeedWatch) {
        if let (Some(old), Some(seed)) = (&self.watch, &self.watched) {
            old.unregister(seed);
        }
        if let Some(seed) = &self.watched {
            watch.register(seed);
        }
        self.watch = Some(watch);
    }

    /// `seed` (id `seed_id`) as the watchdog names it.
    fn watched_seed(&self, seed: &PluginSeed, seed_id: &str) -> WatchedSeed {
        WatchedSeed::new(SeedIdentity {
            slot: self.id.clone(),
            seed_id: seed_id.into(),
            blueprint: seed.key().into(),
            plugin: seed.plugin_path().to_path_buf(),
        })
    }

    /// The watchdog and the seed, for a watched call.
    fn watching<'a>(&'a self, seed: Option<&'a WatchedSeed>) -> Option<(&'a SeedWatch, &'a WatchedSeed)> {
        self.watch.as_ref().zip(seed)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn channels(&self) -> i64 {
        self.channels
    }
    pub fn config(&self) -> &SlotConfig {
        &self.config
    }
    pub fn stage(&self) -> SeedStage {
        self.lifecycle.stage()
    }
    pub fn alpha(&self) -> f64 {
        self.lifecycle.alpha()
    }
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }
    pub fn lifecycle_mut(&mut self) -> &mut Lifecycle {
        &mut self.lifecycle
    }
    pub fn seed(&self) -> Option<&PluginSeed> {
        self.seed.as_ref()
    }
    /// Sets gradient isolation (for experiments and the BUG-005 regression tests).
    pub fn set_isolate_gradients(&mut self, on: bool) {
        self.config.isolate_gradients = on;
    }

    /// Whether the seed takes part in the forward pass.
    pub fn runs_seed(&self) -> bool {
        self.seed.is_some() && self.stage().is_active()
    }

    /// Whether the seed's output reaches the host's stream: a running seed past
    /// TRAINING (in TRAINING the straight-through forward is the host's own, and the
    /// seed's input is detached, so the host trains exactly as without it).
    pub fn blends_into_host(&self) -> bool {
        self.runs_seed() && self.stage() != SeedStage::Training
    }

    /// The slot's forward: the host features pass through unchanged unless a seed is
    /// active; then the isolation layer and the stage's blend apply. The seed's output
    /// is checked against the contract first; a breach or a plugin error is a
    /// [`ModelError::Seed`] naming the seed (the caller prunes it).
    pub fn forward(&self, host: Tensor, train: bool) -> Result<Tensor, ModelError> {
        let Some(seed) = self.seed.as_ref().filter(|_| self.runs_seed()) else {
            return Ok(host);
        };
        // Isolation is forced while the seed trains alone; config decides from BLENDING on.
        let training = self.stage() == SeedStage::Training;
        let input = seed_input(&host, self.config.isolate_gradients || training);
        let blend = self.blend.as_ref().filter(|_| !training);
        // The straight-through estimator uses no value of the output: it takes autocast's
        // float32 as it is (and hands the seed its gradient in float32).
        let watch = self.watching(self.watched.as_ref());
        let out = checked_forward(seed, &input, train, blend.is_none(), watch).map_err(|kind| self.fault(kind))?;
        if let Some(flag) = &self.finite {
            note_finite(flag, &out).map_err(|e| self.fault(FaultKind::Forward(e.to_string())))?;
        }
        match blend {
            Some(blend) => {
                let alpha = self.sync_alpha().map_err(|e| self.fault(FaultKind::Forward(e.to_string())))?;
                let blended = blend.apply(&host, &out, &input, alpha);
                blended.map_err(|e| self.fault(FaultKind::Forward(format!("blending its output failed: {e}"))))
            }
            None => straight_through(&host, &out).map_err(|e| self.fault(FaultKind::Forward(e.to_string()))),
        }
    }

    /// Puts the lifecycle's alpha into the slot's device scalar if it changed (a fill
    /// kernel, no sync) and returns that scalar. The forward calls it; a trainer replaying
    /// a CUDA graph calls it (through [`super::MorphogeneticModel::sync_alpha`]) before
    /// each replay, so the value the graph reads is the lifecycle's.
    pub fn sync_alpha(&self) -> Result<&Tensor, tch::TchError> {
        let alpha = self.alpha.as_ref().ok_or_else(|| tch::TchError::Torch("the slot has no seed".into()))?;
        let value = self.alpha().clamp(0.0, 1.0);
        if self.alpha_synced.get().to_bits() != value.to_bits() {
            let _ = alpha.shallow_clone().f_fill_(value)?;
            self.alpha_synced.set(value);
        }
        Ok(alpha)
    }

    /// Feeds what decides the kernels this slot's forward and backward launch (whether
    /// and which seed runs, its stage, its blend, isolation, a prune blend-out) into
    /// `state`: a CUDA graph of the step is reused while this stays the same. Alpha is
    /// not part of it (a device scalar, see [`SeedSlot::sync_alpha`]).
    pub fn hash_topology(&self, state: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        self.id.hash(state);
        self.runs_seed().hash(state);
        self.stage().hash(state);
        self.lifecycle.state().map(|s| s.seed_id()).hash(state);
        self.blend.as_ref().map(Blend::algorithm).hash(state);
        self.config.isolate_gradients.hash(state);
        self.prune_scheduled().hash(state);
    }

    /// Probes `seed` (created for this slot's channel count, with `options`) and
    /// germinates it. On any failure the slot is left as it was (and the seed dropped).
    /// `host_params` are what its gradient monitor compares the seed's gradients with.
    pub fn germinate(
        &mut self,
        seed: PluginSeed,
        seed_id: &str,
        options: &serde_json::Value,
        choice: BlendChoice,
        host_params: &[Tensor],
    ) -> Result<(), ModelError> {
        if !self.lifecycle.is_available() {
            return Err(
                self.lifecycle_err(LifecycleError::SlotOccupied { slot_id: self.id.clone(), stage: self.stage() })
            );
        }
        self.check_fits(&seed)?;
        if self.config.blend.algorithm == BlendAlgorithm::Multiply {
            // The MULTIPLY rule: the seed's output layer starts at zero, so the
            // multiplicative blend starts neutral (host * (1 + alpha * tanh(0))).
            seed.zero_output_layer();
        }
        let watched = self.watched_seed(&seed, seed_id);
        self.probe(&seed, &watched)?;
        let ramp = self.config.blend.with_choice(choice).seed_ramp();
        self.lifecycle.germinate_with(seed_id, seed.key(), ramp).map_err(|e| self.lifecycle_err(e))?;
        self.events.push(LifecycleEvent::Germinated { slot: self.id.clone(), blueprint: seed.key().into() });
        self.install(seed, watched, options.clone(), host_params);
        Ok(())
    }

    /// The germination probe: a random input of the slot's layout, (PROBE_BATCH, C, 32,
    /// 32) or (PROBE_BATCH, PROBE_TOKENS, C), in train and eval mode, through the same
    /// contract check as every forward, outputs finite.
    fn probe(&self, seed: &PluginSeed, watched: &WatchedSeed) -> Result<(), ModelError> {
        let device = seed.device();
        let shape: Vec<i64> = match self.layout {
            FeatureLayout::Nchw => vec![PROBE_BATCH, self.channels, PROBE_SIZE, PROBE_SIZE],
            FeatureLayout::Ntc => vec![PROBE_BATCH, PROBE_TOKENS, self.channels],
        };
        for (mode, train) in [("train mode", true), ("eval mode", false)] {
            let refuse = |cause: FaultKind| ModelError::ProbeRefused {
                slot: self.id.clone(),
                blueprint: seed.key().into(),
                mode,
                input: shape.clone(),
                cause: Box::new(cause),
            };
            let probe = Tensor::f_randn(shape.as_slice(), (Kind::Float, device))?;
            let watch = self.watching(Some(watched));
            let out = tch::no_grad(|| checked_forward(seed, &probe, train, false, watch)).map_err(refuse)?;
            let finite = out.f_isfinite().and_then(|f| f.f_all()).map(|f| bool::try_from(&f).unwrap_or(false));
            if !finite.unwrap_or(false) {
                return Err(refuse(FaultKind::NonFinite { what: "output" }));
            }
        }
        Ok(())
    }

    /// A seed must be made for this slot's channel count.
    fn check_fits(&self, seed: &PluginSeed) -> Result<(), ModelError> {
        if seed.channels() != self.channels {
            return Err(ModelError::SeedMismatch {
                slot: self.id.clone(),
                blueprint: seed.key().into(),
                expected: self.channels,
                got: seed.channels(),
            });
        }
        Ok(())
    }

    /// Makes the blend for a seed entering BLENDING (once).
    fn make_blend(&mut self) {
        if let (Some(seed), None) = (&self.seed, &self.blend) {
            self.blend = Some(Blend::new(self.config.blend.algorithm, self.channels, self.layout, seed.device()));
        }
    }

    fn install(&mut self, seed: PluginSeed, watched: WatchedSeed, options: serde_json::Value, host_params: &[Tensor]) {
        if let Some(watch) = &self.watch {
            watch.register(&watched);
        }
        self.watched = Some(watched);
        self.finite = Tensor::f_ones([], (Kind::Bool, seed.device())).ok();
        self.alpha = Tensor::f_zeros([], (Kind::Float, seed.device())).ok();
        self.alpha_synced.set(0.0);
        // The monitor watches the seed's own parameters, never a blend's gate network.
        self.monitor = Some(GradientHealthMonitor::new(host_params, &seed.trainable()));
        self.seed = Some(seed);
        self.options = options;
    }

    /// Restores a checkpointed lifecycle with its seed: `seed` is the one re-created
    /// from the lifecycle's live blueprint ([`Lifecycle::live_blueprint`]), none when it
    /// has none (its parameters are loaded by the caller).
    pub fn restore(
        &mut self,
        lifecycle: Lifecycle,
        seed: Option<PluginSeed>,
        options: serde_json::Value,
        host_params: &[Tensor],
    ) -> Result<(), ModelError> {
        let wanted = lifecycle.live_blueprint();
        let given = seed.as_ref().map(PluginSeed::key);
        if wanted.is_some() != given.is_some() {
            return Err(ModelError::RestoreMismatch {
                slot: self.id.clone(),
                lifecycle: wanted.unwrap_or("no seed").into(),
                seed: given.unwrap_or("no seed").into(),
            });
        }
        self.drop_seed();
        if let Some(seed) = seed {
            self.check_fits(&seed)?;
            let watched = self.watched_seed(&seed, lifecycle.state().map_or("", |s| s.seed_id()));
            self.install(seed, watched, options, host_params);
        }
        self.lifecycle = lifecycle;
        if matches!(self.stage(), SeedStage::Blending | SeedStage::Holding | SeedStage::Fossilized) {
            self.make_blend();
        }
        Ok(())
    }

    /// The blueprint options of the live seed (null when none).
    pub fn options(&self) -> &serde_json::Value {
        &self.options
    }

    /// Named runtime-owned tensors of the seed and its gate (`seed.*`, `gate.*`).
    pub fn named_seed_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        if let Some(seed) = &self.seed {
            out.extend(seed.vars().variables().into_iter().map(|(n, t)| (format!("seed.{n}"), t)));
        }
        if let Some(vs) = self.blend.as_ref().and_then(Blend::vars) {
            out.extend(vs.variables().into_iter().map(|(n, t)| (format!("gate.{n}"), t)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Evaluates the gate to the next stage and moves there if it passes.
    pub fn advance(&mut self, gates: &QualityGates) -> Result<GateResult, ModelError> {
        let from = self.stage();
        let result = self.lifecycle.advance(gates).map_err(|e| self.lifecycle_err(e))?;
        let to = self.stage();
        self.events.push(LifecycleEvent::GateEvaluated {
            slot: self.id.clone(),
            gate: result.gate,
            passed: result.passed,
            failed: result.checks_failed.clone(),
        });
        if to != from {
            if to == SeedStage::Blending {
                self.make_blend();
            }
            self.events.push(LifecycleEvent::StageChanged { slot: self.id.clone(), from, to });
        }
        Ok(result)
    }

    /// Prunes the seed now (FOSSILIZED seeds cannot be pruned).
    pub fn prune(&mut self, reason: &str) -> Result<StageChange, ModelError> {
        let change = self.lifecycle.prune(reason).map_err(|e| self.lifecycle_err(e))?;
        self.drop_seed();
        self.events.push(LifecycleEvent::Pruned { slot: self.id.clone(), reason: reason.into() });
        Ok(change)
    }

    /// Prunes the seed by blend-out: alpha ramps to 0 over `epochs` epochs (a HOLDING
    /// seed goes back to BLENDING for it), then [`SeedSlot::step_epoch`] prunes it.
    /// A seed that does not affect the output yet (alpha 0), whose alpha is still
    /// moving, or with `epochs` 0, is pruned now.
    pub fn schedule_prune(&mut self, epochs: u32, reason: &str) -> Result<(), ModelError> {
        let from = self.stage();
        // A blend-out starts from a resting alpha; one still ramping up is cut short.
        let resting = self.lifecycle.state().is_some_and(|s| s.alpha_controller().mode() == AlphaMode::Hold);
        let epochs = if resting { epochs } else { 0 };
        let done = self.lifecycle.schedule_prune(epochs, reason).map_err(|e| self.lifecycle_err(e))?;
        if done.is_some() {
            self.drop_seed();
            self.events.push(LifecycleEvent::Pruned { slot: self.id.clone(), reason: reason.into() });
            return Ok(());
        }
        let to = self.stage();
        if to != from {
            self.events.push(LifecycleEvent::StageChanged { slot: self.id.clone(), from, to });
        }
        self.events.push(LifecycleEvent::PruneScheduled { slot: self.id.clone(), epochs, reason: reason.into() });
        Ok(())
    }

    /// Continues a seed resting at a partial alpha target to full amplitude.
    pub fn continue_to_full(&mut self) -> Result<(), ModelError> {
        self.lifecycle.continue_to_full().map_err(|e| self.lifecycle_err(e))?;
        self.events.push(LifecycleEvent::BlendContinued { slot: self.id.clone() });
        Ok(())
    }

    /// Whether the seed rests in BLENDING at a partial alpha target (below full).
    pub fn at_partial_hold(&self) -> bool {
        self.lifecycle.state().is_some_and(|s| {
            let ctl = s.alpha_controller();
            s.stage() == SeedStage::Blending && ctl.mode() == AlphaMode::Hold && ctl.alpha_target() < 1.0 - 1e-6
        })
    }

    /// Whether a prune by blend-out is under way.
    pub fn prune_scheduled(&self) -> bool {
        self.lifecycle.state().is_some_and(|s| s.scheduled_prune().is_some())
    }

    /// The per-epoch clock: alpha ramp, scheduled prune, embargo and reset.
    pub fn step_epoch(&mut self) -> Result<Option<StageChange>, ModelError> {
        let change = self.lifecycle.step_epoch().map_err(|e| self.lifecycle_err(e))?;
        if let Some(c) = change {
            if c.to == SeedStage::Pruned {
                // A blend-out finished: the prune, with the reason it was scheduled for.
                let reason = self.lifecycle.state().and_then(|s| s.prune_reason()).unwrap_or_default().to_string();
                self.drop_seed();
                self.events.push(LifecycleEvent::Pruned { slot: self.id.clone(), reason });
            } else {
                self.events.push(LifecycleEvent::StageChanged { slot: self.id.clone(), from: c.from, to: c.to });
            }
        }
        Ok(change)
    }

    /// Removes a faulty seed from the run: pruned (reason `code: detail`), or, when the
    /// lifecycle cannot prune it (FOSSILIZED), its module dropped so it runs no more.
    pub fn contain(&mut self, fault: &SeedFault) -> Result<(), ModelError> {
        let reason = fault.reason();
        tracing::debug!(seed_id = %fault.seed_id, plugin = %fault.plugin.display(), "{fault}");
        self.events.push(LifecycleEvent::SeedFault {
            slot: self.id.clone(),
            blueprint: fault.blueprint.clone(),
            code: fault.kind.code().into(),
            detail: fault.kind.to_string(),
        });
        if self.stage() == SeedStage::Fossilized {
            self.events.push(LifecycleEvent::Quarantined { slot: self.id.clone(), reason });
            self.drop_seed();
            return Ok(());
        }
        self.prune(&reason).map(drop)
    }

    /// Builds the fault record for this slot's live seed.
    fn fault(&self, kind: FaultKind) -> ModelError {
        ModelError::Seed(Box::new(self.seed_fault(kind)))
    }

    /// A fault of `kind` by this slot's live seed, as a value (for the trainer's own
    /// checks); None when the slot has no seed.
    pub fn fault_of(&self, kind: FaultKind) -> Option<SeedFault> {
        self.seed.is_some().then(|| self.seed_fault(kind))
    }

    fn seed_fault(&self, kind: FaultKind) -> SeedFault {
        SeedFault {
            slot: self.id.clone(),
            seed_id: self.lifecycle.state().map(|s| s.seed_id().to_string()).unwrap_or_default(),
            blueprint: self.seed.as_ref().map(|s| s.key().to_string()).unwrap_or_default(),
            plugin: self.seed.as_ref().map(|s| s.plugin_path().to_path_buf()).unwrap_or_default(),
            kind,
        }
    }

    /// The device flag "every output so far was finite" of a running seed.
    pub fn finite_flag(&self) -> Option<&Tensor> {
        self.finite.as_ref().filter(|_| self.runs_seed())
    }

    /// Sets the finiteness flag back to "finite" (a fill, no sync): after a fault found
    /// to be the host's, whose non-finite values reached the seed's input and so its
    /// output, the seed starts clean.
    pub fn clear_finite_flag(&self) -> Result<(), tch::TchError> {
        if let Some(flag) = &self.finite {
            let _ = flag.shallow_clone().f_fill_(1)?;
        }
        Ok(())
    }

    /// The lifecycle events of this slot since the last call, in order. The slot does
    /// not log them: the trainer collects, emits and records each once.
    pub fn take_events(&mut self) -> Vec<LifecycleEvent> {
        std::mem::take(&mut self.events)
    }

    fn drop_seed(&mut self) {
        if let Some(seed) = self.seed.take() {
            let key = seed.key().to_string();
            if let Err(e) = seed.release() {
                tracing::debug!(blueprint = %key, "dropping the seed failed (contained)");
                self.events.push(LifecycleEvent::ReleaseFailed { slot: self.id.clone(), error: e.to_string() });
            }
        }
        if let (Some(watch), Some(seed)) = (&self.watch, &self.watched) {
            watch.unregister(seed);
        }
        self.watched = None;
        self.blend = None;
        self.monitor = None;
        self.finite = None;
        self.alpha = None;
        self.options = serde_json::Value::Null;
    }

    /// After backward: measures host and seed gradient norms (one read-back) and records
    /// the ratio and the seed's gradient health. None when there is nothing to measure.
    pub fn capture_gradients(&mut self) -> Option<GradientSample> {
        if !self.runs_seed() {
            return None;
        }
        let monitor = self.monitor.as_ref()?;
        let sample = monitor.sample()?;
        let (host_params, seed_params) = monitor.param_counts();
        let health = GradientHealth::from_param_norms(&sample.seed_param_norms);
        let metrics = self.lifecycle.metrics_mut()?;
        metrics.record_gradient_norms(sample.seed_norm, sample.host_norm, seed_params, host_params);
        metrics.record_gradient_health_summary(&health);
        // The latest sample decides: G5 fossilizes only a seed healthy now.
        self.lifecycle.set_healthy(health.is_healthy());
        Some(sample)
    }

    /// Trainable parameters of the seed and its blend (gate), runtime-owned.
    pub fn seed_parameters(&self) -> Vec<Tensor> {
        let mut p = self.seed.as_ref().map(|s| s.trainable()).unwrap_or_default();
        p.extend(self.gate_parameters());
        p
    }

    /// Trainable parameters of the blend's gate network (GATE, from BLENDING on).
    pub fn gate_parameters(&self) -> Vec<Tensor> {
        self.blend.as_ref().and_then(Blend::vars).map(|vs| vs.trainable_variables()).unwrap_or_default()
    }

    pub(crate) fn set_device(&mut self, device: Device) {
        if let Some(seed) = &mut self.seed {
            seed.set_device(device);
        }
        if let Some(vs) = self.blend.as_mut().and_then(Blend::vars_mut) {
            vs.set_device(device);
        }
        if let Some(f) = &mut self.finite {
            *f = f.to_device(device);
        }
        if let Some(a) = &mut self.alpha {
            *a = a.to_device(device);
        }
        if let Some(m) = &mut self.monitor {
            m.follow_device_move();
        }
    }

    /// The monitor (for tests and telemetry).
    pub fn monitor(&self) -> Option<&GradientHealthMonitor> {
        self.monitor.as_ref()
    }

    pub fn report(&self) -> SlotReport {
        SlotReport {
            slot: self.id.clone(),
            channels: self.channels,
            stage: self.stage(),
            stage_number: self.stage().number(),
            alpha: self.alpha(),
            seed_parameters: self.seed_parameters().iter().map(|t| t.numel() as i64).sum(),
            state: self.lifecycle.state().cloned(),
        }
    }

    fn lifecycle_err(&self, error: LifecycleError) -> ModelError {
        ModelError::Lifecycle { slot: self.id.clone(), error }
    }
}

/// Runs the seed's forward, timed by the run's watchdog when there is one (an overdue
/// call is a [`FaultKind::Timeout`]), and holds the output to the contract. A float32
/// output for a bfloat16 input under autocast is autocast's doing, not the seed's (see
/// [`autocast_f32`]): it is cast back to the input's dtype, or, with `keep_autocast_f32`,
/// kept as it is for a caller that converts itself.
fn checked_forward(
    seed: &PluginSeed,
    input: &Tensor,
    train: bool,
    keep_autocast_f32: bool,
    watch: Option<(&SeedWatch, &WatchedSeed)>,
) -> Result<Tensor, FaultKind> {
    let forward_err = |e: tch::TchError| FaultKind::Forward(e.to_string());
    let version = contract::input_version(input).map_err(forward_err)?;
    let call = watch.map(|(watch, seed)| watch.forward(seed, train));
    let out = seed.forward(input, train);
    if let Some(over) = call.and_then(|c| c.finish()) {
        return Err(FaultKind::Timeout { seconds: over.took.as_secs_f64(), limit_s: over.allowance.as_secs_f64() });
    }
    let out = out.map_err(|e| FaultKind::Forward(e.to_string()))?;
    if !autocast_f32(input, &out) {
        contract::check_output(input, version, &out)?;
        return Ok(out);
    }
    if keep_autocast_f32 {
        contract::check_output_as(input, version, &out, Kind::Float)?;
        return Ok(out);
    }
    let out = out.f_to_kind(Kind::BFloat16).map_err(forward_err)?;
    contract::check_output(input, version, &out)?;
    Ok(out)
}

/// Under bfloat16 autocast a seed's last op may be one autocast keeps in float32 (a
/// norm, on CUDA), returning float32 for a bfloat16 input. Outside autocast a dtype
/// change stays a breach.
fn autocast_f32(input: &Tensor, out: &Tensor) -> bool {
    out.kind() == Kind::Float
        && input.kind() == Kind::BFloat16
        && out.device() == input.device()
        && esper_torch_shim::autocast::enabled(input.device().is_cuda())
}

/// `flag &= isfinite(sum(out))`, on the device, without a sync: one reduction pass and
/// no full-size temporary (a NaN or infinity anywhere makes the sum non-finite; so does
/// a sum that overflows float32, which only outputs of absurd magnitude reach).
fn note_finite(flag: &Tensor, out: &Tensor) -> Result<(), tch::TchError> {
    let finite = out.f_sum(Kind::Float)?.f_isfinite()?;
    flag.shallow_clone().f_logical_and_(&finite).map(drop)
}
