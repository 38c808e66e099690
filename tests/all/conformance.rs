//! The plugin conformance suite: it passes every shipped plugin, fails each broken
//! fixture blueprint on the right named check (and still passes it on the checks the
//! defect has nothing to do with), and `esper conformance` reports it with the right
//! exit status and JSON.

use esper_conformance::{
    host_isolation_with, run_blueprint, run_suite, BlueprintReport, Check, Status, Subject, SuiteOptions, SuiteReport,
};
use esper_runtime::{isolation::seed_input, plugin::BlueprintRegistry};
use esper_tests::{esper, plugin_lib};
use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};
use tch::Device;

/// Package names of the shipped plugins: every `plugins/*/Cargo.toml`.
fn shipped_plugins() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("plugins/ folder")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("Cargo.toml")).ok())
        .map(|manifest| {
            manifest
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = \""))
                .map(|n| n.trim_end_matches('"').to_string())
                .expect("package name in a plugin's Cargo.toml")
        })
        .collect();
    names.sort();
    names
}

fn suite(crate_name: &str, blueprint: Option<&str>) -> SuiteReport {
    run_suite(&plugin_lib(crate_name), &SuiteOptions { blueprint: blueprint.map(str::to_string), move_to: None })
}

fn status(report: &BlueprintReport, check: Check) -> Status {
    report.check(check).unwrap_or_else(|| panic!("{}: no `{check}` result", report.name)).status
}

#[test]
fn every_shipped_plugin_passes() {
    let plugins = shipped_plugins();
    assert!(plugins.contains(&"esper-norm".to_string()), "{plugins:?}");
    assert!(plugins.contains(&"esper-transformer".to_string()), "{plugins:?}");
    for name in plugins {
        let report = suite(&name, None);
        assert!(report.passed, "shipped plugin {name} is not conformant:\n{}", report.render());
        assert!(!report.blueprints.is_empty(), "{name} exports no blueprint");
        for b in &report.blueprints {
            let ran: Vec<Check> = b.checks.iter().map(|c| c.check).collect();
            assert_eq!(ran, Check::blueprint().collect::<Vec<_>>(), "{}: every check, in order", b.name);
            for c in &b.checks {
                assert!(
                    matches!(c.status, Status::Pass | Status::Warn),
                    "{} {}: {:?} {}",
                    b.name,
                    c.check,
                    c.status,
                    c.reason
                );
                assert!(!c.reason.is_empty());
            }
        }
    }
}

#[test]
fn norm_report_in_detail() {
    let report = suite("esper-norm", None);
    assert!(report.passed, "{}", report.render());
    let h = report.handshake.as_ref().expect("handshake");
    assert_eq!(
        (h.plugin_name.as_str(), h.libtorch.as_deref(), h.tch.as_deref()),
        ("esper-norm", Some("2.11.0"), Some("0.24.0"))
    );
    assert_eq!(h.plugin_api.as_deref(), Some(h.runtime_plugin_api.as_str()));
    assert_eq!((h.kind.as_str(), h.abi.as_str()), ("native", h.runtime_abi.as_str()));
    let norm = report.blueprint("norm").expect("cnn:norm");
    assert_eq!(norm.name, "cnn:norm");
    // Every check passed outright: norm's estimate (130) is within the factor (129 actual).
    for c in &norm.checks {
        assert_eq!(c.status, Status::Pass, "{}: {}", c.check, c.reason);
    }
    let estimate = norm.check(Check::ParamEstimate).unwrap();
    assert!(estimate.reason.contains("129 actual vs 130 declared"), "{}", estimate.reason);
    let grads = norm.check(Check::ParameterGradients).unwrap();
    assert!(grads.reason.contains("bias, scale, weight"), "{}", grads.reason);
    let shapes = norm.check(Check::ShapeDtypeDevice).unwrap();
    assert!(shapes.reason.contains("48") && shapes.reason.contains("80") && shapes.reason.contains("112"));
    let device = norm.check(Check::DeviceMove).unwrap();
    assert!(device.reason.contains(&report.device_move_target), "{}", device.reason);
    let text = report.render();
    for check in Check::library().chain(Check::blueprint()) {
        assert!(text.contains(check.name()), "readable report names `{check}`:\n{text}");
    }
}

