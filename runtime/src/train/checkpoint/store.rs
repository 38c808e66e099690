//! The checkpoint store: parameters and optimizer state as safetensors, lifecycle state as JSON.
//!
//! Layout under `<output>/checkpoints/`: one folder per epoch (`epoch-0007/`) and a
//! `latest` file naming the newest complete one. A folder is written as
//! `epoch-0007.tmp` (made fresh, so no file in it can be a link planted beforehand),
//! finished with a `COMPLETE` marker, synced, then renamed; only then is `latest`
//! replaced (written aside and renamed, which is atomic). An interrupted or failed write
//! therefore leaves `latest` on the previous complete checkpoint, and a folder without
//! its marker is never loaded; a failed write removes its `.tmp` folder.
//!
//! Nothing is removed before its replacement is in place: an existing folder of the
//! same epoch is first renamed aside (`epoch-0007.replaced`), the new one renamed in,
//! and only then the aside one removed; a reader that finds `latest` naming a missing
//! folder (a crash between those two renames) opens the aside one. Pruning removes
//! only complete checkpoints of *earlier* epochs than the one just written (epoch
//! numbers parsed from `epoch-NNNN` names, never compared as strings), keeping the
//! newest [`KEEP`] in all; anything else in the folder is left alone.
//!
//! Reading, `latest` must name an `epoch-NNNN` folder directly inside `checkpoints/`;
//! when it is missing, empty, or names a missing or incomplete folder, the newest
//! complete `epoch-NNNN` folder is read instead, and [`Reader::fallback`] says why.

use super::CheckpointError;
use crate::run_folder::{files, RunFile};
use serde::{de::DeserializeOwned, Serialize};
use std::{
    fmt, fs,
    path::{Path, PathBuf},
};
use tch::{Device, Tensor};

pub const CHECKPOINTS: &str = "checkpoints";
/// The file naming the newest complete checkpoint folder.
pub const LATEST: &str = "latest";
pub(super) const COMPLETE: &str = "COMPLETE";
pub const STATE: &str = "state.json";
/// The host's parameters and buffers.
pub const HOST: &str = "host.safetensors";
/// The host optimizer's state.
pub const HOST_OPTIMIZER: &str = "optim-host.safetensors";

/// A slot's seed (and gate) tensors.
pub fn slot_file(slot: &str) -> String {
    format!("slot-{slot}.safetensors")
}

/// A slot's seed-optimizer state.
pub fn slot_optimizer_file(slot: &str) -> String {
    format!("optim-{slot}.safetensors")
}

/// The optimizer state of a slot's gate network (GATE blend, from BLENDING on).
pub fn gate_optimizer_file(slot: &str) -> String {
    format!("optim-{slot}-gate.safetensors")
}
/// Checkpoints kept on disk: the one just written and the newest earlier ones.
pub const KEEP: usize = 2;
/// Suffix of a published folder renamed aside while its replacement is renamed in.
const REPLACED: &str = "replaced";

/// The folder name of epoch `epoch`'s checkpoint.
fn epoch_dir_name(epoch: u32) -> String {
    format!("epoch-{epoch:04}")
}

