//! Controllers (issue 25): the built-in heuristic behind the decision-maker interface
//! records exactly the events it did before (tests/data/heuristic-events.json, recorded
//! from the `esper` binary before controllers were pluggable); controller plugins drive
//! real `esper run`s, each broken fixture contained (the run completes, the event names
//! the controller) and failing its named conformance check; `Trainer::observe` and
//! `Trainer::act` from Rust.

use esper_conformance::{run_suite, Status, SuiteOptions};
use esper_runtime::{
    config::RunConfig,
    control::{Decision, DecisionContext, DecisionMaker, Proposal, Stage, Waiting},
    lifecycle::LifecycleEvent,
    train::{Silent, Trainer},
};
use esper_tests::{esper, one_job_at_a_time, plugin_lib, stderr, temp_dir, write_file, SmallJob};
use serde_json::Value;
use std::path::Path;

/// Each broken controller fixture, its controller and the one check it fails.
const FAILS_ON: [(&str, &str, &str); 3] = [
    ("esper-fixture-controller-random", "random", "controller_deterministic"),
    ("esper-fixture-controller-panicky", "panicky", "controller_edge_observations"),
    ("esper-fixture-controller-stray", "stray", "controller_well_formed"),
];

/// The job the heuristic's events were recorded on: two slots, a plateau every epoch
/// from epoch 1, permissive gates, short stage limits, so that ten epochs germinate,
/// fail and pass gates, hold, prune and embargo.
fn heuristic_job(cnn: &Path, norm: &Path) -> String {
    format!(
        r#"device = "cpu"
slots = ["r0c1", "r1c1"]

[[plugins]]
path = "{cnn}"

[[plugins]]
path = "{norm}"

[host]
base_channels = 8

[data]
kind = "synthetic"
train_size = 256
val_size = 128

[training]
epochs = 10
batch_size = 64
gradient_every = 2

[slot]
blend_tempo = 2

[lifecycle.gates]
mode = "permissive"
min_blending_epochs = 2

[lifecycle.controller]
max_live_seeds = 2
min_epoch = 1
plateau_epochs = 1
plateau_delta = 1000.0
max_training_epochs = 4
max_holding_epochs = 2

[output]
dir = "out"
"#,
        cnn = cnn.display(),
        norm = norm.display()
    )
}

/// Runs `esper run` on `config` in `dir`; the report, after checking it finished every epoch.
fn run(dir: &Path, config: &str, epochs: usize) -> Value {
    let path = write_file(dir, "run.toml", config);
    let out = esper().arg("run").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "esper run must finish:\n{}", stderr(&out));
    let report: Value = serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap();
    assert_eq!(report["epochs"].as_array().map_or(0, Vec::len), epochs, "every epoch ran");
    report
}

fn events(report: &Value) -> Vec<Value> {
    report["epochs"].as_array().unwrap().iter().flat_map(|e| e["events"].as_array().unwrap().clone()).collect()
}

#[test]
fn the_heuristic_behind_the_interface_records_the_same_events_as_before() {
    let dir = temp_dir("heuristic-events");
    let config = heuristic_job(&plugin_lib("esper-cnn"), &plugin_lib("esper-norm"));
    let report = run(&dir, &config, 10);
    let now: Vec<Value> = report["epochs"].as_array().unwrap().iter().map(|e| e["events"].clone()).collect();
    let recorded = include_str!("../data/heuristic-events.json");
    let before: Vec<Value> = serde_json::from_str(recorded).unwrap();
    assert!(before.iter().flat_map(|e| e.as_array().unwrap()).any(|e| e["event"] == "pruned"), "a rich record");
    assert_eq!(now, before, "the heuristic's events changed");
}

/// A one-slot job driven by the controller `name` of library `controller`.
fn controller_job(controller: &Path, name: &str, epochs: u32) -> String {
    let cnn = plugin_lib("esper-cnn");
    let sections = "[lifecycle.gates]\nmode = \"permissive\"\nmin_blending_epochs = 1\n";
    let text =
        SmallJob { plugin: &cnn, epochs, batch_size: 64, memory_format: "contiguous", blueprint: None, sections }
            .text();
    let table = format!("[lifecycle.controller]\nplugin = \"{}\"\nname = \"{name}\"\n", controller.display());
    text.replace("[lifecycle.controller]\nenabled = false\n", &table)
}