/// A broken fixture blueprint: fails `right` (its reason containing `why`), and passes
/// each of `still_pass`.
fn assert_fails_on(blueprint: &str, right: Check, why: &str, still_pass: &[Check]) -> BlueprintReport {
    let report = suite("esper-fixture-broken", Some(blueprint));
    assert!(!report.passed, "{blueprint} must fail:\n{}", report.render());
    assert_eq!(report.blueprints.len(), 1, "--blueprint selects one");
    let b = report.blueprints[0].clone();
    assert!(!b.passed);
    let r = b.check(right).expect("the right check ran");
    assert_eq!(r.status, Status::Fail, "{blueprint} fails `{right}`:\n{}", report.render());
    assert!(r.reason.contains(why), "{blueprint} `{right}` says why ({why:?}): {}", r.reason);
    for &check in still_pass {
        assert_eq!(status(&b, check), Status::Pass, "{blueprint}: `{check}` should still pass:\n{}", report.render());
    }
    b
}

#[test]
fn shape_change_fails_shape_dtype_device() {
    let b = assert_fails_on(
        "shape-change",
        Check::ShapeDtypeDevice,
        "on [1, 16, 32, 32] Float cpu: output shape [1, 16, 16, 16], expected exactly the input's [1, 16, 32, 32]",
        &[
            Check::Metadata,
            Check::Create,
            Check::ParameterGradients,
            Check::FiniteOutputs,
            Check::Determinism,
            Check::UnknownOptions,
            Check::NoPanic,
        ],
    );
    // The checks that route its output into a host of the input's shape cannot work either.
    assert_eq!(status(&b, Check::HostIsolation), Status::Fail);
}

#[test]
fn emit_nan_fails_finite_outputs() {
    let b = assert_fails_on(
        "emit-nan",
        Check::FiniteOutputs,
        "NaN or infinite",
        &[
            Check::Create,
            Check::ShapeDtypeDevice,
            Check::ParameterGradients,
            Check::HostIsolation,
            Check::ChannelsLast,
            Check::Determinism,
            Check::DeviceMove,
            Check::ParamEstimate,
            Check::UnknownOptions,
            Check::NoPanic,
        ],
    );
    // Both flags must give finite outputs too.
    assert_eq!(status(&b, Check::TrainEvalFlag), Status::Fail);
}

#[test]
fn panic_in_create_is_contained_and_fails_no_panic() {
    let b = assert_fails_on(
        "panic-create",
        Check::NoPanic,
        "deliberate panic in create",
        &[Check::Metadata, Check::UnknownOptions],
    );
    let create = b.check(Check::Create).unwrap();
    assert_eq!(create.status, Status::Fail);
    assert!(
        create.reason.contains("plugin panicked in create") && create.reason.contains("(contained)"),
        "{}",
        create.reason
    );
    // With no seed, the seed checks are skipped, saying why.
    for check in [Check::ShapeDtypeDevice, Check::HostIsolation, Check::DeviceMove, Check::ParamEstimate] {
        let r = b.check(check).unwrap();
        assert_eq!(r.status, Status::Skip, "{check}");
        assert!(r.reason.contains("no seed") && r.reason.contains("panicked"), "{check}: {}", r.reason);
    }
}

#[test]
fn panic_in_forward_is_contained_and_fails_no_panic() {
    let b = assert_fails_on(
        "panic-forward",
        Check::NoPanic,
        "deliberate panic in forward",
        &[Check::Metadata, Check::Create, Check::ParamEstimate, Check::UnknownOptions],
    );
    let shapes = b.check(Check::ShapeDtypeDevice).unwrap();
    assert_eq!(shapes.status, Status::Fail);
    assert!(shapes.reason.contains("plugin panicked in forward"), "{}", shapes.reason);
}

