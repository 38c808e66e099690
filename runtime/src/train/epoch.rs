//! One epoch of a run, as named steps: train over the batches, validate, measure each
//! seed (accuracy and counterfactual contribution), let the lifecycle and the
//! controller act, and write the epoch's record.

use super::{
    report::{EpochRecord, SeedRecord, SlotRecord},
    step, Observer, TrainError, Trainer,
};
use crate::{
    data::{epoch_seed, Objective},
    lifecycle::{LifecycleEvent, SeedStage},
    model::ModelError,
    Result,
};
use std::{collections::BTreeMap, time::Instant};
use tch::{Kind, Tensor};

/// What a validation pass runs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Eval<'a> {
    /// The model as it is.
    Full,
    /// Slot `id`'s alpha forced to 0 (the counterfactual).
    Bypass(&'a str),
    /// The host alone, every seed bypassed (to tell the host's non-finite values from a
    /// seed's).
    HostOnly,
}

/// Training loss and accuracy (%) of one epoch, its steps and their time.
struct TrainResult {
    loss: f64,
    accuracy: f64,
    steps: u32,
    seconds: f64,
}

impl Trainer {
    /// Runs epoch `epoch` and returns (and keeps) its record.
    pub(super) fn epoch(&mut self, epoch: u32, observer: &mut dyn Observer) -> Result<EpochRecord> {
        let started = Instant::now();
        let mut events = std::mem::take(&mut self.opening_events);
        let train = self.train_epoch(epoch, observer, &mut events)?;
        let (val_loss, val_accuracy) = self.evaluate_contained(Eval::Full, &mut events)?;
        let contributions = self.measure_seeds(self.objective.score(val_loss, val_accuracy), &mut events)?;
        let latest = crate::control::EpochObservation {
            epoch,
            train_loss: train.loss,
            train_accuracy: train.accuracy,
            val_loss,
            val_accuracy,
        };
        self.advance_lifecycle(epoch, latest, &mut events)?;
        self.collect_overdue(&mut events);
        self.log_rollback_costs();
        let slots = self.slot_records(&contributions);
        let record = EpochRecord {
            epoch,
            train_loss: train.loss,
            train_accuracy: train.accuracy,
            val_loss,
            val_accuracy,
            val_perplexity: (self.objective == Objective::Loss).then(|| val_loss.exp()),
            seconds: started.elapsed().as_secs_f64(),
            steps: train.steps,
            train_seconds: train.seconds,
            slots,
            events,
        };
        let val = match record.val_perplexity {
            Some(perplexity) => format!("val loss {val_loss:.4}, perplexity {perplexity:.2}"),
            None => format!("val accuracy {val_accuracy:.2}%"),
        };
        tracing::info!(
            event = "epoch",
            epoch,
            train_loss = record.train_loss,
            train_accuracy = record.train_accuracy,
            val_loss,
            val_accuracy,
            slots = %serde_json::to_string(&record.slots).unwrap_or_default(),
            // The whole record, for a reader following the run (`esper watch`).
            record = %serde_json::to_string(&record).unwrap_or_default(),
            "epoch {epoch}: train loss {:.4}, {val}", record.train_loss
        );
        self.history.push(record.clone());
        Ok(record)
    }

    /// Each slot's state for the epoch's record, with the contributions measured.
    fn slot_records(&self, contributions: &BTreeMap<String, Option<f64>>) -> Vec<SlotRecord> {
        self.model
            .slots()
            .iter()
            .map(|s| SlotRecord {
                slot: s.id().into(),
                stage: s.stage(),
                alpha: s.alpha(),
                contribution: contributions.get(s.id()).copied().flatten(),
                seed: s.lifecycle().state().map(|state| SeedRecord {
                    blueprint: state.blueprint_id().to_string(),
                    epochs_in_stage: state.metrics().epochs_in_current_stage(),
                    parameters: s.seed_parameters().iter().map(|t| t.numel() as i64).sum(),
                }),
            })
            .collect()
    }

    /// One pass over the training batches (seeded per epoch), each through the
    /// contained step; gradients captured every `gradient_every` batches and at the last.
    fn train_epoch(
        &mut self,
        epoch: u32,
        observer: &mut dyn Observer,
        events: &mut Vec<LifecycleEvent>,
    ) -> Result<TrainResult> {
        tch::manual_seed(self.config.training.seed as i64 * 1_000_003 + epoch as i64);
        let cfg = &self.config.training;
        let seed = epoch_seed(cfg.seed, epoch as u64);
        let share = (self.config.data.augmentation(), self.shard);
        let batches = self.data.train_batches(cfg.batch_size, seed, share, self.device);
        let (n_batches, gradient_every) = (batches.len(), cfg.gradient_every);
        observer.epoch_started(epoch, n_batches);
        let started = Instant::now();
        let mut totals = self.graphs.epoch_totals(self.device)?;
        self.guard.host_faults = 0;
        // The first state a non-finite seed can be rolled back to, and where a host fault
        // found at the epoch's end is judged.
        self.save_good(&totals)?;
        for (i, (x, y)) in batches.enumerate() {
            if self.ranks.is_none() {
                // A stop requested ends the epoch here, unrecorded (the ranks of a
                // multi-process run agree on it inside the step, see `step`).
                self.stop.check()?;
            }
            let capture = i % gradient_every == 0 || i + 1 == n_batches;
            self.train_step(&x, &y, capture, &mut totals, events)?;
            observer.batch_done();
        }
        // Reading the totals waits for the device: the time below includes every step.
        let mut sums =
            [totals.loss.f_double_value(&[])?, totals.correct.f_int64_value(&[])? as f64, totals.seen as f64];
        if !sums[0].is_finite() {
            // Steps with seeds were read as they went: these are the host's own.
            return Err(self.host_fault_at_epoch_end(&mut totals)?.into());
        }
        if let Some(ranks) = &self.ranks {
            // The epoch's record covers every rank's share; validation, on every rank,
            // uses rank 0's running statistics.
            sums = ranks.sum(&sums)?.try_into().map_err(|_| TrainError::Internal("the ranks' sums"))?;
            ranks.share_buffers(&self.model)?;
        }
        let [loss_sum, correct, seen] = sums;
        let (loss, accuracy) = (loss_sum / seen.max(1.0), 100.0 * correct / seen.max(1.0));
        Ok(TrainResult { loss, accuracy, steps: n_batches as u32, seconds: started.elapsed().as_secs_f64() })
    }