#[test]
fn a_controller_plugin_drives_a_run_and_its_seed_grows() {
    let dir = temp_dir("controller-greedy");
    let report = run(&dir, &controller_job(&plugin_lib("esper-fixture-controller-greedy"), "greedy", 4), 4);
    let all = events(&report);
    assert!(all.iter().any(|e| e["event"] == "germinated" && e["slot"] == "r0c1"), "{all:?}");
    assert!(all.iter().any(|e| e["event"] == "stage_changed" && e["to"] == "TRAINING"), "advanced: {all:?}");
    assert!(!all.iter().any(|e| e["event"] == "decision_refused"), "only legal decisions: {all:?}");
}

#[test]
fn each_broken_controller_is_contained_in_a_real_run() {
    for (fixture, name, _) in FAILS_ON {
        let dir = temp_dir(&format!("controller-{name}"));
        let report = run(&dir, &controller_job(&plugin_lib(fixture), name, 3), 3);
        let all = events(&report);
        match name {
            "panicky" => assert!(
                all.iter().any(|e| e["event"] == "controller_failed"
                    && e["controller"] == "panicky"
                    && e["reason"].as_str().is_some_and(|r| r.contains("panicked"))),
                "{all:?}"
            ),
            "stray" => {
                let refused: Vec<&Value> = all.iter().filter(|e| e["event"] == "decision_refused").collect();
                assert!(refused.iter().all(|e| e["controller"] == "stray"), "{refused:?}");
                let reason = |needle: &str| refused.iter().any(|e| e["reason"].as_str().unwrap().contains(needle));
                assert!(reason("no such slot") && reason("unknown blueprint"), "{refused:?}");
                assert!(!all.iter().any(|e| e["event"] == "germinated"), "nothing refused is applied: {all:?}");
            }
            _ => assert!(all.iter().any(|e| e["event"] == "germinated"), "{all:?}"),
        }
    }
}

#[test]
fn conformance_fails_each_broken_controller_on_its_named_check_and_passes_greedy() {
    for (fixture, name, check) in FAILS_ON {
        let report = run_suite(&plugin_lib(fixture), &SuiteOptions::default());
        let failed: Vec<&str> =
            report.checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.check.name()).collect();
        assert_eq!(failed, [check], "{name}: {}", report.render());
        let reason = &report.checks.iter().find(|c| c.check.name() == check).unwrap().reason;
        assert!(reason.contains(&format!("controller `{name}`")), "{reason}");
    }
    let greedy = plugin_lib("esper-fixture-controller-greedy");
    let out = esper().arg("conformance").arg(&greedy).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "greedy passes:\n{text}");
    assert!(text.contains("controller_well_formed"), "{text}");
    let out = esper().args(["plugins", "inspect"]).arg(&greedy).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("controller greedy "), "inspect lists it:\n{text}");
    let out = esper().arg("conformance").arg(plugin_lib(FAILS_ON[2].0)).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a broken controller fails `esper conformance`");
}

/// A trainer of a 2-epoch CNN job with the CNN catalogue, no seed scheduled.
fn small_cnn_trainer(name: &str) -> Trainer {
    let dir = temp_dir(name);
    let cnn = plugin_lib("esper-cnn");
    let text = SmallJob {
        plugin: &cnn,
        epochs: 2,
        batch_size: 64,
        memory_format: "contiguous",
        blueprint: None,
        sections: "",
    }
    .text();
    Trainer::new(RunConfig::load(&write_file(&dir, "run.toml", &text)).unwrap()).unwrap()
}

