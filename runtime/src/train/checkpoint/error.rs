//! What can go wrong writing, finding and reading a checkpoint: each names the folder or
//! file, and carries the system's, libtorch's or serde's error as its source.

use super::COMPLETE;
use crate::{
    run_folder::{RunFile, RunFolderError},
    train::optim::StateMismatch,
};
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A file system operation on the checkpoint folder failed (`action`: "creating",
    /// "reading", "removing stale", ...).
    #[error("{action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A folder could not be renamed (moved aside, or published under its epoch's name).
    #[error("moving {} to {}", .from.display(), .to.display())]
    Move {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Tensors could not be written or read as safetensors (`action`: "writing",
    /// "reading").
    #[error("{action} {}", .path.display())]
    Tensors {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: tch::TchError,
    },
    /// A saved tensor could not be copied into its variable.
    #[error("{}: loading `{name}`", .path.display())]
    Load {
        path: PathBuf,
        name: String,
        #[source]
        source: tch::TchError,
    },
    #[error("parsing {}", .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding {}", .path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Writing into the run folder was refused or failed (a link, a full disk).
    #[error(transparent)]
    RunFolder(#[from] RunFolderError),
    #[error("nothing to resume: {} does not exist", .path.display())]
    Missing { path: PathBuf },
    #[error("nothing to resume: {} is not a run folder (it does not exist or is not a folder)", .path.display())]
    NotAFolder { path: PathBuf },
    #[error("nothing to resume: {} holds no run (none of {})", .path.display(), RunFile::ALL.map(RunFile::name).join(", "))]
    NoRun { path: PathBuf },
    #[error(
        "{} is a checkpoint outside a run folder (not inside a {}/ folder): a resumed run continues in its own \
         run folder; pass the run folder that holds it",
        .path.display(),
        super::CHECKPOINTS
    )]
    OutsideRunFolder { path: PathBuf },
    #[error(
        "checkpoint {} is incomplete (no {COMPLETE} marker): it was interrupted while being written",
        .path.display()
    )]
    Incomplete { path: PathBuf },
    /// `latest` names something else than a checkpoint folder of this run.
    #[error(
        "{} names `{}`, not a checkpoint folder epoch-NNNN inside {}: refusing to resume from it (remove {} to \
         resume from the newest complete checkpoint)",
        .latest.display(),
        .name.escape_debug(),
        .root.display(),
        .latest.display()
    )]
    BadLatest { latest: PathBuf, name: String, root: PathBuf },
    #[error(
        "{} names {}, a symbolic link: a run resumes only from its own checkpoint folders",
        .latest.display(),
        .dir.display()
    )]
    LatestIsLink { latest: PathBuf, dir: PathBuf },
    #[error(
        "{} has no complete checkpoint yet: the run stopped before its first epoch ended (start it again with \
         --overwrite)",
        .run.display()
    )]
    NoneComplete { run: PathBuf },
    #[error("cannot resume from {}: checkpoint format {found} is newer than this esper reads ({supported})", .dir.display())]
    FormatTooNew { dir: PathBuf, found: u32, supported: u32 },
    #[error("cannot resume from {}: plugin {} is missing", .dir.display(), .plugin.display())]
    PluginMissing { dir: PathBuf, plugin: PathBuf },
    #[error(
        "cannot resume from {}: plugin {} changed since the checkpoint (sha256 {then} then, {now} now)",
        .dir.display(),
        .plugin.display()
    )]
    PluginChanged { dir: PathBuf, plugin: PathBuf, then: String, now: String },
    #[error("checkpoint {} has {saved} slots, the config {config}", .dir.display())]
    SlotCount { dir: PathBuf, saved: usize, config: usize },
    #[error("checkpoint {}: slot `{slot}` has a seed but no seed optimizer", .dir.display())]
    NoSeedOptimizer { dir: PathBuf, slot: String },
    /// A saved optimizer state does not fit the optimizer.
    #[error("{}", .path.display())]
    OptimizerState {
        path: PathBuf,
        #[source]
        source: StateMismatch,
    },
    #[error("{}: {saved} tensors saved, {expected} expected", .path.display())]
    TensorCount { path: PathBuf, saved: usize, expected: usize },
    #[error("{}: no tensor `{name}`", .path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error("{}: `{name}` has shape {saved:?}, expected {expected:?}", .path.display())]
    Shape { path: PathBuf, name: String, saved: Vec<i64>, expected: Vec<i64> },
}

impl CheckpointError {
    /// A closure mapping an `std::io::Error` of `action` on `path` to an error.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { action, path, source }
    }
}
