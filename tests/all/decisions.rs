//! Decision validation (`esper_runtime::control::validate`) on a real model and registry:
//! every illegal decision is refused with its reason and an event naming the controller,
//! and none is applied; legal ones become the actions the trainer applies.

use esper_runtime::{
    control::{validate, Decision, Proposal, Refusal},
    host::CnnHostConfig,
    lifecycle::{LifecycleEvent, SeedStage},
    model::{MorphogeneticModel, SlotConfig},
    train::controller::Action,
};
use esper_tests::model::{model_in_stage, norm_registry};
use std::collections::BTreeSet;

const SLOT: &str = "r0c1";

fn seeded(stage: SeedStage) -> MorphogeneticModel {
    let host = CnnHostConfig { base_channels: 8, ..Default::default() };
    model_in_stage(&norm_registry(), host, SLOT, SlotConfig::default(), stage)
}

fn empty() -> MorphogeneticModel {
    let host = CnnHostConfig { base_channels: 8, ..Default::default() };
    MorphogeneticModel::new(host, &[SLOT], SlotConfig::default(), tch::Device::Cpu).unwrap()
}

fn germinate(slot: &str, blueprint: &str) -> Decision {
    Decision::Germinate {
        slot: slot.into(),
        blueprint: blueprint.into(),
        options: Default::default(),
        alpha_target: None,
        tempo: None,
        seed_id: None,
    }
}

fn check(model: &MorphogeneticModel, d: Decision) -> Result<Action, Refusal> {
    esper_runtime::control::validate::check(&d, 4, model, &norm_registry(), &mut BTreeSet::new())
}

#[test]
fn a_germination_needs_a_known_dormant_slot_and_a_loaded_blueprint() {
    let action = check(&empty(), germinate(SLOT, "norm")).unwrap();
    assert!(
        matches!(&action, Action::Germinate { seed_id, .. } if seed_id == "r0c1-norm-e4"),
        "a seed id is made up: {action:?}"
    );
    assert_eq!(
        check(&seeded(SeedStage::Training), germinate(SLOT, "norm")),
        Err(Refusal::Occupied(SeedStage::Training))
    );
    assert!(
        matches!(check(&empty(), germinate("r9c9", "norm")), Err(Refusal::UnknownSlot { valid }) if valid == [SLOT])
    );
    assert!(
        matches!(check(&empty(), germinate(SLOT, "nope")), Err(Refusal::UnknownBlueprint(e)) if e.contains("nope"))
    );
    let mut half = germinate(SLOT, "norm");
    if let Decision::Germinate { alpha_target, .. } = &mut half {
        *alpha_target = Some(0.6);
    }
    assert_eq!(check(&empty(), half), Err(Refusal::BadAlphaTarget(0.6)));
}

#[test]
fn advance_continue_and_prune_need_a_seed_that_can_take_them() {
    let advance = || Decision::Advance { slot: SLOT.into() };
    let prune = || Decision::Prune { slot: SLOT.into(), reason: None };
    assert_eq!(check(&empty(), advance()), Err(Refusal::CannotAdvance(SeedStage::Dormant)));
    assert_eq!(check(&seeded(SeedStage::Training), advance()), Ok(Action::Advance { slot: SLOT.into() }));
    assert_eq!(check(&empty(), prune()), Err(Refusal::NothingToPrune(SeedStage::Dormant)));
    let pruned = check(&seeded(SeedStage::Holding), prune()).unwrap();
    assert_eq!(pruned, Action::Prune { slot: SLOT.into(), reason: "decided by the controller".into() });
    let cont = Decision::Continue { slot: SLOT.into() };
    assert_eq!(check(&seeded(SeedStage::Training), cont), Err(Refusal::NotAtPartialHold(SeedStage::Training)));
}

#[test]
fn a_seed_blending_out_for_a_prune_takes_neither_an_advance_nor_another_prune() {
    let mut model = seeded(SeedStage::Holding);
    model.slot_mut(SLOT).unwrap().schedule_prune(3, "test").unwrap();
    assert!(model.slot(SLOT).unwrap().prune_scheduled(), "premise: the seed blends out over 3 epochs");
    assert_eq!(check(&model, Decision::Advance { slot: SLOT.into() }), Err(Refusal::PruneUnderWay));
    assert_eq!(check(&model, Decision::Prune { slot: SLOT.into(), reason: None }), Err(Refusal::PruneUnderWay));
}

#[test]
fn refusals_are_events_naming_the_controller_and_nothing_refused_is_applied() {
    let model = seeded(SeedStage::Training);
    let proposals = vec![
        Proposal::from_value(serde_json::json!({"op": "advance"})),
        Decision::Wait {}.into(),
        Decision::Advance { slot: SLOT.into() }.into(),
        Decision::Prune { slot: SLOT.into(), reason: None }.into(),
        germinate("r9c9", "norm").into(),
    ];
    let verdict = validate("greedy", 4, proposals, &model, &norm_registry());
    assert_eq!(verdict.actions, [Action::Advance { slot: SLOT.into() }], "wait dropped, the rest refused");
    let reasons: Vec<(String, String, String)> = verdict
        .refused
        .iter()
        .map(|e| match e {
            LifecycleEvent::DecisionRefused { controller, slot, reason, .. } => {
                (controller.clone(), slot.clone(), reason.clone())
            }
            other => panic!("not a refusal: {other:?}"),
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons.iter().all(|(c, _, _)| c == "greedy"), "{reasons:?}");
    assert!(reasons[0].2.starts_with("not a decision") && reasons[0].2.contains("slot"), "{reasons:?}");
    assert_eq!((reasons[1].1.as_str(), reasons[1].2.as_str()), (SLOT, "the slot already has a decision this epoch"));
    assert!(reasons[2].2.contains("no such slot"), "{reasons:?}");
    let text = verdict.refused[1].to_string();
    assert!(text.contains("controller `greedy` refused") || text.contains("of controller `greedy` refused"), "{text}");
}
