//! The training job: host and seed optimizers, validation, gradient telemetry,
//! counterfactual contributions, the lifecycle controller, checkpoints and the report.

pub mod attribution;
pub mod checkpoint;
pub mod compare;
pub mod controller;
mod epoch;
mod error;
pub mod graph;
pub mod observer;
pub mod optim;
pub mod report;
pub mod rollback;
mod seeds;
mod step;
mod stop;
mod timing;

use crate::distributed::{DistError, RankEnv, Ranks};
use crate::{
    config::RunConfig,
    control::{
        heuristic::Heuristic, DecisionContext, DecisionMaker, EpochObservation, Observation, Proposal, RunView, Verdict,
    },
    data::{Objective, RunData, Shard},
    host::BatchNormSync,
    lifecycle::LifecycleEvent,
    model::MorphogeneticModel,
    plugin::BlueprintRegistry,
    Result,
};
use controller::{Action, Controller};
pub use error::TrainError;
pub use observer::{Observer, Silent};
use optim::Optimizer;
use report::EpochRecord;
pub use seeds::{germinate, germinate_with, restore};
use std::collections::BTreeMap;
pub use stop::{EpochStep, RunEnd, StopSignal, Stopped};
use tch::{Device, Tensor};

/// A training run: the model, its data, optimizers and controller, and the record of
/// the epochs so far. One epoch's steps are in `epoch`, the contained training step in
/// `step`, saving and resuming in [`checkpoint`].
pub struct Trainer {
    config: RunConfig,
    registry: BlueprintRegistry,
    model: MorphogeneticModel,
    data: RunData,
    /// What validation is judged by: accuracy for images, the loss for text.
    objective: Objective,
    /// This process's share of each epoch's training data (the whole of it, but for a
    /// rank of a multi-process run).
    shard: Shard,
    host_opt: Optimizer,
    seed_opts: BTreeMap<String, Optimizer>,
    /// Who decides the lifecycle (see [`crate::control`]).
    controller: Box<dyn DecisionMaker>,
    history: Vec<EpochRecord>,
    device: Device,
    guard: step::StepGuard,
    graphs: graph::StepGraphs,
    /// Events of the decisions made before epoch 1 (the scheduled germinations), kept
    /// for epoch 1's record.
    opening_events: Vec<LifecycleEvent>,
    /// Read before each training step: a stop requested ends the run there.
    stop: StopSignal,
    /// The opening decisions are taken (see [`Trainer::start`]).
    started: bool,
    /// The other ranks of a multi-process (data-parallel) run, if this is one.
    ranks: Option<Ranks>,
}

/// A hash of the bytes of every parameter and buffer of `model`, by name: equal on two
/// ranks exactly when their models are bit for bit the same (barring a collision).
fn state_hash(model: &MorphogeneticModel) -> Result<u64, tch::TchError> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    for (name, t) in model.state() {
        name.hash(&mut h);
        let t = t.f_to_device(Device::Cpu)?.f_contiguous()?.f_reshape([-1])?.f_view_dtype(tch::Kind::Uint8)?;
        Vec::<u8>::try_from(&t)?.hash(&mut h);
    }
    Ok(h.finish())
}

/// On the CPU, where a step frees and reallocates its activations every step: keeps that
/// memory in the process instead of faulting fresh pages in each time.
fn keep_freed_memory_on(device: Device) {
    if device == Device::Cpu {
        if let Err(e) = esper_torch_shim::keep_freed_host_memory() {
            tracing::debug!(reason = %e, "host allocator left as it is");
        }
    }
}

/// A multi-process run's link to the other ranks, the model made rank 0's; `None` for a
/// single process.
fn join_ranks(
    env: Option<RankEnv>,
    config: &RunConfig,
    device: Device,
    model: &MorphogeneticModel,
) -> Result<Option<Ranks>, DistError> {
    let Some(env) = env else { return Ok(None) };
    let ranks = Ranks::join(env, &config.distributed, device)?;
    ranks.share_model(model)?;
    Ok(Some(ranks))
}

