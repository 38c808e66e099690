//! A run's output folder: the names a run writes there ([`RunFile`]), the lock that
//! makes the folder one run's at a time ([`RunLock`]), and how its files are written
//! ([`files`]): never through a symbolic link, the report published through tmp +
//! rename, a failed write leaving the previous file as it was and no `.tmp` behind.

pub mod files;
mod lock;

pub use lock::RunLock;

use std::path::{Path, PathBuf};
use thiserror::Error;

/// Each name a run writes directly inside its output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunFile {
    /// `checkpoints/`: one folder per epoch and `latest` (see `train::checkpoint`).
    Checkpoints,
    /// `events.jsonl`: every event as a JSON line, appended.
    Events,
    /// `report.json`: the run's record, published through tmp + rename.
    Report,
    /// `report.png`: the plot of the run, published through tmp + rename.
    Plot,
    /// `.esper.lock`: the folder's lock; records the PID of the run holding it.
    Lock,
    /// `tensorboard/`: TensorBoard event files, one per `esper run` of the run.
    TensorBoard,
}

impl RunFile {
    pub const ALL: [RunFile; 6] =
        [Self::Checkpoints, Self::Events, Self::Report, Self::Plot, Self::Lock, Self::TensorBoard];

    pub fn name(self) -> &'static str {
        match self {
            Self::Checkpoints => "checkpoints",
            Self::Events => "events.jsonl",
            Self::Report => "report.json",
            Self::Plot => "report.png",
            Self::Lock => ".esper.lock",
            Self::TensorBoard => "tensorboard",
        }
    }

    pub fn path(self, dir: &Path) -> PathBuf {
        dir.join(self.name())
    }

    /// Written as `NAME.tmp` and renamed into place, so a run can leave that twin behind
    /// when it is killed mid-write.
    fn has_tmp_twin(self) -> bool {
        matches!(self, Self::Report | Self::Plot)
    }

    /// Whether `entry`, a name in a run folder, is one a run writes: a run file, or the
    /// exact `.tmp` twin of one published through tmp + rename. `report.json.orig`,
    /// `checkpoints.bak` or `events.jsonl.notes` are not.
    pub fn owns(entry: &str) -> bool {
        Self::ALL.iter().any(|f| entry == f.name() || (f.has_tmp_twin() && entry == files::tmp_name(f.name())))
    }
}

#[derive(Debug, Error)]
pub enum RunFolderError {
    #[error(
        "run folder {dir} is in use by another esper process (PID {holder}, per {lock}): one process writes a run \
         folder at a time; wait for it to end or stop it, or pass --output DIR to write elsewhere",
        holder = pid.map_or("unknown".to_string(), |p| p.to_string()),
        lock = RunFile::Lock.path(dir).display()
    )]
    Busy { dir: PathBuf, pid: Option<u32> },
    #[error(
        "{path} is a symbolic link: esper writes its run files only as plain files in the run folder and never \
         through a link; move the link away (its target is left alone)"
    )]
    Link { path: PathBuf },
    #[error("cannot {action} {path}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        cause: std::io::Error,
    },
}

impl RunFolderError {
    pub(crate) fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |cause| {
            if files::is_link_refusal(&cause) {
                Self::Link { path: path.to_path_buf() }
            } else {
                Self::Io { path: path.to_path_buf(), action, cause }
            }
        }
    }
}

/// Refuses a symbolic link where a run file (or `checkpoints/latest`) should be: a
/// resumed run would otherwise write through it into the link's target.
pub fn refuse_links(dir: &Path) -> Result<(), RunFolderError> {
    let latest = RunFile::Checkpoints.path(dir).join(crate::train::checkpoint::LATEST);
    for path in RunFile::ALL.iter().map(|f| f.path(dir)).chain([latest]) {
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(RunFolderError::Link { path });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_owns_its_files_and_their_tmp_twins_only() {
        for ours in [
            "checkpoints",
            "events.jsonl",
            "report.json",
            "report.png",
            ".esper.lock",
            "tensorboard",
            "report.json.tmp",
            "report.png.tmp",
        ] {
            assert!(RunFile::owns(ours), "{ours}");
        }
        for theirs in [
            "report.json.orig",
            "checkpoints.bak",
            "events.jsonl.notes",
            "report.json.tmp.old",
            "checkpoints.tmp",
            "events.jsonl.tmp",
            "report",
            "thesis.tex",
            ".esper.lock.1",
        ] {
            assert!(!RunFile::owns(theirs), "{theirs}");
        }
    }

    #[test]
    fn a_link_in_place_of_a_run_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("esper-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        std::fs::write(dir.join("report.json"), "{}").unwrap();
        std::fs::write(dir.join("target.txt"), "keep").unwrap();
        refuse_links(&dir).unwrap();
        for name in ["events.jsonl", "report.png", "tensorboard", "checkpoints/latest"] {
            std::os::unix::fs::symlink(dir.join("target.txt"), dir.join(name)).unwrap();
            let e = refuse_links(&dir).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{} is a symbolic link", dir.join(name).display())), "{e}");
            std::fs::remove_file(dir.join(name)).unwrap();
        }
        assert_eq!(std::fs::read_to_string(dir.join("target.txt")).unwrap(), "keep");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