/// The epoch of a checkpoint folder name `epoch-NNNN` (any number of digits); `None`
/// for anything else (`epoch-0003.tmp`, `latest`, `notes`).
fn parse_epoch_dir(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("epoch-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// A checkpoint being written. Dropped before [`Writer::commit`] has published it (an
/// error on the way: a full disk), it removes its `.tmp` folder.
pub struct Writer {
    root: PathBuf,
    epoch: u32,
    name: String,
    tmp: PathBuf,
}

/// The steps of [`Writer::commit`], in their order: the order is what keeps `latest`
/// on a complete checkpoint whichever step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitStep {
    /// The `COMPLETE` marker written into the `.tmp` folder.
    Marker,
    /// The `.tmp` folder renamed to `epoch-NNNN`.
    Rename,
    /// `latest` pointed at it.
    Latest,
    /// Older checkpoints removed.
    Prune,
}

impl Writer {
    pub fn begin(output: &Path, epoch: u32) -> Result<Self> {
        let root = output.join(CHECKPOINTS);
        files::refuse_link(&root)?;
        let name = epoch_dir_name(epoch);
        let tmp = root.join(format!("{name}.tmp"));
        fs::create_dir_all(&root).map_err(CheckpointError::io("creating", &root))?;
        // A stale one (a link is removed, never followed).
        match fs::symlink_metadata(&tmp) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&tmp),
            Ok(_) => fs::remove_file(&tmp),
            Err(_) => Ok(()),
        }
        .map_err(CheckpointError::io("removing stale", &tmp))?;
        fs::create_dir(&tmp).map_err(CheckpointError::io("creating", &tmp))?;
        Ok(Self { root, epoch, name, tmp })
    }

    /// Saves named tensors (as contiguous CPU copies) to `file`.
    pub fn tensors(&self, file: &str, tensors: &[(String, Tensor)]) -> Result<()> {
        let cpu: Vec<(String, Tensor)> =
            tensors.iter().map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous())).collect();
        let path = self.tmp.join(file);
        Tensor::write_safetensors(&cpu, &path).map_err(|source| CheckpointError::Tensors {
            action: "writing",
            path: path.clone(),
            source,
        })?;
        sync_file(&path)
    }

    pub fn json<T: Serialize>(&self, file: &str, value: &T) -> Result<()> {
        let path = self.tmp.join(file);
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|source| CheckpointError::Encode { path: path.clone(), source })?;
        Ok(files::write_new(&path, &bytes)?)
    }

    /// Marks the checkpoint complete, publishes it as `latest`, prunes older ones.
    pub fn commit(self) -> Result<PathBuf> {
        self.commit_with(|_| Ok(()))
    }

    /// [`Writer::commit`], calling `before` ahead of each step (a test makes one fail).
    fn commit_with(self, mut before: impl FnMut(CommitStep) -> Result<()>) -> Result<PathBuf> {
        before(CommitStep::Marker)?;
        self.mark_complete()?;
        before(CommitStep::Rename)?;
        let dir = self.rename_in()?;
        before(CommitStep::Latest)?;
        files::publish(&self.root.join(LATEST), self.name.as_bytes())?;
        before(CommitStep::Prune)?;
        let aside = self.aside();
        if aside.exists() {
            fs::remove_dir_all(&aside).map_err(CheckpointError::io("removing", &aside))?;
        }
        self.prune_old()?;
        Ok(dir)
    }

    fn mark_complete(&self) -> Result<()> {
        files::write_new(&self.tmp.join(COMPLETE), b"")?;
        files::sync_dir(&self.tmp);
        Ok(())
    }

    /// Where a published folder of this epoch goes while its replacement is renamed in.
    fn aside(&self) -> PathBuf {
        self.root.join(format!("{}.{REPLACED}", self.name))
    }

    /// Renames the finished `.tmp` folder to `epoch-NNNN`. An earlier checkpoint of this
    /// epoch goes aside (not away) until the new one is in place. An aside folder left
    /// by a crash is stale when the published one exists, and is the live copy (what
    /// `Reader::open` reads) when it does not.
    fn rename_in(&self) -> Result<PathBuf> {
        let dir = self.root.join(&self.name);
        let aside = self.aside();
        if fs::symlink_metadata(&dir).is_ok() {
            if aside.exists() {
                fs::remove_dir_all(&aside).map_err(CheckpointError::io("removing stale", &aside))?;
            }
            fs::rename(&dir, &aside).map_err(|source| CheckpointError::Move {
                from: dir.clone(),
                to: aside,
                source,
            })?;
        }
        fs::rename(&self.tmp, &dir).map_err(|source| CheckpointError::Move {
            from: self.tmp.clone(),
            to: dir.clone(),
            source,
        })?;
        files::sync_dir(&self.root);
        Ok(dir)
    }

    /// Removes complete checkpoints of epochs before this one, keeping the newest
    /// `KEEP - 1` of them (with this one, `KEEP` in all). Later epochs, incomplete
    /// folders and anything not named `epoch-NNNN` are never touched.
    fn prune_old(&self) -> Result<()> {
        let mut older: Vec<(u32, PathBuf)> =
            complete_epochs(&self.root)?.into_iter().filter(|(epoch, _)| *epoch < self.epoch).collect();
        older.sort_by_key(|(epoch, _)| *epoch);
        let excess = older.len().saturating_sub(KEEP.saturating_sub(1));
        for (_, old) in &older[..excess] {
            fs::remove_dir_all(old).map_err(CheckpointError::io("removing old checkpoint", old))?;
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Gone once published; still here when an error ended the write.
        if fs::symlink_metadata(&self.tmp).is_ok() {
            if let Err(e) = fs::remove_dir_all(&self.tmp) {
                tracing::warn!(folder = %self.tmp.display(), error = %e, "could not remove an unfinished checkpoint");
            }
        }
    }
}

