//! `esper config check`.

use crate::{config::RunConfig, host::CnnHost, plugin::BlueprintRegistry, telemetry};
use anyhow::{bail, Result};
use clap::Subcommand;
use std::{path::PathBuf, process::ExitCode};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate a run config: keys, values, slots, plugins (and their sha256),
    /// and the blueprints it names.
    Check { config: PathBuf },
}

impl ConfigCommand {
    pub fn run(self) -> Result<ExitCode> {
        let ConfigCommand::Check { config: path } = self;
        telemetry::init("warn", None)?;
        let config = RunConfig::load(&path)?;
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let host = CnnHost::new(&vs.root(), config.host.clone())?;
        for slot in &config.slots {
            host.point(slot).map_err(|e| anyhow::anyhow!("config {}: slots: {e}", path.display()))?;
        }
        let mut registry = BlueprintRegistry::new();
        for p in &config.plugins {
            registry.load(&p.path)?;
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
        Ok(ExitCode::SUCCESS)
    }
}
