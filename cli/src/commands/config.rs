//! `esper config check`.

use crate::telemetry;
use anyhow::{Context, Result};
use clap::Subcommand;
use esper_runtime::{config::RunConfig, host::budget::human_bytes};
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
        let preflight = config.preflight(None).with_context(|| format!("config {}", path.display()))?;
        let (registry, estimate, limit) = (preflight.registry, preflight.estimate, preflight.limit);
        println!(
            "{}: ok ({} epochs, slots {}, {} blueprint(s) from {} plugin(s))",
            path.display(),
            config.training.epochs,
            config.slots.join(", "),
            registry.list().count(),
            registry.plugins().count()
        );
        for d in &config.deprecations {
            println!("warning: {d}");
        }
        if let Some(plugins) = shipped {
            println!("plugins: none in the config; using the shipped plugins {}", super::shown(&plugins));
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
