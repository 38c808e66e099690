//! The controller checks (ABI 1.3), run once per library on every controller it exports,
//! each on sample observations made here (no model, no training):
//!
//! * `controller_deterministic`: two fresh instances answer the same sequence of
//!   observations with the same decisions;
//! * `controller_edge_observations`: no error and no panic when no slot is free, every
//!   seed is embargoed, the history is empty (epoch 0), or no blueprint is loaded;
//! * `controller_well_formed`: every decision reads as one, names a slot of the
//!   observation (and for a germination one of its blueprints), is legal by the
//!   observation's masks, and a slot gets at most one per epoch.

use super::report::{Check, CheckResult};
use esper_plugin_api::observation::{
    Decision, EpochObservation, Observation, SlotObservation, Stage, OBSERVATION_VERSION,
};
use esper_runtime::{
    control::Proposal,
    plugin::{controllers_of, BlueprintRegistry, LoadedPlugin, PluginController},
};
use std::collections::BTreeSet;

/// The controller checks' results for the library loaded in `registry`: only the
/// `controllers` line (a skip) when it exports none.
pub fn controller_checks(registry: &BlueprintRegistry) -> Vec<CheckResult> {
    let Some(plugin) = registry.plugins().next() else { return Vec::new() };
    let names: Vec<String> = match controllers_of(plugin) {
        Ok(list) => list.iter().map(|d| d.name.to_string()).collect(),
        Err(e) => return vec![CheckResult::fail(Check::Controllers, e.to_string())],
    };
    if names.is_empty() {
        return vec![CheckResult::skip(Check::Controllers, "the library exports no controller")];
    }
    let mut results = vec![CheckResult::pass(Check::Controllers, format!("{}: {}", names.len(), names.join(", ")))];
    type Run = fn(&dyn Fn() -> Result<PluginController, String>) -> Result<(), String>;
    let checks: [(Check, Run); 3] = [
        (Check::ControllerDeterministic, deterministic),
        (Check::ControllerEdgeObservations, edge_observations),
        (Check::ControllerWellFormed, well_formed),
    ];
    for (check, run) in checks {
        let outcome = names.iter().try_for_each(|name| {
            let create = || create(registry, plugin, name);
            run(&create).map_err(|e| format!("controller `{name}`: {e}"))
        });
        results.push(CheckResult::from_outcome(check, outcome.map(|()| format!("{}: ok", names.join(", ")))));
    }
    results
}

fn create(registry: &BlueprintRegistry, plugin: &LoadedPlugin, name: &str) -> Result<PluginController, String> {
    registry.create_controller(plugin.path(), name, &serde_json::Value::Null).map_err(|e| e.to_string())
}

fn slot(id: &str, stage: Stage, blueprint: Option<&str>) -> SlotObservation {
    SlotObservation {
        slot: id.into(),
        stage,
        epochs_in_stage: if blueprint.is_some() { 2 } else { 0 },
        alpha: 0.0,
        alpha_target: if blueprint.is_some() { 1.0 } else { 0.0 },
        blueprint: blueprint.map(str::to_string),
        seed_parameters: if blueprint.is_some() { 128 } else { 0 },
        gradient_ratio: blueprint.map(|_| 0.3),
        contribution: None,
        last_gate: None,
        germinable: stage == Stage::Dormant,
        partial_hold: false,
        prune_scheduled: false,
    }
}

fn observation(epoch: u32, slots: Vec<SlotObservation>, blueprints: &[&str]) -> Observation {
    let history = (1..=epoch)
        .map(|e| EpochObservation {
            epoch: e,
            train_loss: 2.0 / e as f64,
            train_accuracy: 20.0 + e as f64,
            val_loss: 2.1 / e as f64,
            val_accuracy: 19.0 + e as f64,
        })
        .collect();
    Observation {
        version: OBSERVATION_VERSION,
        epoch,
        epochs: 10,
        objective: "accuracy".into(),
        history,
        host_parameters: 10_000,
        seed_parameters: slots.iter().map(|s| s.seed_parameters).sum(),
        free_slots: slots.iter().filter(|s| s.germinable).map(|s| s.slot.clone()).collect(),
        slots,
        blueprints: blueprints.iter().map(|b| b.to_string()).collect(),
    }
}

