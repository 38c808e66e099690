//! `esper run`: the training job, its report, and `--resume`.

use crate::{
    config::RunConfig,
    lifecycle::SeedStage,
    telemetry,
    train::{report, Trainer},
};
use anyhow::Result;
use clap::Args;
use std::{collections::BTreeSet, path::PathBuf, process::ExitCode};

#[derive(Args)]
pub struct RunArgs {
    /// Run config (TOML). Without it, the built-in default job runs.
    config: Option<PathBuf>,
    /// Continue the run whose output folder (or checkpoint) is DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Override the number of epochs (with --resume: run up to this epoch).
    #[arg(long)]
    epochs: Option<u32>,
    /// Override the output folder.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
}

impl RunArgs {
    pub fn run(self) -> Result<ExitCode> {
        let (mut trainer, progress) = match &self.resume {
            Some(dir) => {
                let jsonl = dir.join("checkpoints").is_dir().then(|| dir.join("events.jsonl"));
                let progress = telemetry::init("info", jsonl.as_deref())?;
                (Trainer::resume(dir)?, progress)
            }
            None => {
                let mut config = match &self.config {
                    Some(path) => RunConfig::load(path)?,
                    None => RunConfig::default_job(super::default_plugin()?),
                };
                if let Some(dir) = &self.output {
                    config.output.dir = dir.clone();
                }
                if let Some(epochs) = self.epochs {
                    config.training.epochs = epochs;
                }
                config.validate(self.config.as_deref().unwrap_or("<built-in default job>".as_ref()))?;
                std::fs::create_dir_all(&config.output.dir)?;
                let jsonl = config.output.jsonl.then(|| config.output.dir.join("events.jsonl"));
                let progress = telemetry::init("info", jsonl.as_deref())?;
                (Trainer::new(config)?, progress)
            }
        };
        if let (Some(_), Some(epochs)) = (&self.resume, self.epochs) {
            trainer.set_epochs(epochs);
        }
        trainer.run(&progress)?;
        let history = trainer.history();
        let out = trainer.config().output.dir.clone();
        println!("{}", report::table(history));
        report::write_json(&out.join("report.json"), history, &serde_json::to_value(trainer.model().report())?)?;
        let note = report::plot(&out.join("report.png"), history)?;
        let stages: BTreeSet<SeedStage> = history.iter().flat_map(|r| r.slots.iter().map(|s| s.stage)).collect();
        let names: Vec<String> = stages.iter().map(ToString::to_string).collect();
        if let (Some(first), Some(last)) = (history.first(), history.last()) {
            println!(
                "validation accuracy: {:.2}% after epoch {} -> {:.2}% after epoch {}",
                first.val_accuracy, first.epoch, last.val_accuracy, last.epoch
            );
        }
        println!("stages seen: {}", names.join(", "));
        println!("report: {} and {}", out.join("report.json").display(), out.join("report.png").display());
        if let Some(note) = note {
            println!("note: {note}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
