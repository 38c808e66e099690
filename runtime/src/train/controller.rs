//! The automatic lifecycle controller, esper-lite's heuristic (Tamiyo) in our terms.
//! Scheduled germinations from the config come first. Then, per slot:
//!
//! * germinate, into a free slot, after `plateau_epochs` epochs in a row that each
//!   gained less than `plateau_delta` points, not before `min_epoch`; the blueprint is the
//!   next of the rotation whose penalty is below the threshold;
//! * walk each seed through the gates; prune one that stalls in TRAINING, that lost more
//!   than `prune_on_drop` points in its stage, or whose contribution falls too low;
//! * in HOLDING, put a seed whose counterfactual contribution reaches
//!   `fossilize_at_contribution` to G5 (fossilize), prune one below it.
//!
//! A prune penalizes the seed's blueprint; penalties decay every epoch. The rotation's
//! place and the penalties are the controller's state, kept in checkpoints.

use crate::{
    blend::BlendChoice,
    config::{ControllerConfig, ScheduledSeed},
    data::Objective,
    lifecycle::SeedStage,
    model::{MorphogeneticModel, SeedSlot},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One decision for one slot (serde: what rank 0 of a multi-process run sends the others).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    Germinate {
        slot: String,
        blueprint: String,
        options: Value,
        seed_id: String,
        choice: BlendChoice,
    },
    Advance {
        slot: String,
    },
    /// Continue a seed resting at a partial alpha target to full amplitude.
    Continue {
        slot: String,
    },
    Prune {
        slot: String,
        reason: String,
    },
}

impl Action {
    /// The slot it is for.
    pub fn slot(&self) -> &str {
        match self {
            Action::Germinate { slot, .. }
            | Action::Advance { slot }
            | Action::Continue { slot }
            | Action::Prune { slot, .. } => slot,
        }
    }
}

/// What the controller remembers between epochs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerState {
    /// Germinations the rotation has made (its place).
    pub rotated: usize,
    /// Penalty by blueprint (bare name), for prunes the controller decided.
    pub penalties: BTreeMap<String, f64>,
    /// The last epoch whose decay is applied.
    pub decayed_through: u32,
}

pub struct Controller {
    config: ControllerConfig,
    /// What the validation scores it is given measure (for its messages).
    objective: Objective,
    rotation: Vec<(String, Value)>,
    schedule: Vec<ScheduledSeed>,
    state: ControllerState,
}

