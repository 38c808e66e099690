//! The automatic lifecycle controller, a heuristic policy in the spirit of esper-lite's:
//! germinate when validation accuracy plateaus, walk a seed through the gates, prune a
//! seed that stalls or hurts, fossilize one that passes G5. Scheduled germinations from
//! the config come first.

use crate::{
    config::{ControllerConfig, ScheduledSeed},
    lifecycle::SeedStage,
    model::MorphogeneticModel,
};

/// One decision for one slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Germinate { slot: String, blueprint: String, options: serde_json::Value, seed_id: String },
    Advance { slot: String },
    Prune { slot: String, reason: String },
}

pub struct Controller {
    config: ControllerConfig,
    schedule: Vec<ScheduledSeed>,
}

impl Controller {
    pub fn new(config: ControllerConfig, schedule: Vec<ScheduledSeed>) -> Self {
        Self { config, schedule }
    }

    /// Whether the last `window` epochs gained less than `delta` points.
    fn plateaued(&self, val_accuracy: &[f64]) -> bool {
        let w = self.config.plateau_epochs as usize;
        if w == 0 || val_accuracy.len() <= w {
            return false;
        }
        let recent = &val_accuracy[val_accuracy.len() - w - 1..];
        let best_before = recent[0];
        let best_after = recent[1..].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        best_after - best_before < self.config.plateau_delta
    }

    /// Decisions at the end of `epoch` (1-based), given validation accuracy so far.
    pub fn decide(&self, epoch: u32, val_accuracy: &[f64], model: &MorphogeneticModel) -> Vec<Action> {
        let mut actions = Vec::new();
        // Seeds in flight (a fossilized seed is part of the host now).
        let mut live =
            model.slots().iter().filter(|s| s.seed().is_some() && s.stage() != SeedStage::Fossilized).count();
        for slot in model.slots() {
            let id = slot.id().to_string();
            let state = slot.lifecycle().state();
            let metrics = state.map(|s| s.metrics());
            let in_stage = metrics.map_or(0, |m| m.epochs_in_current_stage());
            let contribution = metrics.and_then(|m| m.counterfactual_contribution());
            let hurts = contribution.is_some_and(|c| c < self.config.prune_below_contribution);
            if slot.prune_scheduled() {
                continue; // blending out: the lifecycle prunes it when alpha reaches 0
            }
            match slot.stage() {
                SeedStage::Germinated => actions.push(Action::Advance { slot: id }),
                SeedStage::Training if in_stage >= self.config.max_training_epochs => actions
                    .push(Action::Prune { slot: id, reason: format!("still in TRAINING after {in_stage} epochs") }),
                SeedStage::Training => actions.push(Action::Advance { slot: id }),
                SeedStage::Blending | SeedStage::Holding if hurts => actions.push(Action::Prune {
                    slot: id,
                    reason: format!("counterfactual contribution {:.2} points", contribution.unwrap_or_default()),
                }),
                SeedStage::Blending if slot.alpha() >= 1.0 => actions.push(Action::Advance { slot: id }),
                SeedStage::Holding if in_stage >= self.config.max_holding_epochs => actions.push(Action::Prune {
                    slot: id,
                    reason: format!("HOLDING for {in_stage} epochs without passing G5"),
                }),
                SeedStage::Holding => actions.push(Action::Advance { slot: id }),
                SeedStage::Dormant if slot.lifecycle().is_available() => {
                    // The schedule names its epoch; the controller waits for a plateau.
                    let scheduled = self.schedule.iter().find(|s| s.slot == id && s.epoch == epoch + 1);
                    if let Some(s) = scheduled {
                        actions.push(germinate(&id, &s.blueprint, &s.options, epoch));
                        live += 1;
                    } else if self.config.enabled
                        && live < self.config.max_live_seeds
                        && epoch >= self.config.min_epoch
                        && self.plateaued(val_accuracy)
                    {
                        actions.push(germinate(&id, &self.config.blueprint, &self.config.options, epoch));
                        live += 1;
                    }
                }
                _ => {}
            }
        }
        actions
    }
}

fn germinate(slot: &str, blueprint: &str, options: &serde_json::Value, epoch: u32) -> Action {
    Action::Germinate {
        slot: slot.to_string(),
        blueprint: blueprint.to_string(),
        options: options.clone(),
        seed_id: format!("{slot}-{blueprint}-e{epoch}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(delta: f64) -> Controller {
        Controller::new(ControllerConfig { plateau_epochs: 2, plateau_delta: delta, ..Default::default() }, vec![])
    }

    fn model() -> MorphogeneticModel {
        use crate::{host::CnnHostConfig, model::SlotConfig};
        let host = CnnHostConfig { base_channels: 4, ..Default::default() };
        MorphogeneticModel::new(host, &["r0c1", "r1c1"], SlotConfig::default(), tch::Device::Cpu).unwrap()
    }

    #[test]
    fn germinates_on_a_plateau_into_the_first_free_slot_once() {
        let c = Controller::new(ControllerConfig { min_epoch: 3, ..ControllerConfig::default() }, vec![]);
        let m = model();
        let flat = [40.0, 40.2, 40.1, 40.3];
        assert!(c.decide(2, &flat[..2], &m).is_empty(), "before min_epoch");
        let actions = c.decide(4, &flat, &m);
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(
            matches!(&actions[0], Action::Germinate { slot, blueprint, .. } if slot == "r0c1" && blueprint == "norm")
        );
        assert!(c.decide(4, &[10.0, 20.0, 30.0, 40.0], &m).is_empty(), "still improving");
    }

    #[test]
    fn schedule_fires_at_its_epoch_even_when_disabled() {
        let schedule = vec![ScheduledSeed {
            epoch: 2,
            slot: "r1c1".into(),
            blueprint: "x".into(),
            options: serde_json::Value::Null,
        }];
        let c = Controller::new(ControllerConfig { enabled: false, ..ControllerConfig::default() }, schedule);
        let m = model();
        assert!(c.decide(0, &[], &m).is_empty());
        let actions = c.decide(1, &[50.0], &m);
        assert!(
            matches!(&actions[..], [Action::Germinate { slot, blueprint, .. }] if slot == "r1c1" && blueprint == "x"),
            "{actions:?}"
        );
    }

    #[test]
    fn plateau_detection() {
        let c = controller(1.0);
        assert!(!c.plateaued(&[10.0, 20.0]), "not enough history");
        assert!(!c.plateaued(&[10.0, 20.0, 30.0]), "still climbing");
        assert!(c.plateaued(&[30.0, 30.5, 30.2]), "flat");
        assert!(c.plateaued(&[40.0, 35.0, 39.0]), "worse than before");
    }
}
