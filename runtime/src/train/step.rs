//! One training step, contained.
//!
//! A seed that breaks the output contract, fails in forward or backward, or goes
//! non-finite is pruned, and the step it spoiled is discarded: no parameter update comes
//! from it. A contract breach or an error is seen during the step itself: the buffers
//! (BatchNorm statistics) the discarded forward touched are restored from a copy taken
//! before the step, and the step is re-run without the seed, so the host trains exactly
//! as it would have without that seed. Non-finite values are accumulated on the device
//! and read where the loop already reads (the gradient capture, every
//! `gradient_every` steps): then the whole state (parameters, buffers, optimizer state,
//! the epoch's loss and accuracy sums) goes back to an in-memory copy of the last step
//! read as good, and the step is re-run without the seed; whether it is a seed's doing or
//! the host's own is decided then (see [`super::attribution`]). An error that is the
//! host's own ends the run.
//!
//! The backward pass, while seeds run, is timed by the seed watchdog as a whole (see
//! [`crate::isolation::watchdog`]): reported when overdue, never pinned on a seed.

use super::{attribution::Health, optim::StateCopy, rollback::TensorCopy, Stopped, TrainError, Trainer};
use crate::{
    isolation::{watchdog::CallGuard, FaultKind, SeedFault},
    lifecycle::LifecycleEvent,
    model::ModelError,
    torch_error, Error, Result,
};
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};
use tch::{Kind, Tensor};

/// What the contained step keeps between steps.
#[derive(Debug, Default)]
pub(super) struct StepGuard {
    /// The model generation the buffer list was taken at.
    buffers_generation: Option<u64>,
    /// Buffers as they were before the current step.
    buffers: TensorCopy,
    /// Parameters and buffers at the last step read as good.
    pub(super) good: TensorCopy,
    good_host_opt: StateCopy,
    good_seed_opts: BTreeMap<String, StateCopy>,
    /// Examples seen in the epoch at that step (the epoch's sums are in `good`): the
    /// steps a rollback discards do not count either.
    good_seen: i64,
    /// Time spent taking the good-state copies, and how many were taken.
    pub(super) snapshot_time: Duration,
    pub(super) snapshots: u32,
    pub(super) rollbacks: u32,
    /// Host faults found at step reads in the current epoch (see [`super::attribution`]).
    pub(super) host_faults: u32,
}

/// The epoch's running sums, on the device (read once at the end).
pub(super) struct Totals {
    pub loss: Tensor,
    pub correct: Tensor,
    pub seen: i64,
}

impl Totals {
    pub fn new(device: tch::Device) -> Self {
        Self {
            loss: Tensor::zeros([], (Kind::Float, device)),
            correct: Tensor::zeros([], (Kind::Int64, device)),
            seen: 0,
        }
    }

    pub(super) fn add(&mut self, loss: &Tensor, logits: &Tensor, y: &Tensor) -> Result<(), tch::TchError> {
        self.add_on_device(loss, logits, y)?;
        self.count(y);
        Ok(())
    }

    /// Counts the examples of `y` as seen (the host half of [`Totals::add`]: a replayed
    /// graph has already added the sums on the device).
    pub(super) fn count(&mut self, y: &Tensor) {
        self.seen += y.numel() as i64;
    }

    /// The device half of [`Totals::add`] (what a CUDA graph of the step records; the
    /// replay counts `seen`).
    pub(super) fn add_on_device(&self, loss: &Tensor, logits: &Tensor, y: &Tensor) -> Result<(), tch::TchError> {
        let n = y.numel();
        let _ = self.loss.shallow_clone().f_add_(&loss.f_detach()?.f_mul_scalar(n as f64)?)?;
        let _ = self.correct.shallow_clone().f_add_(&correct(logits, y)?)?;
        Ok(())
    }

