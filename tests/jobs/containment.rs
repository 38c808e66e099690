//! Containment: every misbehaving fixture (tests/fixtures/misbehaving) runs in a real
//! `esper run` to the last epoch with its seed pruned and the reason recorded; the host
//! trains exactly as it would have without a seed that breaks the contract in TRAINING;
//! the conformance suite fails each fixture on its named check; the germination probe
//! refuses a seed that misbehaves from its first call.

use esper_conformance::{run_suite, Status, SuiteOptions};
use esper_runtime::{
    config::RunConfig,
    host::CnnHostConfig,
    lifecycle::{LifecycleEvent, SeedStage},
    model::{ModelError, MorphogeneticModel, SlotConfig},
    plugin::BlueprintRegistry,
    train::{
        attribution::{Evidence, HostFault, HostFaultSite},
        germinate, Silent, Trainer,
    },
};
use esper_tests::{esper, one_job_at_a_time, plugin_lib, temp_dir, SmallJob};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::Device;

const FIXTURE: &str = "esper-fixture-misbehaving";

/// Each misbehaving blueprint of the fixture and the one conformance check it fails.
const FAILS_ON: [(&str, &str); 7] = [
    ("inplace-input", "input_untouched"),
    ("wrong-dtype", "shape_dtype_device"),
    ("broadcast-output", "shape_dtype_device"),
    ("nan-after-n-steps", "finite_outputs"),
    ("inf-output", "finite_outputs"),
    ("panic-in-drop", "no_panic"),
    ("backward-error", "device_move"),
];

/// A small job: the fixture `blueprint` germinated into r0c1 before epoch 1 (it behaves
/// through the probe and its first train steps, then misbehaves), the controller off.
fn config_text(blueprint: Option<&str>, memory_format: &str, epochs: u32) -> String {
    let plugin = plugin_lib(FIXTURE);
    SmallJob { plugin: &plugin, epochs, batch_size: 32, memory_format, blueprint, sections: "" }.text()
}

/// Runs the binary on `config` and returns (events.jsonl, report.json) after checking
/// that it finished every epoch with exit code 0.
fn run_binary(dir: &Path, config: &str, epochs: u32) -> (String, Value) {
    let path = dir.join("run.toml");
    std::fs::write(&path, config).unwrap();
    let out = esper().arg("run").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "esper run must finish (exit 0, no panic, no signal):\n{stderr}");
    let events = std::fs::read_to_string(dir.join("out/events.jsonl")).unwrap();
    let report: Value = serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap();
    let epochs_run = report["epochs"].as_array().map_or(0, Vec::len);
    assert_eq!(epochs_run, epochs as usize, "every epoch ran: {report}");
    (events, report)
}

fn assert_pruned_for(events: &str, report: &Value, code: &str) {
    let pruned = events.lines().any(|l| l.contains("\"pruned\"") && l.contains(code));
    assert!(pruned, "events.jsonl has no `pruned` event with reason `{code}`:\n{events}");
    let text = report.to_string();
    assert!(text.contains(&format!("pruned ({code}")), "report.json names the prune reason `{code}`: {text}");
}

#[test]
fn each_misbehaving_seed_is_pruned_and_the_run_finishes() {
    for (blueprint, code, memory_format) in [
        ("inplace-input", "input_written", "contiguous"),
        ("inplace-input", "input_written", "channels_last"),
        ("wrong-dtype", "wrong_dtype", "channels_last"),
        ("broadcast-output", "wrong_shape", "channels_last"),
        ("nan-after-n-steps", "non_finite", "channels_last"),
        ("inf-output", "non_finite", "channels_last"),
    ] {
        let dir = temp_dir(&format!("contain-{blueprint}-{memory_format}"));
        let (events, report) = run_binary(&dir, &config_text(Some(blueprint), memory_format, 2), 2);
        assert_pruned_for(&events, &report, code);
    }
}

#[test]
fn a_panic_in_a_seeds_drop_is_contained_and_reported() {
    // The controller prunes the seed once it blends (any contribution is below 1000),
    // which drops it: the panic in its Drop is caught by the ABI and reported.
    let dir = temp_dir("contain-panic-in-drop");
    let text = config_text(Some("panic-in-drop"), "channels_last", 4).replace(
        "[lifecycle.controller]\nenabled = false",
        "[lifecycle.gates]\nmode = \"permissive\"\nmin_blending_epochs = 1\nmin_gradient_health_for_blending = 0.0\n\n\
         [lifecycle.controller]\nenabled = true\nblueprint = \"panic-in-drop\"\nprune_below_contribution = 1000.0",
    );
    let (events, report) = run_binary(&dir, &text, 4);
    assert!(events.contains("release_failed") && events.contains("deliberate panic in the seed's Drop"), "{events}");
    let text = report.to_string();
    assert!(text.contains("dropping seed failed (contained)"), "{text}");
}

