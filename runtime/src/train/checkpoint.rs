//! Checkpoints: parameters and optimizer state as safetensors, lifecycle state as JSON.
//!
//! Layout under `<output>/checkpoints/`: one folder per epoch (`epoch-0007/`) and a
//! `latest` file naming the newest complete one. A folder is written as
//! `epoch-0007.tmp`, finished with a `COMPLETE` marker, synced, then renamed; only
//! then is `latest` replaced (written aside and renamed, which is atomic). An
//! interrupted write therefore leaves `latest` on the previous complete checkpoint,
//! and a folder without its marker is never loaded.

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
/// Checkpoints kept on disk (the newest ones).
const KEEP: usize = 2;

/// A checkpoint being written.
pub struct Writer {
    root: PathBuf,
    name: String,
    tmp: PathBuf,
}

impl Writer {
    pub fn begin(output: &Path, epoch: u32) -> Result<Self> {
        let root = output.join(CHECKPOINTS);
        let name = format!("epoch-{epoch:04}");
        let tmp = root.join(format!("{name}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
        }
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self { root, name, tmp })
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

    /// Marks the checkpoint complete, publishes it as `latest`, prunes old ones.
    pub fn commit(self) -> Result<PathBuf> {
        let marker = self.tmp.join(COMPLETE);
        fs::write(&marker, b"")?;
        sync_file(&marker)?;
        let dir = self.root.join(&self.name);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::rename(&self.tmp, &dir)?;
        let latest_tmp = self.root.join(format!("{LATEST}.tmp"));
        let mut f = fs::File::create(&latest_tmp)?;
        f.write_all(self.name.as_bytes())?;
        f.sync_all()?;
        fs::rename(&latest_tmp, self.root.join(LATEST))?;
        sync_dir(&self.root);
        self.prune_old()?;
        Ok(dir)
    }

    fn prune_old(&self) -> Result<()> {
        let mut complete: Vec<PathBuf> = fs::read_dir(&self.root)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir() && p.join(COMPLETE).exists() && !p.to_string_lossy().ends_with(".tmp"))
            .collect();
        complete.sort();
        let excess = complete.len().saturating_sub(KEEP);
        for old in &complete[..excess] {
            fs::remove_dir_all(old)?;
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
                root.join(name.trim())
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