    /// Totals that share this one's device tensors, after zeroing them (a new epoch's
    /// totals, where a CUDA graph keeps adding into the same tensors).
    pub(super) fn restarted(&self) -> Result<Self, tch::TchError> {
        let _ = self.loss.shallow_clone().f_zero_()?;
        let _ = self.correct.shallow_clone().f_zero_()?;
        Ok(Self { loss: self.loss.shallow_clone(), correct: self.correct.shallow_clone(), seen: 0 })
    }
}

/// Mean cross-entropy of `logits` for class indices `y` (tch's `cross_entropy_for_logits`,
/// fallible): images' `(B, classes)` against `(B)`, or a sequence's `(B, T, vocab)`
/// against the next tokens `(B, T)`, every position one example.
pub(super) fn cross_entropy(logits: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
    let (logits, y) = (logits.f_flatten(0, -2)?, y.f_flatten(0, -1)?);
    logits.f_log_softmax(-1, Kind::Float)?.f_nll_loss(&y, None::<Tensor>, tch::Reduction::Mean, -100)
}

/// How many of `y`'s class indices are the argmax of `logits` (shaped as for
/// [`cross_entropy`]), as an i64 0-d tensor on the device.
pub(super) fn correct(logits: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
    logits.f_argmax(-1, false)?.f_eq_tensor(y)?.f_sum(Kind::Int64)
}

/// Why an attempt at a step did not apply.
enum Spoiled {
    /// Seeds at fault, seen during the step (nothing was updated yet).
    Seeds(Vec<SeedFault>),
    /// A read found non-finite values: steps since the last good read are suspect, and
    /// who is at fault is decided after the rollback ([`Trainer::recover`]).
    NonFinite(Health),
    /// The host's own error: the run ends.
    Host(Error),
}

/// The host's own failure in `what` (its message, libtorch's C++ frames included, goes
/// to the debug log; what a user reads drops them, see [`crate::error::chain`]).
fn host_error(what: &str, e: impl Into<Error>) -> Spoiled {
    let source = Box::new(e.into());
    tracing::debug!(error = %source, "{what} failed (full text)");
    Spoiled::Host(TrainError::Step { what: what.to_string(), source }.into())
}

fn from_model(e: ModelError) -> Spoiled {
    match e {
        ModelError::Seed(f) => Spoiled::Seeds(vec![*f]),
        other => host_error("the host's forward", other),
    }
}

impl Trainer {
    /// Trains on one batch, containing any seed at fault (see the module docs).
    pub(super) fn train_batch(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        capture: bool,
        totals: &mut Totals,
        events: &mut Vec<LifecycleEvent>,
    ) -> Result<()> {
        loop {
            let seeded = self.model.slots().iter().any(|s| s.runs_seed());
            if seeded {
                self.save_buffers()?;
            }
            match self.attempt(x, y, capture, totals) {
                Ok((loss, logits)) => {
                    totals.add(&loss, &logits, y)?;
                    if capture && seeded {
                        self.save_good(totals).map_err(TrainError::RollbackCopy)?;
                    }
                    return Ok(());
                }
                Err(Spoiled::Seeds(faults)) => {
                    self.guard.buffers.restore()?;
                    self.contain(faults, events)?;
                }
                Err(Spoiled::NonFinite(health)) => self.recover(x, y, health, totals, events)?,
                Err(Spoiled::Host(e)) => return Err(e),
            }
        }
    }

    fn attempt(&mut self, x: &Tensor, y: &Tensor, capture: bool, totals: &Totals) -> Result<(Tensor, Tensor), Spoiled> {
        if let Some(ranks) = &self.ranks {
            ranks.begin_gradients(&self.model).map_err(|e| Spoiled::Host(e.into()))?;
        }
        let step = self.forward_backward(x, y);
        // As DDP: every rank steps with the gradients averaged over all of them, their
        // exchange overlapped with the backward. Every rank ends it, whatever its step's
        // fate, before they agree on the step.
        self.finish_gradients(step.is_ok())?;
        let (loss, logits) = self.agreed(step)?;
        if capture {
            // The host's loss so far this epoch, this step's included.
            let host_loss = || totals.loss.f_add(&loss);
            let health = self.read_health(host_loss).map_err(|e| host_error("reading seed health", e))?;
            if !health.is_clean() {
                return Err(Spoiled::NonFinite(health));
            }
        }
        self.host_opt.step().map_err(|e| host_error("the host optimizer step", e))?;
        for (id, opt) in &mut self.seed_opts {
            opt.step().map_err(|e| host_error(&format!("the optimizer step of {id}"), e))?;
        }
        Ok((loss, logits))
    }

