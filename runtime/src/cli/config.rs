//! `esper config check`.

use crate::{
    config::RunConfig,
    host::{budget, budget::human_bytes, HostError},
    plugin::BlueprintRegistry,
    telemetry,
};
use anyhow::{bail, Result};
use clap::Subcommand;
use std::{path::PathBuf, process::ExitCode};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate a run config: keys, values, slots, plugins (and their sha256),
    /// the blueprints it names, and the host's size and memory estimate against the
    /// memory limit (computed, never allocated).
    Check { config: PathBuf },
}

impl ConfigCommand {
    pub fn run(self) -> Result<ExitCode> {
        let ConfigCommand::Check { config: path } = self;
        telemetry::init("warn", None)?;
        let mut config = RunConfig::read(&path)?;
        let shipped = super::use_shipped_plugins_if_none(&mut config)?;
        config.validate(&path)?;
        // Arithmetic only: the host is never built here.
        let estimate = config.check_resources(None).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        let limit = config.memory_limit(None).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        let points = budget::injection_points(&config.host)
            .map_err(|e| anyhow::anyhow!("config {}: host: {e}", path.display()))?;
        for slot in &config.slots {
            if !points.iter().any(|(id, _)| id == slot) {
                let e =
                    HostError::UnknownPoint { name: slot.clone(), valid: points.iter().map(|p| p.0.clone()).collect() };
                bail!("config {}: slots: {e}", path.display());
            }
        }
        let mut registry = BlueprintRegistry::new();
        registry.set_param_factor(config.lifecycle.plugin_param_factor);
        for p in &config.plugins {
            registry.load_pinned(&p.path, p.sha256.as_deref())?;
        }
        let mut blueprints: Vec<&str> = config.lifecycle.schedule.iter().map(|s| s.blueprint.as_str()).collect();
        if config.lifecycle.controller.enabled {
            blueprints.push(&config.lifecycle.controller.blueprint);
        }
        for b in blueprints {
            if let Err(e) = registry.resolve(b) {
                bail!("config {}: {e}", path.display());
            }
        }
        println!(
            "{}: ok ({} epochs, slots {}, {} blueprint(s) from {} plugin(s))",
            path.display(),
            config.training.epochs,
            config.slots.join(", "),
            registry.list().count(),
            registry.plugins().count()
        );
        if let Some(plugin) = shipped {
            println!("plugins: none in the config; using the shipped plugin {}", plugin.display());
        }
        println!(
            "host: {} parameters; one training step at batch {} needs about {} ({}); limit {} ({})",
            estimate.parameters,
            config.training.batch_size,
            human_bytes(estimate.total_bytes),
            estimate.breakdown(),
            human_bytes(limit.bytes),
            limit.source
        );
        Ok(ExitCode::SUCCESS)
    }
}