    /// Records this epoch's validation score (see [`Objective::score`]) in each live
    /// seed's metrics, and the counterfactual contribution (the score's loss with alpha
    /// forced to 0) of each seed that affects the output. Returns the contributions by
    /// slot (`None` where not measured).
    fn measure_seeds(&mut self, score: f64, events: &mut Vec<LifecycleEvent>) -> Result<BTreeMap<String, Option<f64>>> {
        let mut contributions = BTreeMap::new();
        let ids: Vec<String> = self.model.slots().iter().map(|s| s.id().to_string()).collect();
        for id in ids {
            let stage = self.model.slot(&id)?.stage();
            let contribution = if matches!(stage, SeedStage::Blending | SeedStage::Holding | SeedStage::Fossilized) {
                let (loss, accuracy) = self.evaluate_contained(Eval::Bypass(&id), events)?;
                Some(score - self.objective.score(loss, accuracy))
            } else {
                None
            };
            let lifecycle = self.model.slot_mut(&id)?.lifecycle_mut();
            lifecycle.record_score(score);
            if let (Some(c), Some(m)) = (contribution, lifecycle.metrics_mut()) {
                m.set_counterfactual_contribution(Some(c));
            }
            contributions.insert(id, contribution);
        }
        Ok(contributions)
    }

    /// The epoch's automatic stage changes (alpha ramps), then the controller's
    /// decisions for the next epoch, recorded as events.
    fn advance_lifecycle(
        &mut self,
        epoch: u32,
        latest: crate::control::EpochObservation,
        events: &mut Vec<LifecycleEvent>,
    ) -> Result<()> {
        for slot in self.model.slots_mut() {
            slot.step_epoch()?;
        }
        self.collect_events(events);
        self.decide_and_apply(epoch, Some(latest), events)
    }

    fn log_rollback_costs(&self) {
        if self.guard.snapshots > 0 {
            tracing::debug!(
                snapshots = self.guard.snapshots,
                snapshot_ms = self.guard.snapshot_time.as_secs_f64() * 1e3,
                rollbacks = self.guard.rollbacks,
                "rollback copies this run"
            );
        }
    }

    /// [`Trainer::evaluate`], containing seeds at fault: a seed that breaks the contract,
    /// fails or gives non-finite outputs is pruned and the evaluation run again. A
    /// non-finite loss is judged first: the host's own ends the run (see
    /// [`super::attribution`]).
    fn evaluate_contained(&mut self, eval: Eval<'_>, events: &mut Vec<LifecycleEvent>) -> Result<(f64, f64)> {
        loop {
            let (result, faults) = match self.evaluate(eval) {
                Ok(result) => {
                    let faults = self.non_finite_outputs()?;
                    if !result.0.is_finite() {
                        self.judge_validation(&faults)?;
                    }
                    (Some(result), faults)
                }
                Err(ModelError::Seed(fault)) => (None, vec![*fault]),
                Err(e) => return Err(e.into()),
            };
            let faults = match &self.ranks {
                // Every rank prunes the seeds any rank found at fault (see `Ranks::faults_of_all`).
                Some(ranks) => ranks.faults_of_all(faults)?,
                None => faults,
            };
            if let (Some(result), true) = (result, faults.is_empty()) {
                return Ok(result);
            }
            self.contain(faults, events)?;
        }
    }

    /// Validation loss and accuracy (%), eval mode, of what `eval` names.
    pub(super) fn evaluate(&self, eval: Eval<'_>) -> Result<(f64, f64), ModelError> {
        tch::no_grad(|| {
            // Summed on the device; read back once at the end (no sync per batch).
            let mut loss = Tensor::zeros([], (Kind::Float, self.device));
            let mut correct = Tensor::zeros([], (Kind::Int64, self.device));
            let mut seen = 0i64;
            for (x, y) in self.data.val_batches(self.config.training.batch_size, self.device) {
                let logits = match eval {
                    Eval::Full => self.model.forward(&x, false)?,
                    Eval::Bypass(id) => self.model.forward_counterfactual(&x, id)?,
                    Eval::HostOnly => self.model.forward_host_only(&x, false)?,
                };
                let n = y.numel() as i64;
                let _ = loss.f_add_(&step::cross_entropy(&logits, &y)?.f_mul_scalar(n as f64)?)?;
                let _ = correct.f_add_(&step::correct(&logits, &y)?)?;
                seen += n;
            }
            let seen = seen.max(1) as f64;
            Ok((loss.f_double_value(&[])? / seen, 100.0 * correct.f_int64_value(&[])? as f64 / seen))
        })
    }
}
