//! `esper compare [CONFIG] [--blueprints A,B,...]`: one job, its seed schedule run once
//! per blueprint (and once without a seed), compared in one table and one plot.

use crate::{report, telemetry};
use anyhow::{bail, Context, Result};
use clap::Args;
use esper_runtime::{
    config::RunConfig,
    data::DataConfig,
    train::compare::{compare, write_json, CompareRow},
};
use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

#[derive(Args)]
pub struct CompareArgs {
    /// The job (TOML); its `[[lifecycle.schedule]]` entries are run with each blueprint
    /// in turn (no checkpoints). Default: configs/compare.toml.
    #[arg(default_value = "configs/compare.toml")]
    config: PathBuf,
    /// The blueprints to compare (default: every blueprint of the host's topology in the
    /// config's plugins, or in the shipped ones when it names none).
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    blueprints: Vec<String>,
    /// Override the number of epochs of each run.
    #[arg(long)]
    epochs: Option<u32>,
    /// Override the output folder (compare.json, compare.png).
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
}

impl CompareArgs {
    pub fn run(self) -> Result<ExitCode> {
        telemetry::init("warn", None)?;
        let mut config = RunConfig::read(&self.config)?;
        super::use_shipped_plugins_if_none(&mut config)?;
        if let Some(epochs) = self.epochs {
            config.training.epochs = epochs;
        }
        if let Some(dir) = &self.output {
            config.output.dir = dir.clone();
        }
        config.validate(&self.config)?;
        if config.lifecycle.schedule.is_empty() {
            bail!(
                "config {}: no [[lifecycle.schedule]] entry: nothing to germinate and compare",
                self.config.display()
            );
        }
        let blueprints = if self.blueprints.is_empty() {
            let registry =
                config.preflight(None).with_context(|| format!("config {}", self.config.display()))?.registry;
            let topology = config.host.topology();
            let fits = |d: &esper_plugin_api::abi::BlueprintDescriptor| d.topology.as_str() == topology.as_str();
            registry.list().filter(|(_, d, _)| fits(d)).map(|(key, _, _)| key.to_string()).collect()
        } else {
            self.blueprints
        };
        std::fs::create_dir_all(&config.output.dir)
            .with_context(|| format!("creating {}", config.output.dir.display()))?;
        let total = blueprints.len() + 1;
        let mut done = 0;
        let rows = compare(&config, &blueprints, &mut |b| {
            done += 1;
            eprintln!("[{done}/{total}] {} ({} epochs)", b.unwrap_or("(no seed)"), config.training.epochs);
        })?;
        let judged_by = match config.data {
            DataConfig::Text(_) => Judged::Loss,
            _ => Judged::Accuracy,
        };
        print!("{}", table(&rows, judged_by));
        let out = &config.output.dir;
        write_json(&out.join("compare.json"), &rows)?;
        report::plot_compare(&out.join("compare.png"), &rows)?;
        println!("written: {} and {}", out.join("compare.json").display(), out.join("compare.png").display());
        Ok(ExitCode::SUCCESS)
    }
}

/// What a comparison's table leads with: validation accuracy (images) or validation
/// loss and perplexity (text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    Accuracy,
    Loss,
}

/// The comparison as a table, one row per run, the baseline first.
pub fn table(rows: &[CompareRow], judged_by: Judged) -> String {
    let mut out = String::new();
    let (first, second) = match judged_by {
        Judged::Accuracy => ("final_acc", "best_acc"),
        Judged::Loss => ("val_loss", "val_ppl"),
    };
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>9} {:>12} {:>9}  final stage(s)",
        "blueprint", first, second, "seed_params", "step_ms"
    );
    for r in rows {
        let stages: Vec<String> = r.final_stages.iter().map(ToString::to_string).collect();
        let judged = match judged_by {
            Judged::Accuracy => format!("{:>8.2}% {:>8.2}%", r.final_val_accuracy, r.best_val_accuracy),
            Judged::Loss => format!("{:>9.4} {:>9.2}", r.final_val_loss, r.final_val_loss.exp()),
        };
        let _ = writeln!(
            out,
            "{:<22} {judged} {:>12} {:>9.2}  {}",
            r.name(),
            r.seed_parameters,
            r.step_ms,
            stages.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use esper_runtime::lifecycle::SeedStage;

    #[test]
    fn the_table_has_the_baseline_and_a_row_per_blueprint() {
        let row = |b: Option<&str>, acc, params| CompareRow {
            blueprint: b.map(str::to_string),
            final_val_accuracy: acc,
            best_val_accuracy: acc + 1.0,
            final_val_loss: 2.0,
            best_val_loss: 1.5,
            seed_parameters: params,
            final_stages: vec![SeedStage::Fossilized],
            step_ms: 12.5,
        };
        let t = table(&[row(None, 60.0, 0), row(Some("cnn:conv_light"), 65.5, 36992)], Judged::Accuracy);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("(none)") && lines[1].contains("60.00%"), "{t}");
        assert!(
            lines[2].starts_with("cnn:conv_light") && lines[2].contains("36992") && lines[2].contains("12.50"),
            "{t}"
        );
        let t = table(&[row(Some("transformer:lora"), 30.0, 512)], Judged::Loss);
        assert!(t.lines().next().unwrap().contains("val_loss   val_ppl"), "{t}");
        assert!(t.lines().nth(1).unwrap().contains("2.0000      7.39"), "{t}");
    }
}
