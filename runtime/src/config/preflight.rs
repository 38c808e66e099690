//! One preflight of a run config, shared by `esper config check`, `esper run` (through
//! `Trainer::new`) and library users: everything that can be known before the first
//! epoch is checked here, so a mistake fails the same way, with the same message,
//! whichever way the config comes in. Nothing is allocated but the plugin libraries
//! and one trial seed of each blueprint the run may germinate ([`super::trial`]).

use super::{MemoryLimit, RunConfig};
use crate::{
    host::{
        budget::{BudgetError, StepEstimate},
        HostError, Topology,
    },
    plugin::{BlueprintRegistry, LoadError},
    Result,
};
use tch::Device;
use thiserror::Error;

/// What the preflight refuses beyond the config's own checks: each names the config
/// setting, with the host's or the loader's error as its source.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PreflightError {
    /// The host's shape.
    #[error("host")]
    Host(#[source] BudgetError),
    /// A slot that is none of the host's injection points.
    #[error("slots")]
    Slot(#[source] HostError),
    /// A blueprint named at `setting` ("lifecycle.schedule", "lifecycle.controller.blueprint",
    /// ...) does not resolve.
    #[error("{setting}")]
    Blueprint {
        setting: String,
        #[source]
        source: Box<LoadError>,
    },
    /// A blueprint named at `setting` is of another topology than the host's.
    #[error(
        "{setting}: blueprint `{blueprint}` is for `{blueprint_topology}` hosts and this run's host is \
         `{host_topology}` ([host] kind); name a `{host_topology}` blueprint"
    )]
    Topology { setting: String, blueprint: String, blueprint_topology: String, host_topology: Topology },
    /// The controller's default rotation has no blueprint among those loaded.
    #[error(
        "lifecycle.controller: none of the default rotation's blueprints ({}) is loaded (available: {}); name \
         the controller's `blueprint` or `blueprints`, or load a plugin that has them",
        .rotation.join(", "),
        .available.join(", ")
    )]
    NoDefaultBlueprint { rotation: Vec<String>, available: Vec<String> },
    /// Schedule entry `index` could not be created for its slot (the trial germination).
    #[error("lifecycle.schedule[{index}] (epoch {epoch}, slot {slot}, blueprint `{blueprint}`, {channels} channels)")]
    ScheduledTrial {
        index: usize,
        epoch: u32,
        slot: String,
        blueprint: String,
        channels: i64,
        #[source]
        source: Box<LoadError>,
    },
    /// A blueprint of the controller's rotation could not be created at a slot's width.
    #[error("lifecycle.controller: rotation blueprint `{blueprint}` at {channels} channels (slot {slot})")]
    RotationTrial {
        blueprint: String,
        channels: i64,
        slot: String,
        #[source]
        source: Box<LoadError>,
    },
}

/// What the preflight found: the loaded plugins, the step's memory estimate against its
/// limit, and the controller's rotation (blueprint and options, each resolved; empty
/// when the controller is off).
pub struct Preflight {
    pub registry: BlueprintRegistry,
    pub estimate: StepEstimate,
    pub limit: MemoryLimit,
    pub rotation: Vec<(String, serde_json::Value)>,
}

impl RunConfig {
    /// Checks, in order: the host's shape and that every slot is one of its injection
    /// points (arithmetic); the step's memory estimate against the limit for `device`
    /// (`None`: the strictest of the devices the config allows); the plugins, loaded and
    /// pinned; every blueprint the schedule and the controller name, resolved, then
    /// created once with its options and dropped.
    /// `validate` (keys and values) is assumed to have passed.
    pub fn preflight(&self, device: Option<Device>) -> Result<Preflight> {
        let points = self.host.injection_points().map_err(PreflightError::Host)?;
        for slot in &self.slots {
            if !points.iter().any(|(id, _)| id == slot) {
                let valid = points.iter().map(|p| p.0.clone()).collect();
                return Err(PreflightError::Slot(HostError::UnknownPoint { name: slot.clone(), valid }).into());
            }
        }
        self.warn_batch_over_data();
        let estimate = self.check_resources(device)?;
        let limit = self.memory_limit(device)?;
        let mut registry = BlueprintRegistry::new();
        registry.prefer_topology(self.host.topology());
        registry.set_param_factor(self.lifecycle.plugin_param_factor);
        for p in &self.plugins {
            registry.load_pinned(&p.path, p.sha256.as_deref())?;
        }
        for s in &self.lifecycle.schedule {
            self.check_topology(&registry, &s.blueprint, "lifecycle.schedule")?;
        }
        self.check_controller_plugin(&mut registry)?;
        let rotation = self.controller_rotation(&registry)?;
        self.try_blueprints(&registry, &points, &rotation)?;
        Ok(Preflight { registry, estimate, limit, rotation })
    }

