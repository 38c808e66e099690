//! What `esper watch` shows, read from a run folder's files: [`RunView`], built by a
//! [`Follower`] that tails `events.jsonl` as it grows (the `epoch` lines carry each
//! epoch's record, the lifecycle lines their event) and reads `report.json` once the
//! run has written it. Drawing it is [`super::ui`]'s and [`super::plain`]'s.

use esper_runtime::{
    lifecycle::LifecycleEvent,
    run_folder::RunFile,
    train::report::{EpochRecord, SlotRecord},
};
use std::{
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::SystemTime,
};

/// Where the run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// No run in the folder yet (or no folder).
    Waiting,
    /// The process holding the folder's lock is alive.
    Running { pid: u32 },
    /// The run ended and wrote its report.
    Finished,
    /// The run's process is gone, and the report does not cover the epochs logged (it
    /// was killed, or failed).
    Ended,
}

impl RunStatus {
    /// Whether the run will write no more.
    pub fn is_over(self) -> bool {
        matches!(self, RunStatus::Finished | RunStatus::Ended)
    }

    pub fn label(self) -> String {
        match self {
            RunStatus::Waiting => "waiting for the run".into(),
            RunStatus::Running { pid } => format!("running (pid {pid})"),
            RunStatus::Finished => "finished".into(),
            RunStatus::Ended => "ended without a report".into(),
        }
    }
}

/// Severity of a logged line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub enum Logged {
    /// A lifecycle event (germination, gate, stage change, prune, fault, ...).
    Lifecycle(LifecycleEvent),
    /// Any other warning or error the run logged (a containment message, a failure).
    Message { level: Level, text: String },
}

/// An event-log entry and the epoch during which it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub epoch: u32,
    pub level: Level,
    pub what: Logged,
}

impl LogEntry {
    pub fn text(&self) -> String {
        match &self.what {
            Logged::Lifecycle(e) => e.to_string(),
            Logged::Message { text, .. } => text.clone(),
        }
    }

    /// The slot it is about, if any.
    pub fn slot(&self) -> Option<&str> {
        match &self.what {
            Logged::Lifecycle(e) => e.slot(),
            Logged::Message { .. } => None,
        }
    }
}

/// The state of a run as its files show it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub dir: PathBuf,
    pub status: RunStatus,
    /// One record per epoch done, in order.
    pub epochs: Vec<EpochRecord>,
    /// The event log, oldest first.
    pub log: Vec<LogEntry>,
    /// Why the last look at the files failed (what was read before stays shown).
    pub problem: Option<String>,
}

impl RunView {
    /// The slots as of the last epoch.
    pub fn slots(&self) -> &[SlotRecord] {
        self.epochs.last().map_or(&[], |r| r.slots.as_slice())
    }

    /// Whether the run is a text run (its records have a perplexity).
    pub fn is_text(&self) -> bool {
        self.epochs.iter().any(|r| r.val_perplexity.is_some())
    }

    /// Slot `slot`'s stages through the run, as (stage, first epoch, last epoch) runs.
    pub fn stage_history(&self, slot: &str) -> Vec<(esper_runtime::lifecycle::SeedStage, u32, u32)> {
        let mut out: Vec<(esper_runtime::lifecycle::SeedStage, u32, u32)> = Vec::new();
        for r in &self.epochs {
            let Some(s) = r.slots.iter().find(|s| s.slot == slot) else { continue };
            match out.last_mut() {
                Some((stage, _, last)) if *stage == s.stage => *last = r.epoch,
                _ => out.push((s.stage, r.epoch, r.epoch)),
            }
        }
        out
    }
}

/// Follows a run folder: call [`Follower::poll`] to take in what was written since.
pub struct Follower {
    dir: PathBuf,
    /// Bytes of `events.jsonl` read, and the start of a line not yet complete.
    offset: u64,
    partial: Vec<u8>,
    /// Epoch records from `events.jsonl`.
    logged_epochs: Vec<EpochRecord>,
    log: Vec<LogEntry>,
    /// `report.json`'s epochs, and the modification time they were read at.
    report: Option<(SystemTime, Vec<EpochRecord>)>,
}