    fn forward_backward(&mut self, x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor), Spoiled> {
        let forward = self.model.forward_step(x).map_err(from_model).and_then(|logits| {
            let loss = cross_entropy(&logits, y).map_err(|e| host_error("the loss", e))?;
            Ok((loss, logits))
        });
        // Synchronised BatchNorms exchange in the backward too: the ranks first agree on
        // the forward's faults, so that every rank runs the backward or none does.
        let (loss, logits) = if self.model.synchronises_batch_norm() { self.agreed(forward)? } else { forward? };
        self.zero_grads().map_err(|e| host_error("zeroing the gradients", e))?;
        if let Err(e) = self.watched_backward(&loss) {
            // The peers' exchanges complete first (the BatchNorms' backward ones, then the
            // gradients'): the blame's own backwards exchange nothing.
            if self.ranks.is_some() {
                let released = self
                    .model
                    .release_batch_norm_exchanges()
                    .map_err(|e| host_error("the backward's BatchNorm exchanges", e))?;
                if released > 0 {
                    tracing::debug!(exchanges = released, "the failed backward's BatchNorm exchanges made with zeros");
                }
            }
            self.finish_gradients(false)?;
            return Err(self.blame_backward(x, y, e));
        }
        Ok((loss, logits))
    }

    /// Ends the step's gradient exchange on a multi-process run (see
    /// `Ranks::finish_gradients`); once per step.
    fn finish_gradients(&self, kept: bool) -> Result<(), Spoiled> {
        let Some(ranks) = &self.ranks else { return Ok(()) };
        ranks.finish_gradients(kept).map_err(|e| Spoiled::Host(e.into()))
    }

    /// In a multi-process run, a seed at fault on any rank spoils the step on every
    /// rank: all contain the same seeds and take the step again together, so the models
    /// stay alike. A stop requested on any rank stops every rank here, before the
    /// optimizers step. A single process's step is as it is.
    fn agreed(&self, step: Result<(Tensor, Tensor), Spoiled>) -> Result<(Tensor, Tensor), Spoiled> {
        let Some(ranks) = &self.ranks else { return step };
        let (done, local) = match step {
            Ok(done) => (Some(done), Vec::new()),
            Err(Spoiled::Seeds(faults)) => (None, faults),
            Err(other) => return Err(other),
        };
        let stop = self.stop.requested().is_some();
        let (all, stop) = ranks.agree_on_step(local, stop).map_err(|e| Spoiled::Host(e.into()))?;
        match done {
            _ if stop => Err(Spoiled::Host(Stopped.into())),
            Some(done) if all.is_empty() => Ok(done),
            _ => Err(Spoiled::Seeds(all)),
        }
    }

    /// `loss.backward()`, timed by the seed watchdog while seeds run (see the module
    /// docs): an overdue backward is reported, and when it returns logged, never blamed.
    pub(super) fn watched_backward(&self, loss: &Tensor) -> Result<(), tch::TchError> {
        let seeded = self.model.slots().iter().any(|s| s.runs_seed());
        let call = self.model.seed_watch().filter(|_| seeded).map(|w| w.backward());
        let result = loss.f_backward();
        if let Some(over) = call.and_then(CallGuard::finish) {
            tracing::warn!(
                event = "backward_overdue",
                seconds = over.took.as_secs_f64(),
                "the backward pass took {:.1} s, over the seed watchdog's limit of {} s ([training] \
                 seed_timeout_s); no seed is pruned for it: the backward runs libtorch's kernels for the host and \
                 every seed together, none of them plugin code",
                over.took.as_secs_f64(),
                over.allowance.as_secs_f64()
            );
        }
        result
    }