#[test]
fn garbled_error_fails_shape_dtype_device_its_message_escaped_and_cut() {
    use esper_runtime::plugin::text::MAX_TEXT_BYTES;
    let b = assert_fails_on(
        "garbled-error",
        Check::ShapeDtypeDevice,
        "Float cpu: \\u{1b}[31mgarbled forward: \\u{1b}[31mred\\u{1b}[0m\\n\\u{202e}reversed\\u{7} ",
        &[Check::Metadata, Check::Create, Check::ParamEstimate, Check::UnknownOptions],
    );
    // Its 1 MB message reaches the report escaped and cut, in every check that quotes it.
    for r in &b.checks {
        assert!(!r.reason.chars().any(char::is_control), "`{}`: {:?}", r.check, r.reason);
        assert!(r.reason.len() < MAX_TEXT_BYTES + 1024, "`{}`: {} bytes", r.check, r.reason.len());
    }
}

#[test]
fn ignore_options_fails_unknown_options_only() {
    let b = assert_fails_on(
        "ignore-options",
        Check::UnknownOptions,
        "accepted {\"esper_conformance_unknown_key\":1}",
        &[
            Check::Metadata,
            Check::Create,
            Check::ShapeDtypeDevice,
            Check::TrainEvalFlag,
            Check::ParameterGradients,
            Check::HostIsolation,
            Check::ChannelsLast,
            Check::FiniteOutputs,
            Check::Determinism,
            Check::DeviceMove,
            Check::ParamEstimate,
            Check::NoPanic,
        ],
    );
    assert_eq!(b.failed().count(), 1);
}

#[test]
fn dead_parameter_fails_parameter_gradients_and_warns_on_the_estimate() {
    let b = assert_fails_on(
        "dead-parameter",
        Check::ParameterGradients,
        "no gradient reached 1 of 2 trainable parameter(s): `unused` [64]",
        &[
            Check::Metadata,
            Check::Create,
            Check::ShapeDtypeDevice,
            Check::TrainEvalFlag,
            Check::HostIsolation,
            Check::ChannelsLast,
            Check::FiniteOutputs,
            Check::Determinism,
            Check::DeviceMove,
            Check::UnknownOptions,
            Check::NoPanic,
        ],
    );
    assert_eq!(b.failed().count(), 1);
    // Declares 2, has 1 + 64: a warning that states the factor, not a failure.
    let estimate = b.check(Check::ParamEstimate).unwrap();
    assert_eq!(estimate.status, Status::Warn);
    assert!(estimate.reason.contains("65 actual vs 2 declared (factor 32.50"), "{}", estimate.reason);
}

#[test]
fn nondeterministic_fails_determinism() {
    assert_fails_on(
        "nondeterministic",
        Check::Determinism,
        "the same input twice gave different outputs",
        &[
            Check::Metadata,
            Check::Create,
            Check::ShapeDtypeDevice,
            Check::TrainEvalFlag,
            Check::ParameterGradients,
            Check::FiniteOutputs,
            Check::UnknownOptions,
            Check::NoPanic,
        ],
    );
}

#[test]
fn eval_updates_buffer_fails_train_eval_flag() {
    assert_fails_on(
        "eval-updates-buffer",
        Check::TrainEvalFlag,
        "forward(train=false) changed calls: eval mode must not update state",
        &[
            Check::Metadata,
            Check::Create,
            Check::ShapeDtypeDevice,
            Check::ParameterGradients,
            Check::HostIsolation,
            Check::ChannelsLast,
            Check::FiniteOutputs,
            Check::Determinism,
            Check::UnknownOptions,
            Check::NoPanic,
        ],
    );
}

#[test]
fn the_whole_broken_library_fails_every_blueprint() {
    let report = suite("esper-fixture-broken", None);
    assert!(!report.passed);
    assert_eq!(report.blueprints.len(), 9);
    assert!(report.blueprints.iter().all(|b| !b.passed), "{}", report.render());
    assert_eq!(report.check(Check::Handshake).unwrap().status, Status::Pass);
}

#[test]
fn the_isolation_check_catches_a_leak() {
    // The real isolation layer passes; feeding the seed the host tensor itself (no
    // detach) lets gradient into the host, and the check must say so.
    let mut registry = BlueprintRegistry::new();
    registry.load(&plugin_lib("esper-norm")).unwrap();
    let subject = Subject::new(&registry, "norm").unwrap();
    let isolated = host_isolation_with(&subject, &|h| seed_input(h, true));
    assert_eq!(isolated.status, Status::Pass, "{}", isolated.reason);
    let leaky = host_isolation_with(&subject, &|h| seed_input(h, false));
    assert_eq!(leaky.status, Status::Fail, "{}", leaky.reason);
    assert!(leaky.reason.contains("gradient leaked through the seed into the host"), "{}", leaky.reason);
    // run_blueprint on the same subject (a CPU -> CPU move) passes.
    assert!(run_blueprint(&subject, Device::Cpu).passed);
}

