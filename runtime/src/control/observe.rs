//! Builds the [`Observation`] a controller sees from the model, the blueprint registry
//! and the run's record.

use super::{EpochObservation, GateObservation, Observation, SlotObservation, Stage, HISTORY_LEN};
use crate::{
    data::Objective,
    lifecycle::{LifecycleEvent, SeedStage},
    model::{MorphogeneticModel, SeedSlot},
    plugin::BlueprintRegistry,
    train::report::EpochRecord,
};
use esper_plugin_api::OBSERVATION_VERSION;

/// The run as an observation needs it.
pub struct RunView<'a> {
    /// The epoch just finished (0: before the first).
    pub epoch: u32,
    /// The run's length.
    pub epochs: u32,
    pub objective: Objective,
    /// The recorded epochs.
    pub history: &'a [EpochRecord],
    /// The epoch just finished, when it is not recorded yet.
    pub latest: Option<EpochObservation>,
    /// Events of the epoch just finished not recorded yet.
    pub pending: &'a [LifecycleEvent],
}

/// The observation of `model` after `run.epoch`.
pub fn observe(model: &MorphogeneticModel, registry: &BlueprintRegistry, run: &RunView<'_>) -> Observation {
    let mut history: Vec<EpochObservation> = run.history.iter().map(epoch_of).chain(run.latest).collect();
    history.drain(..history.len().saturating_sub(HISTORY_LEN));
    let slots: Vec<SlotObservation> = model.slots().iter().map(|s| slot_of(s, run)).collect();
    let topology = model.host().topology();
    Observation {
        version: OBSERVATION_VERSION,
        epoch: run.epoch,
        epochs: run.epochs,
        objective: match run.objective {
            Objective::Accuracy => "accuracy",
            Objective::Loss => "loss",
        }
        .into(),
        history,
        host_parameters: model.host_parameters().iter().map(|t| t.numel() as u64).sum(),
        seed_parameters: slots.iter().map(|s| s.seed_parameters).sum(),
        free_slots: slots.iter().filter(|s| s.germinable).map(|s| s.slot.clone()).collect(),
        slots,
        blueprints: registry
            .list()
            .filter(|(_, d, _)| d.topology.as_str() == topology.as_str())
            .map(|(key, _, _)| key.to_string())
            .collect(),
    }
}

fn epoch_of(r: &EpochRecord) -> EpochObservation {
    EpochObservation {
        epoch: r.epoch,
        train_loss: r.train_loss,
        train_accuracy: r.train_accuracy,
        val_loss: r.val_loss,
        val_accuracy: r.val_accuracy,
    }
}

/// The runtime's stage as a controller sees it (UNKNOWN, never a slot's, reads as DORMANT).
pub fn stage_of(stage: SeedStage) -> Stage {
    match stage {
        SeedStage::Unknown | SeedStage::Dormant => Stage::Dormant,
        SeedStage::Germinated => Stage::Germinated,
        SeedStage::Training => Stage::Training,
        SeedStage::Blending => Stage::Blending,
        SeedStage::Holding => Stage::Holding,
        SeedStage::Fossilized => Stage::Fossilized,
        SeedStage::Pruned => Stage::Pruned,
        SeedStage::Embargoed => Stage::Embargoed,
        SeedStage::Resetting => Stage::Resetting,
    }
}

fn slot_of(slot: &SeedSlot, run: &RunView<'_>) -> SlotObservation {
    let state = slot.lifecycle().state();
    let metrics = state.map(|s| s.metrics());
    let live = slot.lifecycle().live_blueprint().is_some();
    SlotObservation {
        slot: slot.id().to_string(),
        stage: stage_of(slot.stage()),
        epochs_in_stage: metrics.map_or(0, |m| m.epochs_in_current_stage()),
        alpha: slot.alpha(),
        // The ramp's target from germination on (full once continued; not 0 while blending out).
        alpha_target: state.map_or(0.0, |s| s.blend().target.value().max(s.alpha_controller().alpha_target())),
        blueprint: state.filter(|_| live).map(|s| s.blueprint_id().to_string()),
        seed_parameters: slot.seed_parameters().iter().map(|t| t.numel() as u64).sum(),
        gradient_ratio: metrics.and_then(|m| m.seed_gradient_norm_ratio()),
        contribution: metrics.and_then(|m| m.counterfactual_contribution()),
        last_gate: if live { last_gate(slot.id(), run) } else { None },
        germinable: slot.stage() == SeedStage::Dormant && slot.lifecycle().is_available(),
        partial_hold: slot.at_partial_hold(),
        prune_scheduled: slot.prune_scheduled(),
    }
}

/// The last gate evaluation of the seed now in `slot` (none before its germination).
fn last_gate(slot: &str, run: &RunView<'_>) -> Option<GateObservation> {
    let recorded = run.history.iter().rev().flat_map(|r| r.events.iter().rev());
    for event in run.pending.iter().rev().chain(recorded) {
        match event {
            LifecycleEvent::GateEvaluated { slot: s, gate, passed, failed } if s == slot => {
                let failed = failed.iter().map(ToString::to_string).collect();
                return Some(GateObservation { gate: format!("{gate:?}"), passed: *passed, failed });
            }
            LifecycleEvent::Germinated { slot: s, .. } if s == slot => return None,
            _ => {}
        }
    }
    None
}
