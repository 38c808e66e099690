//! `esper run`: the training job, its report, and `--resume`.
//!
//! A run's output folder belongs to that run: `esper run` refuses a folder that is not
//! empty, unless told to continue the run in it (`--resume DIR`) or to clear it first
//! (`--overwrite`); `--output DIR` picks another folder. Whichever it does, it first
//! takes the folder's lock (`.esper.lock`) and holds it to the end, so a second process
//! on the same folder is refused at once. SIGINT or SIGTERM stops the run at the next
//! training step: the report covers the epochs done, and the message says how to resume.

use crate::{
    progress::Bars,
    report::{self, tensorboard::TensorBoardWriter},
    signals::{self, StopCause},
    telemetry,
};
use anyhow::{Context, Result};
use clap::Args;
use esper_runtime::{
    config::RunConfig,
    lifecycle::SeedStage,
    run_folder::{self, RunFile, RunFolderError, RunLock},
    train::{
        checkpoint::{self, Resume},
        RunEnd, StopSignal, Trainer,
    },
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
    /// Continue the run whose run folder (or a checkpoint in it) is DIR, in DIR: its
    /// checkpoints, events and report are written there, wherever the run was written
    /// before (a moved or copied run folder continues where it is). Not with --output:
    /// to continue a run elsewhere, copy its folder and resume the copy.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Override the number of epochs (with --resume: run up to this epoch).
    #[arg(long)]
    epochs: Option<u32>,
    /// Override the output folder (of a new run).
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Start over in an output folder that holds an earlier run: remove that run's
    /// files (checkpoints, events, report) first.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Run N local ranks of this run, data-parallel (each a child process with
    /// torchrun's variables; see `[distributed]`). Under torchrun, leave it out.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    nproc: Option<u16>,
}

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
    #[error(transparent)]
    Folder(#[from] RunFolderError),
}

/// Makes `dir` ready for a new run and takes its lock: created if missing; refused if
/// it holds anything unless `overwrite`, which removes an earlier run's files (exactly
/// the names a run writes, see [`RunFile::owns`]); refused at once if another process
/// holds its lock. A folder refused for holding other files is left as it was found.
pub fn prepare_output_folder(dir: &Path, overwrite: bool) -> Result<RunLock, OutputFolderError> {
    let io = |action: &'static str| move |cause| OutputFolderError::Io { dir: dir.to_path_buf(), action, cause };
    std::fs::create_dir_all(dir).map_err(io("create"))?;
    let lock_path = RunFile::Lock.path(dir);
    let had_lock = std::fs::symlink_metadata(&lock_path).is_ok();
    let lock = RunLock::acquire(dir)?;
    match clear_for_new_run(dir, overwrite) {
        Err(e @ OutputFolderError::Foreign { .. }) | Err(e @ OutputFolderError::NotEmpty { .. }) if !had_lock => {
            // Not a run's folder: it keeps no trace of this attempt.
            let _ = std::fs::remove_file(&lock_path);
            Err(e)
        }
        outcome => outcome.map(|()| lock),
    }
}

