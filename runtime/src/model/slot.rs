//! A seed slot: one injection point's lifecycle, its seed (from any plugin), the
//! isolation layer around it and its gradient monitor.

use super::ModelError;
use crate::{
    isolation::{seed_input, straight_through, BlendAlgorithm, GateNet, GradientHealthMonitor, GradientSample},
    lifecycle::{
        AlphaCurve, BlendSchedule, GateResult, GradientHealth, Lifecycle, LifecycleError, QualityGates, SeedStage,
        SeedState, StageChange,
    },
    plugin::{BlueprintRegistry, PluginSeed},
};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// How a slot runs its seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlotConfig {
    /// Detach the seed's input from the host graph (made contiguous first).
    pub isolate_gradients: bool,
    pub blend: BlendAlgorithm,
    pub alpha_curve: AlphaCurve,
    /// Epochs for the alpha ramp in BLENDING.
    pub blend_tempo: u32,
}

impl Default for SlotConfig {
    fn default() -> Self {
        Self { isolate_gradients: true, blend: BlendAlgorithm::Add, alpha_curve: AlphaCurve::Sigmoid, blend_tempo: 5 }
    }
}

/// Side of the germination probe (a random (1, C, 32, 32) input in eval mode).
pub const PROBE_SIZE: i64 = 32;

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
    config: SlotConfig,
    lifecycle: Lifecycle,
    seed: Option<PluginSeed>,
    gate: Option<(nn::VarStore, GateNet)>,
    monitor: Option<GradientHealthMonitor>,
    /// The blueprint options the seed was created with (kept for checkpoints).
    options: serde_json::Value,
}