const BLUEPRINTS: [&str; 2] = ["cnn:norm", "cnn:conv_light"];

/// An ordinary run's observations: empty slots, then a seed training beside a free slot.
fn ordinary() -> Vec<Observation> {
    let empty = || vec![slot("r0c1", Stage::Dormant, None), slot("r1c1", Stage::Dormant, None)];
    let growing = vec![slot("r0c1", Stage::Training, Some("cnn:norm")), slot("r1c1", Stage::Dormant, None)];
    vec![
        observation(1, empty(), &BLUEPRINTS),
        observation(3, empty(), &BLUEPRINTS),
        observation(4, growing, &BLUEPRINTS),
    ]
}

/// The edge observations, each named.
fn edges() -> Vec<(&'static str, Observation)> {
    let embargoed = |id| SlotObservation { germinable: false, ..slot(id, Stage::Embargoed, None) };
    let full = vec![slot("r0c1", Stage::Holding, Some("cnn:norm")), slot("r1c1", Stage::Blending, Some("cnn:norm"))];
    vec![
        ("no slot free", observation(5, full, &BLUEPRINTS)),
        ("every slot embargoed", observation(5, vec![embargoed("r0c1"), embargoed("r1c1")], &BLUEPRINTS)),
        ("empty history (epoch 0)", observation(0, vec![slot("r0c1", Stage::Dormant, None)], &BLUEPRINTS)),
        ("no blueprint loaded", observation(3, vec![slot("r0c1", Stage::Dormant, None)], &[])),
        ("no slots", observation(3, vec![], &BLUEPRINTS)),
    ]
}

fn answers(c: &mut PluginController, observations: &[Observation]) -> Result<Vec<String>, String> {
    observations.iter().map(|o| c.decide_on(o).map(|p| format!("{p:?}"))).collect()
}

fn deterministic(create: &dyn Fn() -> Result<PluginController, String>) -> Result<(), String> {
    let observations = ordinary();
    let first = answers(&mut create()?, &observations)?;
    let second = answers(&mut create()?, &observations)?;
    match first.iter().zip(&second).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "two instances answered the observation of epoch {} differently: {} vs {}",
            observations[i].epoch, first[i], second[i]
        )),
    }
}

fn edge_observations(create: &dyn Fn() -> Result<PluginController, String>) -> Result<(), String> {
    for (name, o) in edges() {
        create()?.decide_on(&o).map_err(|e| format!("on an observation with {name}: {e}"))?;
    }
    Ok(())
}

fn well_formed(create: &dyn Fn() -> Result<PluginController, String>) -> Result<(), String> {
    let mut c = create()?;
    for o in ordinary() {
        let mut decided = BTreeSet::new();
        for (i, p) in c.decide_on(&o)?.into_iter().enumerate() {
            if let Some(slot) = check_one(&o, i, p)? {
                if !decided.insert(slot.clone()) {
                    return Err(format!("epoch {}: slot `{slot}` got more than one decision", o.epoch));
                }
            }
        }
    }
    Ok(())
}

/// Checks decision `i` of the answer to `o`; the slot it is for, if any.
fn check_one(o: &Observation, i: usize, p: Proposal) -> Result<Option<String>, String> {
    let d = match p {
        Proposal::Decision(d) => d,
        Proposal::Malformed { json, error } => return Err(format!("decision {i} ({json}) is not one: {error}")),
    };
    let Some(id) = d.slot() else { return Ok(None) };
    let at = format!("epoch {}: decision {i} ({})", o.epoch, serde_json::to_string(&d).unwrap_or_default());
    let index =
        o.slots.iter().position(|s| s.slot == id).ok_or_else(|| format!("{at} names no slot of the observation"))?;
    if let Decision::Germinate { blueprint, .. } = &d {
        if !o.blueprints.iter().any(|b| b == blueprint || b.rsplit(':').next() == Some(blueprint.as_str())) {
            return Err(format!("{at} names a blueprint not loaded ({})", o.blueprints.join(", ")));
        }
    }
    let op = esper_plugin_api::observation::Op::ALL.iter().position(|&op| op == d.op()).unwrap_or(0);
    if !o.masks().slot[op][index] {
        return Err(format!("{at} is not legal now (its mask is false)"));
    }
    Ok(Some(id.to_string()))
}
