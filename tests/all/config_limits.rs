//! Limits a config is held to before anything is allocated or loaded: the host's
//! memory estimate against the limit (through `esper config check`, `esper run` and
//! `Trainer::new`), sha256 pins on the bytes actually loaded (registry and library
//! API), plugin parameter requests against their cap, controller against gates, a
//! config without `[[plugins]]`, and blueprints of another topology than the host's.

use esper_runtime::{
    config::{sha256_hex, PluginSource, RunConfig},
    host::CnnHostConfig,
    model::{ModelError, MorphogeneticModel, SlotConfig},
    plugin::{BlueprintRegistry, LoadError},
    train::{germinate, Trainer},
};
use esper_tests::{plugin_lib, stderr, stdout, target_dir, temp_dir, write_file as write};
use std::{
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

fn esper(args: &[&std::ffi::OsStr]) -> (Output, Duration) {
    let mut command = esper_tests::esper();
    command.args(args).env("RUST_LOG", "info");
    let started = Instant::now();
    let out = command.output().unwrap();
    (out, started.elapsed())
}

/// A small CPU job (tiny data, narrow host); `extra` is appended.
fn small(plugin: Option<&Path>, extra: &str) -> String {
    let plugins = plugin.map_or(String::new(), |p| format!("[[plugins]]\npath = \"{}\"\n", p.display()));
    format!(
        "device = \"cpu\"\nslots = [\"r0c1\"]\n{plugins}\n[data]\nkind = \"synthetic\"\ntrain_size = 128\nval_size = \
         64\n\n[training]\nepochs = 1\nbatch_size = 32\n\n[output]\ndir = \"out\"\n{extra}"
    )
}

fn huge(blocks: usize) -> String {
    format!(
        "device = \"cpu\"\n[[plugins]]\npath = \"{}\"\n[host]\nblocks = {blocks}\nbase_channels = 16\n",
        plugin_lib("esper-norm").display()
    )
}

#[test]
fn a_huge_host_fails_fast_in_config_check_and_run_naming_estimate_limit_and_setting() {
    let dir = temp_dir("huge-host");
    for (blocks, expect) in [(12, "the host needs an estimated"), (40, "overflows 64-bit arithmetic")] {
        let path = write(&dir, &format!("blocks{blocks}.toml"), &huge(blocks));
        let out_dir = dir.join(format!("out{blocks}"));
        for args in [
            vec!["config".as_ref(), "check".as_ref(), path.as_os_str()],
            vec!["run".as_ref(), path.as_os_str(), "--output".as_ref(), out_dir.as_os_str()],
        ] {
            let (out, took) = esper(&args);
            let e = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: exit {:?}\n{e}", out.status);
            assert!(took < Duration::from_secs(20), "{args:?} took {took:?}: it must not allocate");
            assert!(e.starts_with(&format!("error: config {}: ", path.display())), "{e}");
            assert!(e.contains(expect), "{args:?}: {e}");
            if blocks == 12 {
                assert!(e.contains("GiB of memory for one training step") && e.contains("over the limit of"), "{e}");
                assert!(e.contains("[training] memory_limit_gb") && e.contains("[host] blocks"), "{e}");
            } else {
                assert!(e.contains("host.blocks"), "{e}");
            }
            assert_eq!(e.matches(expect).count(), 1, "said once: {e}");
        }
        assert!(!out_dir.exists(), "refused before the output folder was made");
    }
}

#[test]
fn trainer_new_refuses_a_host_over_the_memory_limit_before_building_it() {
    let mut config = RunConfig::parse(&huge(12), Path::new("huge.toml")).unwrap();
    config.plugins = vec![PluginSource { path: plugin_lib("esper-norm"), sha256: None }];
    let started = Instant::now();
    let e = Trainer::new(config.clone()).err().expect("refused").to_string();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(e.contains("the host needs an estimated") && e.contains("memory_limit_gb"), "{e}");
    // The limit is a setting: a small host under a tiny explicit limit is refused too.
    let mut config = RunConfig::parse(&small(Some(&plugin_lib("esper-norm")), ""), Path::new("s.toml")).unwrap();
    config.training.memory_limit_gb = Some(0.001);
    let e = Trainer::new(config).err().expect("refused").to_string();
    assert!(e.contains("over the limit of 1.0 MiB (training.memory_limit_gb = 0.001)"), "{e}");
}

#[test]
fn config_check_prints_the_parameter_count_and_estimate_without_building_the_host() {
    let dir = temp_dir("check-estimate");
    let path = write(&dir, "run.toml", &small(Some(&plugin_lib("esper-norm")), ""));
    let (out, _) = esper(&["config".as_ref(), "check".as_ref(), path.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // Default host (3 blocks, base 32, 10 classes): 94,762 parameters.
    assert!(text.contains("host: 94762 parameters; one training step at batch 32 needs about"), "{text}");
    assert!(text.contains("activations") && text.contains("limit"), "{text}");
}

#[test]
fn a_config_without_plugins_uses_the_shipped_plugins_in_check_and_run() {
    let dir = temp_dir("no-plugins");
    let lib = |p: &str| target_dir().join(esper_runtime::plugin::library_file_name(p)).display().to_string();
    let shipped = format!("{}, {}", lib("esper-norm"), lib("esper-cnn"));
    let path = write(&dir, "run.toml", &small(None, ""));
    let (out, _) = esper(&["config".as_ref(), "check".as_ref(), path.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("plugins: none in the config; using the shipped plugins {shipped}")),
        "{}",
        stdout(&out)
    );
    let (out, _) = esper(&["run".as_ref(), path.as_os_str()]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("the config names no [[plugins]]: using the shipped plugins") && e.contains("libesper_cnn.so"),
        "{e}"
    );
    // The library API still asks for plugins (and says how the CLI fills them in).
    let e = RunConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("no plugins") && e.contains("shipped plugins"), "{e}");
}

#[test]
fn pinned_loads_check_the_bytes_they_load() {
    let norm = plugin_lib("esper-norm");
    let right = sha256_hex(&norm).unwrap();
    let wrong = "ab".repeat(32);
    let mut registry = BlueprintRegistry::new();
    let e = registry.load_pinned(&norm, Some(&wrong)).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, LoadError::PinMismatch { .. }), "{text}");
    assert!(text.contains("libesper_norm.so") && text.contains(&wrong) && text.contains(&right), "{text}");
    assert_eq!(registry.plugins().count(), 0, "nothing loaded");
    let keys = registry.load_pinned(&norm, Some(&right.to_uppercase())).unwrap();
    assert_eq!(keys, vec!["cnn:norm".to_string()]);
    let plugin = registry.plugins().next().unwrap();
    assert_eq!(plugin.path(), norm.canonicalize().unwrap(), "named by its original path");
    assert_eq!(plugin.sha256(), Some(right.as_str()));
    // The pinned library works: a seed from it.
    registry.create_seed("norm", 8, &serde_json::Value::Null, tch::Device::Cpu).unwrap();
    // Loading the same file again with the same pin is no conflict; with another it is.
    assert!(registry.load_pinned(&norm, Some(&right)).unwrap().is_empty());
    assert!(matches!(registry.load_pinned(&norm, Some(&wrong)), Err(LoadError::PinMismatch { .. })));
    // A pin names a file, not a folder.
    let folder = norm.parent().unwrap();
    let e = BlueprintRegistry::new().load_pinned(folder, Some(&right)).unwrap_err().to_string();
    assert!(e.contains("not a folder"), "{e}");
}