fn host_params_after(dir: &Path, blueprint: Option<&str>) -> (Trainer, Vec<(String, tch::Tensor)>) {
    let path = dir.join("run.toml");
    std::fs::write(&path, config_text(blueprint, "contiguous", 2)).unwrap();
    let mut trainer = Trainer::new(RunConfig::load(&path).unwrap()).unwrap();
    trainer.run(&mut Silent).unwrap();
    let mut vars: Vec<(String, tch::Tensor)> = trainer.model().host_vars().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    (trainer, vars)
}

#[test]
fn an_in_place_write_in_training_leaves_the_host_exactly_as_without_the_seed() {
    let _rng = one_job_at_a_time();
    let (with_seed, host_a) = host_params_after(&temp_dir("bitwise-with"), Some("inplace-input"));
    let (_, host_b) = host_params_after(&temp_dir("bitwise-without"), None);
    let events: Vec<String> = with_seed.history().iter().flat_map(|r| &r.events).map(ToString::to_string).collect();
    assert!(events.iter().any(|e| e.contains("pruned (input_written")), "{events:?}");
    assert_eq!(host_a.len(), host_b.len());
    for ((name, a), (_, b)) in host_a.iter().zip(&host_b) {
        assert!(a.equal(b), "host tensor `{name}` differs from the run without the seed");
    }
}

#[test]
fn a_non_finite_seed_is_rolled_back_and_the_host_stays_finite() {
    let _rng = one_job_at_a_time();
    let dir = temp_dir("rollback-nan");
    let path = dir.join("run.toml");
    // Health read every 4 steps: the seed turns NaN at its fourth train-mode forward (the
    // probe is the first), the third step of its first TRAINING epoch, which is not a
    // read; the read of the next step finds it and rolls both back.
    let text =
        config_text(Some("nan-after-n-steps"), "channels_last", 2).replace("gradient_every = 2", "gradient_every = 4");
    std::fs::write(&path, text).unwrap();
    let mut trainer = Trainer::new(RunConfig::load(&path).unwrap()).unwrap();
    trainer.run(&mut Silent).unwrap();
    for (name, t) in trainer.model().host_vars().variables() {
        assert!(bool::try_from(t.isfinite().all()).unwrap(), "host tensor `{name}` is not finite");
    }
    // The steps the rollback discarded do not count in their epoch's loss either.
    for r in trainer.history() {
        assert!(r.train_loss.is_finite() && r.val_loss.is_finite(), "{r:?}");
    }
    assert!(trainer.history().iter().flat_map(|r| &r.events).any(|e| matches!(e, LifecycleEvent::Pruned { .. })));
}

#[test]
fn conformance_fails_each_fixture_on_its_named_check() {
    let _rng = one_job_at_a_time();
    let lib = plugin_lib(FIXTURE);
    for (blueprint, check) in FAILS_ON {
        let report = run_suite(&lib, &SuiteOptions { blueprint: Some(blueprint.into()), move_to: Some(Device::Cpu) });
        assert!(!report.passed, "{blueprint} must not pass");
        let failed: Vec<&str> =
            report.blueprints[0].checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.check.name()).collect();
        assert_eq!(failed, vec![check], "{blueprint}: failed checks\n{}", report.render());
    }
}