/// The host's logits cover the data's classes (image classes, or the tokenizer's
/// vocabulary, known once the data is loaded).
fn check_outputs(config: &RunConfig, data: &RunData) -> Result<(), TrainError> {
    let outputs = config.host.num_outputs();
    if data.num_outputs() <= outputs {
        return Ok(());
    }
    let (setting, what) = match data.objective() {
        Objective::Accuracy => ("[host] num_classes", "the data set's classes"),
        Objective::Loss => ("[host] vocab_size", "the tokenizer's vocabulary"),
    };
    Err(TrainError::TooFewOutputs { setting, host: outputs, what, data: data.num_outputs() })
}

/// The key of slot `slot`'s gate-network optimizer among the seed optimizers.
fn gate_key(slot: &str) -> String {
    format!("{slot}/gate")
}

/// Emits `event` (its one trip to tracing, see [`LifecycleEvent::emit`]) and keeps it
/// in the epoch's `events`.
fn record(event: LifecycleEvent, events: &mut Vec<LifecycleEvent>) {
    event.emit();
    events.push(event);
}

/// Runs one phase of epoch `epoch`. Seeds at fault are contained inside it; what is left
/// is the host's own failure, and it ends the run with an error (never a panic), the
/// checkpoints already written kept.
fn contained<T>(epoch: u32, phase: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let text = esper_plugin_api::panic_message(payload.as_ref());
        tracing::debug!(error = %text, "host failure (full text)");
        Err(TrainError::Panicked { message: crate::torch_error::summary(&text) }.into())
    });
    outcome.map_err(|source| TrainError::Phase { epoch, phase, source: Box::new(source) }.into())
}

/// The run's decision maker: the controller plugin's controller the config names, or
/// the built-in heuristic with its `rotation`.
fn decision_maker(
    config: &RunConfig,
    registry: &BlueprintRegistry,
    rotation: Vec<(String, serde_json::Value)>,
    objective: Objective,
) -> Result<Box<dyn DecisionMaker>> {
    let ctl = &config.lifecycle.controller;
    if let (Some(path), Some(name)) = (&ctl.plugin, &ctl.name) {
        return Ok(Box::new(registry.create_controller(path, name, &ctl.plugin_options)?));
    }
    let heuristic = Controller::new(ctl.clone(), rotation, config.lifecycle.schedule.clone(), objective);
    Ok(Box::new(Heuristic(heuristic)))
}

impl Trainer {
    /// Loads the plugins and data and builds the model of `config`; a rank of a
    /// multi-process run where torchrun's variables say so ([`RankEnv::from_env`]).
    pub fn new(config: RunConfig) -> Result<Self> {
        let rank_env = RankEnv::from_env().map_err(DistError::Env)?;
        Self::for_rank(config, rank_env)
    }

