//! The training job: host and seed optimizers, validation, gradient telemetry,
//! counterfactual contributions, the lifecycle controller, checkpoints and the report.

pub mod checkpoint;
pub mod controller;
pub mod observer;
pub mod optim;
pub mod report;
pub mod rollback;
mod step;

use crate::{
    config::{sha256_hex, RunConfig},
    data::{epoch_seed, Dataset},
    lifecycle::{Lifecycle, LifecycleEvent, SeedStage},
    model::MorphogeneticModel,
    plugin::BlueprintRegistry,
};
use anyhow::{bail, Context, Result};
use controller::{Action, Controller};
pub use observer::{Observer, Silent};
use optim::Optimizer;
use report::{EpochRecord, SlotRecord};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::PathBuf, time::Instant};
use tch::{Device, Kind, Tensor};

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
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedSlot {
    lifecycle: Lifecycle,
    options: serde_json::Value,
}

pub struct Trainer {
    config: RunConfig,
    registry: BlueprintRegistry,
    model: MorphogeneticModel,
    data: Dataset,
    host_opt: Optimizer,
    seed_opts: BTreeMap<String, Optimizer>,
    controller: Controller,
    history: Vec<EpochRecord>,
    device: Device,
    guard: step::StepGuard,
}

/// Runs one phase of epoch `epoch`. Seeds at fault are contained inside it; what is left
/// is the host's own failure, and it ends the run with an error (never a panic), the
/// checkpoints already written kept.
fn contained<T>(epoch: u32, phase: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let text = esper_plugin_api::panic_message(payload.as_ref());
        tracing::debug!(error = %text, "host failure (full text)");
        Err(anyhow::anyhow!("{}", crate::torch_error::summary(&text)))
    });
    outcome.with_context(|| {
        format!("epoch {epoch}: {phase} failed on the host's side (the complete checkpoints written so far are kept)")
    })
}

impl Trainer {
    /// Loads the plugins and data and builds the model of `config`.
    pub fn new(config: RunConfig) -> Result<Self> {
        let device = config.device.resolve().map_err(anyhow::Error::msg)?;
        // Before anything is allocated: slots, memory against the limit, plugins loaded
        // and pinned, every blueprint the run names resolved (as `esper config check`).
        let registry = config.preflight(Some(device))?.registry;
        // libtorch's generator drives parameter init (and is re-seeded every epoch), so
        // the same config gives the same run, and a resumed one continues it exactly.
        tch::manual_seed(config.training.seed as i64);
        let slots: Vec<&str> = config.slots.iter().map(String::as_str).collect();
        let model = MorphogeneticModel::new(config.host.clone(), &slots, config.slot.clone(), device)?;
        let data = config.data.load().context("loading the data set")?;
        let host_opt = Optimizer::new(config.training.host_optimizer, model.host_parameters());
        let controller = Controller::new(config.lifecycle.controller.clone(), config.lifecycle.schedule.clone());
        tracing::info!(device = ?device, train = data.train.len(), val = data.val.len(), slots = ?config.slots, "run prepared");
        Ok(Self {
            config,
            registry,
            model,
            data,
            host_opt,
            seed_opts: BTreeMap::new(),
            controller,
            history: Vec::new(),
            device,
            guard: step::StepGuard::default(),
        })
    }

