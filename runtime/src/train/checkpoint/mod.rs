//! Checkpoints of a run: what the trainer saves at the end of an epoch and how a run
//! resumes from it. The files and their atomic writes are [`store`]'s.

mod error;
mod store;

pub use error::CheckpointError;
pub use store::*;

use super::{controller::ControllerState, report::EpochRecord, seeds, Trainer};
use crate::{
    config::{sha256_hex, RunConfig},
    lifecycle::Lifecycle,
    Result,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `format` of a checkpoint's `state.json`: 2 since the run's events are typed
/// (1, plain event lines, is still read).
const STATE_FORMAT: u32 = 2;

/// What a checkpoint's `state.json` holds besides tensors.
#[derive(Debug, Serialize, Deserialize)]
struct SavedState {
    format: u32,
    epoch: u32,
    config: RunConfig,
    /// Each loaded plugin file with its sha256 at checkpoint time.
    plugins: Vec<(PathBuf, String)>,
    slots: Vec<SavedSlot>,
    history: Vec<EpochRecord>,
    /// The controller's rotation place and penalties (absent before they existed).
    #[serde(default)]
    controller: ControllerState,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedSlot {
    lifecycle: Lifecycle,
    options: serde_json::Value,
}

impl SavedState {
    /// The state of checkpoint `ckpt`, refused when its format is newer than this
    /// runtime reads or a plugin it ran is missing or changed.
    fn read(ckpt: &Reader) -> Result<Self, CheckpointError> {
        let saved: SavedState = ckpt.json(STATE)?;
        let dir = || ckpt.dir().to_path_buf();
        if saved.format > STATE_FORMAT {
            return Err(CheckpointError::FormatTooNew { dir: dir(), found: saved.format, supported: STATE_FORMAT });
        }
        for (path, sha) in &saved.plugins {
            if !path.exists() {
                return Err(CheckpointError::PluginMissing { dir: dir(), plugin: path.clone() });
            }
            let now = sha256_hex(path).map_err(CheckpointError::io("reading plugin", path))?;
            if &now != sha {
                let (then, plugin) = (sha.clone(), path.clone());
                return Err(CheckpointError::PluginChanged { dir: dir(), plugin, then, now });
            }
        }
        Ok(saved)
    }

    /// The run's config, each plugin pinned to the hash recorded at checkpoint time, so
    /// the bytes loaded are the bytes checked (the check in [`SavedState::read`] gives
    /// the readable early answer).
    fn pinned_config(&self) -> RunConfig {
        let mut config = self.config.clone();
        config.migrate_deprecated(); // a checkpoint from before `[slot]`
        for d in &config.deprecations {
            tracing::debug!("checkpoint config: {d}");
        }
        for source in config.plugins.iter_mut().filter(|s| s.sha256.is_none()) {
            let canonical = source.path.canonicalize().ok();
            if let Some((_, sha)) = self.plugins.iter().find(|(p, _)| Some(p) == canonical.as_ref()) {
                source.sha256 = Some(sha.clone());
            }
        }
        config
    }
}

/// Restores `opt`'s state from the tensors of `file` in `ckpt`.
fn load_optimizer(opt: &mut super::optim::Optimizer, ckpt: &Reader, file: &str) -> Result<(), CheckpointError> {
    let mismatch = |source| CheckpointError::OptimizerState { path: ckpt.dir().join(file), source };
    opt.load_state(&ckpt.tensors(file)?).map_err(mismatch)
}

/// A checkpoint opened to resume its run: found, read and checked, the trainer not built
/// yet (so a caller can set up logging from the run's config first).
pub struct Resume {
    ckpt: Reader,
    saved: SavedState,
}

impl Resume {
    /// The latest complete checkpoint of run folder `path` (or its `checkpoints/`, or a
    /// checkpoint folder), read and checked against the plugins on disk.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let ckpt = Reader::open(path)?;
        let saved = SavedState::read(&ckpt)?;
        Ok(Self { ckpt, saved })
    }

    /// The run's config as the checkpoint recorded it.
    pub fn config(&self) -> &RunConfig {
        &self.saved.config
    }

    /// The checkpoint read.
    pub fn checkpoint(&self) -> &Path {
        self.ckpt.dir()
    }

    /// Set when `latest` could not be followed and the newest complete checkpoint was
    /// read instead (logged as a warning by [`Resume::into_trainer`]).
    pub fn fallback(&self) -> Option<&Fallback> {
        self.ckpt.fallback()
    }

    /// The trainer continuing the run, writing into `output` (its checkpoints, and the
    /// run folder the caller writes the report to): the output folder the checkpoint
    /// recorded is only where the run was before (it may have been moved or copied).
    pub fn into_trainer(self, output: &Path) -> Result<Trainer> {
        let Self { ckpt, saved } = self;
        if let Some(fallback) = ckpt.fallback() {
            tracing::warn!("{fallback}");
        }
        let mut config = saved.pinned_config();
        if config.output.dir != output {
            tracing::info!(
                recorded = %config.output.dir.display(),
                now = %output.display(),
                "the run continues in its folder as it is now (the checkpoint recorded another)"
            );
            config.output.dir = output.to_path_buf();
        }
        let mut trainer = Trainer::new(config)?;
        if saved.slots.len() != trainer.model.slots().len() {
            let (saved, config) = (saved.slots.len(), trainer.model.slots().len());
            return Err(CheckpointError::SlotCount { dir: ckpt.dir().to_path_buf(), saved, config }.into());
        }
        let ids: Vec<String> = trainer.model.slots().iter().map(|s| s.id().to_string()).collect();
        for (id, s) in ids.iter().zip(saved.slots) {
            seeds::restore(&mut trainer.model, &trainer.registry, id, s.lifecycle, s.options)?;
        }
        trainer.load_tensors(&ckpt)?;
        trainer.history = saved.history;
        trainer.controller.restore(saved.controller);
        tracing::info!(checkpoint = %ckpt.dir().display(), epoch = saved.epoch, "resumed");
        Ok(trainer)
    }
}

impl Trainer {
    /// Continues the run whose run folder is `path` (or its `checkpoints/`, or a
    /// checkpoint folder inside it) in that folder, wherever the checkpoint says the
    /// run was written before.
    pub fn resume(path: &Path) -> Result<Self> {
        let output = run_folder_of(path)?;
        Self::resume_into(path, &output)
    }

    /// Continues the run of checkpoint `path` (as [`Trainer::resume`] reads it), writing
    /// into `output`.
    pub fn resume_into(path: &Path, output: &Path) -> Result<Self> {
        Resume::open(path)?.into_trainer(output)
    }

    /// Loads the host's and each seed's parameters and optimizer state from `ckpt`.
    fn load_tensors(&mut self, ckpt: &Reader) -> Result<(), CheckpointError> {
        ckpt.load_vars(HOST, &named(self.model.host_vars()))?;
        load_optimizer(&mut self.host_opt, ckpt, HOST_OPTIMIZER)?;
        self.sync_seed_optimizers();
        for slot in self.model.slots() {
            let named = slot.named_seed_tensors();
            if named.is_empty() {
                continue;
            }
            ckpt.load_vars(&slot_file(slot.id()), &named)?;
            let no_optimizer = || CheckpointError::NoSeedOptimizer { dir: ckpt.dir().into(), slot: slot.id().into() };
            let opt = self.seed_opts.get_mut(slot.id()).ok_or_else(no_optimizer)?;
            load_optimizer(opt, ckpt, &slot_optimizer_file(slot.id()))?;
            if let Some(gate) = self.seed_opts.get_mut(&super::gate_key(slot.id())) {
                load_optimizer(gate, ckpt, &gate_optimizer_file(slot.id()))?;
            }
        }
        Ok(())
    }

    /// Writes the checkpoint of `epoch` (atomically, see [`Writer`]).
    pub(super) fn save_checkpoint(&self, epoch: u32) -> Result<(), CheckpointError> {
        self.write_checkpoint(&self.config.output.dir, epoch).map(drop)
    }

    /// Writes a checkpoint of the run as it is after its last epoch into run folder
    /// `dir` (its own, or another that [`Trainer::resume`] then continues from) and
    /// returns the checkpoint's folder. [`Trainer::run`] writes one after each epoch when
    /// `[output] checkpoint` is on; this is for a caller driving the run with
    /// [`Trainer::step_epoch`] that wants one of its own.
    pub fn save_checkpoint_to(&self, dir: &Path) -> Result<PathBuf, CheckpointError> {
        self.write_checkpoint(dir, self.next_epoch() - 1)
    }

    /// Writes the checkpoint of `epoch` into run folder `output`.
    fn write_checkpoint(&self, output: &Path, epoch: u32) -> Result<PathBuf, CheckpointError> {
        let w = Writer::begin(output, epoch)?;
        w.tensors(HOST, &named(self.model.host_vars()))?;
        w.tensors(HOST_OPTIMIZER, &self.host_opt.state_tensors())?;
        for slot in self.model.slots() {
            let named = slot.named_seed_tensors();
            if !named.is_empty() {
                w.tensors(&slot_file(slot.id()), &named)?;
                w.tensors(&slot_optimizer_file(slot.id()), &self.seed_opts[slot.id()].state_tensors())?;
                if let Some(gate) = self.seed_opts.get(&super::gate_key(slot.id())) {
                    w.tensors(&gate_optimizer_file(slot.id()), &gate.state_tensors())?;
                }
            }
        }
        let plugins = self
            .registry
            .plugins()
            .map(|p| {
                Ok((p.path().to_path_buf(), sha256_hex(p.path()).map_err(CheckpointError::io("hashing", p.path()))?))
            })
            .collect::<Result<Vec<_>, CheckpointError>>()?;
        let slots = self
            .model
            .slots()
            .iter()
            .map(|s| SavedSlot { lifecycle: s.lifecycle().clone(), options: s.options().clone() })
            .collect();
        let state = SavedState {
            format: STATE_FORMAT,
            epoch,
            config: self.config.clone(),
            plugins,
            slots,
            history: self.history.clone(),
            controller: self.controller.state().clone(),
        };
        w.json(STATE, &state)?;
        let dir = w.commit()?;
        tracing::debug!(checkpoint = %dir.display(), "checkpoint written");
        Ok(dir)
    }
}
