//! The checkpoint store: parameters and optimizer state as safetensors, lifecycle state as JSON.
//!
//! Layout under `<output>/checkpoints/`: one folder per epoch (`epoch-0007/`) and a
//! `latest` file naming the newest complete one. A folder is written as
//! `epoch-0007.tmp`, finished with a `COMPLETE` marker, synced, then renamed; only
//! then is `latest` replaced (written aside and renamed, which is atomic). An
//! interrupted write therefore leaves `latest` on the previous complete checkpoint,
//! and a folder without its marker is never loaded.
//!
//! Nothing is removed before its replacement is in place: an existing folder of the
//! same epoch is first renamed aside (`epoch-0007.replaced`), the new one renamed in,
//! and only then the aside one removed; a reader that finds `latest` naming a missing
//! folder (a crash between those two renames) opens the aside one. Pruning removes
//! only complete checkpoints of *earlier* epochs than the one just written (epoch
//! numbers parsed from `epoch-NNNN` names, never compared as strings), keeping the
//! newest [`KEEP`] in all; anything else in the folder is left alone.

use anyhow::{bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};
use tch::{Device, Tensor};

pub const CHECKPOINTS: &str = "checkpoints";
const LATEST: &str = "latest";
const COMPLETE: &str = "COMPLETE";
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

/// A checkpoint being written.
pub struct Writer {
    root: PathBuf,
    epoch: u32,
    name: String,
    tmp: PathBuf,
}

impl Writer {
    pub fn begin(output: &Path, epoch: u32) -> Result<Self> {
        let root = output.join(CHECKPOINTS);
        let name = epoch_dir_name(epoch);
        let tmp = root.join(format!("{name}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
        }
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self { root, epoch, name, tmp })
    }

    /// Saves named tensors (as contiguous CPU copies) to `file`.
    pub fn tensors(&self, file: &str, tensors: &[(String, Tensor)]) -> Result<()> {
        let cpu: Vec<(String, Tensor)> =
            tensors.iter().map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous())).collect();
        let path = self.tmp.join(file);
        Tensor::write_safetensors(&cpu, &path).with_context(|| format!("writing {}", path.display()))?;
        sync_file(&path)
    }

    pub fn json<T: Serialize>(&self, file: &str, value: &T) -> Result<()> {
        let path = self.tmp.join(file);
        fs::write(&path, serde_json::to_vec_pretty(value)?).with_context(|| format!("writing {}", path.display()))?;
        sync_file(&path)
    }

    /// Marks the checkpoint complete, publishes it as `latest`, prunes older ones.
    pub fn commit(self) -> Result<PathBuf> {
        let marker = self.tmp.join(COMPLETE);
        fs::write(&marker, b"").with_context(|| format!("writing {}", marker.display()))?;
        sync_file(&marker)?;
        sync_dir(&self.tmp);
        let dir = self.root.join(&self.name);
        // An earlier checkpoint of this epoch goes aside (not away) until the new one
        // is in place.
        // An aside folder left by a crash is stale when the published one exists, and
        // is the live copy (what `Reader::open` reads) when it does not.
        let aside = self.root.join(format!("{}.{REPLACED}", self.name));
        if dir.exists() {
            if aside.exists() {
                fs::remove_dir_all(&aside).with_context(|| format!("removing stale {}", aside.display()))?;
            }
            fs::rename(&dir, &aside)
                .with_context(|| format!("moving {} aside to {}", dir.display(), aside.display()))?;
        }
        fs::rename(&self.tmp, &dir)
            .with_context(|| format!("publishing {} as {}", self.tmp.display(), dir.display()))?;
        sync_dir(&self.root);
        let latest_tmp = self.root.join(format!("{LATEST}.tmp"));
        let mut f = fs::File::create(&latest_tmp).with_context(|| format!("writing {}", latest_tmp.display()))?;
        f.write_all(self.name.as_bytes())?;
        f.sync_all()?;
        fs::rename(&latest_tmp, self.root.join(LATEST))
            .with_context(|| format!("publishing {}", self.root.join(LATEST).display()))?;
        sync_dir(&self.root);
        if aside.exists() {
            fs::remove_dir_all(&aside).with_context(|| format!("removing {}", aside.display()))?;
        }
        self.prune_old()?;
        Ok(dir)
    }

    /// Removes complete checkpoints of epochs before this one, keeping the newest
    /// `KEEP - 1` of them (with this one, `KEEP` in all). Later epochs, incomplete
    /// folders and anything not named `epoch-NNNN` are never touched.
    fn prune_old(&self) -> Result<()> {
        let entries = fs::read_dir(&self.root).with_context(|| format!("listing {}", self.root.display()))?;
        let mut older: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let epoch = parse_epoch_dir(e.file_name().to_str()?)?;
                let path = e.path();
                (epoch < self.epoch && path.is_dir() && path.join(COMPLETE).is_file()).then_some((epoch, path))
            })
            .collect();
        older.sort_by_key(|(epoch, _)| *epoch);
        let excess = older.len().saturating_sub(KEEP.saturating_sub(1));
        for (_, old) in &older[..excess] {
            fs::remove_dir_all(old).with_context(|| format!("removing old checkpoint {}", old.display()))?;
        }
        Ok(())
    }
}

fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path)?.sync_all().with_context(|| format!("syncing {}", path.display()))
}

fn sync_dir(path: &Path) {
    if let Ok(d) = fs::File::open(path) {
        let _ = d.sync_all();
    }
}

/// A complete checkpoint on disk.
pub struct Reader {
    dir: PathBuf,
}

impl Reader {
    /// The latest complete checkpoint of a run's output folder (or of a `checkpoints`
    /// folder, or a checkpoint folder itself).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!("nothing to resume: {} does not exist", path.display());
        }
        let root = if path.join(CHECKPOINTS).is_dir() {
            Some(path.join(CHECKPOINTS))
        } else if path.join(LATEST).is_file() {
            Some(path.to_path_buf())
        } else {
            None // a checkpoint folder itself
        };
        let dir = match root {
            Some(root) => {
                let latest = root.join(LATEST);
                let name = fs::read_to_string(&latest).with_context(|| {
                    format!("no checkpoint to resume in {} (missing {})", path.display(), latest.display())
                })?;
                let dir = root.join(name.trim());
                let aside = root.join(format!("{}.{REPLACED}", name.trim()));
                // Interrupted between moving a replaced checkpoint aside and renaming
                // its successor in: the aside one is the last complete one.
                if !dir.exists() && aside.join(COMPLETE).is_file() {
                    aside
                } else {
                    dir
                }
            }
            None => path.to_path_buf(),
        };
        if !dir.join(COMPLETE).exists() {
            bail!(
                "checkpoint {} is incomplete (no {COMPLETE} marker): it was interrupted while being written",
                dir.display()
            );
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn json<T: DeserializeOwned>(&self, file: &str) -> Result<T> {
        let path = self.dir.join(file);
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn tensors(&self, file: &str) -> Result<Vec<(String, Tensor)>> {
        let path = self.dir.join(file);
        Tensor::read_safetensors(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Copies saved tensors into `vars` by name; every variable must be present with
    /// its shape, and nothing extra may be saved.
    pub fn load_vars(&self, file: &str, vars: &[(String, Tensor)]) -> Result<()> {
        let saved = self.tensors(file)?;
        if saved.len() != vars.len() {
            bail!("{}: {} tensors saved, {} expected", self.dir.join(file).display(), saved.len(), vars.len());
        }
        tch::no_grad(|| -> Result<()> {
            for (name, var) in vars {
                let (_, t) = saved
                    .iter()
                    .find(|(n, _)| n == name)
                    .with_context(|| format!("{}: no tensor `{name}`", self.dir.join(file).display()))?;
                if t.size() != var.size() {
                    bail!(
                        "{}: `{name}` has shape {:?}, expected {:?}",
                        self.dir.join(file).display(),
                        t.size(),
                        var.size()
                    );
                }
                var.shallow_clone().f_copy_(t)?;
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
        let dir = std::env::temp_dir().join(format!("esper-ckpt-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
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