impl Follower {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
            logged_epochs: Vec::new(),
            log: Vec::new(),
            report: None,
        }
    }

    /// Reads what the run wrote since the last poll. A problem reading a file is
    /// returned for the caller to show; what was read before stays.
    pub fn poll(&mut self) -> Result<(), String> {
        self.read_events()?;
        self.read_report()
    }

    fn read_events(&mut self) -> Result<(), String> {
        let path = RunFile::Events.path(&self.dir);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let len = file.metadata().map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
        if len < self.offset {
            // A new run replaced the file (`--overwrite`): start over.
            *self = Self { report: None, ..Self::new(&self.dir) };
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else { return Ok(()) };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.take_line(line);
        }
        Ok(())
    }

    /// One line of `events.jsonl`: an epoch's record, a lifecycle event, or a warning.
    /// Lines of other shapes (info messages) are skipped.
    fn take_line(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { return };
        let fields = &v["fields"];
        let level = match v["level"].as_str() {
            Some("ERROR") => Level::Error,
            Some("WARN") => Level::Warn,
            _ => Level::Info,
        };
        let record = fields["record"].as_str();
        let epoch = self.logged_epochs.last().map_or(1, |r| r.epoch + 1);
        match (fields["event"].as_str(), record) {
            (Some("epoch"), Some(record)) => {
                if let Ok(r) = serde_json::from_str::<EpochRecord>(record) {
                    // A resumed run logs from its checkpoint's epoch on: the later line wins.
                    self.logged_epochs.retain(|e| e.epoch < r.epoch);
                    self.logged_epochs.push(r);
                }
            }
            (Some(_), Some(record)) => {
                if let Ok(e) = serde_json::from_str::<LifecycleEvent>(record) {
                    self.log.push(LogEntry { epoch, level, what: Logged::Lifecycle(e) });
                }
            }
            _ if level != Level::Info => {
                let text = fields["message"].as_str().unwrap_or_default().to_string();
                self.log.push(LogEntry { epoch, level, what: Logged::Message { level, text } });
            }
            _ => {}
        }
    }

    fn read_report(&mut self) -> Result<(), String> {
        let path = RunFile::Report.path(&self.dir);
        let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
            self.report = None;
            return Ok(());
        };
        if self.report.as_ref().is_some_and(|(t, _)| *t == modified) {
            return Ok(());
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        #[derive(serde::Deserialize)]
        struct Report {
            epochs: Vec<EpochRecord>,
        }
        let report: Report =
            serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a run report: {e}", path.display()))?;
        self.report = Some((modified, report.epochs));
        Ok(())
    }

    /// The run as read so far.
    pub fn view(&self) -> RunView {
        let reported = self.report.as_ref().map_or(&[][..], |(_, r)| r.as_slice());
        let last_reported = reported.last().map_or(0, |r| r.epoch);
        let mut epochs = reported.to_vec();
        epochs.extend(self.logged_epochs.iter().filter(|r| r.epoch > last_reported).cloned());
        // Without events.jsonl (`[output] jsonl = false`) the log is the records' events.
        let log = if self.offset > 0 {
            self.log.clone()
        } else {
            epochs
                .iter()
                .flat_map(|r| {
                    r.events.iter().map(|e| LogEntry {
                        epoch: r.epoch,
                        level: if e.is_warning() { Level::Warn } else { Level::Info },
                        what: Logged::Lifecycle(e.clone()),
                    })
                })
                .collect()
        };
        let logged_last = self.logged_epochs.last().map_or(0, |r| r.epoch);
        let status = match lock_holder(&self.dir) {
            Some(pid) => RunStatus::Running { pid },
            None if self.report.is_some() && last_reported >= logged_last => RunStatus::Finished,
            None if self.offset > 0 || self.report.is_some() => RunStatus::Ended,
            None => RunStatus::Waiting,
        };
        RunView { dir: self.dir.clone(), status, epochs, log, problem: None }
    }
}

/// The live process that holds the run folder's lock, by the PID the lock file
/// records. Read only: a watcher never takes the lock, so it never stands in a run's way.
fn lock_holder(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(RunFile::Lock.path(dir)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    };
    (alive && pid > 0 && !is_zombie(pid)).then_some(pid as u32)
}

