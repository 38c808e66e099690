//! `esper run`: the training job, its report, and `--resume`.
//!
//! A run's output folder belongs to that run: `esper run` refuses a folder that is not
//! empty, unless told to continue the run in it (`--resume DIR`) or to clear it first
//! (`--overwrite`); `--output DIR` picks another folder.

use crate::{progress::Bars, report, telemetry};
use anyhow::{Context, Result};
use clap::Args;
use esper_runtime::{
    config::RunConfig,
    lifecycle::SeedStage,
    train::{checkpoint, Trainer},
};
use indicatif::MultiProgress;
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::ExitCode,
};
use thiserror::Error;

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
    /// Start over in an output folder that holds an earlier run: remove that run's
    /// files (checkpoints, events, report) first.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
}

/// Files and folders a run writes in its output folder (all `--overwrite` removes).
const RUN_OUTPUTS: [&str; 4] = [checkpoint::CHECKPOINTS, "events.jsonl", "report.json", "report.png"];

#[derive(Debug, Error)]
pub enum OutputFolderError {
    #[error(
        "output folder {dir} is not empty (it holds an earlier run); pass --resume {dir} to continue that run, \
         --overwrite to delete it and start over, or --output DIR to write this run somewhere else"
    )]
    NotEmpty { dir: PathBuf },
    #[error(
        "output folder {dir} holds files esper did not write (such as {entry}), so --overwrite leaves it alone; \
         pass --output DIR to write this run somewhere else"
    )]
    Foreign { dir: PathBuf, entry: String },
    #[error("cannot {action} output folder {dir}: {cause}")]
    Io { dir: PathBuf, action: &'static str, cause: std::io::Error },
}

/// Makes `dir` ready for a new run: created if missing; refused if it holds anything
/// unless `overwrite`, which removes an earlier run's files (and only those).
pub fn prepare_output_folder(dir: &Path, overwrite: bool) -> Result<(), OutputFolderError> {
    let io = |action: &'static str| move |cause| OutputFolderError::Io { dir: dir.to_path_buf(), action, cause };
    if dir.exists() {
        let mut entries: Vec<String> = std::fs::read_dir(dir)
            .map_err(io("read"))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .map_err(io("read"))?;
        entries.sort();
        if !entries.is_empty() {
            if !overwrite {
                return Err(OutputFolderError::NotEmpty { dir: dir.to_path_buf() });
            }
            // `.tmp` files are what the run's own atomic writes leave when interrupted.
            let ours = |e: &String| {
                RUN_OUTPUTS.iter().any(|o| e == o || e.strip_prefix(o).is_some_and(|r| r.starts_with('.')))
            };
            if let Some(entry) = entries.iter().find(|e| !ours(e)) {
                return Err(OutputFolderError::Foreign { dir: dir.to_path_buf(), entry: entry.clone() });
            }
            for entry in &entries {
                let path = dir.join(entry);
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).map_err(io("clear"))?;
                } else {
                    std::fs::remove_file(&path).map_err(io("clear"))?;
                }
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(io("create"))
}

impl RunArgs {
    pub fn run(self) -> Result<ExitCode> {
        let (mut trainer, progress) = match &self.resume {
            Some(dir) => {
                let jsonl = dir.join("checkpoints").is_dir().then(|| dir.join("events.jsonl"));
                let progress = telemetry::init("info", jsonl.as_deref())?;
                (Trainer::resume(dir)?, progress)
            }
            None => self.start()?,
        };
        if let (Some(_), Some(epochs)) = (&self.resume, self.epochs) {
            trainer.set_epochs(epochs);
        }
        trainer.run(&mut Bars::new(&progress))?;
        summarize(&trainer)?;
        Ok(ExitCode::SUCCESS)
    }

    /// A new run: its config (the file, or the built-in job) with this command's
    /// overrides, checked, its output folder ready and its logs set up.
    fn start(&self) -> Result<(Trainer, MultiProgress)> {
        let mut config = match &self.config {
            Some(path) => RunConfig::read(path)?,
            None => RunConfig::default_job(super::shipped_plugins()?),
        };
        let shipped = super::use_shipped_plugins_if_none(&mut config)?;
        if let Some(dir) = &self.output {
            config.output.dir = dir.clone();
        }
        if let Some(epochs) = self.epochs {
            config.training.epochs = epochs;
        }
        let source = self.config.as_deref().unwrap_or("<built-in default job>".as_ref());
        config.validate(source)?;
        prepare_output_folder(&config.output.dir, self.overwrite)?;
        let jsonl = config.output.jsonl.then(|| config.output.dir.join("events.jsonl"));
        let progress = telemetry::init("info", jsonl.as_deref())?;
        for d in &config.deprecations {
            tracing::warn!("config: {d}");
        }
        if let Some(plugins) = shipped {
            tracing::info!(plugins = %super::shown(&plugins), "the config names no [[plugins]]: using the shipped plugins");
        }
        let trainer = Trainer::new(config).with_context(|| format!("config {}", source.display()))?;
        Ok((trainer, progress))
    }
}

/// The end of a run on the terminal: the table, `report.json`, `report.png`, and a
/// summary of accuracy and the stages seen.
fn summarize(trainer: &Trainer) -> Result<()> {
    let history = trainer.history();
    let out = trainer.config().output.dir.clone();
    println!("{}", report::table(history));
    esper_runtime::train::report::write_json(
        &out.join("report.json"),
        history,
        &serde_json::to_value(trainer.model().report())?,
    )?;
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("esper-out-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_new_or_empty_folder_is_used_as_is() {
        let dir = temp("new");
        prepare_output_folder(&dir, false).unwrap();
        assert!(dir.is_dir());
        prepare_output_folder(&dir, false).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_earlier_run_is_refused_or_cleared_and_foreign_files_are_kept() {
        let dir = temp("earlier");
        std::fs::create_dir_all(dir.join("checkpoints/epoch-0003")).unwrap();
        std::fs::write(dir.join("events.jsonl"), "{}").unwrap();
        std::fs::write(dir.join("report.json.tmp"), "{").unwrap();
        let e = prepare_output_folder(&dir, false).unwrap_err().to_string();
        let shown = dir.display().to_string();
        assert!(e.starts_with(&format!("output folder {shown} is not empty")), "{e}");
        assert!(
            e.contains(&format!("--resume {shown}")) && e.contains("--overwrite") && e.contains("--output DIR"),
            "{e}"
        );
        assert!(dir.join("events.jsonl").is_file(), "nothing removed without --overwrite");
        prepare_output_folder(&dir, true).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        // A folder that is not a run's is never cleared.
        std::fs::write(dir.join("thesis.tex"), "").unwrap();
        std::fs::write(dir.join("report.json"), "").unwrap();
        let e = prepare_output_folder(&dir, true).unwrap_err().to_string();
        assert!(e.contains("holds files esper did not write (such as thesis.tex)"), "{e}");
        assert!(dir.join("thesis.tex").is_file() && dir.join("report.json").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