#[test]
fn the_probe_refuses_a_seed_that_misbehaves_from_its_first_call() {
    let _rng = one_job_at_a_time();
    let mut registry = BlueprintRegistry::new();
    registry.load(&plugin_lib(FIXTURE)).unwrap();
    let host = CnnHostConfig { base_channels: 8, ..Default::default() };
    for (blueprint, code) in
        [("inplace-input", "wrote its input"), ("wrong-dtype", "dtype"), ("broadcast-output", "no broadcasting")]
    {
        let mut model = MorphogeneticModel::new(host.clone(), &["r0c1"], SlotConfig::default(), Device::Cpu).unwrap();
        let err = germinate(&mut model, &registry, "r0c1", blueprint, "s1", &json!({"after": 0})).unwrap_err();
        assert!(matches!(err, ModelError::ProbeRefused { .. }), "{blueprint}: {err}");
        assert!(err.to_string().contains(code), "{blueprint}: {err}");
        assert!(model.slot("r0c1").unwrap().seed().is_none(), "the slot is left as it was");
    }
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn a_seed_answering_on_the_wrong_device_is_pruned_on_cuda() {
    let _rng = one_job_at_a_time();
    assert!(esper_runtime::device::cuda_available(), "this test needs a CUDA device");
    let dir = temp_dir("contain-wrong-device");
    let text = config_text(Some("wrong-device"), "channels_last", 2).replace("device = \"cpu\"", "device = \"cuda\"");
    let (events, report) = run_binary(&dir, &text, 2);
    assert_pruned_for(&events, &report, "wrong_device");
    let report = run_suite(
        &plugin_lib(FIXTURE),
        &SuiteOptions { blueprint: Some("wrong-device".into()), move_to: Some(Device::Cuda(0)) },
    );
    let failed: Vec<&str> =
        report.blueprints[0].checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.check.name()).collect();
    assert_eq!(failed, vec!["device_move"], "{}", report.render());
}