impl SeedSlot {
    pub fn new(id: &str, channels: i64, config: SlotConfig) -> Self {
        Self {
            id: id.into(),
            channels,
            config,
            lifecycle: Lifecycle::new(id),
            seed: None,
            gate: None,
            monitor: None,
            options: serde_json::Value::Null,
        }
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
    fn runs_seed(&self) -> bool {
        self.seed.is_some() && self.stage().is_active()
    }

    /// The slot's forward: the host features pass through unchanged unless a seed is
    /// active; then the isolation layer and the stage's blend apply.
    pub fn forward(&self, host: Tensor, train: bool) -> Result<Tensor, ModelError> {
        let Some(seed) = self.seed.as_ref().filter(|_| self.runs_seed()) else { return Ok(host) };
        let input = seed_input(&host, self.config.isolate_gradients);
        let out = seed.forward(&input, train)?;
        let alpha = self.alpha();
        if self.stage() == SeedStage::Training && alpha == 0.0 {
            return Ok(straight_through(&host, &out));
        }
        Ok(self.config.blend.blend(&host, &out, &input, alpha, self.gate.as_ref().map(|(_, g)| g)))
    }

    /// Creates a seed of `blueprint` from the registry, probes it, and germinates it.
    /// On any failure the slot is left as it was.
    pub fn germinate(
        &mut self,
        registry: &BlueprintRegistry,
        blueprint: &str,
        seed_id: &str,
        options: &serde_json::Value,
        device: Device,
        host_params: &[Tensor],
    ) -> Result<(), ModelError> {
        if !self.lifecycle.is_available() {
            return Err(
                self.lifecycle_err(LifecycleError::SlotOccupied { slot_id: self.id.clone(), stage: self.stage() })
            );
        }
        let (seed, gate) = self.create_seed(registry, blueprint, options, device)?;
        let probe = Tensor::randn([1, self.channels, PROBE_SIZE, PROBE_SIZE], (Kind::Float, device));
        let out = tch::no_grad(|| seed.forward(&probe, false))?;
        if out.size() != probe.size() {
            return Err(ModelError::ShapeChanged {
                slot: self.id.clone(),
                blueprint: seed.key().into(),
                expected: probe.size(),
                got: out.size(),
            });
        }
        let schedule = BlendSchedule { curve: self.config.alpha_curve, tempo_epochs: self.config.blend_tempo };
        self.lifecycle.germinate_with(seed_id, seed.key(), schedule).map_err(|e| self.lifecycle_err(e))?;
        tracing::info!(event = "germinated", slot = %self.id, blueprint = seed.key(), seed_id, "germinated");
        self.install(seed, gate, options.clone(), host_params);
        Ok(())
    }

    fn create_seed(
        &self,
        registry: &BlueprintRegistry,
        blueprint: &str,
        options: &serde_json::Value,
        device: Device,
    ) -> Result<(PluginSeed, Option<(nn::VarStore, GateNet)>), ModelError> {
        let seed = registry.create_seed(blueprint, self.channels, options, device)?;
        let gate = (self.config.blend == BlendAlgorithm::Gate).then(|| {
            let vs = nn::VarStore::new(device);
            let net = GateNet::new(&vs.root(), self.channels);
            (vs, net)
        });
        Ok((seed, gate))
    }

    fn install(
        &mut self,
        seed: PluginSeed,
        gate: Option<(nn::VarStore, GateNet)>,
        options: serde_json::Value,
        host_params: &[Tensor],
    ) {
        self.seed = Some(seed);
        self.gate = gate;
        self.options = options;
        self.monitor = Some(GradientHealthMonitor::new(host_params, &self.seed_parameters()));
    }

    /// Restores a checkpointed lifecycle: a live seed is re-created from its blueprint
    /// (its parameters are loaded by the caller).
    pub fn restore(
        &mut self,
        registry: &BlueprintRegistry,
        lifecycle: Lifecycle,
        options: serde_json::Value,
        device: Device,
        host_params: &[Tensor],
    ) -> Result<(), ModelError> {
        self.drop_seed();
        let live = lifecycle.state().filter(|s| {
            use SeedStage::*;
            matches!(s.stage(), Germinated | Training | Blending | Holding | Fossilized)
        });
        if let Some(state) = live {
            let (seed, gate) = self.create_seed(registry, state.blueprint_id(), &options, device)?;
            self.install(seed, gate, options, host_params);
        }
        self.lifecycle = lifecycle;
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
        if let Some((vs, _)) = &self.gate {
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
        tracing::info!(event = "gate_evaluated", slot = %self.id, gate = ?result.gate, passed = result.passed, checks_failed = ?result.checks_failed, "gate evaluated");
        if to != from {
            tracing::info!(event = "stage_changed", slot = %self.id, from = %from, to = %to, "stage changed");
            if to == SeedStage::Fossilized {
                tracing::info!(event = "fossilized", slot = %self.id, "fossilized");
            }
        }
        Ok(result)
    }

    /// Prunes the seed now (FOSSILIZED seeds cannot be pruned).
    pub fn prune(&mut self, reason: &str) -> Result<StageChange, ModelError> {
        let change = self.lifecycle.prune(reason).map_err(|e| self.lifecycle_err(e))?;
        self.drop_seed();
        tracing::info!(event = "pruned", slot = %self.id, reason, "pruned");
        Ok(change)
    }

    /// The per-epoch clock: alpha ramp, scheduled prune, embargo and reset.
    pub fn step_epoch(&mut self) -> Result<Option<StageChange>, ModelError> {
        let change = self.lifecycle.step_epoch().map_err(|e| self.lifecycle_err(e))?;
        if let Some(c) = change {
            if c.to == SeedStage::Pruned {
                self.drop_seed();
            }
            tracing::info!(event = "stage_changed", slot = %self.id, from = %c.from, to = %c.to, "stage changed");
        }
        Ok(change)
    }

    fn drop_seed(&mut self) {
        self.seed = None;
        self.gate = None;
        self.monitor = None;
        self.options = serde_json::Value::Null;
    }

    /// After backward: measures host and seed gradient norms (one read-back) and records
    /// the ratio and the seed's gradient health. None when there is nothing to measure.
    pub fn capture_gradients(&mut self) -> Option<GradientSample> {
        if !self.runs_seed() {
            return None;
        }
        let sample = self.monitor.as_ref()?.sample()?;
        let health = GradientHealth::from_param_norms(&sample.seed_param_norms);
        let metrics = self.lifecycle.metrics_mut()?;
        metrics.record_gradient_ratio(sample.ratio);
        metrics.record_gradient_health_summary(&health);
        Some(sample)
    }

    /// Trainable parameters of the seed and its blend (gate), runtime-owned.
    pub fn seed_parameters(&self) -> Vec<Tensor> {
        let mut p = self.seed.as_ref().map(|s| s.trainable()).unwrap_or_default();
        if let Some((vs, _)) = &self.gate {
            p.extend(vs.trainable_variables());
        }
        p
    }

    pub(crate) fn set_device(&mut self, device: Device) {
        if let Some(seed) = &mut self.seed {
            seed.set_device(device);
        }
        if let Some((vs, _)) = &mut self.gate {
            vs.set_device(device);
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

    fn lifecycle_err(&self, source: LifecycleError) -> ModelError {
        ModelError::Lifecycle { slot: self.id.clone(), source }
    }
}