    fn zero_grads(&mut self) -> Result<(), esper_torch_shim::ShimError> {
        self.host_opt.zero_grad()?;
        self.seed_opts.values_mut().try_for_each(|o| o.zero_grad())
    }

    /// A failed backward: the seed whose forward alone makes it fail is at fault; when
    /// no seed runs, or none fails alone, the error is the host's.
    fn blame_backward(&mut self, x: &Tensor, y: &Tensor, error: tch::TchError) -> Spoiled {
        let running = self.model.running_slots();
        let culprits: Vec<usize> = if running.len() == 1 {
            running
        } else {
            running
                .into_iter()
                .filter(|&i| {
                    let _ = self.guard.buffers.restore();
                    // A failure to zero fails the backward below too: the seed is not
                    // blamed for it alone.
                    if self.zero_grads().is_err() {
                        return false;
                    }
                    let alone = self.model.forward_only(x, true, i).map_err(|e| e.to_string()).and_then(|logits| {
                        cross_entropy(&logits, y).and_then(|l| l.f_backward()).map_err(|e| e.to_string())
                    });
                    alone.is_err()
                })
                .collect()
        };
        if culprits.is_empty() {
            return host_error("backward", error);
        }
        let text = torch_error::summary(&error.to_string());
        let slots = self.model.slots();
        Spoiled::Seeds(culprits.iter().filter_map(|&i| slots[i].fault_of(FaultKind::Backward(text.clone()))).collect())
    }

    /// While seeds run: reads their finiteness flags with the finiteness of `host_loss`
    /// (the epoch's loss sum so far, made only then; one transfer), then, if all were
    /// finite, the gradient norms (the monitor's one transfer per slot). Suspect: a seed
    /// with non-finite outputs or gradients; the host, for a non-finite loss or gradient
    /// (who is at fault is decided after the rollback). Gradients of a step found non-finite are
    /// not recorded (a seed's metrics would keep a NaN the host may have caused). Without
    /// seeds nothing is read (the epoch's end reads the loss sum).
    pub(super) fn read_health(&mut self, host_loss: impl FnOnce() -> Result<Tensor, tch::TchError>) -> Result<Health> {
        let Some((flagged, host_finite)) = self.read_flags(host_loss)? else { return Ok(Health::clean()) };
        let slots = self.model.slots();
        let seeds: Vec<SeedFault> =
            flagged.iter().filter_map(|&i| slots[i].fault_of(FaultKind::NonFinite { what: "outputs" })).collect();
        if !seeds.is_empty() || !host_finite {
            return Ok(Health { seeds, host_finite });
        }
        let samples = self.model.capture_gradients();
        let slots = self.model.slots();
        let mut health = Health::clean();
        for (i, sample) in samples {
            health.host_finite &= sample.host_norm.is_finite();
            if !sample.seed_norm.is_finite() {
                health.seeds.extend(slots[i].fault_of(FaultKind::NonFinite { what: "gradients" }));
            }
        }
        Ok(health)
    }

