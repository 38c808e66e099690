//! One preflight of a run config, shared by `esper config check`, `esper run` (through
//! `Trainer::new`) and library users: everything that can be known before the first
//! epoch is checked here, so a mistake fails the same way, with the same message,
//! whichever way the config comes in. Nothing is allocated but the plugin libraries.

use super::{MemoryLimit, RunConfig};
use crate::{
    host::{budget, budget::StepEstimate, HostError},
    plugin::BlueprintRegistry,
};
use anyhow::{anyhow, Result};
use tch::Device;

/// What the preflight found: the loaded plugins, and the step's memory estimate against
/// its limit.
pub struct Preflight {
    pub registry: BlueprintRegistry,
    pub estimate: StepEstimate,
    pub limit: MemoryLimit,
}

impl RunConfig {
    /// Checks, in order: the host's shape and that every slot is one of its injection
    /// points (arithmetic); the step's memory estimate against the limit for `device`
    /// (`None`: the strictest of the devices the config allows); the plugins, loaded and
    /// pinned; every blueprint the schedule and the controller name, resolved.
    /// `validate` (keys and values) is assumed to have passed.
    pub fn preflight(&self, device: Option<Device>) -> Result<Preflight> {
        let points = budget::injection_points(&self.host).map_err(|e| anyhow!("host: {e}"))?;
        for slot in &self.slots {
            if !points.iter().any(|(id, _)| id == slot) {
                let valid = points.iter().map(|p| p.0.clone()).collect();
                return Err(anyhow!("slots: {}", HostError::UnknownPoint { name: slot.clone(), valid }));
            }
        }
        let estimate = self.check_resources(device)?;
        let limit = self.memory_limit(device)?;
        let mut registry = BlueprintRegistry::new();
        registry.set_param_factor(self.lifecycle.plugin_param_factor);
        for p in &self.plugins {
            registry.load_pinned(&p.path, p.sha256.as_deref())?;
        }
        let scheduled = self.lifecycle.schedule.iter().map(|s| ("lifecycle.schedule", s.blueprint.as_str()));
        let controller = self
            .lifecycle
            .controller
            .enabled
            .then_some(("lifecycle.controller.blueprint", self.lifecycle.controller.blueprint.as_str()));
        for (setting, blueprint) in scheduled.chain(controller) {
            registry.resolve(blueprint).map_err(|e| anyhow!("{setting}: {e}"))?;
        }
        Ok(Preflight { registry, estimate, limit })
    }
}