#[test]
fn esper_conformance_fails_each_fixture_on_its_named_check_and_passes_norm() {
    let lib = plugin_lib(FIXTURE);
    for (blueprint, check) in FAILS_ON {
        let out = esper().arg("conformance").arg(&lib).args(["--blueprint", blueprint, "--json"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{blueprint}: a failing suite exits 1");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let failed: Vec<&str> = report["blueprints"][0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "fail")
            .filter_map(|c| c["check"].as_str())
            .collect();
        assert_eq!(failed, vec![check], "{blueprint}: {report}");
    }
    let out = esper().arg("conformance").arg(plugin_lib("esper-norm")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "the shipped norm plugin passes:\n{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_failing_backward_is_attributed_to_its_seed_among_several() {
    // Two seeds run: `backward-error` at r0c1 breaks backward after a few steps, `norm`
    // at r1c1 is healthy. The failing backward is blamed on the seed whose forward alone
    // makes it fail; only that seed is pruned.
    let dir = temp_dir("contain-backward-error");
    let text = config_text(Some("backward-error"), "channels_last", 2)
        .replace("slots = [\"r0c1\"]", "slots = [\"r0c1\", \"r1c1\"]")
        .replace(
            "[output]",
            &format!(
                "[[plugins]]\npath = \"{}\"\n\n[[lifecycle.schedule]]\nepoch = 1\nslot = \"r1c1\"\nblueprint = \"norm\"\n\n\
                 [output]",
                plugin_lib("esper-norm").display()
            ),
        );
    let (events, report) = run_binary(&dir, &text, 2);
    assert_pruned_for(&events, &report, "backward_error");
    let slots = report["final_slots"].as_array().unwrap();
    let stage = |id: &str| slots.iter().find(|s| s["slot"] == id).map(|s| s["stage"].to_string()).unwrap();
    assert!(stage("r0c1").contains("PRUNED") || stage("r0c1").contains("EMBARGOED"), "{}", stage("r0c1"));
    assert!(stage("r1c1").contains("TRAINING"), "the healthy seed runs on: {}", stage("r1c1"));
}

/// A small job with `blueprint` of `plugin` scheduled into r0c1 (GERMINATED in epoch 1,
/// TRAINING in epoch 2, BLENDING from epoch 3), output in `dir/out`.
fn lenient_job(dir: &Path, plugin: &Path, blueprint: Option<&str>, epochs: u32) -> PathBuf {
    let sections = "[slot]\nblend_tempo = 2\n\n[lifecycle.gates]\nmode = \"permissive\"\nmin_blending_epochs = 1\n\
                    min_gradient_health_for_blending = 0.0\n";
    let job = SmallJob { plugin, epochs, batch_size: 32, memory_format: "channels_last", blueprint, sections };
    let path = dir.join("run.toml");
    std::fs::write(&path, job.text()).unwrap();
    path
}

/// [`lenient_job`] with a `norm` seed (none with `seed = false`).
fn norm_job(dir: &Path, seed: bool, epochs: u32) -> PathBuf {
    lenient_job(dir, &plugin_lib("esper-norm"), seed.then_some("norm"), epochs)
}

/// Makes the first convolution weight of a checkpoint's host NaN (as a damaged file
/// would); returns its name.
fn poison_checkpoint(ckpt: &Path) -> String {
    let file = ckpt.join("host.safetensors");
    let mut tensors = tch::Tensor::read_safetensors(&file).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let (name, t) = tensors.iter().find(|(n, t)| n.ends_with("weight") && t.dim() == 4).expect("a conv weight");
    let _ = t.shallow_clone().fill_(f64::NAN);
    let name = name.clone();
    tch::Tensor::write_safetensors(&tensors, &file).unwrap();
    name
}

#[test]
fn nan_host_weights_in_a_resumed_checkpoint_end_the_run_as_the_hosts_fault() {
    for seed in [true, false] {
        let dir = temp_dir(&format!("host-fault-checkpoint-{seed}"));
        let first = esper().arg("run").arg(norm_job(&dir, seed, 1)).output().unwrap();
        assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
        let ckpt = dir.join("out/checkpoints/epoch-0001");
        let tensor = poison_checkpoint(&ckpt);
        let out = esper().args(["run", "--epochs", "2", "--resume"]).arg(dir.join("out")).output().unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "seed {seed}: a host fault ends the run with exit 1:\n{e}");
        let line = e.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
        assert!(line.contains("epoch 2: training failed on the host's side"), "{line}");
        assert!(line.contains("host fault: the host's own training loss is not finite"), "{line}");
        assert!(line.contains(&format!("non-finite host weights (`host.{tensor}`")), "{line}");
        let evidence = if seed { "the seeds running are in TRAINING" } else { "no seed ran in those steps" };
        assert!(line.contains(evidence), "{line}");
        // The seed is not blamed, and the complete checkpoint is kept as it was.
        let events = std::fs::read_to_string(dir.join("out/events.jsonl")).unwrap();
        assert!(!events.contains("\"seed_fault\"") && !events.contains("\"pruned\""), "{events}");
        assert!(ckpt.join("COMPLETE").is_file() && !dir.join("out/checkpoints/epoch-0002").exists());
        let latest = std::fs::read_to_string(dir.join("out/checkpoints/latest")).unwrap();
        assert_eq!(latest.trim(), "epoch-0001");
    }
}

/// An observer that fills a host tensor (the first convolution weight, or the first
/// named `*tensor`) with NaN after the given batches of the given epoch (or, with batch
/// `None`, as that epoch starts, before its first good state).
struct Poison {
    weight: tch::Tensor,
    epoch: u32,
    after: Vec<Option<usize>>,
    current: u32,
    batches: usize,
}

impl Poison {
    fn new(trainer: &Trainer, epoch: u32, after: Vec<Option<usize>>) -> Self {
        Self::named(trainer, "weight", epoch, after)
    }

    fn named(trainer: &Trainer, tensor: &str, epoch: u32, after: Vec<Option<usize>>) -> Self {
        let vars = trainer.model().host_vars().variables();
        let wanted = |n: &str, t: &tch::Tensor| n.ends_with(tensor) && (tensor != "weight" || t.dim() == 4);
        let weight = vars.iter().filter(|(n, t)| wanted(n, t)).min_by_key(|(n, _)| (*n).clone());
        Self { weight: weight.unwrap().1.shallow_clone(), epoch, after, current: 0, batches: 0 }
    }

    fn poison_if(&mut self, at: Option<usize>) {
        if self.current == self.epoch && self.after.contains(&at) {
            tch::no_grad(|| {
                let _ = self.weight.shallow_clone().fill_(f64::NAN);
            });
        }
    }
}

impl esper_runtime::train::Observer for Poison {
    fn epoch_started(&mut self, epoch: u32, _batches: usize) {
        (self.current, self.batches) = (epoch, 0);
        self.poison_if(None);
    }
    fn batch_done(&mut self) {
        self.batches += 1;
        self.poison_if(Some(self.batches));
    }
}

fn trainer(dir: &Path, seed: bool, epochs: u32) -> Trainer {
    Trainer::new(RunConfig::load(&norm_job(dir, seed, epochs)).unwrap()).unwrap()
}

fn events_of(trainer: &Trainer) -> Vec<String> {
    trainer.history().iter().flat_map(|r| &r.events).map(ToString::to_string).collect()
}

#[test]
fn a_host_fault_is_rolled_back_once_and_ends_the_run_when_it_recurs_in_the_epoch() {
    let _rng = one_job_at_a_time();
    // Health is read every 2 steps; after batch 3 the host's weights turn NaN (the good
    // state, taken at batch 3's read, is finite): the read after batch 5 finds the host's
    // loss non-finite with the seed in TRAINING. Rolled back, the run goes on.
    let mut once = trainer(&temp_dir("host-fault-once"), true, 2);
    let mut poison = Poison::new(&once, 2, vec![Some(3)]);
    once.run(&mut poison).expect("one host fault is rolled back and the run goes on");
    assert_eq!(once.history().len(), 2);
    assert!(once.history().iter().all(|r| r.train_loss.is_finite() && r.val_loss.is_finite()), "{:?}", once.history());
    assert!(!events_of(&once).iter().any(|e| e.contains("pruned") || e.contains("fault")), "{:?}", events_of(&once));
    let slot = once.model().slot("r0c1").unwrap();
    assert!(slot.seed().is_some() && slot.stage() == SeedStage::Blending, "the seed runs on: {:?}", slot.stage());
    // Poisoned again after the rollback, in the same epoch: the run ends, the seed kept.
    let mut twice = trainer(&temp_dir("host-fault-twice"), true, 2);
    let mut poison = Poison::new(&twice, 2, vec![Some(3), Some(5)]);
    let err = twice.run(&mut poison).unwrap_err();
    let fault = err.downcast_ref::<HostFault>().expect("a typed host fault");
    assert_eq!((fault.site, fault.evidence, fault.recurred), (HostFaultSite::Step, Evidence::SeedsOnlyTraining, true));
    let e = format!("{err:#}");
    assert!(e.starts_with("epoch 2: training failed on the host's side"), "{e}");
    assert!(e.contains("again after a rollback to the last good state") && e.contains("lr = 0.05"), "{e}");
    assert_eq!(twice.model().slot("r0c1").unwrap().stage(), SeedStage::Training, "not pruned for the host's fault");
}

#[test]
fn a_blending_seed_is_not_blamed_when_the_host_alone_is_not_finite_either() {
    let _rng = one_job_at_a_time();
    // Epoch 3 the seed blends into the host's stream. The host's weights are NaN from
    // the epoch's start (its good state): the seed's output is NaN too, but the host
    // alone is not finite on the same batch, so the host is at fault.
    let mut t = trainer(&temp_dir("host-fault-blending"), true, 3);
    let mut poison = Poison::new(&t, 3, vec![None]);
    let e = format!("{:#}", t.run(&mut poison).unwrap_err());
    assert_eq!(t.model().slot("r0c1").unwrap().stage(), SeedStage::Blending, "premise, and not pruned: {e}");
    assert!(e.contains("the host alone, seeds bypassed, is not finite on the same batch"), "{e}");
    assert!(e.contains("non-finite host weights"), "{e}");
    assert!(!events_of(&t).iter().any(|e| e.contains("pruned")), "{:?}", events_of(&t));
}

#[test]
fn a_seedless_run_whose_host_goes_non_finite_ends_instead_of_finishing_with_nan_losses() {
    let _rng = one_job_at_a_time();
    let mut t = trainer(&temp_dir("host-fault-seedless"), false, 2);
    let mut poison = Poison::new(&t, 1, vec![Some(2)]);
    let e = format!("{:#}", t.run(&mut poison).unwrap_err());
    assert!(e.starts_with("epoch 1: training failed on the host's side"), "{e}");
    // Judged in the state the epoch started from, which was finite: a divergence.
    assert!(e.contains("no seed ran in those steps") && e.contains("the loss diverged"), "{e}");
    assert!(t.history().is_empty(), "no epoch with a NaN loss was recorded");
}

#[test]
fn a_sleeping_seed_is_reported_while_it_sleeps_then_pruned_for_timeout_and_the_run_finishes() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    // `sleepy` sleeps 30 s in its fourth train-mode forward (the probe is the first):
    // the third step of its first TRAINING epoch, epoch 2. The limit is 2 s.
    let dir = temp_dir("watchdog-sleepy");
    let plugin = plugin_lib("esper-fixture-hostile");
    let job = SmallJob {
        plugin: &plugin,
        epochs: 2,
        batch_size: 32,
        memory_format: "contiguous",
        blueprint: Some("sleepy"),
        sections: "",
    };
    let text = job.text().replace("gradient_every = 2", "gradient_every = 2\nseed_timeout_s = 2");
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    let started = Instant::now();
    let mut child = esper().arg("run").arg(&path).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Each stderr line with the time it arrived.
    let lines: Vec<(Duration, String)> = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .map(|l| (started.elapsed(), l))
        .collect();
    let status = child.wait().unwrap();
    let ended = started.elapsed();
    let all: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    assert_eq!(status.code(), Some(0), "the run finishes:\n{all}");
    let (warned, line) = lines
        .iter()
        .find(|(_, l)| l.contains("WARN") && l.contains("is still in its forward"))
        .unwrap_or_else(|| panic!("no watchdog warning:\n{all}"));
    assert!(
        line.contains("r0c1") && line.contains("cnn:sleepy") && line.contains("libesper_fixture_hostile.so"),
        "{line}"
    );
    assert!(line.contains("seed_timeout_s"), "{line}");
    // Said while the 30 s call still ran: the run went on for most of the sleep after it.
    assert!(ended - *warned > Duration::from_secs(20), "warned at {warned:?}, the run ended at {ended:?}:\n{all}");
    // The event, as the watchdog saw it: about 2 s into the call.
    let events = std::fs::read_to_string(dir.join("out/events.jsonl")).unwrap();
    let overdue: Value = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["event"] == "seed_overdue")
        .unwrap_or_else(|| panic!("no seed_overdue event:\n{events}"));
    let record: Value = serde_json::from_str(overdue["fields"]["record"].as_str().unwrap()).unwrap();
    let seconds = record["seconds"].as_f64().unwrap();
    assert!((2.0..6.0).contains(&seconds), "reported {seconds} s into the call: {record}");
    assert_eq!(
        (record["slot"].as_str(), record["phase"].as_str(), record["limit_s"].as_f64()),
        (Some("r0c1"), Some("forward"), Some(2.0))
    );
    // When the call returned, the seed was pruned for it; the report has both.
    let report: Value = serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap();
    assert_pruned_for(&events, &report, "timeout");
    assert!(report.to_string().contains("is still in its forward after"), "{report}");
}

