//! The built-in heuristic ([`Controller`], esper-lite's Tamiyo heuristic) as a
//! [`DecisionMaker`]: its actions become decisions, which validation turns back into
//! the same actions (the seed id and blend choice kept), so a run decides and
//! records exactly what it did before controllers were pluggable.

use super::{DecisionContext, DecisionMaker, Proposal};
use crate::train::controller::{Action, Controller, ControllerState};
use esper_plugin_api::observation::Decision;

/// The name events give the heuristic.
pub const NAME: &str = "heuristic";

pub struct Heuristic(pub Controller);

/// The decision that stands for `action`.
pub fn decision_of(action: Action) -> Decision {
    match action {
        Action::Germinate { slot, blueprint, options, seed_id, choice } => Decision::Germinate {
            slot,
            blueprint,
            options,
            alpha_target: choice.target.map(|t| t.value()),
            tempo: choice.tempo.map(|t| t.epochs()),
            seed_id: Some(seed_id),
        },
        Action::Advance { slot } => Decision::Advance { slot },
        Action::Continue { slot } => Decision::Continue { slot },
        Action::Prune { slot, reason } => Decision::Prune { slot, reason: Some(reason) },
    }
}

impl DecisionMaker for Heuristic {
    fn name(&self) -> &str {
        NAME
    }

    fn decide(&mut self, context: &DecisionContext<'_>) -> Result<Vec<Proposal>, String> {
        let actions = self.0.decide(context.observation.epoch, context.val_score, context.model);
        Ok(actions.into_iter().map(|a| Proposal::Decision(decision_of(a))).collect())
    }

    fn state(&self) -> ControllerState {
        self.0.state().clone()
    }

    fn restore(&mut self, state: ControllerState) {
        self.0.restore(state);
    }
}