#[test]
fn trainer_new_enforces_pins() {
    let norm = plugin_lib("esper-norm");
    let right = sha256_hex(&norm).unwrap();
    let mut config = RunConfig::parse(&small(None, ""), Path::new("run.toml")).unwrap();
    config.output.dir = temp_dir("trainer-pin").join("out");
    config.plugins = vec![PluginSource { path: norm.clone(), sha256: Some("00".repeat(32)) }];
    let e = Trainer::new(config.clone()).err().expect("a wrong pin is refused").to_string();
    assert!(e.contains("sha256 mismatch") && e.contains(&"00".repeat(32)) && e.contains(&right), "{e}");
    assert!(e.contains("libesper_norm.so"), "{e}");
    config.plugins[0].sha256 = Some(right);
    Trainer::new(config).expect("the right pin loads");
}

#[test]
fn a_plugin_asking_for_too_many_parameters_gets_a_create_error_not_an_allocation() {
    let mut registry = BlueprintRegistry::new();
    registry.load(&plugin_lib("esper-norm")).unwrap();
    // `norm` declares ~130 parameters; at 2M channels it asks for far more than the
    // 1Mi-element floor of its cap.
    let e = registry.create_seed("norm", 2_000_000, &serde_json::Value::Null, tch::Device::Cpu).err().unwrap();
    let text = e.to_string();
    assert!(matches!(e, LoadError::BadParameter { .. }), "{text}");
    assert!(text.contains("of shape [2000000]") && text.contains("over this seed's cap of 1048576 elements"), "{text}");
    assert!(text.contains("plugin_param_factor"), "{text}");
    // The factor is configurable.
    registry.set_param_factor(1e6);
    registry.create_seed("norm", 2_000_000, &serde_json::Value::Null, tch::Device::Cpu).unwrap();
}

