//! `esper plugins list` and `esper plugins inspect`.

use super::shipped_plugins;
use crate::telemetry;
use anyhow::Result;
use clap::Subcommand;
use esper_plugin_api::abi::ABI_VERSION;
use esper_runtime::plugin::{controllers_of, BlueprintRegistry, OptionsSchema};
use std::{path::PathBuf, process::ExitCode};
use tch::Device;

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// List the blueprints of plugin libraries or folders (default: the shipped plugins).
    List { paths: Vec<PathBuf> },
    /// Show a library's handshake and blueprints, with declared against actual
    /// parameter counts for a channel count, and its controllers.
    Inspect {
        library: PathBuf,
        /// Channel count the blueprints are instantiated with.
        #[arg(long, default_value_t = 64)]
        channels: i64,
    },
}

impl PluginsCommand {
    pub fn run(self) -> Result<ExitCode> {
        telemetry::init("warn", None)?;
        match self {
            PluginsCommand::Inspect { library, channels } => {
                let mut registry = BlueprintRegistry::new();
                registry.load(&library)?;
                let plugin = registry.plugins().next().expect("one plugin loaded");
                let (name, version) = plugin.name_and_version();
                println!("plugin   {name} {version} ({})", plugin.path().display());
                println!("kind     {}, ABI {} (this runtime: ABI {ABI_VERSION})", plugin.kind(), plugin.abi_version());
                match plugin.handshake() {
                    Some(h) => {
                        println!("built with plugin API {}, libtorch {}, tch {}", h.plugin_api, h.libtorch, h.tch)
                    }
                    None => println!("built with no libtorch: its ops run in this runtime's"),
                }
                for (key, d, _) in registry.list() {
                    let actual = match registry.create_seed(key, channels, &serde_json::Value::Null, Device::Cpu) {
                        Ok(seed) => seed.num_parameters().to_string(),
                        Err(e) => format!("cannot create: {e}"),
                    };
                    println!("  {key:<27} {}", d.description);
                    println!(
                        "  {:<27} parameters at {channels} channels: declared ~{}, actual {actual}",
                        "", d.param_estimate
                    );
                    print_options_schema(&registry, key);
                }
                for c in controllers_of(plugin)? {
                    println!("  controller {:<16} {}", c.name, c.description);
                }
                Ok(ExitCode::SUCCESS)
            }
            PluginsCommand::List { paths } => {
                let mut registry = BlueprintRegistry::new();
                let paths = if paths.is_empty() { shipped_plugins()? } else { paths };
                for p in &paths {
                    registry.load(p)?;
                }
                for (key, d, lib) in registry.list() {
                    let plugin = registry.plugins().find(|p| p.path() == lib).expect("a listed blueprint's library");
                    let (kind, abi) = (plugin.kind(), plugin.abi_version());
                    println!(
                        "{key:<27} ~{:<8} {kind:<8} ABI {:<5} {:<60} {}",
                        d.param_estimate,
                        abi.to_string(),
                        d.description,
                        lib.display()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// The options line(s) of `plugins inspect`: the blueprint's JSON schema, indented, or why
/// there is none. A plugin's failure to answer is shown, not raised.
fn print_options_schema(registry: &BlueprintRegistry, key: &str) {
    let pad = "";
    match registry.options_schema(key) {
        Ok(OptionsSchema::Schema(schema)) => {
            let text = serde_json::to_string_pretty(&schema).unwrap_or_else(|_| schema.to_string());
            println!("  {pad:<27} options schema:");
            for line in text.lines() {
                println!("  {pad:<27}   {line}");
            }
        }
        Ok(OptionsSchema::NotPublished) => println!("  {pad:<27} options schema: none published"),
        Ok(OptionsSchema::NotInAbi(abi)) => {
            println!("  {pad:<27} options schema: not available (ABI {abi} has no describe_options; 1.1 does)")
        }
        Err(e) => println!("  {pad:<27} options schema: cannot describe: {e}"),
    }
}