/// Refuses a folder holding anything but the lock (unless `overwrite`), and with
/// `overwrite` removes an earlier run's files, refusing a folder with anything else.
fn clear_for_new_run(dir: &Path, overwrite: bool) -> Result<(), OutputFolderError> {
    let io = |action: &'static str| move |cause| OutputFolderError::Io { dir: dir.to_path_buf(), action, cause };
    let mut entries: Vec<String> = std::fs::read_dir(dir)
        .map_err(io("read"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(io("read"))?;
    entries.retain(|e| e != RunFile::Lock.name());
    entries.sort();
    if entries.is_empty() {
        return Ok(());
    }
    if !overwrite {
        return Err(OutputFolderError::NotEmpty { dir: dir.to_path_buf() });
    }
    if let Some(entry) = entries.iter().find(|e| !RunFile::owns(e)) {
        return Err(OutputFolderError::Foreign { dir: dir.to_path_buf(), entry: entry.clone() });
    }
    for entry in &entries {
        let path = dir.join(entry);
        // A link is removed as a link, never followed.
        let is_dir = std::fs::symlink_metadata(&path).map_err(io("read"))?.is_dir();
        if is_dir {
            std::fs::remove_dir_all(&path).map_err(io("clear"))?;
        } else {
            std::fs::remove_file(&path).map_err(io("clear"))?;
        }
    }
    Ok(())
}

/// A run ready to go: its trainer, the progress bars, and the lock on its folder (held
/// until the run's last file is written; rank 0's, in a multi-process run).
struct Prepared {
    trainer: Trainer,
    progress: MultiProgress,
    _lock: Option<RunLock>,
}

/// Whether this process is rank 0 of a multi-process run, or the only one: the one that
/// owns the run folder (its lock, checkpoints, events, report) and prints the table.
fn leads() -> Result<bool> {
    Ok(esper_runtime::distributed::RankEnv::from_env()?.is_none_or(|env| env.rank == 0))
}

impl RunArgs {
    pub fn run(self) -> Result<ExitCode> {
        if let (Some(dir), Some(out)) = (&self.resume, &self.output) {
            let (dir, out) = (dir.display(), out.display());
            clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--resume continues a run in its own folder, so it takes no --output: to continue the run of \
                     {dir} in {out}, copy the folder and resume the copy (cp -r {dir} {out}; esper run --resume {out})\n"
                ),
            )
            .exit();
        }
        if let Some(n) = self.nproc.filter(|&n| n > 1 && std::env::var_os("RANK").is_none()) {
            let args = super::launch::without_nproc(std::env::args_os().skip(1));
            return super::launch::launch(n as usize, args, self.rank_timeout()?);
        }
        let stop = signals::install().context("installing the SIGINT and SIGTERM handlers")?;
        let Prepared { mut trainer, progress, _lock } = match &self.resume {
            Some(path) => self.resume(path)?,
            None => self.start()?,
        };
        trainer.set_stop_signal(stop.clone());
        if !trainer.leads() {
            // One set of bars on the terminal: rank 0's.
            progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let tensorboard = (trainer.leads() && trainer.config().output.tensorboard)
            .then(|| TensorBoardWriter::create(&trainer.config().output.dir))
            .transpose()
            .context("starting the TensorBoard logs ([output] tensorboard = false turns them off)")?;
        let end = trainer.run(&mut Watchers { bars: Bars::new(&progress), tensorboard })?;
        if !trainer.history().is_empty() && trainer.leads() {
            summarize(&trainer)?;
        }
        match end {
            RunEnd::Completed => Ok(ExitCode::SUCCESS),
            RunEnd::Stopped { epochs_done } => Ok(stopped(&trainer, epochs_done, &stop)),
        }
    }

    /// How long the ranks of `--nproc` wait for each other (the run's `[distributed]
    /// timeout_s`): what the launcher allows the others once one has failed.
    fn rank_timeout(&self) -> Result<std::time::Duration> {
        let config = match (&self.resume, &self.config) {
            (Some(path), _) => Resume::open(path)?.config().clone(),
            (None, Some(path)) => RunConfig::read(path)?,
            (None, None) => RunConfig::default_job(Vec::new()),
        };
        Ok(std::time::Duration::from_secs_f64(config.distributed.timeout_s))
    }

    /// Continues the run of `path` in its run folder: lock, the run's files checked
    /// (no links), the checkpoint read, logs set up as the run recorded them.
    fn resume(&self, path: &Path) -> Result<Prepared> {
        let dir = checkpoint::run_folder_of(path)?;
        let lead = leads()?;
        let lock = lead.then(|| RunLock::acquire(&dir)).transpose()?;
        run_folder::refuse_links(&dir)?;
        let resume = Resume::open(path)?;
        let jsonl = (lead && resume.config().output.jsonl).then(|| RunFile::Events.path(&dir));
        let progress = telemetry::init("info", jsonl.as_deref())?;
        let mut trainer = resume.into_trainer(&dir)?;
        if let Some(epochs) = self.epochs {
            trainer.set_epochs(epochs);
        }
        Ok(Prepared { trainer, progress, _lock: lock })
    }

    /// A new run: its config (the file, or the built-in job) with this command's
    /// overrides, checked, its output folder ready and locked, its logs set up.
    fn start(&self) -> Result<Prepared> {
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
        let lead = leads()?;
        let lock = lead.then(|| prepare_output_folder(&config.output.dir, self.overwrite)).transpose()?;
        let jsonl = (lead && config.output.jsonl).then(|| RunFile::Events.path(&config.output.dir));
        let progress = telemetry::init("info", jsonl.as_deref())?;
        for d in &config.deprecations {
            tracing::warn!("config: {d}");
        }
        if let Some(plugins) = shipped {
            tracing::info!(plugins = %super::shown(&plugins), "the config names no [[plugins]]: using the shipped plugins");
        }
        let trainer = Trainer::new(config).with_context(|| format!("config {}", source.display()))?;
        Ok(Prepared { trainer, progress, _lock: lock })
    }
}

/// What follows a run from this process: the progress bars and the TensorBoard logs
/// (rank 0's, when on).
struct Watchers {
    bars: Bars,
    tensorboard: Option<TensorBoardWriter>,
}

impl esper_runtime::train::Observer for Watchers {
    fn run_started(&mut self, first: u32, last: u32) {
        self.bars.run_started(first, last);
    }
    fn epoch_started(&mut self, epoch: u32, batches: usize) {
        self.bars.epoch_started(epoch, batches);
    }
    fn batch_done(&mut self) {
        self.bars.batch_done();
    }
    fn epoch_done(&mut self, record: &esper_runtime::train::report::EpochRecord) {
        self.bars.epoch_done(record);
        if let Some(Err(e)) = self.tensorboard.as_mut().map(|tb| tb.epoch(record)) {
            // The logs are a view of the run, not the run: it goes on without them.
            tracing::warn!("TensorBoard logs stop after epoch {}: {e:#}", record.epoch);
            self.tensorboard = None;
        }
    }
    fn run_done(&mut self) {
        self.bars.run_done();
    }
}

/// What a run stopped by a signal says (on stderr) and its exit code: 130 for SIGINT,
/// 143 for SIGTERM.
fn stopped(trainer: &Trainer, epochs_done: u32, stop: &StopSignal) -> ExitCode {
    let own = stop.requested().and_then(StopCause::of);
    let cause = own.unwrap_or(StopCause::Interrupt);
    if !trainer.leads() {
        return ExitCode::from(cause.exit_code()); // one message: rank 0's
    }
    // A rank stops with the others when any of them is asked to (see `Ranks::agree_on_step`).
    let by = own.map_or("another rank's stop signal", StopCause::name);
    let dir = &trainer.config().output.dir;
    let first = trainer.history().first().map_or(1, |r| r.epoch);
    let mut text = format!("stopped by {by} during epoch {}", epochs_done + 1);
    if trainer.history().is_empty() {
        text += ", before any epoch ended: no report and no checkpoint were written";
    } else {
        text +=
            &format!(" (not recorded): {} covers epochs {first}-{epochs_done}", RunFile::Report.path(dir).display());
        if trainer.config().output.checkpoint {
            text += &format!("; the checkpoints are kept: continue with `esper run --resume {}`", dir.display());
        } else {
            text += "; this run writes no checkpoints ([output] checkpoint = false), so it cannot be resumed";
        }
    }
    eprintln!("{text}");
    ExitCode::from(cause.exit_code())
}

/// The end of a run on the terminal: the table, `report.json`, `report.png`, and a
/// summary of accuracy and the stages seen.
fn summarize(trainer: &Trainer) -> Result<()> {
    let history = trainer.history();
    let out = trainer.config().output.dir.clone();
    println!("{}", report::table(history));
    esper_runtime::train::report::write_json(
        &RunFile::Report.path(&out),
        history,
        &serde_json::to_value(trainer.model().report())?,
    )?;
    let note = report::plot(&RunFile::Plot.path(&out), history)?;
    let stages: BTreeSet<SeedStage> = history.iter().flat_map(|r| r.slots.iter().map(|s| s.stage)).collect();
    let names: Vec<String> = stages.iter().map(ToString::to_string).collect();
    if let (Some(first), Some(last)) = (history.first(), history.last()) {
        match (first.val_perplexity, last.val_perplexity) {
            (Some(p0), Some(p1)) => println!(
                "validation loss: {:.4} (perplexity {p0:.2}) after epoch {} -> {:.4} (perplexity {p1:.2}) after epoch {}",
                first.val_loss, first.epoch, last.val_loss, last.epoch
            ),
            _ => println!(
                "validation accuracy: {:.2}% after epoch {} -> {:.2}% after epoch {}",
                first.val_accuracy, first.epoch, last.val_accuracy, last.epoch
            ),
        }
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

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_new_or_empty_folder_is_used_as_is_and_locked() {
        let dir = temp("new");
        let lock = prepare_output_folder(&dir, false).unwrap();
        assert_eq!(names(&dir), [".esper.lock"]);
        let e = prepare_output_folder(&dir, false).unwrap_err().to_string();
        assert!(e.starts_with(&format!("run folder {} is in use by another esper process", dir.display())), "{e}");
        drop(lock);
        drop(prepare_output_folder(&dir, false).unwrap());
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
        assert_eq!(names(&dir), ["checkpoints", "events.jsonl", "report.json.tmp"], "nothing written or removed");
        drop(prepare_output_folder(&dir, true).unwrap());
        assert_eq!(names(&dir), [".esper.lock"]);
        // A folder that is not a run's is never cleared.
        std::fs::write(dir.join("thesis.tex"), "").unwrap();
        std::fs::write(dir.join("report.json"), "").unwrap();
        let e = prepare_output_folder(&dir, true).unwrap_err().to_string();
        assert!(e.contains("holds files esper did not write (such as thesis.tex)"), "{e}");
        assert_eq!(names(&dir), [".esper.lock", "report.json", "thesis.tex"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn overwrite_removes_exactly_the_names_a_run_writes() {
        let dir = temp("exact-names");
        std::fs::create_dir_all(dir.join("checkpoints/epoch-0001")).unwrap();
        for f in ["events.jsonl", "report.json", "report.png", "report.json.tmp", "report.png.tmp"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        for theirs in ["report.json.orig", "checkpoints.bak", "events.jsonl.notes"] {
            if theirs == "checkpoints.bak" {
                std::fs::create_dir_all(dir.join(theirs).join("epoch-0001")).unwrap();
            } else {
                std::fs::write(dir.join(theirs), "mine").unwrap();
            }
            let e = prepare_output_folder(&dir, true).unwrap_err().to_string();
            assert!(e.contains(&format!("holds files esper did not write (such as {theirs})")), "{e}");
            assert!(dir.join(theirs).exists() && dir.join("report.json").is_file(), "{theirs}: nothing removed");
            let _ = std::fs::remove_dir_all(dir.join(theirs));
            let _ = std::fs::remove_file(dir.join(theirs));
        }
        // A link named like a run file is removed as a link; its target stays.
        let target = temp("exact-names-target");
        std::fs::create_dir_all(target.join("kept")).unwrap();
        std::fs::remove_file(dir.join("report.json")).unwrap();
        std::os::unix::fs::symlink(target.join("kept"), dir.join("report.json")).unwrap();
        drop(prepare_output_folder(&dir, true).unwrap());
        assert_eq!(names(&dir), [".esper.lock"]);
        assert!(target.join("kept").is_dir());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&target);
    }
}
