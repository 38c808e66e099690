//! The morphogenetic model: a host network plus seed slots at chosen injection points.

mod error;
mod slot;

pub use error::ModelError;
pub use slot::{SeedSlot, SlotConfig, SlotReport, PROBE_SIZE};

use crate::{
    host::{CnnHost, CnnHostConfig, Segment},
    plugin::BlueprintRegistry,
};
use tch::{nn, Device, Tensor};

pub struct MorphogeneticModel {
    host_vs: nn::VarStore,
    host: CnnHost,
    /// Slots in execution order.
    slots: Vec<SeedSlot>,
    /// `plan[i]` runs the host up to slot `i`; the last entry runs to the logits.
    /// Computed once: slots are fixed for the model's life.
    plan: Vec<Segment>,
}

impl MorphogeneticModel {
    /// A CNN host with slots at `slot_ids` (any order; they run in execution order).
    pub fn new(
        host_config: CnnHostConfig,
        slot_ids: &[&str],
        slot_config: SlotConfig,
        device: Device,
    ) -> Result<Self, ModelError> {
        let host_vs = nn::VarStore::new(device);
        let host = CnnHost::new(&host_vs.root(), host_config)?;
        let mut points = Vec::new();
        for id in slot_ids {
            let point = host.point(id).map_err(|_| ModelError::UnknownSlot {
                name: id.to_string(),
                valid: host.injection_points().iter().map(|p| p.id.clone()).collect(),
            })?;
            if points.iter().any(|p: &&crate::host::InjectionPoint| p.id == point.id) {
                return Err(ModelError::DuplicateSlot(id.to_string()));
            }
            points.push(point);
        }
        points.sort_by_key(|p| p.order);
        let mut plan = Vec::with_capacity(points.len() + 1);
        let mut prev: Option<&str> = None;
        for p in &points {
            plan.push(host.segment(prev, Some(&p.id))?);
            prev = Some(&p.id);
        }
        plan.push(host.segment(prev, None)?);
        let slots = points.iter().map(|p| SeedSlot::new(&p.id, p.channels, slot_config.clone())).collect();
        Ok(Self { host_vs, host, slots, plan })
    }

    pub fn host(&self) -> &CnnHost {
        &self.host
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
        &mut self.slots
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
        Ok(&mut self.slots[i])
    }

    /// Logits for `x` (NCHW); the host's memory format is applied once, here.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.run(x, train, None)
    }

    /// The counterfactual forward (eval mode): slot `id` with its alpha forced to 0,
    /// which for every blend is the host stream itself.
    pub fn forward_counterfactual(&self, x: &Tensor, id: &str) -> Result<Tensor, ModelError> {
        self.run(x, false, Some(self.index(id)?))
    }

    fn run(&self, x: &Tensor, train: bool, bypass: Option<usize>) -> Result<Tensor, ModelError> {
        let mut h = self.host.prepare_input(x);
        for (i, slot) in self.slots.iter().enumerate() {
            h = self.host.run_segment(self.plan[i], &h, train);
            if bypass != Some(i) {
                h = slot.forward(h, train)?;
            }
        }
        Ok(self.host.run_segment(self.plan[self.slots.len()], &h, train))
    }

    /// Germinates a seed of `blueprint` (from any loaded plugin) into slot `id`.
    pub fn germinate(
        &mut self,
        registry: &BlueprintRegistry,
        id: &str,
        blueprint: &str,
        seed_id: &str,
        options: &serde_json::Value,
    ) -> Result<(), ModelError> {
        let (device, host_params) = (self.device(), self.host_parameters());
        self.slot_mut(id)?.germinate(registry, blueprint, seed_id, options, device, &host_params)
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
    pub fn capture_gradients(&mut self) {
        for slot in &mut self.slots {
            slot.capture_gradients();
        }
    }

    /// Advances every slot's clock by one epoch.
    pub fn step_epoch(&mut self) -> Result<(), ModelError> {
        for slot in &mut self.slots {
            slot.step_epoch()?;
        }
        Ok(())
    }

    /// Moves host, seeds, gates and monitors to `device`.
    pub fn set_device(&mut self, device: Device) {
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