    /// [`Trainer::new`] as rank `rank_env` of a multi-process run (`None`: a single
    /// process), whatever the environment says. A world of one rank is a data-parallel run
    /// of one process: its groups have one member and its steps run every collective.
    pub fn for_rank(config: RunConfig, rank_env: Option<RankEnv>) -> Result<Self> {
        let device = match (config.device.resolve()?, &rank_env) {
            // Each rank of a CUDA run on its own GPU.
            (Device::Cuda(_), Some(env)) => env.gpu(tch::Cuda::device_count().max(0) as usize)?,
            (device, _) => device,
        };
        // Before anything is allocated: slots, memory against the limit, plugins loaded
        // and pinned, every blueprint the run names resolved (as `esper config check`).
        let preflight = config.preflight(Some(device))?;
        let (registry, rotation) = (preflight.registry, preflight.rotation);
        keep_freed_memory_on(device);
        // libtorch's generator drives parameter init (and is re-seeded every epoch), so
        // the same config gives the same run, and a resumed one continues it exactly.
        tch::manual_seed(config.training.seed as i64);
        let slots: Vec<&str> = config.slots.iter().map(String::as_str).collect();
        let mut model = MorphogeneticModel::new(config.host.clone(), &slots, config.slot.clone(), device)?;
        model.set_precision(config.training.precision);
        model.watch_seeds(config.training.seed_timeout()).map_err(TrainError::Watchdog)?;
        let mut ranks = join_ranks(rank_env, &config, device, &model)?;
        if let Some(group) = ranks.as_mut().and_then(Ranks::take_batch_norm_group) {
            model.synchronise_batch_norm(BatchNormSync::new(group, config.distributed.timeout_s))?;
        }
        let data = config.data.load().map_err(TrainError::Data)?;
        check_outputs(&config, &data)?;
        let host_opt = Optimizer::new(config.training.host_optimizer, model.host_parameters());
        let controller = decision_maker(&config, &registry, rotation, data.objective())?;
        let (train, val, unit) = data.sizes();
        tracing::info!(device = ?device, train, val, unit, slots = ?config.slots, "run prepared");
        Ok(Self {
            registry,
            model,
            objective: data.objective(),
            shard: ranks.as_ref().map_or(Shard::WHOLE, Ranks::shard),
            data,
            host_opt,
            seed_opts: BTreeMap::new(),
            controller,
            history: Vec::new(),
            graphs: graph::StepGraphs::new(
                config.training.cuda_graph,
                device,
                ranks.as_ref().and_then(Ranks::why_not_captured),
            ),
            config,
            device,
            guard: step::StepGuard::default(),
            opening_events: Vec::new(),
            stop: StopSignal::new(),
            started: false,
            ranks,
        })
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

    /// Stops the run at the next training-step boundary once `stop` is requested (see
    /// [`Trainer::run`]).
    pub fn set_stop_signal(&mut self, stop: StopSignal) {
        self.stop = stop;
    }

    /// Runs the remaining epochs, telling `observer` how it goes. A stop requested
    /// through the [`StopSignal`] ends the run before the next training step: the epoch
    /// under way is abandoned (not recorded, not checkpointed), the ones before it kept.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<RunEnd> {
        // With CUDA graphs, everything below runs on the run's stream (see `graph`).
        let side = self.graphs.side_stream()?;
        let first = self.start()?;
        observer.run_started(first, self.config.training.epochs);
        let end = loop {
            match self.next_epoch_on_stream(observer)? {
                EpochStep::Ran { .. } => {}
                EpochStep::Stopped { epochs_done } => break RunEnd::Stopped { epochs_done },
                EpochStep::Over => break RunEnd::Completed,
            }
        };
        if let Some(side) = side {
            side.exit()?;
        }
        observer.run_done();
        Ok(end)
    }

    /// The epoch the run goes on with: 1 for a new run, the one after the last recorded
    /// for a resumed one (past the last configured epoch once the run is over).
    pub fn next_epoch(&self) -> u32 {
        self.epochs_done() + 1
    }

    /// The last recorded epoch (0 before the first).
    fn epochs_done(&self) -> u32 {
        self.history.last().map_or(0, |r| r.epoch)
    }

    /// Makes the run ready for its next epoch and returns that epoch: a new run takes
    /// its opening decisions (the scheduled germinations for epoch 1) here, once.
    /// [`Trainer::run`] and [`Trainer::step_epoch`] call it; calling it again does nothing.
    pub fn start(&mut self) -> Result<u32> {
        let next = self.next_epoch();
        if next == 1 && !self.started {
            let mut opening = Vec::new();
            self.decide_and_apply(0, None, &mut opening)?; // scheduled germinations for epoch 1
            self.opening_events.extend(opening);
        }
        self.started = true;
        Ok(next)
    }

    /// Runs the next epoch alone, for a caller that drives the run an epoch at a time
    /// (between calls it may read or change the model): as one turn of [`Trainer::run`],
    /// the record kept (read it with [`Trainer::history`]), the ranks compared and the
    /// checkpoint written. With CUDA graphs the epoch runs on the run's stream, entered
    /// and left around it, so work the caller queues between epochs is ordered with it.
    pub fn step_epoch(&mut self, observer: &mut dyn Observer) -> Result<EpochStep> {
        let side = self.graphs.side_stream()?;
        self.start()?;
        let step = self.next_epoch_on_stream(observer)?;
        if let Some(side) = side {
            side.exit()?;
        }
        Ok(step)
    }

    /// One turn of the run: the next epoch (unless the run is over or a stop was
    /// requested), the observer told, the ranks compared, the checkpoint written.
    fn next_epoch_on_stream(&mut self, observer: &mut dyn Observer) -> Result<EpochStep> {
        let epoch = self.next_epoch();
        if epoch > self.config.training.epochs {
            return Ok(EpochStep::Over);
        }
        let record = match contained(epoch, "training", || {
            self.check_stop()?;
            self.epoch(epoch, observer)
        }) {
            Err(e) if e.is::<Stopped>() => return Ok(EpochStep::Stopped { epochs_done: epoch - 1 }),
            outcome => outcome?,
        };
        observer.epoch_done(&record);
        self.check_lockstep(epoch)?;
        if self.config.output.checkpoint {
            // Rank 0 writes; the others wait until the checkpoint is complete.
            if self.leads() {
                contained(epoch, "writing the checkpoint", || Ok(self.save_checkpoint(epoch)?))?;
            }
            if let Some(ranks) = &self.ranks {
                ranks.barrier("waiting for rank 0's checkpoint")?;
            }
        }
        Ok(EpochStep::Ran { epoch })
    }