/// The complete checkpoints in `root`: folders (not links) named `epoch-NNNN` holding
/// the marker.
fn complete_epochs(root: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CheckpointError::io("listing", root)(e)),
    };
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let epoch = parse_epoch_dir(e.file_name().to_str()?)?;
            is_complete(&e.path()).then(|| (epoch, e.path()))
        })
        .collect())
}

/// A real folder (not a link) with the `COMPLETE` marker.
fn is_complete(dir: &Path) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) && dir.join(COMPLETE).is_file()
}

fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path).and_then(|f| f.sync_all()).map_err(CheckpointError::io("syncing", path))
}

/// Why the checkpoint `latest` names was not the one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LatestProblem {
    /// There is no `latest` file.
    Missing,
    /// `latest` is empty.
    Empty,
    /// `latest` names a folder that is not there.
    NamesMissing(String),
    /// `latest` names a folder without the `COMPLETE` marker.
    NamesIncomplete(String),
}

/// The newest complete checkpoint was read instead of the one `latest` names.
#[derive(Debug, Clone)]
pub struct Fallback {
    pub latest: PathBuf,
    pub problem: LatestProblem,
    /// The checkpoint read instead.
    pub used: PathBuf,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let latest = self.latest.display();
        match &self.problem {
            LatestProblem::Missing => write!(f, "{latest} is missing")?,
            LatestProblem::Empty => write!(f, "{latest} is empty")?,
            LatestProblem::NamesMissing(name) => write!(f, "{latest} names {name}, which is not there")?,
            LatestProblem::NamesIncomplete(name) => {
                write!(f, "{latest} names {name}, which is incomplete (no {COMPLETE} marker)")?
            }
        }
        write!(f, ": resuming from {}, the newest complete checkpoint", self.used.display())
    }
}

/// Where a path given to [`Reader::open`] sits in a run folder.
enum Layout {
    /// A run folder or its `checkpoints/`: the latest complete checkpoint of `root`
    /// (the `checkpoints/` folder, which may not exist yet) is read.
    Run { run: PathBuf, root: PathBuf },
    /// One checkpoint folder.
    Checkpoint,
}

impl Layout {
    fn of(path: &Path) -> Self {
        let named = |p: &Path, name: &str| p.file_name().is_some_and(|n| n == name);
        let parent = path.parent().unwrap_or(Path::new(""));
        if path.join(CHECKPOINTS).exists() {
            Self::Run { run: path.to_path_buf(), root: path.join(CHECKPOINTS) }
        } else if named(path, CHECKPOINTS) || path.join(LATEST).is_file() {
            Self::Run { run: parent.to_path_buf(), root: path.to_path_buf() }
        } else if named(parent, CHECKPOINTS) || path.join(COMPLETE).exists() || path.join(STATE).exists() {
            Self::Checkpoint
        } else {
            // A run folder whose run has not finished an epoch yet.
            Self::Run { run: path.to_path_buf(), root: path.join(CHECKPOINTS) }
        }
    }
}

/// The run folder a resume of `path` (a run folder, its `checkpoints/`, or a checkpoint
/// folder inside that) writes to. A checkpoint folder outside a run folder has none.
pub fn run_folder_of(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Err(CheckpointError::NotAFolder { path: path.to_path_buf() });
    }
    match Layout::of(path) {
        Layout::Run { run, .. } => {
            if !RunFile::ALL.iter().any(|f| fs::symlink_metadata(f.path(&run)).is_ok()) {
                return Err(CheckpointError::NoRun { path: run });
            }
            Ok(run)
        }
        Layout::Checkpoint => match path.parent().and_then(Path::parent) {
            Some(run) if path.parent().is_some_and(|p| p.file_name().is_some_and(|n| n == CHECKPOINTS)) => {
                Ok(run.to_path_buf())
            }
            _ => Err(CheckpointError::OutsideRunFolder { path: path.to_path_buf() }),
        },
    }
}

