//! The one place a controller's decisions are checked against the lifecycle before any
//! is applied. A decision refused here is never applied: it becomes a
//! `decision_refused` event naming the controller and the [`Refusal`].
//!
//! An advance that passes these checks is put to its gate, which may still refuse it
//! (a `gate_evaluated` event with `passed: false` and the checks that failed; the seed
//! stays where it is).

use super::Proposal;
use crate::{
    blend::{AlphaTarget, BlendChoice, BlendTempo},
    lifecycle::{LifecycleEvent, SeedStage},
    model::{MorphogeneticModel, SeedSlot},
    plugin::BlueprintRegistry,
    train::controller::Action,
};
use esper_plugin_api::observation::Decision;
use std::{collections::BTreeSet, fmt};

/// Why a decision was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Not a decision (the JSON does not read as one).
    Malformed(String),
    /// No slot of that name.
    UnknownSlot { valid: Vec<String> },
    /// The slot already had a decision this epoch.
    AlreadyDecided,
    /// A germination into a slot that is not DORMANT (or still embargoed).
    Occupied(SeedStage),
    /// A germination of a blueprint no loaded plugin has (or several have).
    UnknownBlueprint(String),
    /// An alpha target other than 0.5, 0.7 or 1.0.
    BadAlphaTarget(f64),
    /// An advance in a stage with no next stage to advance to.
    CannotAdvance(SeedStage),
    /// A continue for a seed not resting at a partial alpha target.
    NotAtPartialHold(SeedStage),
    /// A prune where no prunable seed is (empty, fossilized, pruned already).
    NothingToPrune(SeedStage),
    /// An advance or prune of a seed already blending out for a prune.
    PruneUnderWay,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(e) => write!(f, "not a decision: {e}"),
            Refusal::UnknownSlot { valid } => write!(f, "no such slot (slots: {})", valid.join(", ")),
            Refusal::AlreadyDecided => f.write_str("the slot already has a decision this epoch"),
            Refusal::Occupied(stage) => write!(f, "the slot is {stage}, a germination needs it DORMANT"),
            Refusal::UnknownBlueprint(e) => write!(f, "unknown blueprint: {e}"),
            Refusal::BadAlphaTarget(v) => write!(f, "alpha_target {v}: must be 0.5, 0.7 or 1.0"),
            Refusal::CannotAdvance(stage) => write!(f, "a seed in {stage} cannot advance"),
            Refusal::NotAtPartialHold(stage) => {
                write!(f, "continue needs a seed resting at a partial alpha target (the slot is {stage})")
            }
            Refusal::NothingToPrune(stage) => write!(f, "no seed to prune (the slot is {stage})"),
            Refusal::PruneUnderWay => f.write_str("the seed is already blending out for a prune"),
        }
    }
}

/// What validation let through, in order, and the refusals as events.
#[derive(Debug, Default)]
pub struct Verdict {
    pub actions: Vec<Action>,
    pub refused: Vec<LifecycleEvent>,
}

/// Validates `proposals` of controller `controller` after epoch `epoch` against `model`
/// and the blueprints of `registry`. A slot takes one decision per epoch; `wait` is
/// dropped.
pub fn validate(
    controller: &str,
    epoch: u32,
    proposals: Vec<Proposal>,
    model: &MorphogeneticModel,
    registry: &BlueprintRegistry,
) -> Verdict {
    let mut verdict = Verdict::default();
    let mut decided = BTreeSet::new();
    for proposal in proposals {
        let (json, checked) = match proposal {
            Proposal::Malformed { json, error } => (json, Err(Refusal::Malformed(error))),
            Proposal::Decision(Decision::Wait {}) => continue,
            Proposal::Decision(d) => {
                (serde_json::to_string(&d).unwrap_or_default(), check(&d, epoch, model, registry, &mut decided))
            }
        };
        match checked {
            Ok(action) => verdict.actions.push(action),
            Err(reason) => verdict.refused.push(refusal_event(controller, &json, reason)),
        }
    }
    verdict
}

