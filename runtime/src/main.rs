//! `esper`: the runtime's command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use esper_runtime::plugin::BlueprintRegistry;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

#[derive(Parser)]
#[command(name = "esper", version, about = "The Esper morphogenetic seed runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the `norm` plugin, germinate a seed on a tensor and report what happened.
    Run {
        /// Plugin library or folder (default: the plugins built beside this binary).
        #[arg(long)]
        plugins: Option<PathBuf>,
    },
    /// Plugin commands.
    #[command(subcommand)]
    Plugins(PluginsCommand),
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List the blueprints of plugin libraries or folders.
    List { paths: Vec<PathBuf> },
}

fn default_plugin() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the esper binary")?;
    let dir = exe.parent().context("the esper binary has no folder")?;
    Ok(dir.join(format!("{}esper_norm.{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_EXTENSION)))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Command::Run { plugins } => {
            let path = match plugins {
                Some(p) => p,
                None => default_plugin()?,
            };
            let mut registry = BlueprintRegistry::new();
            registry.load(&path)?;
            for (key, d, lib) in registry.list() {
                println!(
                    "blueprint {key}: {} (declared ~{} params) from {}",
                    d.description,
                    d.param_estimate,
                    lib.display()
                );
            }
            let channels = 64;
            let seed = registry.create_seed("norm", channels, &serde_json::Value::Null, Device::Cpu)?;
            println!("germinated `{}` for {channels} channels: {} parameters", seed.key(), seed.num_parameters());
            let x = Tensor::randn([2, channels, 32, 32], (Kind::Float, Device::Cpu));
            let y = seed.forward(&x, false)?;
            let diff = (&y - &x).abs().max().double_value(&[]);
            println!("forward {:?} -> {:?}; max |y - x| = {diff} (the identity at birth)", x.size(), y.size());
        }
        Command::Plugins(PluginsCommand::List { paths }) => {
            let mut registry = BlueprintRegistry::new();
            let paths = if paths.is_empty() { vec![default_plugin()?] } else { paths };
            for p in &paths {
                registry.load(p)?;
            }
            for (key, d, lib) in registry.list() {
                println!("{key:<24} ~{:<8} {:<60} {}", d.param_estimate, d.description, lib.display());
            }
        }
    }
    Ok(())
}