    /// Continues the run whose output folder (or checkpoint) is `dir`.
    pub fn resume(dir: &std::path::Path) -> Result<Self> {
        let ckpt = checkpoint::Reader::open(dir)?;
        let saved: SavedState = ckpt.json(checkpoint::STATE)?;
        if saved.format > STATE_FORMAT {
            bail!(
                "cannot resume from {}: checkpoint format {} is newer than this esper reads ({STATE_FORMAT})",
                ckpt.dir().display(),
                saved.format
            );
        }
        for (path, sha) in &saved.plugins {
            if !path.exists() {
                bail!("cannot resume from {}: plugin {} is missing", ckpt.dir().display(), path.display());
            }
            let now = sha256_hex(path).with_context(|| format!("reading plugin {}", path.display()))?;
            if &now != sha {
                bail!(
                    "cannot resume from {}: plugin {} changed since the checkpoint (sha256 {sha} then, {now} now)",
                    ckpt.dir().display(),
                    path.display()
                );
            }
        }
        // Pin each plugin file to the hash recorded at checkpoint time, so the bytes loaded
        // are the bytes checked (the check above gives the readable early answer).
        let mut config = saved.config;
        config.migrate_deprecated(); // a checkpoint from before `[slot]`
        for d in &config.deprecations {
            tracing::debug!("checkpoint config: {d}");
        }
        for source in config.plugins.iter_mut().filter(|s| s.sha256.is_none()) {
            let canonical = source.path.canonicalize().ok();
            if let Some((_, sha)) = saved.plugins.iter().find(|(p, _)| Some(p) == canonical.as_ref()) {
                source.sha256 = Some(sha.clone());
            }
        }
        let mut trainer = Self::new(config)?;
        let (device, host_params) = (trainer.device, trainer.model.host_parameters());
        if saved.slots.len() != trainer.model.slots().len() {
            bail!(
                "checkpoint {} has {} slots, the config {}",
                ckpt.dir().display(),
                saved.slots.len(),
                trainer.model.slots().len()
            );
        }
        for (slot, s) in trainer.model.slots_mut().iter_mut().zip(saved.slots) {
            slot.restore(&trainer.registry, s.lifecycle, s.options, device, &host_params)?;
        }
        ckpt.load_vars(checkpoint::HOST, &checkpoint::named(trainer.model.host_vars()))?;
        trainer.host_opt.load_state(&ckpt.tensors(checkpoint::HOST_OPTIMIZER)?).map_err(anyhow::Error::msg)?;
        trainer.sync_seed_optimizers();
        for slot in trainer.model.slots() {
            let named = slot.named_seed_tensors();
            if named.is_empty() {
                continue;
            }
            ckpt.load_vars(&checkpoint::slot_file(slot.id()), &named)?;
            let state = ckpt.tensors(&checkpoint::slot_optimizer_file(slot.id()))?;
            let opt = trainer.seed_opts.get_mut(slot.id()).with_context(|| {
                format!("checkpoint {}: slot `{}` has a seed but no seed optimizer", ckpt.dir().display(), slot.id())
            })?;
            opt.load_state(&state).map_err(anyhow::Error::msg)?;
        }
        trainer.history = saved.history;
        tracing::info!(checkpoint = %ckpt.dir().display(), epoch = saved.epoch, "resumed");
        Ok(trainer)
    }

    pub fn model(&self) -> &MorphogeneticModel {
        &self.model
    }
    pub fn history(&self) -> &[EpochRecord] {
        &self.history
    }
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// Runs up to this epoch (to extend a resumed run).
    pub fn set_epochs(&mut self, epochs: u32) {
        self.config.training.epochs = epochs;
    }