/// Whether process `pid` has exited and waits for its parent to reap it (Linux's
/// `/proc/PID/stat` says `Z`): its run is over.
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `PID (COMMAND) STATE ...`; the command may hold spaces and parentheses.
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use esper_runtime::lifecycle::SeedStage;
    use std::io::Write;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("esper-watch-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn record(epoch: u32, stage: SeedStage, events: Vec<LifecycleEvent>) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: 1.0 / epoch as f64,
            train_accuracy: 10.0 * epoch as f64,
            val_loss: 1.5,
            val_accuracy: 20.0 * epoch as f64,
            val_perplexity: None,
            seconds: 1.0,
            steps: 4,
            train_seconds: 0.5,
            slots: vec![SlotRecord { slot: "r0c1".into(), stage, alpha: 0.0, contribution: None, seed: None }],
            events,
        }
    }

    /// An `epoch` line as tracing's JSON layer writes it.
    fn epoch_line(r: &EpochRecord) -> String {
        let fields = serde_json::json!({"message": "epoch", "event": "epoch", "epoch": r.epoch,
            "record": serde_json::to_string(r).unwrap()});
        format!("{}\n", serde_json::json!({"level": "INFO", "fields": fields}))
    }

    fn event_line(e: &LifecycleEvent, level: &str) -> String {
        let fields = serde_json::json!({"message": e.to_string(), "event": e.name(), "slot": e.slot(),
            "record": serde_json::to_string(e).unwrap()});
        format!("{}\n", serde_json::json!({"level": level, "fields": fields}))
    }

    fn append(dir: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("events.jsonl")).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_follower_takes_in_epochs_events_and_warnings_as_the_log_grows() {
        let dir = temp("grows");
        let mut f = Follower::new(&dir);
        f.poll().unwrap();
        assert_eq!((f.view().status, f.view().epochs.len()), (RunStatus::Waiting, 0), "no folder yet");
        std::fs::create_dir_all(&dir).unwrap();
        let germinated = LifecycleEvent::Germinated { slot: "r0c1".into(), blueprint: "norm".into() };
        append(&dir, &event_line(&germinated, "INFO"));
        append(&dir, r#"{"level":"INFO","fields":{"message":"loading plugins"}}"#);
        append(&dir, "\n");
        let line = epoch_line(&record(1, SeedStage::Germinated, vec![germinated.clone()]));
        // Half a line is left for the next poll.
        let (head, tail) = line.split_at(20);
        append(&dir, head);
        f.poll().unwrap();
        let v = f.view();
        assert_eq!((v.epochs.len(), v.log.len()), (0, 1));
        assert_eq!(v.log[0], LogEntry { epoch: 1, level: Level::Info, what: Logged::Lifecycle(germinated) });
        append(&dir, tail);
        let pruned = LifecycleEvent::Pruned { slot: "r0c1".into(), reason: "input_written: in place".into() };
        append(&dir, &event_line(&pruned, "WARN"));
        append(&dir, r#"{"level":"WARN","fields":{"message":"the host's step failed, rolled back"}}"#);
        append(&dir, "\n");
        append(&dir, &epoch_line(&record(2, SeedStage::Pruned, vec![pruned.clone()])));
        f.poll().unwrap();
        let v = f.view();
        assert_eq!(v.epochs.iter().map(|r| r.epoch).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(v.slots()[0].stage, SeedStage::Pruned);
        assert_eq!(v.log.len(), 3);
        assert_eq!((v.log[1].epoch, v.log[1].level, v.log[1].slot()), (2, Level::Warn, Some("r0c1")));
        assert_eq!(v.log[1].text(), "r0c1: pruned (input_written: in place)");
        assert_eq!(v.log[2].text(), "the host's step failed, rolled back");
        // No live process holds the folder and no report: the run ended without one.
        assert_eq!(v.status, RunStatus::Ended);
        assert_eq!(v.stage_history("r0c1"), [(SeedStage::Germinated, 1, 1), (SeedStage::Pruned, 2, 2)]);
        // A new run replaced the log: the follower starts over.
        std::fs::write(dir.join("events.jsonl"), epoch_line(&record(1, SeedStage::Dormant, vec![]))).unwrap();
        f.poll().unwrap();
        let v = f.view();
        assert_eq!((v.epochs.len(), v.log.len(), v.slots()[0].stage), (1, 0, SeedStage::Dormant));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_status_follows_the_lock_holder_and_the_report() {
        let dir = temp("status");
        std::fs::create_dir_all(&dir).unwrap();
        // This process holds the lock: running.
        std::fs::write(dir.join(".esper.lock"), format!("{}\n", std::process::id())).unwrap();
        append(&dir, &epoch_line(&record(1, SeedStage::Training, vec![])));
        let mut f = Follower::new(&dir);
        f.poll().unwrap();
        assert_eq!(f.view().status, RunStatus::Running { pid: std::process::id() });
        // The holder is gone (a PID no process has) and the report covers the log: finished.
        std::fs::write(dir.join(".esper.lock"), format!("{}\n", i32::MAX)).unwrap();
        let report =
            serde_json::json!({"format": 2, "epochs": [record(1, SeedStage::Training, vec![])], "final_slots": []});
        std::fs::write(dir.join("report.json"), report.to_string()).unwrap();
        f.poll().unwrap();
        assert_eq!(f.view().status, RunStatus::Finished);
        // Without events.jsonl the log is the report's events.
        std::fs::remove_file(dir.join("events.jsonl")).unwrap();
        let pruned = LifecycleEvent::Pruned { slot: "r0c1".into(), reason: "stalled".into() };
        let report = serde_json::json!({"format": 2, "epochs": [record(1, SeedStage::Pruned, vec![pruned.clone()])]});
        std::fs::write(dir.join("report.json"), report.to_string()).unwrap();
        let mut f = Follower::new(&dir);
        f.poll().unwrap();
        let v = f.view();
        assert_eq!((v.status, v.log.len()), (RunStatus::Finished, 1));
        assert_eq!(v.log[0].what, Logged::Lifecycle(pruned));
        // A report that is not one is named.
        std::fs::write(dir.join("report.json"), "{").unwrap();
        let e = Follower::new(&dir).poll().unwrap_err();
        assert!(e.starts_with(&format!("{} is not a run report", dir.join("report.json").display())), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_zombie_is_not_a_running_holder() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: a zombie once it exits.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !is_zombie(pid) {
            assert!(std::time::Instant::now() < until, "`true` never exited");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!is_zombie(std::process::id() as i32));
        child.wait().unwrap();
    }
}