#[test]
fn observe_and_act_drive_a_run_from_outside() {
    let _one = one_job_at_a_time();
    let mut t = small_cnn_trainer("controller-observe-act");
    t.set_decision_maker(Box::new(Waiting));
    let o = t.observe();
    assert_eq!((o.epoch, o.free_slots.as_slice()), (0, ["r0c1".to_string()].as_slice()));
    assert!(o.blueprints.contains(&"cnn:conv_light".to_string()), "{:?}", o.blueprints);
    assert_eq!(o.features().len(), esper_runtime::control::feature_len(1, o.blueprints.len()));
    let grow = Decision::Germinate {
        slot: "r0c1".into(),
        blueprint: "conv_light".into(),
        options: Value::Null,
        alpha_target: None,
        tempo: None,
        seed_id: None,
    };
    let events = t.act(vec![grow.clone()]).unwrap();
    assert!(matches!(&events[..], [LifecycleEvent::Germinated { slot, .. }] if slot == "r0c1"), "{events:?}");
    let refused = t.act(vec![grow]).unwrap();
    assert!(matches!(&refused[..], [LifecycleEvent::DecisionRefused { controller, .. }] if controller == "external"));
    // What does not read as a decision is refused by name too, never applied.
    let malformed = Proposal::from_value(serde_json::json!({"op": "prune"}));
    let refused = t.act([malformed]).unwrap();
    assert!(
        matches!(&refused[..], [LifecycleEvent::DecisionRefused { reason, .. }] if reason.contains("not a decision")),
        "{refused:?}"
    );
    let o = t.observe();
    assert_eq!(o.slots[0].stage, Stage::Germinated);
    assert_eq!(o.slots[0].blueprint.as_deref(), Some("cnn:conv_light"));
    assert!(o.slots[0].seed_parameters > 0 && o.seed_parameters == o.slots[0].seed_parameters, "{o:?}");
    assert_eq!((o.slots[0].alpha, o.slots[0].alpha_target), (0.0, 1.0));
    assert_eq!(o.masks().slot[2], [true], "an advance is legal");
    assert!(o.free_slots.is_empty() && o.masks().slot[1] == [false], "no germination legal now");
    t.run(&mut Silent).unwrap();
    assert_eq!(t.observe().history.len(), 2);
    let first = &t.history()[0].events;
    assert!(first.iter().any(|e| matches!(e, LifecycleEvent::Germinated { .. })), "kept for epoch 1's record");
    t.act(vec![Decision::Advance { slot: "r0c1".into() }]).unwrap();
    let gate = t.observe().slots[0].last_gate.clone().expect("the gate just evaluated");
    assert_eq!((gate.gate.as_str(), gate.passed), ("G1", true));
}

/// A decision maker that fails (`Err`) on odd epochs and panics on even ones.
struct Failing;

impl DecisionMaker for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn decide(&mut self, context: &DecisionContext<'_>) -> Result<Vec<Proposal>, String> {
        match context.observation.epoch % 2 {
            1 => Err("no idea".into()),
            _ => panic!("deliberate panic in decide"),
        }
    }
}

#[test]
fn a_decision_maker_that_errs_or_panics_is_contained_and_the_run_waits() {
    let _one = one_job_at_a_time();
    let mut t = small_cnn_trainer("controller-failing");
    t.set_decision_maker(Box::new(Failing));
    assert_eq!(t.decision_maker(), "failing");
    t.run(&mut Silent).unwrap();
    let failed: Vec<String> = t
        .history()
        .iter()
        .flat_map(|r| r.events.iter())
        .filter_map(|e| match e {
            LifecycleEvent::ControllerFailed { controller, reason } if controller == "failing" => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 3, "before epoch 1 and after each epoch: {failed:?}");
    assert!(failed[0].contains("panicked: deliberate panic in decide"), "{failed:?}");
    assert_eq!(failed[1], "no idea");
}

#[test]
fn a_controller_the_library_lacks_or_a_schedule_beside_a_plugin_is_refused_by_config_check() {
    let dir = temp_dir("controller-config-check");
    let greedy = plugin_lib("esper-fixture-controller-greedy");
    let config = write_file(&dir, "run.toml", &controller_job(&greedy, "nope", 2));
    let out = esper().args(["config", "check"]).arg(&config).output().unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("controller `nope`") && text.contains("(it has: greedy)"), "{text}");
    let scheduled = controller_job(&greedy, "greedy", 2).replace(
        "[output]",
        "[[lifecycle.schedule]]\nepoch = 1\nslot = \"r0c1\"\nblueprint = \"conv_light\"\n\n[output]",
    );
    let out = esper().args(["config", "check"]).arg(write_file(&dir, "scheduled.toml", &scheduled)).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("lifecycle.schedule is the built-in controller's"), "{}", stderr(&out));
    let good = write_file(&dir, "good.toml", &controller_job(&greedy, "greedy", 2));
    let out = esper().args(["config", "check"]).arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
