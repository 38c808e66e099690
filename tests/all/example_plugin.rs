//! The out-of-tree example plugin (`examples/blueprint-plugin`, its own Cargo project).
//!
//! It cannot be built from inside `cargo test` (a nested cargo on the same target folder
//! can deadlock on its lock), so `scripts/test.sh` builds it into this target folder
//! before the tests run; these tests load that library, run the conformance suite on it,
//! and load it through its run config as `esper run` would.

use esper_conformance::{newer_source, run_suite, Check, Status, SuiteOptions};
use esper_runtime::{
    config::RunConfig,
    model::MorphogeneticModel,
    plugin::{BlueprintRegistry, LoadError},
    train::germinate,
};
use esper_tests::target_dir;
use serde_json::json;
use std::{
    path::{Path, PathBuf},
    process::Command,
};
use tch::{Device, Kind, Tensor};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/blueprint-plugin")
        .canonicalize()
        .expect("examples/blueprint-plugin")
}

/// The example's library, built by scripts/test.sh; a clear message when it is not.
fn example_lib() -> PathBuf {
    let path = target_dir().join(esper_runtime::plugin::library_file_name("esper-example-plugin"));
    assert!(
        path.is_file(),
        "{} is not built. The example plugin is its own Cargo project, built before the workspace tests into the \
         same target folder:\n    cargo build --manifest-path examples/blueprint-plugin/Cargo.toml --target-dir \
         target\n(scripts/test.sh does this before `cargo test`)",
        path.display()
    );
    if let Some(source) = newer_source(&path, &example_dir()) {
        panic!(
            "{} is older than {}: rebuild it (`cargo build --manifest-path examples/blueprint-plugin/Cargo.toml \
             --target-dir target`, as scripts/test.sh does)",
            path.display(),
            source.display()
        );
    }
    path
}

#[test]
fn the_example_plugin_passes_the_conformance_suite() {
    let report = run_suite(&example_lib(), &SuiteOptions::default());
    assert!(report.passed, "the example plugin is not conformant:\n{}", report.render());
    assert_eq!(report.handshake.as_ref().unwrap().plugin_name, "esper-example-plugin");
    let names: Vec<&str> = report.blueprints.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["cnn:channel-scale"]);
    // Not even a warning: its parameter estimate is exact at 64 channels.
    for c in &report.blueprints[0].checks {
        assert_eq!(c.status, Status::Pass, "{}: {}", c.check, c.reason);
    }
    let estimate = report.blueprints[0].check(Check::ParamEstimate).unwrap();
    assert!(estimate.reason.contains("2129 actual vs 2129 declared"), "{}", estimate.reason);
}

#[test]
fn the_example_is_the_identity_at_birth_and_checks_its_options() {
    let mut registry = BlueprintRegistry::new();
    registry.load(&example_lib()).unwrap();
    let seed = registry.create_seed("channel-scale", 32, &json!({"reduction": 8}), Device::Cpu).unwrap();
    assert_eq!(seed.num_parameters(), 4 * 32 + 4 + 32 * 4 + 32 + 1);
    let x = Tensor::randn([2, 32, 5, 5], (Kind::Float, Device::Cpu));
    let y = seed.forward(&x, true).unwrap();
    assert!(y.equal(&x), "identity at birth");
    let e = registry.create_seed("channel-scale", 32, &json!({"reduction": 0}), Device::Cpu).err().unwrap();
    assert!(matches!(e, LoadError::BadOptions { .. }) && e.to_string().contains("reduction must be at least 1"), "{e}");
    let e = registry.create_seed("channel-scale", 32, &json!({"reductoin": 2}), Device::Cpu).err().unwrap();
    assert!(e.to_string().contains("unknown field `reductoin`"), "{e}");
}

#[test]
fn its_run_config_loads_it_and_germinates_a_seed() {
    let lib = example_lib();
    let config_path = example_dir().join("esper.toml");
    let config = RunConfig::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.plugins.len(), 1);
    assert_eq!(config.plugins[0].path.canonicalize().unwrap(), lib.canonicalize().unwrap());
    let mut registry = BlueprintRegistry::new();
    for p in &config.plugins {
        registry.load(&p.path).unwrap();
    }
    let scheduled = &config.lifecycle.schedule[0];
    assert_eq!(scheduled.blueprint, "channel-scale");
    assert_eq!(config.lifecycle.controller.blueprint.as_deref(), Some("channel-scale"));
    // Germinate as the run would: the slot's germination probe accepts the seed.
    let slots: Vec<&str> = config.slots.iter().map(String::as_str).collect();
    let mut model = MorphogeneticModel::new(config.host.clone(), &slots, config.slot.clone(), Device::Cpu).unwrap();
    germinate(&mut model, &registry, &scheduled.slot, &scheduled.blueprint, "example-1", &scheduled.options).unwrap();
    let logits = model.forward(&Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu)), true).unwrap();
    assert_eq!(logits.size(), [2, 10]);
    assert_eq!(logits.isfinite().all().int64_value(&[]), 1);

    // And `esper config check` accepts it.
    let esper = target_dir().join("esper");
    let out = Command::new(&esper).args(["config", "check"]).arg(&config_path).output().unwrap();
    assert!(
        out.status.success(),
        "esper config check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn its_conformance_test_is_one_line() {
    let test = std::fs::read_to_string(example_dir().join("tests/conformance.rs")).unwrap();
    let code: Vec<&str> = test.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//")).collect();
    assert_eq!(code, ["esper_conformance::conformance_test!();"]);
}