/// A complete checkpoint on disk.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    fallback: Option<Fallback>,
}

impl Reader {
    /// The latest complete checkpoint of a run's output folder (or of a `checkpoints`
    /// folder, or a checkpoint folder itself).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(CheckpointError::Missing { path: path.to_path_buf() });
        }
        match Layout::of(path) {
            Layout::Run { run, root } => Self::latest(&run, &root),
            Layout::Checkpoint => {
                if !path.join(COMPLETE).exists() {
                    return Err(CheckpointError::Incomplete { path: path.to_path_buf() });
                }
                Ok(Self { dir: path.to_path_buf(), fallback: None })
            }
        }
    }

    /// The checkpoint `root/latest` names, or the newest complete one when that one
    /// cannot be read (see [`Fallback`]).
    fn latest(run: &Path, root: &Path) -> Result<Self> {
        let latest = root.join(LATEST);
        let problem = match fs::read_to_string(&latest) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LatestProblem::Missing,
            Err(e) => return Err(CheckpointError::io("reading", latest)(e)),
            Ok(text) if text.trim().is_empty() => LatestProblem::Empty,
            Ok(text) => {
                let name = text.trim();
                if parse_epoch_dir(name).is_none() {
                    return Err(CheckpointError::BadLatest { latest, name: name.into(), root: root.into() });
                }
                let dir = root.join(name);
                if let Ok(m) = fs::symlink_metadata(&dir) {
                    if m.file_type().is_symlink() {
                        return Err(CheckpointError::LatestIsLink { latest, dir });
                    }
                }
                let aside = root.join(format!("{name}.{REPLACED}"));
                if is_complete(&dir) {
                    return Ok(Self { dir, fallback: None });
                }
                // Interrupted between moving a replaced checkpoint aside and renaming
                // its successor in: the aside one is the last complete one.
                if !dir.exists() && is_complete(&aside) {
                    return Ok(Self { dir: aside, fallback: None });
                }
                if dir.exists() {
                    LatestProblem::NamesIncomplete(name.to_string())
                } else {
                    LatestProblem::NamesMissing(name.to_string())
                }
            }
        };
        let newest = complete_epochs(root)?.into_iter().max_by_key(|(epoch, _)| *epoch);
        let Some((_, used)) = newest else { return Err(CheckpointError::NoneComplete { run: run.to_path_buf() }) };
        Ok(Self { dir: used.clone(), fallback: Some(Fallback { latest, problem, used }) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Set when `latest` could not be followed and the newest complete checkpoint was
    /// opened instead.
    pub fn fallback(&self) -> Option<&Fallback> {
        self.fallback.as_ref()
    }

    pub fn json<T: DeserializeOwned>(&self, file: &str) -> Result<T> {
        let path = self.dir.join(file);
        let bytes = fs::read(&path).map_err(CheckpointError::io("reading", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Parse { path, source })
    }

    pub fn tensors(&self, file: &str) -> Result<Vec<(String, Tensor)>> {
        let path = self.dir.join(file);
        Tensor::read_safetensors(&path).map_err(|source| CheckpointError::Tensors { action: "reading", path, source })
    }

    /// Copies saved tensors into `vars` by name; every variable must be present with
    /// its shape, and nothing extra may be saved.
    pub fn load_vars(&self, file: &str, vars: &[(String, Tensor)]) -> Result<()> {
        let saved = self.tensors(file)?;
        let path = self.dir.join(file);
        if saved.len() != vars.len() {
            return Err(CheckpointError::TensorCount { path, saved: saved.len(), expected: vars.len() });
        }
        tch::no_grad(|| -> Result<()> {
            for (name, var) in vars {
                let missing = || CheckpointError::MissingTensor { path: path.clone(), name: name.clone() };
                let (_, t) = saved.iter().find(|(n, _)| n == name).ok_or_else(missing)?;
                if t.size() != var.size() {
                    let (saved, expected) = (t.size(), var.size());
                    return Err(CheckpointError::Shape { path, name: name.clone(), saved, expected });
                }
                var.shallow_clone().f_copy_(t).map_err(|source| CheckpointError::Load {
                    path: path.clone(),
                    name: name.clone(),
                    source,
                })?;
            }
            Ok(())
        })
    }
}

/// The named variables of a VarStore, sorted by name.
pub fn named(vs: &tch::nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        crate::test_dir(&format!("ckpt-{name}"))
    }

    fn write(out: &Path, epoch: u32, tag: &str) -> PathBuf {
        let w = Writer::begin(out, epoch).unwrap();
        w.json("tag.json", &tag).unwrap();
        w.commit().unwrap()
    }

    fn epochs_on_disk(out: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(out.join(CHECKPOINTS))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != LATEST)
            .collect();
        v.sort();
        v
    }

    fn tag(out: &Path) -> String {
        Reader::open(out).unwrap().json("tag.json").unwrap()
    }

    #[test]
    fn epoch_names_parse_as_numbers() {
        assert_eq!(parse_epoch_dir("epoch-0007"), Some(7));
        assert_eq!(parse_epoch_dir("epoch-10000"), Some(10000));
        for bad in ["epoch-", "epoch-0007.tmp", "epoch-0007.replaced", "latest", "epoch-x1", "notes"] {
            assert_eq!(parse_epoch_dir(bad), None, "{bad}");
        }
    }

    #[test]
    fn prune_keeps_the_new_checkpoint_and_only_removes_older_epochs() {
        let out = temp("prune");
        // What an earlier run left: epochs 2 and 3, and unrelated folders.
        write(&out, 2, "old");
        write(&out, 3, "old");
        fs::create_dir_all(out.join(CHECKPOINTS).join("notes")).unwrap();
        fs::create_dir_all(out.join(CHECKPOINTS).join("epoch-0009.tmp")).unwrap();
        // A new run's first checkpoint is never removed, and later epochs are not "older".
        write(&out, 1, "new");
        assert_eq!(tag(&out), "new");
        assert_eq!(epochs_on_disk(&out), ["epoch-0001", "epoch-0002", "epoch-0003", "epoch-0009.tmp", "notes"]);
        // Replacing epoch 2 keeps epoch 1 (KEEP = 2: the new one and the newest older one).
        write(&out, 2, "new");
        assert_eq!(tag(&out), "new");
        assert_eq!(epochs_on_disk(&out), ["epoch-0001", "epoch-0002", "epoch-0003", "epoch-0009.tmp", "notes"]);
        write(&out, 3, "new");
        assert_eq!(epochs_on_disk(&out), ["epoch-0002", "epoch-0003", "epoch-0009.tmp", "notes"]);
        let r = Reader::open(&out.join(CHECKPOINTS).join("epoch-0002")).unwrap();
        assert_eq!(r.json::<String>("tag.json").unwrap(), "new");
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn prune_orders_by_epoch_number_not_by_name() {
        let out = temp("prune-numeric");
        write(&out, 9998, "a");
        write(&out, 9999, "b");
        // "epoch-10000" sorts before "epoch-9998" as a string.
        write(&out, 10000, "c");
        assert_eq!(epochs_on_disk(&out), ["epoch-10000", "epoch-9999"]);
        assert_eq!(tag(&out), "c");
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn replacing_a_checkpoint_never_leaves_latest_without_a_complete_folder() {
        let out = temp("replace");
        write(&out, 1, "first");
        write(&out, 1, "second");
        assert_eq!(tag(&out), "second");
        assert_eq!(epochs_on_disk(&out), ["epoch-0001"], "the aside copy is removed");
        // A crash between moving the old folder aside and renaming the new one in:
        // `latest` names a missing folder, and the aside one is read instead.
        let root = out.join(CHECKPOINTS);
        fs::rename(root.join("epoch-0001"), root.join("epoch-0001.replaced")).unwrap();
        assert_eq!(tag(&out), "second");
        // The next commit of that epoch keeps the aside copy until its own is in place.
        write(&out, 1, "third");
        assert_eq!(tag(&out), "third");
        assert_eq!(epochs_on_disk(&out), ["epoch-0001"]);
        let _ = fs::remove_dir_all(&out);
    }
}

#[cfg(test)]
mod publishing {
    //! The order in which a checkpoint is published, `latest` checked and followed.

    use super::*;

    fn temp(name: &str) -> PathBuf {
        crate::test_dir(&format!("ckpt-pub-{name}"))
    }

    fn begin(out: &Path, epoch: u32, tag: &str) -> Writer {
        let w = Writer::begin(out, epoch).unwrap();
        w.json("tag.json", &tag).unwrap();
        w
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_commit_failing_at_any_step_leaves_latest_on_the_previous_checkpoint() {
        for failing in [CommitStep::Marker, CommitStep::Rename, CommitStep::Latest] {
            let out = temp(&format!("fail-{failing:?}"));
            begin(&out, 1, "epoch 1").commit().unwrap();
            let full =
                |step| CheckpointError::io("writing", "x")(std::io::Error::other(format!("disk full at {step:?}")));
            let e = begin(&out, 2, "epoch 2")
                .commit_with(|step| if step == failing { Err(full(step)) } else { Ok(()) })
                .unwrap_err();
            let cause = std::error::Error::source(&e).map(ToString::to_string);
            assert_eq!(cause, Some(format!("disk full at {failing:?}")));
            let root = out.join(CHECKPOINTS);
            assert_eq!(fs::read_to_string(root.join(LATEST)).unwrap(), "epoch-0001", "{failing:?}");
            let r = Reader::open(&out).unwrap();
            assert!(r.fallback().is_none(), "{failing:?}: {:?}", r.fallback());
            assert_eq!(r.json::<String>("tag.json").unwrap(), "epoch 1", "{failing:?}");
            // The unfinished folder is removed; one renamed in stays, complete but unnamed.
            let expected: &[&str] = match failing {
                CommitStep::Latest => &["epoch-0001", "epoch-0002", "latest"],
                _ => &["epoch-0001", "latest"],
            };
            assert_eq!(names(&root), expected, "{failing:?}");
            let _ = fs::remove_dir_all(&out);
        }
    }

    #[test]
    fn an_unfinished_checkpoint_is_removed_when_its_writer_is_dropped() {
        let out = temp("dropped");
        begin(&out, 1, "epoch 1").commit().unwrap();
        drop(begin(&out, 2, "epoch 2")); // an error while writing its tensors
        assert_eq!(names(&out.join(CHECKPOINTS)), ["epoch-0001", "latest"]);
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn latest_must_name_a_checkpoint_folder_of_this_run() {
        let out = temp("latest-names");
        let other = temp("latest-other");
        begin(&out, 1, "ours").commit().unwrap();
        begin(&other, 2, "theirs").commit().unwrap();
        let latest = out.join(CHECKPOINTS).join(LATEST);
        let theirs = other.join(CHECKPOINTS).join("epoch-0002");
        for name in [
            format!("../../{}/checkpoints/epoch-0002", other.file_name().unwrap().to_string_lossy()),
            theirs.display().to_string(),
            "epoch-0001/../../x".to_string(),
            "epoch-0001.replaced".to_string(),
            "latest".to_string(),
        ] {
            fs::write(&latest, &name).unwrap();
            let e = Reader::open(&out).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{} names `{name}`, not a checkpoint folder epoch-NNNN", latest.display())),
                "{name}: {e}"
            );
        }
        // A link named like a checkpoint folder is not one of this run's.
        std::os::unix::fs::symlink(&theirs, out.join(CHECKPOINTS).join("epoch-0002")).unwrap();
        fs::write(&latest, "epoch-0002").unwrap();
        let e = Reader::open(&out).unwrap_err().to_string();
        assert!(e.contains("a symbolic link"), "{e}");
        let _ = fs::remove_dir_all(&out);
        let _ = fs::remove_dir_all(&other);
    }

    #[test]
    fn a_missing_or_incomplete_latest_falls_back_to_the_newest_complete_checkpoint() {
        let out = temp("fallback");
        let root = out.join(CHECKPOINTS);
        begin(&out, 1, "epoch 1").commit().unwrap();
        begin(&out, 2, "epoch 2").commit().unwrap();
        // Epoch 3 published, then its marker lost.
        begin(&out, 3, "epoch 3").commit().unwrap();
        fs::remove_file(root.join("epoch-0003").join(COMPLETE)).unwrap();
        let latest = root.join(LATEST);
        for (text, problem) in [
            (Some("epoch-0003"), LatestProblem::NamesIncomplete("epoch-0003".into())),
            (Some("epoch-0007\n"), LatestProblem::NamesMissing("epoch-0007".into())),
            (Some(" \n"), LatestProblem::Empty),
            (None, LatestProblem::Missing),
        ] {
            match text {
                Some(text) => fs::write(&latest, text).unwrap(),
                None => fs::remove_file(&latest).unwrap(),
            }
            let r = Reader::open(&out).unwrap();
            assert_eq!(r.json::<String>("tag.json").unwrap(), "epoch 2", "{problem:?}");
            let fallback = r.fallback().unwrap_or_else(|| panic!("no fallback for {problem:?}"));
            assert_eq!(fallback.problem, problem);
            let shown = fallback.to_string();
            assert!(
                shown.ends_with(&format!(
                    "resuming from {}, the newest complete checkpoint",
                    root.join("epoch-0002").display()
                )),
                "{shown}"
            );
        }
        assert!(Reader::open(&out).unwrap().fallback().unwrap().to_string().contains("latest is missing"));
        fs::write(&latest, "epoch-0003").unwrap();
        let shown = Reader::open(&out).unwrap().fallback().unwrap().to_string();
        assert!(shown.contains("names epoch-0003, which is incomplete (no COMPLETE marker)"), "{shown}");
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn a_run_without_a_complete_checkpoint_says_so() {
        let out = temp("none-yet");
        fs::write(out.join("events.jsonl"), "").unwrap();
        let expected =
            format!("{} has no complete checkpoint yet: the run stopped before its first epoch ended", out.display());
        // No checkpoints folder yet; then one with an unfinished epoch and an empty `latest`.
        let e = Reader::open(&out).unwrap_err().to_string();
        assert!(e.starts_with(&expected), "{e}");
        fs::create_dir_all(out.join(CHECKPOINTS).join("epoch-0001.tmp")).unwrap();
        fs::write(out.join(CHECKPOINTS).join(LATEST), "").unwrap();
        let e = Reader::open(&out).unwrap_err().to_string();
        assert!(e.starts_with(&expected), "{e}");
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn the_run_folder_of_a_resume_path() {
        let out = temp("run-folder");
        begin(&out, 1, "x").commit().unwrap();
        let root = out.join(CHECKPOINTS);
        for path in [out.clone(), root.clone(), root.join("epoch-0001")] {
            assert_eq!(run_folder_of(&path).unwrap(), out, "{}", path.display());
        }
        let bare = temp("run-folder-bare");
        fs::write(bare.join(COMPLETE), "").unwrap();
        let e = run_folder_of(&bare).unwrap_err().to_string();
        assert!(e.contains("is a checkpoint outside a run folder"), "{e}");
        let empty = temp("run-folder-empty");
        let e = run_folder_of(&empty).unwrap_err().to_string();
        assert!(e.starts_with(&format!("nothing to resume: {} holds no run", empty.display())), "{e}");
        let e = run_folder_of(&empty.join("missing")).unwrap_err().to_string();
        assert!(e.starts_with("nothing to resume:"), "{e}");
        for d in [out, bare, empty] {
            let _ = fs::remove_dir_all(d);
        }
    }

    #[test]
    fn floats_round_trip_bit_for_bit_through_a_checkpoint() {
        let out = temp("floats");
        // Values whose shortest decimal needs 17 digits, and neighbours 1 ulp apart.
        let mut values = vec![0.1 + 0.2, 1.0 / 3.0, 2.0f64.sqrt(), 80.46875000000001, 1e-300 * 3.7];
        let next = |x: f64| f64::from_bits(x.to_bits() + 1);
        values.extend(values.clone().into_iter().map(next));
        // A spread of losses and accuracies as a run produces them.
        values.extend((1..2000).map(|i| (i as f64).ln() / 7.0 + 100.0 * (i as f64 / 2001.0)));
        let w = Writer::begin(&out, 1).unwrap();
        w.json("floats.json", &values).unwrap();
        w.commit().unwrap();
        let back: Vec<f64> = Reader::open(&out).unwrap().json("floats.json").unwrap();
        let differ: Vec<(f64, f64)> =
            values.iter().zip(&back).filter(|(a, b)| a.to_bits() != b.to_bits()).map(|(a, b)| (*a, *b)).collect();
        assert!(differ.is_empty(), "{} of {} differ: {:?}", differ.len(), values.len(), &differ[..differ.len().min(5)]);
        let _ = fs::remove_dir_all(&out);
    }
}
