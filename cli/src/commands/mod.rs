//! The `esper` command line: one module per command family.

mod compare;
mod config;
mod conformance;
mod env;
mod launch;
mod plugins;
mod run;
mod scaffold;

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
    /// Run one job's seed schedule once per blueprint and compare them (table and plot).
    Compare(compare::CompareArgs),
    /// Start a blueprint plugin project (`esper plugin new NAME`).
    #[command(subcommand)]
    Plugin(scaffold::PluginCommand),
    /// Print where this runtime is as shell variables (`eval "$(esper env)"`).
    Env,
    /// Watch a run live in the terminal (or replay a finished one): epochs, curves,
    /// slots and lifecycle events.
    Watch(crate::watch::WatchArgs),
}

/// Packages of the plugins shipped with the runtime: `norm`, the CNN library and the
/// transformer library. A bare blueprint name resolves to the run's host topology's
/// (`norm`: `cnn:norm` on a CNN, `transformer:norm` on a transformer).
pub const SHIPPED_PLUGINS: [&str; 3] = ["esper-norm", "esper-cnn", "esper-transformer"];

/// The shipped plugins, built beside the running binary (`target/<profile>/lib*.so`).
pub fn shipped_plugins() -> Result<Vec<PathBuf>> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("cannot locate the esper binary")?;
    let dir = exe.parent().context("the esper binary has no folder")?;
    Ok(SHIPPED_PLUGINS.iter().map(|p| dir.join(esper_runtime::plugin::library_file_name(p))).collect())
}

/// Fills in the shipped plugins (as the built-in job uses them, see [`shipped_plugins`])
/// when a config names none; returns the plugins used then, for the caller to report.
pub fn use_shipped_plugins_if_none(config: &mut esper_runtime::config::RunConfig) -> Result<Option<Vec<PathBuf>>> {
    if !config.plugins.is_empty() {
        return Ok(None);
    }
    let plugins = shipped_plugins()?;
    config.plugins =
        plugins.iter().map(|p| esper_runtime::config::PluginSource { path: p.clone(), sha256: None }).collect();
    Ok(Some(plugins))
}

/// Paths for a message, comma-separated.
pub fn shown(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl Cli {
    pub fn run(self) -> Result<ExitCode> {
        match self.command {
            Command::Run(args) => args.run(),
            Command::Plugins(cmd) => cmd.run(),
            Command::Config(cmd) => cmd.run(),
            Command::Conformance(args) => args.run(),
            Command::Compare(args) => args.run(),
            Command::Plugin(cmd) => cmd.run(),
            Command::Env => env::run(),
            Command::Watch(args) => args.run(),
        }
    }
}