    /// A batch larger than the training set: warned about, naming both numbers, not
    /// refused (each epoch is then one batch of the whole set, which trains; a tiny data
    /// set for a quick try is legitimate, a typo in either number is the likelier cause).
    /// Returns the warning, if any.
    pub fn batch_over_data(&self) -> Option<String> {
        let examples = self.data.train_examples()?;
        let batch = self.training.batch_size;
        (usize::try_from(batch).is_ok_and(|b| b > examples)).then(|| {
            format!(
                "[training] batch_size = {batch} is larger than the training set ({examples} examples): every epoch \
                 is one batch of {examples}; lower batch_size or use more data"
            )
        })
    }

    fn warn_batch_over_data(&self) {
        if let Some(warning) = self.batch_over_data() {
            tracing::warn!(event = "config_warning", "{warning}");
        }
    }

    /// The controller's rotation, every blueprint resolved. The default rotation
    /// (neither `blueprint` nor `blueprints` given) keeps the blueprints the loaded
    /// plugins provide, and needs one of them; a named one must resolve.
    fn controller_rotation(
        &self,
        registry: &BlueprintRegistry,
    ) -> Result<Vec<(String, serde_json::Value)>, PreflightError> {
        let ctl = &self.lifecycle.controller;
        if !ctl.enabled || ctl.plugin.is_some() {
            return Ok(Vec::new());
        }
        let host = self.host.topology();
        let rotation = ctl.rotation(host);
        if ctl.blueprint.is_none() && ctl.blueprints.is_none() {
            let fits = |b: &str| registry.resolve(b).is_ok_and(|(_, d)| d.topology.as_str() == host.as_str());
            let loaded: Vec<_> = rotation.into_iter().filter(|(b, _)| fits(b)).collect();
            if loaded.is_empty() {
                let available = registry.list().map(|(key, _, _)| key.to_string()).collect();
                let rotation = super::default_rotation(host).iter().map(ToString::to_string).collect();
                return Err(PreflightError::NoDefaultBlueprint { rotation, available });
            }
            return Ok(loaded);
        }
        let setting = if ctl.blueprint.is_some() { "blueprint" } else { "blueprints" };
        for (b, _) in &rotation {
            self.check_topology(registry, b, &format!("lifecycle.controller.{setting}"))?;
        }
        Ok(rotation)
    }

    /// The controller plugin, if any, loaded (beside the `[[plugins]]`; the same file
    /// twice is one library) and exporting the controller `name`.
    fn check_controller_plugin(&self, registry: &mut BlueprintRegistry) -> Result<(), LoadError> {
        let ctl = &self.lifecycle.controller;
        let (Some(path), Some(name)) = (&ctl.plugin, &ctl.name) else { return Ok(()) };
        registry.load(path)?;
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        let Some(plugin) = registry.plugins().find(|p| p.path() == canonical) else { return Ok(()) };
        let names: Vec<String> = crate::plugin::controllers_of(plugin)?.iter().map(|d| d.name.to_string()).collect();
        if names.iter().any(|n| n == name) {
            return Ok(());
        }
        let has = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        Err(LoadError::Controller {
            name: name.clone(),
            path: canonical,
            message: format!("no such controller in the library (it has: {has})"),
        })
    }

    /// `blueprint`, named at `setting`, resolves and is of the host's topology.
    fn check_topology(
        &self,
        registry: &BlueprintRegistry,
        blueprint: &str,
        setting: &str,
    ) -> Result<(), PreflightError> {
        let (key, descriptor) = registry.resolve(blueprint).map_err(blueprint_error(setting))?;
        let host_topology = self.host.topology();
        if descriptor.topology.as_str() == host_topology.as_str() {
            return Ok(());
        }
        Err(PreflightError::Topology {
            setting: setting.to_string(),
            blueprint: key.to_string(),
            blueprint_topology: descriptor.topology.to_string(),
            host_topology,
        })
    }
}

/// A closure naming `setting` on a blueprint that does not resolve.
fn blueprint_error(setting: &str) -> impl FnOnce(LoadError) -> PreflightError + '_ {
    move |source| PreflightError::Blueprint { setting: setting.to_string(), source: Box::new(source) }
}
