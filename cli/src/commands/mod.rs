//! The `esper` command line: one module per command family.

mod config;
mod conformance;
mod plugins;
mod run;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(name = "esper", version, about = "The Esper morphogenetic seed runtime", propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a training job (the built-in default job when no CONFIG is given).
    Run(run::RunArgs),
    /// Inspect plugin libraries.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Work with run configs.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Run the plugin conformance suite on a plugin library.
    Conformance(conformance::ConformanceArgs),
}

/// The `norm` plugin built beside the running binary (`target/<profile>/libesper_norm.so`).
pub fn default_plugin() -> Result<PathBuf> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("cannot locate the esper binary")?;
    let dir = exe.parent().context("the esper binary has no folder")?;
    Ok(dir.join(esper_runtime::plugin::library_file_name("esper-norm")))
}

/// Fills in the shipped plugins (as the built-in job uses them, see [`default_plugin`])
/// when a config names none; returns the plugin used then, for the caller to report.
pub fn use_shipped_plugins_if_none(config: &mut esper_runtime::config::RunConfig) -> Result<Option<PathBuf>> {
    if !config.plugins.is_empty() {
        return Ok(None);
    }
    let plugin = default_plugin()?;
    config.plugins = vec![esper_runtime::config::PluginSource { path: plugin.clone(), sha256: None }];
    Ok(Some(plugin))
}

impl Cli {
    pub fn run(self) -> Result<ExitCode> {
        match self.command {
            Command::Run(args) => args.run(),
            Command::Plugins(cmd) => cmd.run(),
            Command::Config(cmd) => cmd.run(),
            Command::Conformance(args) => args.run(),
        }
    }
}