/// A blueprint's name without its topology (`cnn:norm` -> `norm`).
fn bare(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

impl Controller {
    /// A controller germinating from `rotation` (blueprint and options, in turn; see
    /// [`crate::config::Preflight::rotation`]) besides the `schedule`, judging seeds by
    /// validation scores of `objective`.
    pub fn new(
        config: ControllerConfig,
        rotation: Vec<(String, Value)>,
        schedule: Vec<ScheduledSeed>,
        objective: Objective,
    ) -> Self {
        Self { config, objective, rotation, schedule, state: ControllerState::default() }
    }

    pub fn state(&self) -> &ControllerState {
        &self.state
    }
    /// Continues from a checkpointed state.
    pub fn restore(&mut self, state: ControllerState) {
        self.state = state;
    }

    /// Epochs in a row, up to the last, that each gained less than `plateau_delta`
    /// points of validation score over the one before.
    fn plateau(&self, val_score: &[f64]) -> u32 {
        let gains = val_score.windows(2).rev();
        gains.take_while(|w| w[1] - w[0] < self.config.plateau_delta).count() as u32
    }

    /// The next blueprint of the rotation whose penalty is below the threshold; when
    /// all are at or above it, the least penalized (ties by name), still rotating.
    fn next_blueprint(&mut self) -> (String, Value) {
        let n = self.rotation.len().max(1);
        let start = self.state.rotated;
        let penalty = |s: &ControllerState, name: &str| s.penalties.get(bare(name)).copied().unwrap_or(0.0);
        for i in 0..n {
            let candidate = &self.rotation[(start + i) % n];
            if penalty(&self.state, &candidate.0) < self.config.penalty_threshold {
                self.state.rotated = start + i + 1;
                return candidate.clone();
            }
        }
        let mut by_penalty: Vec<&(String, Value)> = self.rotation.iter().collect();
        by_penalty
            .sort_by(|a, b| penalty(&self.state, &a.0).total_cmp(&penalty(&self.state, &b.0)).then(a.0.cmp(&b.0)));
        let chosen = by_penalty[start % n].clone();
        self.state.rotated = start + 1;
        chosen
    }

    /// Decays every penalty once per epoch, forgetting those below 0.1.
    fn decay(&mut self, epoch: u32) {
        while self.state.decayed_through < epoch {
            self.state.decayed_through += 1;
            for p in self.state.penalties.values_mut() {
                *p *= self.config.penalty_decay;
            }
            self.state.penalties.retain(|_, p| *p >= 0.1);
        }
    }

    /// Decisions at the end of `epoch` (1-based; 0 before the first), given validation
    /// accuracy so far.
    /// The decisions after epoch `epoch` (0: before the first), given every epoch's
    /// validation score so far (see [`Objective::score`]).
    pub fn decide(&mut self, epoch: u32, val_score: &[f64], model: &MorphogeneticModel) -> Vec<Action> {
        self.decay(epoch);
        let mut actions = Vec::new();
        // Seeds in flight (a fossilized seed is part of the host now).
        let mut live =
            model.slots().iter().filter(|s| s.seed().is_some() && s.stage() != SeedStage::Fossilized).count();
        for slot in model.slots() {
            if slot.prune_scheduled() {
                continue; // blending out: the lifecycle prunes it when alpha reaches 0
            }
            if let Some(action) = self.manage(slot) {
                if let Action::Prune { .. } = action {
                    self.penalize(slot);
                }
                actions.push(action);
                continue;
            }
            if slot.stage() != SeedStage::Dormant || !slot.lifecycle().is_available() {
                continue;
            }
            // The schedule names its epoch; the controller waits for a plateau.
            let id = slot.id();
            if let Some(s) = self.schedule.iter().find(|s| s.slot == id && s.epoch == epoch + 1) {
                actions.push(germinate(id, &s.blueprint, &s.options, epoch, s.blend_choice()));
                live += 1;
            } else if self.config.enabled
                && live < self.config.max_live_seeds
                && epoch >= self.config.min_epoch
                && self.plateau(val_score) >= self.config.plateau_epochs
            {
                let (blueprint, options) = self.next_blueprint();
                actions.push(germinate(id, &blueprint, &options, epoch, BlendChoice::default()));
                live += 1;
            }
        }
        actions
    }

    /// The decision for a slot with a seed in flight, if any.
    fn manage(&self, slot: &SeedSlot) -> Option<Action> {
        let (c, id) = (&self.config, slot.id().to_string());
        let metrics = slot.lifecycle().state().map(|s| s.metrics())?;
        let in_stage = metrics.epochs_in_current_stage();
        let contribution = metrics.counterfactual_contribution();
        let dropped = in_stage >= c.drop_epochs && metrics.improvement_since_stage_start() < -c.prune_on_drop;
        let hurts = contribution.is_some_and(|v| v < c.prune_below_contribution);
        let prune = |reason: String| Some(Action::Prune { slot: id.clone(), reason });
        match slot.stage() {
            SeedStage::Germinated => Some(Action::Advance { slot: id }),
            SeedStage::Training if in_stage >= c.max_training_epochs => {
                prune(format!("stalled: still in TRAINING after {in_stage} epochs"))
            }
            SeedStage::Training | SeedStage::Blending if dropped => prune(format!(
                "{} dropped {:.2} points in {} over {in_stage} epochs",
                self.objective.score_name(),
                -metrics.improvement_since_stage_start(),
                slot.stage()
            )),
            SeedStage::Training => Some(Action::Advance { slot: id }),
            SeedStage::Blending | SeedStage::Holding if hurts => {
                prune(format!("counterfactual contribution {:.2} points", contribution.unwrap_or_default()))
            }
            SeedStage::Blending if slot.alpha() >= 1.0 => Some(Action::Advance { slot: id }),
            // A partial hold: a seed that earned its place goes on to full amplitude.
            SeedStage::Blending if slot.at_partial_hold() => {
                contribution.is_some_and(|v| v >= c.fossilize_at_contribution).then_some(Action::Continue { slot: id })
            }
            SeedStage::Holding if in_stage >= c.max_holding_epochs => {
                prune(format!("HOLDING for {in_stage} epochs without passing G5"))
            }
            SeedStage::Holding => match contribution {
                None => None, // waits for its counterfactual contribution
                Some(v) if v >= c.fossilize_at_contribution => Some(Action::Advance { slot: id }),
                Some(v) => prune(format!(
                    "contribution {v:.2} points in HOLDING, below {:.2} to fossilize",
                    c.fossilize_at_contribution
                )),
            },
            _ => None,
        }
    }

    fn penalize(&mut self, slot: &SeedSlot) {
        if let Some(state) = slot.lifecycle().state() {
            *self.state.penalties.entry(bare(state.blueprint_id()).to_string()).or_default() +=
                self.config.penalty_on_prune;
        }
    }
}

fn germinate(slot: &str, blueprint: &str, options: &Value, epoch: u32, choice: BlendChoice) -> Action {
    Action::Germinate {
        slot: slot.to_string(),
        blueprint: blueprint.to_string(),
        options: options.clone(),
        seed_id: format!("{slot}-{}-e{epoch}", bare(blueprint)),
        choice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> MorphogeneticModel {
        use crate::{host::CnnHostConfig, model::SlotConfig};
        let host = CnnHostConfig { base_channels: 4, ..Default::default() };
        MorphogeneticModel::new(host, &["r0c1", "r1c1"], SlotConfig::default(), tch::Device::Cpu).unwrap()
    }

    /// A controller with the config's own rotation (no plugins to resolve it against).
    fn controller(config: ControllerConfig) -> Controller {
        let rotation = config.rotation(crate::host::Topology::Cnn);
        Controller::new(config, rotation, vec![], Objective::Accuracy)
    }

    fn rotation(names: &[&str]) -> ControllerConfig {
        ControllerConfig { blueprints: Some(names.iter().map(|s| s.to_string()).collect()), ..Default::default() }
    }

    fn germinated(actions: &[Action]) -> Vec<(&str, &str)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Germinate { slot, blueprint, .. } => Some((slot.as_str(), blueprint.as_str())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn on_text_a_plateau_is_judged_on_the_validation_loss() {
        let c = controller(ControllerConfig { plateau_delta: 0.5, ..Default::default() });
        let scores = |losses: &[f64]| losses.iter().map(|&l| Objective::Loss.score(l, 0.0)).collect::<Vec<_>>();
        // 3.0 -> 2.5 is the loss 18% lower; then 0.4% and 0.2%: two epochs of plateau.
        assert_eq!(c.plateau(&scores(&[3.0, 2.5, 2.49, 2.485])), 2);
        assert_eq!(c.plateau(&scores(&[3.0, 2.5, 2.49, 2.4])), 0, "the loss 3.6% lower");
        assert_eq!(c.plateau(&scores(&[3.0, 2.5, 2.6])), 1, "a rising loss is a plateau too");
    }

    #[test]
    fn a_plateau_is_counted_in_epochs_in_a_row_gaining_less_than_the_delta() {
        let c = controller(ControllerConfig::default()); // delta 0.5
        assert_eq!(c.plateau(&[]), 0);
        assert_eq!(c.plateau(&[10.0]), 0);
        assert_eq!(c.plateau(&[10.0, 20.0, 30.0]), 0, "still climbing");
        assert_eq!(c.plateau(&[10.0, 20.0, 20.3, 20.1, 20.4]), 3, "+0.3, -0.2, +0.3");
        assert_eq!(c.plateau(&[10.0, 20.0, 20.3, 20.1, 20.6]), 0, "the last epoch gained 0.5, not less");
        assert_eq!(c.plateau(&[30.0, 25.0, 26.0]), 0, "the last epoch gained a point");
    }

    #[test]
    fn germinates_after_three_flat_epochs_and_not_before_epoch_five() {
        let mut c = controller(ControllerConfig::default());
        let m = model();
        let flat = [40.0, 40.2, 40.1, 40.3];
        assert!(c.decide(4, &flat, &m).is_empty(), "before min_epoch 5");
        let flat5 = [40.0, 40.2, 40.1, 40.3, 40.4];
        assert_eq!(germinated(&c.decide(5, &flat5, &m)), [("r0c1", "conv_light")], "one seed at a time");
        let mut c = controller(ControllerConfig::default());
        let two_flat = [30.0, 35.0, 40.0, 40.2, 40.1];
        assert!(c.decide(5, &two_flat, &m).is_empty(), "two flat epochs are not a plateau of 3");
    }

    #[test]
    fn the_rotation_goes_round_and_skips_a_penalized_blueprint_until_its_penalty_decays() {
        let mut c = controller(rotation(&["a", "b", "c"]));
        let picks: Vec<String> = (0..4).map(|_| c.next_blueprint().0).collect();
        assert_eq!(picks, ["a", "b", "c", "a"]);
        // Two prunes of `b`: penalty 4 >= 3, so `b` is skipped.
        c.state.penalties.insert("b".into(), 4.0);
        assert_eq!(c.next_blueprint().0, "c", "b skipped");
        // One epoch of decay: 4 -> 2 < 3, `b` is back.
        c.decay(c.state.decayed_through + 1);
        assert_eq!(c.state.penalties["b"], 2.0);
        assert_eq!((c.next_blueprint().0, c.next_blueprint().0), ("a".to_string(), "b".to_string()));
        // Decay forgets a penalty below 0.1: 2 -> 1 -> 0.5 -> 0.25 -> 0.125 -> gone.
        c.decay(c.state.decayed_through + 5);
        assert!(c.state.penalties.is_empty(), "{:?}", c.state.penalties);
    }

    #[test]
    fn when_every_blueprint_is_penalized_the_least_penalized_come_first_still_rotating() {
        let mut c = controller(rotation(&["a", "b", "c"]));
        c.state.penalties = [("a".to_string(), 5.0), ("b".to_string(), 3.0), ("c".to_string(), 4.0)].into();
        let picks: Vec<String> = (0..3).map(|_| c.next_blueprint().0).collect();
        assert_eq!(picks, ["b", "c", "a"], "sorted by penalty: b 3, c 4, a 5");
    }

    #[test]
    fn penalties_are_keyed_by_bare_name_and_decay_once_per_epoch() {
        let mut c = controller(rotation(&["cnn:a", "b"]));
        c.state.penalties.insert("a".into(), 3.5);
        assert_eq!(c.next_blueprint().0, "b", "`cnn:a` carries the penalty of `a`");
        c.decay(3);
        c.decay(3);
        assert_eq!(c.state.decayed_through, 3);
        assert!((c.state.penalties["a"] - 3.5 / 8.0).abs() < 1e-12, "three epochs of decay, not more");
    }

    #[test]
    fn the_schedule_fires_at_its_epoch_even_when_the_controller_is_off() {
        let schedule = vec![ScheduledSeed {
            epoch: 2,
            slot: "r1c1".into(),
            blueprint: "x".into(),
            options: Value::Null,
            target: None,
            tempo: None,
        }];
        let config = ControllerConfig { enabled: false, ..ControllerConfig::default() };
        let mut c = Controller::new(config, vec![], schedule, Objective::Accuracy);
        let m = model();
        assert!(c.decide(0, &[], &m).is_empty());
        assert_eq!(germinated(&c.decide(1, &[50.0], &m)), [("r1c1", "x")]);
    }
}