#[test]
fn libraries_that_do_not_load_fail_the_handshake() {
    let wrong = suite("esper-fixture-wrong-version", None);
    assert!(!wrong.passed && wrong.blueprints.is_empty() && wrong.handshake.is_none());
    let h = wrong.check(Check::Handshake).unwrap();
    assert_eq!(h.status, Status::Fail);
    assert!(h.reason.contains("libtorch: plugin built with 2.10.0, runtime has 2.11.0"), "{}", h.reason);
    assert_eq!(wrong.check(Check::Blueprints).unwrap().status, Status::Skip);

    let not_plugin = suite("esper-fixture-not-a-plugin", None);
    let h = not_plugin.check(Check::Handshake).unwrap();
    assert_eq!(h.status, Status::Fail);
    assert!(h.reason.contains("is not an Esper plugin"), "{}", h.reason);
}

#[test]
fn an_unknown_blueprint_fails_the_blueprints_check() {
    let report = suite("esper-norm", Some("attention"));
    assert!(!report.passed && report.blueprints.is_empty());
    let b = report.check(Check::Blueprints).unwrap();
    assert_eq!(b.status, Status::Fail);
    assert!(b.reason.contains("unknown blueprint `attention`; available: cnn:norm"), "{}", b.reason);
}

#[test]
fn esper_conformance_passes_norm_with_exit_status_zero() {
    let lib = plugin_lib("esper-norm");
    let out = esper().arg("conformance").arg(&lib).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("blueprint cnn:norm: PASS"), "{stdout}");
    assert!(stdout.contains("pass  no_panic"), "{stdout}");
    assert!(stdout.lines().last().unwrap_or_default().starts_with("PASS: 1 blueprint(s)"), "{stdout}");

    // Each check is printed on stderr as it finishes (from the blueprint's own process).
    let stderr = String::from_utf8_lossy(&out.stderr);
    for check in Check::library().chain(Check::blueprint()) {
        let scope = if Check::library().any(|c| c == check) { "(library)" } else { "cnn:norm" };
        let line = stderr.lines().find(|l| l.starts_with("conformance: ") && l.contains(&format!(" {check} ")));
        assert!(line.is_some_and(|l| l.contains(scope) && l.contains(" pass ")), "{check}:\n{stderr}");
    }

    let out = esper().args(["conformance", "--json"]).arg(&lib).output().unwrap();
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON on stdout");
    assert_eq!(json["passed"], true);
    assert_eq!(json["plugin"], lib.display().to_string());
    assert_eq!(json["handshake"]["plugin_name"], "esper-norm");
    assert_eq!(json["summary"]["fail"], 0);
    let library_checks: Vec<&str> =
        json["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(
        library_checks,
        ["handshake", "blueprints", "controllers"],
        "a blueprint library reports no controller (a skip)"
    );
    let blueprint = &json["blueprints"][0];
    assert_eq!(blueprint["name"], "cnn:norm");
    assert_eq!(blueprint["passed"], true);
    let checks = blueprint["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["check"].as_str().unwrap()).collect();
    let expected: Vec<&str> = Check::blueprint().map(|c| c.name()).collect();
    assert_eq!(names, expected);
    for c in checks {
        assert_eq!(c["status"], "pass", "{c}");
        assert!(c["reason"].as_str().is_some_and(|r| !r.is_empty()) && c["requires"].is_string(), "{c}");
    }
}

#[test]
fn esper_conformance_fails_a_broken_blueprint_with_a_non_zero_exit() {
    let lib = plugin_lib("esper-fixture-broken");
    let out = esper().args(["conformance", "--blueprint", "emit-nan", "--json"]).arg(&lib).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout, even on failure");
    assert_eq!(json["passed"], false);
    assert_eq!(json["blueprints"].as_array().unwrap().len(), 1);
    let finite = json["blueprints"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "finite_outputs")
        .expect("finite_outputs");
    assert_eq!(finite["status"], "fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not conformant"));

    // The readable report names the failing check; an unknown blueprint fails too.
    let out = esper().args(["conformance", "--blueprint", "ignore-options"]).arg(&lib).output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL  unknown_options"), "{stdout}");
    let out = esper().args(["conformance", "--blueprint", "attention"]).arg(&lib).output().unwrap();
    assert!(!out.status.success());
}