fn refusal_event(controller: &str, json: &str, reason: Refusal) -> LifecycleEvent {
    let slot = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("slot").and_then(|s| s.as_str()).map(str::to_string))
        .unwrap_or_default();
    LifecycleEvent::DecisionRefused {
        controller: controller.to_string(),
        slot,
        decision: json.to_string(),
        reason: reason.to_string(),
    }
}

/// One decision against the lifecycle, as the action that applies it; `decided` holds
/// the slots that already have one this epoch.
pub fn check(
    decision: &Decision,
    epoch: u32,
    model: &MorphogeneticModel,
    registry: &BlueprintRegistry,
    decided: &mut BTreeSet<String>,
) -> Result<Action, Refusal> {
    let Some(id) = decision.slot() else { return Err(Refusal::Malformed("`wait` is not applied".into())) };
    let slot = model
        .slot(id)
        .map_err(|_| Refusal::UnknownSlot { valid: model.slots().iter().map(|s| s.id().to_string()).collect() })?;
    if decided.contains(id) {
        return Err(Refusal::AlreadyDecided);
    }
    let action = match decision {
        Decision::Germinate { .. } => germination(decision, epoch, slot, registry)?,
        Decision::Advance { slot: id } => {
            in_flight(slot, Refusal::CannotAdvance)?;
            Action::Advance { slot: id.clone() }
        }
        Decision::Continue { slot: id } if slot.at_partial_hold() && !slot.prune_scheduled() => {
            Action::Continue { slot: id.clone() }
        }
        Decision::Continue { .. } => return Err(Refusal::NotAtPartialHold(slot.stage())),
        Decision::Prune { slot: id, reason } => {
            in_flight(slot, Refusal::NothingToPrune)?;
            let reason = reason.clone().unwrap_or_else(|| "decided by the controller".to_string());
            Action::Prune { slot: id.clone(), reason }
        }
        Decision::Wait {} => return Err(Refusal::Malformed("`wait` is not applied".into())),
    };
    decided.insert(id.to_string());
    Ok(action)
}

/// The slot's seed is in flight (GERMINATED to HOLDING) and not blending out; else
/// `PruneUnderWay` for one blending out, or `otherwise` of its stage.
fn in_flight(slot: &SeedSlot, otherwise: fn(SeedStage) -> Refusal) -> Result<(), Refusal> {
    let stage = slot.stage();
    let flying =
        matches!(stage, SeedStage::Germinated | SeedStage::Training | SeedStage::Blending | SeedStage::Holding);
    match (flying, slot.prune_scheduled()) {
        (true, false) => Ok(()),
        (_, true) => Err(Refusal::PruneUnderWay),
        (false, false) => Err(otherwise(stage)),
    }
}

fn germination(
    decision: &Decision,
    epoch: u32,
    slot: &SeedSlot,
    registry: &BlueprintRegistry,
) -> Result<Action, Refusal> {
    let Decision::Germinate { slot: id, blueprint, options, alpha_target, tempo, seed_id } = decision else {
        return Err(Refusal::Malformed("not a germination".into()));
    };
    if slot.stage() != SeedStage::Dormant || !slot.lifecycle().is_available() {
        return Err(Refusal::Occupied(slot.stage()));
    }
    registry.resolve(blueprint).map_err(|e| Refusal::UnknownBlueprint(e.to_string()))?;
    let target = alpha_target.map(|v| AlphaTarget::try_from(v).map_err(|_| Refusal::BadAlphaTarget(v))).transpose()?;
    let bare = blueprint.rsplit(':').next().unwrap_or(blueprint);
    Ok(Action::Germinate {
        slot: id.clone(),
        blueprint: blueprint.clone(),
        options: options.clone(),
        seed_id: seed_id.clone().unwrap_or_else(|| format!("{id}-{bare}-e{epoch}")),
        choice: BlendChoice { target, tempo: tempo.map(BlendTempo::from_epochs) },
    })
}