    /// Runs the remaining epochs, telling `observer` how it goes.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<()> {
        let total = self.config.training.epochs;
        let start = self.history.last().map_or(0, |r| r.epoch);
        if start == 0 {
            self.act(0, &mut Vec::new()); // scheduled germinations for epoch 1
        }
        observer.run_started(start + 1, total);
        for epoch in start + 1..=total {
            let record = contained(epoch, "training", || self.epoch(epoch, observer))?;
            observer.epoch_done(&record);
            if self.config.output.checkpoint {
                contained(epoch, "writing the checkpoint", || self.save_checkpoint(epoch))?;
            }
        }
        observer.run_done();
        Ok(())
    }

    fn epoch(&mut self, epoch: u32, observer: &mut dyn Observer) -> Result<EpochRecord> {
        let started = Instant::now();
        tch::manual_seed(self.config.training.seed as i64 * 1_000_003 + epoch as i64);
        let cfg = &self.config.training;
        let batches = self.data.train.batches(cfg.batch_size, Some(epoch_seed(cfg.seed, epoch as u64)), self.device);
        let n_batches = batches.len();
        observer.epoch_started(epoch, n_batches);
        let gradient_every = cfg.gradient_every;
        let mut events = Vec::new();
        let mut totals = step::Totals::new(self.device);
        if self.model.slots().iter().any(|s| s.runs_seed()) {
            self.save_good()?; // the first state a non-finite seed can be rolled back to
        }
        for (i, (x, y)) in batches.enumerate() {
            let capture = i % gradient_every == 0 || i + 1 == n_batches;
            self.train_batch(&x, &y, capture, &mut totals, &mut events)?;
            observer.batch_done();
        }
        let seen = totals.seen.max(1) as f64;
        let train_loss = totals.loss.f_double_value(&[])? / seen;
        let train_accuracy = 100.0 * totals.correct.f_int64_value(&[])? as f64 / seen;
        let (val_loss, val_accuracy) = self.evaluate_contained(None, &mut events)?;

        // Metrics for each live seed: accuracy, and the counterfactual contribution
        // (alpha forced to 0) once the seed affects the output.
        let mut contributions = BTreeMap::new();
        let ids: Vec<String> = self.model.slots().iter().map(|s| s.id().to_string()).collect();
        for id in &ids {
            let stage = self.model.slot(id)?.stage();
            let contribution = if matches!(stage, SeedStage::Blending | SeedStage::Holding | SeedStage::Fossilized) {
                Some(val_accuracy - self.evaluate_contained(Some(id), &mut events)?.1)
            } else {
                None
            };
            let slot = self.model.slot_mut(id)?;
            slot.lifecycle_mut().record_accuracy(val_accuracy);
            if let (Some(c), Some(m)) = (contribution, slot.lifecycle_mut().metrics_mut()) {
                m.set_counterfactual_contribution(Some(c));
            }
            contributions.insert(id.clone(), contribution);
        }
        for slot in self.model.slots_mut() {
            let id = slot.id().to_string();
            if let Some(c) = slot.step_epoch()? {
                events.push(LifecycleEvent::StageChanged { slot: id, from: c.from, to: c.to });
            }
        }
        self.act(epoch, &mut events);
        for slot in self.model.slots_mut() {
            events.extend(slot.take_release_errors());
        }
        if self.guard.snapshots > 0 {
            tracing::debug!(
                snapshots = self.guard.snapshots,
                snapshot_ms = self.guard.snapshot_time.as_secs_f64() * 1e3,
                rollbacks = self.guard.rollbacks,
                "rollback copies this run"
            );
        }

        let slots = self
            .model
            .slots()
            .iter()
            .map(|s| SlotRecord {
                slot: s.id().into(),
                stage: s.stage(),
                alpha: s.alpha(),
                contribution: contributions[s.id()],
            })
            .collect();
        let record = EpochRecord {
            epoch,
            train_loss,
            train_accuracy,
            val_loss,
            val_accuracy,
            seconds: started.elapsed().as_secs_f64(),
            slots,
            events,
        };
        tracing::info!(
            event = "epoch",
            epoch,
            train_loss,
            train_accuracy,
            val_loss,
            val_accuracy,
            slots = %serde_json::to_string(&record.slots)?,
            "epoch {epoch}: train loss {train_loss:.4}, val accuracy {val_accuracy:.2}%"
        );
        self.history.push(record.clone());
        Ok(record)
    }

    /// The controller's decisions, applied. A failing action (a plugin that fails to
    /// create, a probe refusal) is reported and the run goes on.
    fn act(&mut self, epoch: u32, events: &mut Vec<LifecycleEvent>) {
        let val: Vec<f64> = self.history.iter().map(|r| r.val_accuracy).collect();
        let gates = self.config.lifecycle.gates.clone();
        for action in self.controller.decide(epoch, &val, &self.model) {
            let outcome = match &action {
                Action::Germinate { slot, blueprint, options, seed_id } => self
                    .model
                    .germinate(&self.registry, slot, blueprint, seed_id, options)
                    .map(|()| Some(LifecycleEvent::Germinated { slot: slot.clone(), blueprint: blueprint.clone() })),
                Action::Advance { slot } => self.model.slot_mut(slot).and_then(|s| {
                    let from = s.stage();
                    let r = s.advance(&gates)?;
                    Ok(r.passed.then(|| LifecycleEvent::StageChanged { slot: slot.clone(), from, to: s.stage() }))
                }),
                Action::Prune { slot, reason } => self
                    .model
                    .prune(slot, reason)
                    .map(|()| Some(LifecycleEvent::Pruned { slot: slot.clone(), reason: reason.clone() })),
            };
            match outcome {
                Ok(Some(e)) => events.push(e),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(action = ?action, error = %e, "lifecycle action failed");
                    events.push(LifecycleEvent::ActionFailed { error: e.to_string() });
                }
            }
        }
        self.sync_seed_optimizers();
    }

    /// One optimizer per live seed: created at germination, dropped with the seed.
    fn sync_seed_optimizers(&mut self) {
        let live: Vec<(String, Vec<Tensor>)> = self
            .model
            .slots()
            .iter()
            .filter(|s| s.seed().is_some())
            .map(|s| (s.id().to_string(), s.seed_parameters()))
            .collect();
        self.seed_opts.retain(|id, _| live.iter().any(|(l, _)| l == id));
        for (id, params) in live {
            self.seed_opts.entry(id).or_insert_with(|| Optimizer::new(self.config.training.seed_optimizer, params));
        }
    }

    /// [`Trainer::evaluate`], containing seeds at fault: a seed that breaks the contract,
    /// fails or gives non-finite outputs is pruned and the evaluation run again.
    fn evaluate_contained(&mut self, bypass: Option<&str>, events: &mut Vec<LifecycleEvent>) -> Result<(f64, f64)> {
        loop {
            let faults = match self.evaluate(bypass) {
                Ok(result) => {
                    let faults = self.non_finite_outputs()?;
                    if faults.is_empty() {
                        return Ok(result);
                    }
                    faults
                }
                Err(crate::model::ModelError::Seed(fault)) => vec![*fault],
                Err(e) => return Err(e.into()),
            };
            self.contain(faults, events)?;
        }
    }

    /// Validation loss and accuracy (%), eval mode; with `bypass`, that slot's alpha is
    /// forced to 0 (the counterfactual).
    fn evaluate(&self, bypass: Option<&str>) -> Result<(f64, f64), crate::model::ModelError> {
        tch::no_grad(|| {
            // Summed on the device; read back once at the end (no sync per batch).
            let mut loss = Tensor::zeros([], (Kind::Float, self.device));
            let mut correct = Tensor::zeros([], (Kind::Int64, self.device));
            let mut seen = 0i64;
            for (x, y) in self.data.val.batches(256, None, self.device) {
                let logits = match bypass {
                    Some(id) => self.model.forward_counterfactual(&x, id)?,
                    None => self.model.forward(&x, false)?,
                };
                let n = y.size()[0];
                let _ = loss.f_add_(&step::cross_entropy(&logits, &y)?.f_mul_scalar(n as f64)?)?;
                let _ = correct.f_add_(&logits.f_argmax(1, false)?.f_eq_tensor(&y)?.f_sum(Kind::Int64)?)?;
                seen += n;
            }
            let seen = seen.max(1) as f64;
            Ok((loss.f_double_value(&[])? / seen, 100.0 * correct.f_int64_value(&[])? as f64 / seen))
        })
    }

    fn save_checkpoint(&self, epoch: u32) -> Result<()> {
        let w = checkpoint::Writer::begin(&self.config.output.dir, epoch)?;
        w.tensors(checkpoint::HOST, &checkpoint::named(self.model.host_vars()))?;
        w.tensors(checkpoint::HOST_OPTIMIZER, &self.host_opt.state_tensors())?;
        for slot in self.model.slots() {
            let named = slot.named_seed_tensors();
            if !named.is_empty() {
                w.tensors(&checkpoint::slot_file(slot.id()), &named)?;
                w.tensors(&checkpoint::slot_optimizer_file(slot.id()), &self.seed_opts[slot.id()].state_tensors())?;
            }
        }
        let plugins = self
            .registry
            .plugins()
            .map(|p| Ok((p.path().to_path_buf(), sha256_hex(p.path())?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let slots = self
            .model
            .slots()
            .iter()
            .map(|s| SavedSlot { lifecycle: s.lifecycle().clone(), options: s.options().clone() })
            .collect();
        w.json(
            checkpoint::STATE,
            &SavedState {
                format: STATE_FORMAT,
                epoch,
                config: self.config.clone(),
                plugins,
                slots,
                history: self.history.clone(),
            },
        )?;
        let dir = w.commit()?;
        tracing::debug!(checkpoint = %dir.display(), "checkpoint written");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::contained;

    #[test]
    fn a_host_side_panic_becomes_an_error_without_the_cpp_frames() {
        let err = contained(3, "training", || -> anyhow::Result<()> {
            panic!("Torch(\"out of memory\nException raised from alloc at c10/core/Alloc.cpp:1\nframe #0: f\")")
        })
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("epoch 3: training failed on the host's side"), "{text}");
        assert!(text.contains("out of memory") && !text.contains("frame #0"), "{text}");
        assert_eq!(contained(1, "x", || Ok(5)).unwrap(), 5);
    }
}