#[test]
fn a_controller_that_prunes_before_g2_is_refused_by_config_check() {
    let dir = temp_dir("controller-gates");
    let extra = "[lifecycle.gates]\nmode = \"strict\"\n[lifecycle.controller]\nmax_training_epochs = 8\n";
    let path = write(&dir, "run.toml", &small(Some(&plugin_lib("esper-norm")), extra));
    let (out, _) = esper(&["config".as_ref(), "check".as_ref(), path.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("lifecycle.controller.max_training_epochs = 8"), "{e}");
    assert!(e.contains("lifecycle.gates.min_blending_epochs = 10"), "{e}");
    let (out, _) = esper(&["run".as_ref(), path.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("lifecycle.controller.max_training_epochs = 8"), "{}", stderr(&out));
}

#[test]
fn blueprint_options_are_tried_by_config_check_and_run_naming_entry_blueprint_and_key() {
    let (norm, broken) = (plugin_lib("esper-norm"), plugin_lib("esper-fixture-broken"));
    let scheduled = |blueprint: &str, options: &str| {
        format!(
            "[[lifecycle.schedule]]\nepoch = 1\nslot = \"r0c1\"\nblueprint = \"{blueprint}\"\noptions = {options}\n"
        )
    };
    for (plugin, extra, expected) in [
        (
            &norm,
            scheduled("norm", "{ widht = 3 }"),
            vec!["lifecycle.schedule[0] (epoch 1, slot r0c1, blueprint `norm`, 64 channels): bad options", "`widht`"],
        ),
        (
            &norm,
            "[lifecycle.controller]\nblueprint = \"norm\"\noptions = { widht = 3 }\n".to_string(),
            vec!["lifecycle.controller: rotation blueprint `norm` at 64 channels (slot r0c1): bad options", "`widht`"],
        ),
        (
            &broken,
            format!("{}[lifecycle.controller]\nenabled = false\n", scheduled("panic-create", "{}")),
            vec!["lifecycle.schedule[0]", "panicked in blueprint `cnn:panic-create`", "deliberate panic in create"],
        ),
    ] {
        let dir = temp_dir("blueprint-options");
        let path = write(&dir, "run.toml", &small(Some(plugin), &extra));
        let (check, _) = esper(&["config".as_ref(), "check".as_ref(), path.as_os_str()]);
        let (run, _) = esper(&["run".as_ref(), path.as_os_str()]);
        assert_eq!((check.status.code(), run.status.code()), (Some(1), Some(1)), "{extra}: {}", stderr(&check));
        let line = |o: &Output| stderr(o).lines().find(|l| l.starts_with("error:")).unwrap_or_default().to_string();
        for part in &expected {
            assert!(line(&check).contains(part), "{part}: {}", stderr(&check));
        }
        assert_eq!(line(&run), line(&check), "esper run says what config check says");
        assert!(!dir.join("out/checkpoints").exists() && !dir.join("out/report.json").exists(), "no epoch ran");
    }
    // Good options (and none) pass.
    let dir = temp_dir("blueprint-options-ok");
    let path = write(&dir, "run.toml", &small(Some(&norm), &scheduled("norm", "{}")));
    let (check, _) = esper(&["config".as_ref(), "check".as_ref(), path.as_os_str()]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert!(stdout(&check).contains(": ok ("), "{}", stdout(&check));
}

#[test]
fn a_misspelled_blueprint_fails_run_before_the_first_epoch_as_config_check_does() {
    let norm = plugin_lib("esper-norm");
    for (setting, extra) in [
        ("lifecycle.controller.blueprint", "[lifecycle.controller]\nblueprint = \"nrom\"\n"),
        ("lifecycle.schedule", "[[lifecycle.schedule]]\nepoch = 1\nslot = \"r0c1\"\nblueprint = \"nrom\"\n"),
    ] {
        let dir = temp_dir(&format!("misspelled-{setting}"));
        let path = write(&dir, "run.toml", &small(Some(&norm), extra));
        let (check, _) = esper(&["config".as_ref(), "check".as_ref(), path.as_os_str()]);
        let (run, _) = esper(&["run".as_ref(), path.as_os_str()]);
        assert_eq!((check.status.code(), run.status.code()), (Some(1), Some(1)), "{}", stderr(&run));
        let expected = format!("config {}: {setting}: unknown blueprint `nrom`", path.display());
        let line = |o: &Output| stderr(o).lines().find(|l| l.starts_with("error:")).unwrap_or_default().to_string();
        assert!(line(&check).contains(&expected), "config check: {}", stderr(&check));
        assert_eq!(line(&run), line(&check), "esper run says what config check says");
        assert!(!dir.join("out/checkpoints").exists(), "no epoch ran");
    }
}

/// [`small`] with `line` added to its `[training]` table.
fn small_training(line: &str) -> String {
    small(Some(&plugin_lib("esper-norm")), "").replace("batch_size = 32\n", &format!("batch_size = 32\n{line}\n"))
}

#[test]
fn optimizer_hyper_parameters_classes_and_the_timeout_are_held_to_their_ranges() {
    let sgd = |settings: &str| small_training(&format!("host_optimizer = {{ kind = \"sgd\", lr = 0.05{settings} }}"));
    let adam = |settings: &str| small_training(&format!("seed_optimizer = {{ kind = \"adam\"{settings} }}"));
    let host = |line: &str| small(Some(&plugin_lib("esper-norm")), &format!("[host]\n{line}\n"));
    let cases = [
        (sgd(", momentum = nan"), "[training.host_optimizer] momentum = NaN must be in [0, 1)"),
        (sgd(", weight_decay = inf"), "[training.host_optimizer] weight_decay = inf must be >= 0 and finite"),
        (
            sgd(", momentum = 0.9").replace("lr = 0.05", "lr = 1e300"),
            "[training.host_optimizer] lr = 1e300 is over 10.0",
        ),
        (adam(", lr = 1e-3, beta2 = 1.0"), "[training.seed_optimizer] beta2 = 1.0 must be in [0, 1)"),
        (adam(", lr = 1e-3, eps = 0.0"), "[training.seed_optimizer] eps = 0.0 must be > 0 and finite"),
        (adam(", lr = -1.0"), "[training.seed_optimizer] lr = -1.0 must be > 0 and finite"),
        (host("num_classes = 1"), "[host] num_classes = 1 must be at least 2"),
        (host("num_classes = 5"), "[host] num_classes = 5 is fewer than the 10 classes of the data set"),
        (small_training("seed_timeout_s = 0.0"), "[training] seed_timeout_s = 0.0 must be > 0 and finite"),
    ];
    for (text, expected) in cases {
        let config = RunConfig::parse(&text, Path::new("run.toml")).unwrap();
        let e = config.validate(Path::new("run.toml")).unwrap_err().to_string();
        assert!(e.starts_with(&format!("config run.toml: {expected}")), "{text}\n{e}");
    }
    // The defaults, Adam's `eps` included, are in range; more logits than classes is fine.
    let config = RunConfig::parse(&host("num_classes = 12"), Path::new("run.toml")).unwrap();
    config.validate(Path::new("run.toml")).unwrap();
    assert_eq!(config.training.seed_timeout_s, 60.0);
}

#[test]
fn a_nan_momentum_is_refused_by_config_check_and_run_before_anything_is_written() {
    let dir = temp_dir("nan-momentum");
    let path =
        write(&dir, "run.toml", &small_training("host_optimizer = { kind = \"sgd\", lr = 0.05, momentum = nan }"));
    let expected =
        format!("error: config {}: [training.host_optimizer] momentum = NaN must be in [0, 1)", path.display());
    for args in [vec!["config".as_ref(), "check".as_ref(), path.as_os_str()], vec!["run".as_ref(), path.as_os_str()]] {
        let (out, _) = esper(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).trim_end(), expected, "{args:?}");
    }
    assert!(!dir.join("out").exists(), "refused before the output folder was made");
}

#[test]
fn a_batch_larger_than_the_training_set_is_warned_about_with_both_numbers() {
    let dir = temp_dir("batch-over-data");
    let text = small(Some(&plugin_lib("esper-norm")), "").replace("batch_size = 32", "batch_size = 500");
    let path = write(&dir, "run.toml", &text);
    let (out, _) = esper(&["config".as_ref(), "check".as_ref(), path.as_os_str()]);
    assert!(out.status.success(), "a warning, not a refusal: {}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("[training] batch_size = 500 is larger than the training set (128 examples)"), "{e}");
    // Within the data set: no warning.
    let path = write(&dir, "ok.toml", &small(Some(&plugin_lib("esper-norm")), ""));
    let (out, _) = esper(&["config".as_ref(), "check".as_ref(), path.as_os_str()]);
    assert!(out.status.success() && !stderr(&out).contains("batch_size"), "{}", stderr(&out));
}

#[test]
fn a_blueprint_of_another_topology_is_refused_naming_both_topologies() {
    // `causal-attention` is a `transformer` blueprint; the run's host is the CNN.
    let leaky = plugin_lib("esper-fixture-leaky-attention");
    let schedule = "[[lifecycle.schedule]]\nepoch = 1\nslot = \"r0c1\"\nblueprint = \"causal-attention\"\n";
    let controller = "[lifecycle.controller]\nblueprint = \"causal-attention\"\n";
    for (extra, setting) in [(schedule, "lifecycle.schedule"), (controller, "lifecycle.controller.blueprint")] {
        let dir = temp_dir("wrong-topology");
        let path = write(&dir, "run.toml", &small(Some(&leaky), extra));
        let (check, _) = esper(&["config".as_ref(), "check".as_ref(), path.as_os_str()]);
        assert_eq!(check.status.code(), Some(1), "{extra}: {}", stderr(&check));
        let e = stderr(&check);
        let expected = format!(
            "{setting}: blueprint `transformer:causal-attention` is for `transformer` hosts and this run's host is `cnn`"
        );
        assert!(e.contains(&expected), "{e}");
    }
    // The library refuses the germination too, and the slot stays dormant.
    let mut registry = BlueprintRegistry::new();
    registry.load(&leaky).unwrap();
    let host = CnnHostConfig { base_channels: 8, ..Default::default() };
    let mut model = MorphogeneticModel::new(host, &["r0c1"], SlotConfig::default(), tch::Device::Cpu).unwrap();
    let err = germinate(&mut model, &registry, "r0c1", "causal-attention", "s1", &serde_json::json!({})).unwrap_err();
    assert!(matches!(err, ModelError::TopologyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("is for `transformer` hosts and this host is `cnn`"), "{err}");
    assert!(model.slot("r0c1").unwrap().seed().is_none());
}
