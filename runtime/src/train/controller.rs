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
        let mut live = model.slots().iter().filter(|s| s.seed().is_some()).count();
        for slot in model.slots() {
            let id = slot.id().to_string();
            let state = slot.lifecycle().state();
            let metrics = state.map(|s| s.metrics());
            let in_stage = metrics.map_or(0, |m| m.epochs_in_current_stage());
            let contribution = metrics.and_then(|m| m.counterfactual_contribution());
            let hurts = contribution.is_some_and(|c| c < self.config.prune_below_contribution);
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

    #[test]
    fn plateau_detection() {
        let c = controller(1.0);
        assert!(!c.plateaued(&[10.0, 20.0]), "not enough history");
        assert!(!c.plateaued(&[10.0, 20.0, 30.0]), "still climbing");
        assert!(c.plateaued(&[30.0, 30.5, 30.2]), "flat");
        assert!(c.plateaued(&[40.0, 35.0, 39.0]), "worse than before");
    }
}
