//! The heuristic controller's rules on real seeds (a `norm` seed driven to a stage
//! through the gates): stall, accuracy drop, fossilize threshold, and the penalty a
//! prune gives the seed's blueprint. The rules without seeds are unit tests beside it.

use esper_runtime::{
    blend::{AlphaTarget, BlendChoice, BlendTempo},
    config::ControllerConfig,
    host::CnnHostConfig,
    lifecycle::SeedStage,
    model::{MorphogeneticModel, SlotConfig},
    train::{
        controller::{Action, Controller},
        germinate_with,
    },
};
use esper_tests::model::{batch, lenient_gates, model_in_stage, norm_registry, train_step};

const SLOT: &str = "r0c1";

fn seeded(stage: SeedStage) -> MorphogeneticModel {
    let host = CnnHostConfig { base_channels: 8, ..Default::default() };
    model_in_stage(&norm_registry(), host, SLOT, SlotConfig::default(), stage)
}

/// Records `accuracies` as the seed's epochs in its current stage.
fn record(model: &mut MorphogeneticModel, accuracies: &[f64]) {
    let lifecycle = model.slot_mut(SLOT).unwrap().lifecycle_mut();
    for &a in accuracies {
        lifecycle.record_score(a);
    }
}

fn contribution(model: &mut MorphogeneticModel, points: f64) {
    let m = model.slot_mut(SLOT).unwrap().lifecycle_mut().metrics_mut().unwrap();
    m.set_counterfactual_contribution(Some(points));
}

fn decide(config: ControllerConfig, model: &MorphogeneticModel) -> (Vec<Action>, Controller) {
    let rotation = vec![("norm".to_string(), serde_json::Value::Null)];
    let mut c = Controller::new(config, rotation, vec![], esper_runtime::data::Objective::Accuracy);
    (c.decide(10, &[50.0; 10], model), c)
}

fn pruned_for(actions: &[Action]) -> Option<&str> {
    actions.iter().find_map(|a| match a {
        Action::Prune { reason, .. } => Some(reason.as_str()),
        _ => None,
    })
}

#[test]
fn a_seed_stalled_in_training_is_pruned_and_its_blueprint_penalized() {
    let mut m = seeded(SeedStage::Training);
    record(&mut m, &[50.0; 3]);
    let config = ControllerConfig { max_training_epochs: 3, ..Default::default() };
    let (actions, c) = decide(config.clone(), &m);
    assert!(pruned_for(&actions).is_some_and(|r| r.starts_with("stalled")), "{actions:?}");
    assert_eq!(c.state().penalties.get("norm"), Some(&2.0), "the prune penalizes `norm` (from cnn:norm)");
    let (actions, _) = decide(ControllerConfig { max_training_epochs: 4, ..config }, &m);
    assert_eq!(actions, [Action::Advance { slot: SLOT.into() }], "one epoch short of the stall");
}

#[test]
fn a_seed_whose_accuracy_dropped_two_points_in_its_stage_is_pruned_after_five_epochs() {
    for (stage, accuracies, pruned) in [
        (SeedStage::Training, vec![50.0, 49.0, 48.5, 48.0, 47.9], true), // -2.1 after 5 epochs
        (SeedStage::Training, vec![50.0, 49.0, 48.5, 48.0], false),      // only 4 epochs
        (SeedStage::Training, vec![50.0, 49.0, 48.5, 48.0, 48.1], false), // -1.9
        (SeedStage::Blending, vec![50.0, 49.0, 48.5, 48.0, 47.0], true),
    ] {
        let mut m = seeded(stage);
        record(&mut m, &accuracies);
        let (actions, _) = decide(ControllerConfig::default(), &m);
        let reason = pruned_for(&actions);
        assert_eq!(reason.is_some(), pruned, "{stage} {accuracies:?}: {actions:?}");
        if let Some(r) = reason {
            assert!(r.starts_with("accuracy dropped"), "{r}");
        }
    }
}

#[test]
fn a_holding_seed_is_fossilized_at_half_a_point_of_contribution_and_pruned_below() {
    let mut m = seeded(SeedStage::Holding);
    let (actions, _) = decide(ControllerConfig::default(), &m);
    assert!(actions.is_empty(), "waits for its contribution: {actions:?}");
    contribution(&mut m, 0.5);
    let (actions, _) = decide(ControllerConfig::default(), &m);
    assert_eq!(actions, [Action::Advance { slot: SLOT.into() }], "G5 (fossilize) at 0.5 points");
    contribution(&mut m, 0.4);
    let (actions, c) = decide(ControllerConfig::default(), &m);
    assert!(pruned_for(&actions).is_some_and(|r| r.contains("below 0.50 to fossilize")), "{actions:?}");
    assert_eq!(c.state().penalties.get("norm"), Some(&2.0));
}

#[test]
fn a_seed_resting_at_a_partial_target_goes_on_to_full_amplitude_once_it_contributes() {
    let host = CnnHostConfig { base_channels: 8, ..Default::default() };
    let mut m = MorphogeneticModel::new(host, &[SLOT], SlotConfig::default(), tch::Device::Cpu).unwrap();
    let choice = BlendChoice { target: Some(AlphaTarget::Half), tempo: Some(BlendTempo::from_epochs(2)) };
    germinate_with(&mut m, &norm_registry(), (SLOT, "norm", "s1"), &serde_json::Value::Null, choice).unwrap();
    let gates = lenient_gates();
    m.slot_mut(SLOT).unwrap().advance(&gates).unwrap(); // TRAINING
    let (x, y) = batch(4, tch::Device::Cpu);
    train_step(&mut m, &x, &y);
    assert!(m.slot_mut(SLOT).unwrap().advance(&gates).unwrap().passed, "BLENDING");
    for _ in 0..3 {
        m.step_epoch().unwrap();
    }
    let slot = m.slot(SLOT).unwrap();
    assert!(slot.at_partial_hold() && slot.alpha() == 0.5, "alpha {}", slot.alpha());
    contribution(&mut m, 0.2);
    let (actions, _) = decide(ControllerConfig::default(), &m);
    assert!(actions.is_empty(), "not earned yet: {actions:?}");
    contribution(&mut m, 0.6);
    let (actions, _) = decide(ControllerConfig::default(), &m);
    assert_eq!(actions, [Action::Continue { slot: SLOT.into() }]);
    m.slot_mut(SLOT).unwrap().continue_to_full().unwrap();
    m.step_epoch().unwrap();
    m.step_epoch().unwrap();
    assert_eq!(m.slot(SLOT).unwrap().alpha(), 1.0);
}