    /// `Err(Stopped)` once a stop is requested. The ranks of a multi-process run agree
    /// first (every rank checks here, between epochs): a stop asked of any rank stops all.
    fn check_stop(&self) -> Result<()> {
        let requested = self.stop.requested().is_some();
        match &self.ranks {
            Some(ranks) if !ranks.on_all(!requested)? => Err(Stopped.into()),
            Some(_) => Ok(()),
            None => Ok(self.stop.check()?),
        }
    }

    /// The decision maker's decisions after `epoch` (whose metrics are `latest`, not
    /// recorded yet; `events` are its events so far), validated and applied. A failing
    /// action (a plugin that fails to create, a probe refusal) is reported and the run goes
    /// on; the ranks of a multi-process run failing to agree end it.
    fn decide_and_apply(
        &mut self,
        epoch: u32,
        latest: Option<EpochObservation>,
        events: &mut Vec<LifecycleEvent>,
    ) -> Result<()> {
        let val: Vec<f64> = self.history.iter().map(|r| self.objective.score(r.val_loss, r.val_accuracy)).collect();
        let view = RunView {
            epoch,
            epochs: self.config.training.epochs,
            objective: self.objective,
            history: &self.history,
            latest,
            pending: events,
        };
        let mut decide = || {
            let observation = crate::control::observe(&self.model, &self.registry, &view);
            let context = DecisionContext { observation: &observation, model: &self.model, val_score: &val };
            let v = crate::control::decide(self.controller.as_mut(), &context, &self.registry);
            (v.actions, v.refused)
        };
        let (actions, refused) = match &self.ranks {
            // Decided once, on rank 0, and applied by every rank at the same step.
            Some(ranks) => ranks.from_leader("decisions", decide)?,
            None => decide(),
        };
        self.apply(Verdict { actions, refused }, events)
    }