/// Runs `esper ARGS`, noting when each stderr line arrived: (exit status, stdout, stderr
/// lines with their time since the start, time to the end).
fn run_timed(
    args: &[&str],
    lib: &std::path::Path,
) -> (std::process::ExitStatus, String, Vec<(Duration, String)>, Duration) {
    let start = Instant::now();
    let mut child =
        esper().args(args).arg(lib).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start esper");
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).map(|l| (start.elapsed(), l)).collect::<Vec<_>>()
    });
    let out = child.wait_with_output().unwrap();
    let end = start.elapsed();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), lines.join().unwrap(), end)
}

fn check_of<'a>(json: &'a Value, blueprint: &str, check: &str) -> &'a Value {
    let b = json["blueprints"].as_array().unwrap().iter().find(|b| b["name"] == blueprint).expect(blueprint);
    b["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("{blueprint} {check}"))
}

#[test]
fn esper_conformance_kills_a_hang_and_caps_a_hog_each_in_its_own_process() {
    let lib = plugin_lib("esper-fixture-hostile");
    let args = ["conformance", "--json", "--timeout-s", "5", "--memory-limit-gib", "2"];
    let (status, stdout, stderr, end) = run_timed(&args, &lib);
    let shown: String = stderr.iter().map(|(t, l)| format!("{:>6.2}s {l}\n", t.as_secs_f64())).collect();
    assert!(status.code() == Some(1) && status.signal().is_none(), "{status:?}\n{shown}");
    // `sleepy` sleeps 30 s per train-mode forward from the fourth on, many times over.
    assert!(end < Duration::from_secs(25), "the hang was not cut at 5 s: {end:?}\n{shown}");
    let json: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(json["blueprints"].as_array().unwrap().len(), 2, "both blueprints ran: {json:#}");

    let time = check_of(&json, "cnn:sleepy", "time_limit");
    let reason = time["reason"].as_str().unwrap();
    assert_eq!(time["status"], "fail", "{time}");
    assert!(reason.contains("`cnn:sleepy`") && reason.contains("time limit of 5 s"), "{reason}");
    assert_eq!(check_of(&json, "cnn:sleepy", "create")["status"], "pass");
    assert_eq!(check_of(&json, "cnn:sleepy", "no_panic")["status"], "skip");

    let memory = check_of(&json, "cnn:hog", "memory_limit");
    let reason = memory["reason"].as_str().unwrap();
    assert_eq!(memory["status"], "fail", "{memory}");
    assert!(reason.contains("`cnn:hog`") && reason.contains("memory cap of 2 GiB"), "{reason}");
    assert!(reason.contains("can't allocate memory"), "libtorch's refusal, under the cap: {reason}");
    assert_eq!(check_of(&json, "cnn:hog", "no_panic")["status"], "pass", "hog's process ran to its end");

    // Each check was printed as it finished: sleepy's `create` long before the end.
    let create = stderr.iter().find(|(_, l)| l.contains("cnn:sleepy") && l.contains(" create "));
    let (at, _) = create.unwrap_or_else(|| panic!("no progress line for sleepy's create:\n{shown}"));
    assert!(end.saturating_sub(*at) >= Duration::from_secs(1), "printed only at the end ({at:?} of {end:?}):\n{shown}");
}

/// The leaky-attention fixture's blueprints and the checks each fails: non-causal
/// attention (or a gradient that looks ahead) fails `causal` and nothing else; the same
/// attention with the mask passes.
const ATTENTION: &str = "esper-fixture-leaky-attention";
const ATTENTION_FAILS_ON: [(&str, &[&str]); 3] = [
    ("transformer:leaky-attention", &["causal"]),
    ("transformer:causal-attention", &[]),
    ("transformer:leaky-gradient", &["causal"]),
];

