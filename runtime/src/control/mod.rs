//! Who decides the lifecycle: a [`DecisionMaker`] sees an [`Observation`] after every
//! epoch (and once before the first) and proposes [`Decision`]s, which
//! [`validate::validate`] checks against the lifecycle before any is applied.
//!
//! Three kinds of decision makers exist: the built-in heuristic ([`heuristic::Heuristic`],
//! esper-lite's Tamiyo heuristic), a controller plugin
//! ([`crate::plugin::PluginController`], `[lifecycle.controller] plugin` and `name`), and
//! whatever a caller of [`crate::train::Trainer::set_decision_maker`] gives (the Python
//! package's callable). Observation and decision types are `esper-plugin-api`'s, so
//! plugins and the runtime share them.

pub mod heuristic;
mod observe;
pub mod validate;

use crate::{
    lifecycle::LifecycleEvent, model::MorphogeneticModel, plugin::BlueprintRegistry, train::controller::ControllerState,
};
pub use esper_plugin_api::observation::{
    feature_len, ActionMasks, Decision, EpochObservation, GateObservation, Observation, Op, SlotObservation, Stage,
    HISTORY_LEN, OBSERVATION_VERSION,
};
pub use observe::{observe, RunView};
use serde_json::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};
pub use validate::{validate, Refusal, Verdict};

/// One decision as a controller gave it: well-formed, or not (kept to be refused by name).
#[derive(Debug, Clone, PartialEq)]
pub enum Proposal {
    Decision(Decision),
    /// Not a decision: the JSON given and why it does not read as one.
    Malformed {
        json: String,
        error: String,
    },
}

impl From<Decision> for Proposal {
    fn from(d: Decision) -> Self {
        Proposal::Decision(d)
    }
}

impl Proposal {
    /// Reads one decision from JSON (an object tagged by `op`).
    pub fn from_value(value: Value) -> Self {
        let json = value.to_string();
        match serde_json::from_value(value) {
            Ok(d) => Proposal::Decision(d),
            Err(e) => Proposal::Malformed { json, error: e.to_string() },
        }
    }

    /// Reads a JSON array of decisions, each on its own: an element that is not a decision
    /// is a [`Proposal::Malformed`]; text that is not a JSON array is an error.
    pub fn list_from_json(text: &str) -> Result<Vec<Proposal>, String> {
        let values: Vec<Value> =
            serde_json::from_str(text).map_err(|e| format!("its answer is not a JSON array of decisions: {e}"))?;
        Ok(values.into_iter().map(Proposal::from_value).collect())
    }
}

/// What a decision maker is given: the observation, and for the built-in heuristic the
/// model itself and every epoch's validation score (see
/// [`crate::data::Objective::score`]).
pub struct DecisionContext<'a> {
    pub observation: &'a Observation,
    pub model: &'a MorphogeneticModel,
    pub val_score: &'a [f64],
}

/// Makes the lifecycle's decisions. Called once per epoch on the run's leading process;
/// an `Err` (or a panic) is contained: the run waits that epoch and records a
/// `controller_failed` event naming [`DecisionMaker::name`] and the error.
pub trait DecisionMaker: Send {
    /// The name events give it (`heuristic`, a plugin controller's name, ...).
    fn name(&self) -> &str;

    /// The decisions after `context.observation.epoch`.
    fn decide(&mut self, context: &DecisionContext<'_>) -> Result<Vec<Proposal>, String>;

    /// What it keeps in checkpoints (the heuristic's rotation and penalties; nothing for
    /// the others).
    fn state(&self) -> ControllerState {
        ControllerState::default()
    }

    /// Continues from a checkpointed state.
    fn restore(&mut self, _state: ControllerState) {}
}

/// Asks `maker` for its decisions in `context` and validates them against the model
/// and `registry`. An error or a panic of the maker is contained: no decision, one
/// `controller_failed` event naming it and why.
pub fn decide(maker: &mut dyn DecisionMaker, context: &DecisionContext<'_>, registry: &BlueprintRegistry) -> Verdict {
    let outcome = catch_unwind(AssertUnwindSafe(|| maker.decide(context)))
        .unwrap_or_else(|p| Err(format!("panicked: {}", esper_plugin_api::panic_message(p.as_ref()))));
    let controller = maker.name().to_string();
    match outcome {
        Ok(proposals) => validate(&controller, context.observation.epoch, proposals, context.model, registry),
        Err(reason) => {
            tracing::debug!(controller = %controller, reason = %reason, "controller failed");
            Verdict { actions: Vec::new(), refused: vec![LifecycleEvent::ControllerFailed { controller, reason }] }
        }
    }
}

/// A decision maker that always waits: decisions then come only through
/// [`crate::train::Trainer::act`].
#[derive(Debug, Clone, Default)]
pub struct Waiting;

impl DecisionMaker for Waiting {
    fn name(&self) -> &str {
        "external"
    }
    fn decide(&mut self, _: &DecisionContext<'_>) -> Result<Vec<Proposal>, String> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_reads_each_decision_on_its_own() {
        let list = Proposal::list_from_json(r#"[{"op": "wait"}, {"op": "advance"}, 7]"#).unwrap();
        assert_eq!(list[0], Proposal::Decision(Decision::Wait {}));
        assert!(matches!(&list[1], Proposal::Malformed { error, .. } if error.contains("slot")), "{list:?}");
        assert!(matches!(&list[2], Proposal::Malformed { json, .. } if json == "7"), "{list:?}");
        assert!(Proposal::list_from_json("{").unwrap_err().contains("not a JSON array"));
    }
}