#[test]
fn a_seed_going_non_finite_while_it_blends_is_still_the_one_pruned() {
    let _rng = one_job_at_a_time();
    // Its 12th train-mode forward (the probe, 8 steps of epoch 2, then epoch 3's third
    // step) returns NaN while it blends into the host's stream: the host's loss is NaN
    // too, but the host alone, from the state rolled back to, is finite.
    let dir = temp_dir("nan-while-blending");
    let path = lenient_job(&dir, &plugin_lib(FIXTURE), Some("nan-after-n-steps"), 3);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "blueprint = \"nan-after-n-steps\"",
            "blueprint = \"nan-after-n-steps\"\noptions = { after = 11 }",
        ),
    )
    .unwrap();
    let mut t = Trainer::new(RunConfig::load(&path).unwrap()).unwrap();
    t.run(&mut Silent).expect("the run goes on");
    let events = events_of(&t);
    let third: Vec<String> = t.history()[2].events.iter().map(ToString::to_string).collect();
    assert!(third.iter().any(|e| e.contains("pruned (non_finite")), "pruned in epoch 3, while blending: {events:?}");
    assert!(t.history().iter().all(|r| r.train_loss.is_finite() && r.val_loss.is_finite()), "{:?}", t.history());
    for (name, p) in t.model().host_vars().variables() {
        assert!(bool::try_from(p.isfinite().all()).unwrap(), "host tensor `{name}` is not finite");
    }
}

#[test]
fn a_non_finite_validation_loss_that_the_host_alone_gives_ends_the_run_as_the_hosts_fault() {
    let _rng = one_job_at_a_time();
    // A NaN BatchNorm running variance: training (batch statistics) stays finite,
    // validation (running statistics) does not, with or without a seed in TRAINING.
    for seed in [false, true] {
        let mut t = trainer(&temp_dir(&format!("host-fault-validation-{seed}")), seed, 2);
        let mut poison = Poison::named(&t, "running_var", 2, vec![None]);
        let e = format!("{:#}", t.run(&mut poison).unwrap_err());
        assert!(e.starts_with("epoch 2: training failed on the host's side"), "{e}");
        assert!(e.contains("host fault: the host's own validation loss is not finite"), "{e}");
        assert!(e.contains("running_var`, 1 of the host's"), "{e}");
        let evidence = if seed { "the seeds running are in TRAINING" } else { "no seed's output was non-finite" };
        assert!(e.contains(evidence), "{e}");
        assert!(!events_of(&t).iter().any(|e| e.contains("pruned")), "{:?}", events_of(&t));
    }
}