    /// The running seeds with a non-finite output flag, and whether `host_loss` is
    /// finite, in one transfer; None (nothing read) when no seed runs. In a multi-process
    /// run a flag set on any rank is set on all (every rank then judges alike).
    fn read_flags(
        &self,
        host_loss: impl FnOnce() -> Result<Tensor, tch::TchError>,
    ) -> Result<Option<(Vec<usize>, bool)>> {
        let (idx, mut flags): (Vec<usize>, Vec<Tensor>) = self
            .model
            .slots()
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.finite_flag().map(|f| (i, f.shallow_clone())))
            .unzip();
        let Some(device) = flags.first().map(Tensor::device) else { return Ok(None) };
        flags.push(host_loss()?.f_isfinite()?);
        // Stacked where the first flag lives, then one transfer to the host.
        let on_one = flags.iter().map(|f| f.f_to_device(device)).collect::<Result<Vec<_>, _>>()?;
        let mut stacked = Tensor::f_stack(&on_one, 0)?;
        if let Some(ranks) = &self.ranks {
            stacked = ranks.all_true(&stacked)?;
        }
        let read = Vec::<bool>::try_from(&stacked.f_to_device(tch::Device::Cpu)?).map_err(ModelError::from)?;
        let host_finite = read.last().copied().unwrap_or(false);
        let flagged = idx.into_iter().zip(read).filter(|(_, ok)| !ok).map(|(i, _)| i).collect();
        Ok(Some((flagged, host_finite)))
    }

    /// The running seeds whose outputs were not all finite (one read of their flags).
    pub(super) fn non_finite_outputs(&self) -> Result<Vec<SeedFault>, ModelError> {
        let slots = self.model.slots();
        let bad = self.model.non_finite_slots()?;
        Ok(bad.iter().filter_map(|&i| slots[i].fault_of(FaultKind::NonFinite { what: "outputs" })).collect())
    }

    /// The watchdog's events since the last collection (emitted when they happened), into
    /// the epoch's record.
    pub(super) fn collect_overdue(&self, events: &mut Vec<LifecycleEvent>) {
        if let Some(watch) = self.model.seed_watch() {
            events.extend(watch.take_reported());
        }
    }

    /// Copies the buffers a discarded forward could change (the list is taken again
    /// only when the model's slots changed).
    fn save_buffers(&mut self) -> Result<()> {
        let generation = self.model.generation();
        if self.guard.buffers_generation == Some(generation) {
            self.guard.buffers.refresh()?;
        } else {
            self.guard.buffers.save(self.model.buffers())?;
            self.guard.buffers_generation = Some(generation);
        }
        Ok(())
    }

    /// Copies the whole training state: the last step read as good, with the epoch's
    /// sums as they were after it.
    pub(super) fn save_good(&mut self, totals: &Totals) -> Result<(), tch::TchError> {
        let started = Instant::now();
        let mut state = self.model.state();
        state.push(("epoch totals: loss".into(), totals.loss.shallow_clone()));
        state.push(("epoch totals: correct".into(), totals.correct.shallow_clone()));
        self.guard.good.save(state)?;
        self.guard.good_seen = totals.seen;
        self.host_opt.save_into(&mut self.guard.good_host_opt)?;
        self.guard.good_seed_opts.retain(|id, _| self.seed_opts.contains_key(id));
        for (id, opt) in &self.seed_opts {
            opt.save_into(self.guard.good_seed_opts.entry(id.clone()).or_default())?;
        }
        self.guard.snapshot_time += started.elapsed();
        self.guard.snapshots += 1;
        Ok(())
    }

    /// Puts back the state [`Trainer::save_good`] copied, the epoch's sums in `totals`
    /// included.
    pub(super) fn roll_back(&mut self, totals: &mut Totals) -> Result<()> {
        self.guard.good.restore()?;
        totals.seen = self.guard.good_seen;
        self.host_opt.restore_from(&self.guard.good_host_opt)?;
        for (id, opt) in self.seed_opts.iter_mut() {
            if let Some(copy) = self.guard.good_seed_opts.get(id) {
                opt.restore_from(copy)?;
            }
        }
        self.guard.rollbacks += 1;
        tracing::warn!(event = "rolled_back", "training state restored from the last step read as good");
        Ok(())
    }

    /// Prunes each faulty seed (or quarantines a fossilized one), recording the fault
    /// and what was done.
    pub(super) fn contain(&mut self, faults: Vec<SeedFault>, events: &mut Vec<LifecycleEvent>) -> Result<()> {
        if faults.is_empty() {
            return Err(TrainError::Internal("a step was spoiled without a seed at fault").into());
        }
        self.collect_overdue(events);
        for fault in faults {
            self.model.slot_mut(&fault.slot)?.contain(&fault)?;
            self.collect_events(events);
        }
        self.sync_seed_optimizers();
        Ok(())
    }
}