    /// Applies validated decisions, recording the refusals first.
    fn apply(&mut self, verdict: Verdict, events: &mut Vec<LifecycleEvent>) -> Result<()> {
        let gates = self.config.lifecycle.gates.clone();
        for refusal in verdict.refused {
            record(refusal, events);
        }
        let germinating = verdict.actions.iter().any(|a| matches!(a, Action::Germinate { .. }));
        for action in verdict.actions {
            let outcome = match &action {
                Action::Germinate { slot, blueprint, options, seed_id, choice } => {
                    germinate_with(&mut self.model, &self.registry, (slot, blueprint, seed_id), options, *choice)
                }
                Action::Continue { slot } => self.model.slot_mut(slot).and_then(|s| s.continue_to_full()),
                Action::Advance { slot } => self.model.slot_mut(slot).and_then(|s| s.advance(&gates)).map(drop),
                Action::Prune { slot, reason } => {
                    let ramp = self.config.lifecycle.controller.prune_ramp_epochs;
                    self.model.slot_mut(slot).and_then(|s| s.schedule_prune(ramp, reason))
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(action = ?action, "lifecycle action failed");
                record(seeds::failure_event(&self.registry, &action, &e), events);
            }
            self.collect_events(events);
        }
        self.sync_seed_optimizers();
        if let (Some(ranks), true) = (&self.ranks, germinating) {
            // New seeds start from rank 0's initial values on every rank.
            ranks.share_model(&self.model)?;
        }
        Ok(())
    }

    /// What a controller would see now: the model after the last recorded epoch (0:
    /// before the first), the run's history, and the events of decisions already applied
    /// for the next epoch. See [`crate::control::Observation`] for its fields,
    /// [`Observation::features`] for the flat vector and [`Observation::masks`] for the
    /// decisions legal now.
    pub fn observe(&self) -> Observation {
        let view = RunView {
            epoch: self.epochs_done(),
            epochs: self.config.training.epochs,
            objective: self.objective,
            history: &self.history,
            latest: None,
            pending: &self.opening_events,
        };
        crate::control::observe(&self.model, &self.registry, &view)
    }

    /// Applies `decisions` now, before the next epoch, validated as a controller's are
    /// (refusals name the controller `external`; a [`Proposal::Malformed`] is refused as
    /// not a decision). Returns the events: refusals, and what the decisions did
    /// (germinations, gate evaluations, prunes, failures); they are also kept for the
    /// next epoch's record. For a single-process run (a multi-process run's decisions
    /// come from its decision maker, on rank 0).
    pub fn act<P: Into<Proposal>>(&mut self, decisions: impl IntoIterator<Item = P>) -> Result<Vec<LifecycleEvent>> {
        let epoch = self.epochs_done();
        let proposals = decisions.into_iter().map(Into::into).collect();
        let verdict = crate::control::validate("external", epoch, proposals, &self.model, &self.registry);
        let mut events = Vec::new();
        self.apply(verdict, &mut events)?;
        self.opening_events.extend(events.iter().cloned());
        Ok(events)
    }

    /// Makes `maker` decide after every epoch from now on, in place of the run's
    /// controller (the config's heuristic or plugin). [`crate::control::Waiting`] makes
    /// every decision come through [`Trainer::act`]; a Python callable is another.
    pub fn set_decision_maker(&mut self, maker: Box<dyn DecisionMaker>) {
        self.controller = maker;
    }

    /// The name of the decision maker in charge (`heuristic`, a plugin controller's name, ...).
    pub fn decision_maker(&self) -> &str {
        self.controller.name()
    }

    /// Rank 0 of a multi-process run, or the single process: the one that writes.
    pub fn leads(&self) -> bool {
        self.ranks.as_ref().is_none_or(Ranks::leads)
    }

    /// A multi-process run's ranks compare their models after `epoch`: each slot's
    /// stage, alpha and blueprint, and a hash of every parameter's and buffer's bytes.
    fn check_lockstep(&self, epoch: u32) -> Result<()> {
        let Some(ranks) = &self.ranks else { return Ok(()) };
        let slots: Vec<String> = self
            .model
            .slots()
            .iter()
            .map(|s| {
                let blueprint = s.lifecycle().state().map_or("-", |st| st.blueprint_id());
                format!("{} {} {:.6} {blueprint}", s.id(), s.stage(), s.alpha())
            })
            .collect();
        let hash = state_hash(&self.model)?;
        ranks.check_lockstep(epoch, &format!("slots [{}], parameters {hash:016x}", slots.join(", ")))?;
        Ok(())
    }

    /// Moves the events the slots produced into `events`, each emitted once.
    fn collect_events(&mut self, events: &mut Vec<LifecycleEvent>) {
        for slot in self.model.slots_mut() {
            for e in slot.take_events() {
                record(e, events);
            }
        }
    }

    /// One optimizer per live seed (key: the slot), created at germination and dropped
    /// with the seed, and one per gate network (key: [`gate_key`]), created when the
    /// seed enters BLENDING. A seed blending out for a prune is frozen (esper-lite's rule).
    fn sync_seed_optimizers(&mut self) {
        let mut live: Vec<(String, Vec<Tensor>, bool)> = Vec::new();
        for slot in self.model.slots() {
            let Some(seed) = slot.seed() else { continue };
            let frozen = slot.prune_scheduled();
            live.push((slot.id().to_string(), seed.trainable(), frozen));
            let gate = slot.gate_parameters();
            if !gate.is_empty() {
                live.push((gate_key(slot.id()), gate, frozen));
            }
        }
        self.seed_opts.retain(|id, _| live.iter().any(|(l, _, _)| l == id));
        for (id, params, frozen) in live {
            let config = self.config.training.seed_optimizer;
            self.seed_opts.entry(id).or_insert_with(|| Optimizer::new(config, params)).set_frozen(frozen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::contained;

    #[test]
    fn a_host_side_panic_becomes_an_error_without_the_cpp_frames() {
        let err = contained(3, "training", || -> crate::Result<()> {
            panic!("Torch(\"out of memory\nException raised from alloc at c10/core/Alloc.cpp:1\nframe #0: f\")")
        })
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("epoch 3: training failed on the host's side"), "{text}");
        assert!(text.contains("out of memory") && !text.contains("frame #0"), "{text}");
        assert_eq!(contained(1, "x", || Ok(5)).unwrap(), 5);
    }
}