#[test]
fn leaky_attention_fails_only_causal_and_causal_attention_passes_on_transformer_inputs() {
    let report = suite(ATTENTION, None);
    assert_eq!(report.blueprints.len(), 3, "{}", report.render());
    for (name, fails) in ATTENTION_FAILS_ON {
        let b = report.blueprint(name).unwrap_or_else(|| panic!("no {name}:\n{}", report.render()));
        let ran: Vec<Check> = b.checks.iter().map(|c| c.check).collect();
        assert_eq!(ran, Check::blueprint().collect::<Vec<_>>(), "{name}: every check, in order");
        let failed: Vec<&str> = b.failed().map(|c| c.check.name()).collect();
        assert_eq!(failed, fails, "{name}:\n{}", report.render());
        for c in b.checks.iter().filter(|c| !fails.contains(&c.check.name())) {
            assert_eq!(c.status, Status::Pass, "{name} {}: {}", c.check, c.reason);
        }
        // Every check fed it (B, T, C) features: the fixture refuses any other rank.
        let shapes = b.check(Check::ShapeDtypeDevice).unwrap();
        assert!(shapes.reason.contains("(B, T, C)") && shapes.reason.contains("sequence lengths 16, 1, 2, 7, 64"));
        assert!(shapes.reason.contains("48") && shapes.reason.contains("batch 1, 3"), "{}", shapes.reason);
        assert!(b.check(Check::ChannelsLast).unwrap().reason.contains("time-major"));
    }
    let leak = report.blueprint("leaky-attention").unwrap().check(Check::Causal).unwrap();
    assert!(
        leak.reason.contains("changing the features at positions > 0 changed the output at positions <= 0")
            && leak.reason.contains("looks ahead"),
        "{}",
        leak.reason
    );
    let kept = report.blueprint("causal-attention").unwrap().check(Check::Causal).unwrap();
    assert!(kept.reason.contains("bit-identical") && kept.reason.contains("zero gradient"), "{}", kept.reason);

    // A cnn blueprint has no positions: the check does not apply, and says so.
    let norm = suite("esper-norm", None);
    let causal = norm.blueprint("norm").unwrap().check(Check::Causal).unwrap();
    assert_eq!(causal.status, Status::Pass);
    assert!(causal.reason.starts_with("not applicable: topology `cnn`"), "{}", causal.reason);
}

#[test]
fn the_causal_check_catches_a_leak_in_backward_alone() {
    // Its outputs are causal-attention's bit for bit; only the gradient looks ahead.
    let mut registry = BlueprintRegistry::new();
    registry.load(&plugin_lib(ATTENTION)).unwrap();
    let subject = Subject::new(&registry, "leaky-gradient").unwrap();
    assert_eq!(subject.topology(), esper_conformance::Topology::Transformer);
    let report = run_blueprint(&subject, Device::Cpu);
    let failed: Vec<Check> = report.failed().map(|c| c.check).collect();
    assert_eq!(failed, [Check::Causal], "{report:#?}");
    let reason = &report.check(Check::Causal).unwrap().reason;
    assert!(
        reason.contains("train mode") && reason.contains("positions <= 0 send gradient to the inputs at positions > 0"),
        "{reason}"
    );
}

#[test]
fn esper_conformance_fails_leaky_attention_on_causal_and_passes_causal_attention() {
    let lib = plugin_lib(ATTENTION);
    for (name, fails) in ATTENTION_FAILS_ON {
        let out = esper().arg("conformance").arg(&lib).args(["--blueprint", name, "--json"]).output().unwrap();
        let code = if fails.is_empty() { 0 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{name}:\n{}", String::from_utf8_lossy(&out.stderr));
        let json: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        assert_eq!(json["passed"], fails.is_empty(), "{name}: {json:#}");
        let failed: Vec<&str> = json["blueprints"][0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "fail")
            .filter_map(|c| c["check"].as_str())
            .collect();
        assert_eq!(failed, fails, "{name}: {json:#}");
        assert_eq!(check_of(&json, name, "causal")["status"], if fails.is_empty() { "pass" } else { "fail" });
    }
    let out = esper().arg("conformance").arg(&lib).args(["--blueprint", "leaky-attention"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  causal") && stdout.contains("transformer:leaky-attention causal:"), "{stdout}");
}
