//! The training job through the config file, the `esper` binary and the library:
//! config errors, a short end-to-end run, resume equivalence, checkpoint safety and
//! the CIFAR-10 loader wiring.

use esper_runtime::{
    config::{sha256_hex, RunConfig},
    lifecycle::{LifecycleEvent, SeedStage},
    train::{report::EpochRecord, EpochStep, Observer, RunEnd, Silent, StopSignal, Trainer},
};
use esper_tests::{esper, one_job_at_a_time, plugin_lib, temp_dir, write_file, SmallJob};
use std::path::{Path, PathBuf};

/// A small, fast job: tiny synthetic data, a narrow host, a seed scheduled at epoch 1
/// and gates that let it through quickly.
/// A small job with a `norm` seed (from `plugin`) scheduled into r0c1 before epoch 1,
/// permissive gates that let it through quickly, and a 2-epoch alpha ramp.
fn small_config(dir: &Path, plugin: &Path, epochs: u32) -> PathBuf {
    let sections = "[slot]\nblend_tempo = 2\n\n[lifecycle.gates]\nmode = \"permissive\"\nmin_blending_epochs = 1\n\
                    min_gradient_health_for_blending = 0.0\n";
    let job =
        SmallJob { plugin, epochs, batch_size: 64, memory_format: "channels_last", blueprint: Some("norm"), sections };
    write(dir, &job.text())
}

fn write(dir: &Path, text: &str) -> PathBuf {
    write_file(dir, "run.toml", text)
}

#[test]
fn config_errors_name_file_line_and_cause() {
    let dir = temp_dir("config-errors");
    let norm = plugin_lib("esper-norm");

    let path = write(&dir, "[training]\nepochs = 2\nlearning_rate = 0.1\n");
    let e = RunConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains(&format!("config {}", path.display())), "{e}");
    assert!(e.contains("line 3, column 1") && e.contains("unknown field `learning_rate`"), "{e}");

    let path = write(&dir, "[training]\nbatch_size = \"large\"\n");
    let e = RunConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("invalid type: string \"large\""), "{e}");

    let path = write(&dir, "[[plugins]]\npath = \"nowhere/libmissing.so\"\n");
    let e = RunConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("plugin") && e.contains("nowhere/libmissing.so does not exist"), "{e}");

    let path = write(&dir, &format!("[[plugins]]\npath = \"{}\"\nsha256 = \"{}\"\n", norm.display(), "ab".repeat(32)));
    let e = RunConfig::load(&path).unwrap_err().to_string();
    let actual = sha256_hex(&norm).unwrap();
    assert!(e.contains("sha256 mismatch") && e.contains(&"ab".repeat(32)) && e.contains(&actual), "{e}");

    // The right sha256 passes, in any case.
    let path =
        write(&dir, &format!("[[plugins]]\npath = \"{}\"\nsha256 = \"{}\"\n", norm.display(), actual.to_uppercase()));
    RunConfig::load(&path).unwrap();

    // The CLI says the same and fails.
    let path = write(&dir, "[host]\nblocks = 3\nwidth = 2\n");
    let out = esper().args(["config", "check"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `width`") && stderr.contains("line 3"), "{stderr}");
}

#[test]
fn config_check_accepts_a_good_config_and_refuses_unknown_slots_and_blueprints() {
    let dir = temp_dir("config-check");
    let path = small_config(&dir, &plugin_lib("esper-norm"), 2);
    let out = esper().args(["config", "check"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok (2 epochs, slots r0c1"));

    let text = std::fs::read_to_string(&path).unwrap();
    write(&dir, &text.replace("slots = [\"r0c1\"]", "slots = [\"r0c1\", \"r5c0\"]"));
    let out = esper().args(["config", "check"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown injection point `r5c0`"));

    write(&dir, &text.replace("blueprint = \"norm\"", "blueprint = \"attention\""));
    let out = esper().args(["config", "check"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown blueprint `attention`; available: cnn:norm"));
}

#[test]
fn a_short_job_runs_the_lifecycle_with_telemetry_checkpoints_and_report() {
    let dir = temp_dir("short-job");
    let path = small_config(&dir, &plugin_lib("esper-norm"), 6);
    let out = esper().arg("run").arg(&path).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Output is not a terminal here: no progress bar is drawn.
    assert!(!stderr.contains("batches") && !stderr.contains('░'), "{stderr}");
    // The table has a row per epoch and the lifecycle went through its stages.
    assert!(stdout.contains("epoch train_loss"), "{stdout}");
    for stage in ["TRAINING", "BLENDING", "HOLDING"] {
        assert!(stdout.contains(stage), "stage {stage} missing:\n{stdout}");
    }
    let out_dir = dir.join("out");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["epochs"].as_array().unwrap().len(), 6);
    let final_stage = report["final_slots"][0]["stage"].as_str().unwrap();
    assert!(["FOSSILIZED", "PRUNED", "EMBARGOED", "HOLDING"].contains(&final_stage), "{final_stage}");
    let png = std::fs::read(out_dir.join("report.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // Telemetry: one JSON object per line, with the lifecycle events.
    let events = std::fs::read_to_string(out_dir.join("events.jsonl")).unwrap();
    let kinds: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("each line is JSON"))
        .filter_map(|v| v["fields"]["event"].as_str().map(String::from))
        .collect();
    for kind in ["germinated", "gate_evaluated", "stage_changed", "epoch"] {
        assert!(kinds.iter().any(|k| k == kind), "no `{kind}` event in {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| *k == "epoch").count(), 6);
    // Each lifecycle event is emitted once, and it is the one the report records.
    let recorded: Vec<&serde_json::Value> =
        report["epochs"].as_array().unwrap().iter().flat_map(|e| e["events"].as_array().unwrap()).collect();
    let changes = recorded.iter().filter(|e| e["event"] == "stage_changed").count();
    assert!(changes >= 3, "{recorded:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "stage_changed").count(), changes, "{events}");
    // A checkpoint for the last epoch.
    let latest = std::fs::read_to_string(out_dir.join("checkpoints/latest")).unwrap();
    assert_eq!(latest, "epoch-0006");
}

#[test]
fn a_failed_germination_shows_in_events_report_and_table_with_its_slot() {
    // `shape-change` is created fine (so the preflight lets it through) and refused by
    // the germination probe: the slot stays DORMANT and every record says why.
    let dir = temp_dir("germination-failed");
    let broken = plugin_lib("esper-fixture-broken");
    let job = SmallJob {
        plugin: &broken,
        epochs: 2,
        batch_size: 64,
        memory_format: "channels_last",
        blueprint: Some("shape-change"),
        sections: "",
    };
    let out = esper().arg("run").arg(write(&dir, &job.text())).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let expected = "r0c1: germination of cnn:shape-change failed, the slot stays DORMANT: slot `r0c1`: blueprint \
                    `cnn:shape-change` failed the germination probe";
    // events.jsonl: one line, with the slot, naming blueprint, library and cause.
    let events = std::fs::read_to_string(dir.join("out/events.jsonl")).unwrap();
    let failed: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["fields"]["event"] == "germination_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events}");
    assert_eq!((&failed[0]["fields"]["slot"], &failed[0]["level"]), (&"r0c1".into(), &"WARN".into()));
    let record: serde_json::Value = serde_json::from_str(failed[0]["fields"]["record"].as_str().unwrap()).unwrap();
    assert_eq!((&record["slot"], &record["blueprint"]), (&"r0c1".into(), &"cnn:shape-change".into()), "{record}");
    assert_eq!(record["cause"], "probe_refused", "{record}");
    assert!(record["plugin"].as_str().is_some_and(|p| p.ends_with("libesper_fixture_broken.so")), "{record}");
    assert!(record["text"].as_str().unwrap().starts_with(expected), "{record}");
    // report.json: among epoch 1's events, the slot DORMANT.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap();
    let epoch1 = &report["epochs"][0];
    let recorded: Vec<&serde_json::Value> =
        epoch1["events"].as_array().unwrap().iter().filter(|e| e["event"] == "germination_failed").collect();
    assert_eq!(recorded, [&record], "report.json records what events.jsonl has");
    assert_eq!(epoch1["slots"][0]["stage"], "DORMANT");
    // The table: epoch 1's row.
    let row = stdout.lines().find(|l| l.trim_start().starts_with("1 ")).unwrap_or_default();
    assert!(row.contains("DORMANT 0.00") && row.contains(expected), "{stdout}");
    assert!(stderr.contains(expected), "the warning on stderr: {stderr}");
}

#[test]
fn the_built_in_default_job_runs_on_a_short_schedule() {
    let dir = temp_dir("default-job");
    let out = esper().args(["run", "--epochs", "1", "--output"]).arg(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("validation accuracy:") && stdout.contains("after epoch 1"), "{stdout}");
    assert!(dir.join("report.json").is_file() && dir.join("checkpoints/epoch-0001/COMPLETE").is_file());
}

fn run_to_end(config: RunConfig) -> Trainer {
    let mut t = Trainer::new(config).unwrap();
    t.run(&mut Silent).unwrap();
    t
}

fn params(t: &Trainer) -> Vec<tch::Tensor> {
    let mut p = t.model().host_parameters();
    p.extend(t.model().seed_parameters());
    p
}

#[test]
fn a_resumed_run_reaches_the_same_state_as_an_uninterrupted_one() {
    let _one = one_job_at_a_time();
    let norm = plugin_lib("esper-norm");
    let dir_a = temp_dir("resume-a");
    let a = run_to_end(RunConfig::load(&small_config(&dir_a, &norm, 5)).unwrap());

    let dir_b = temp_dir("resume-b");
    run_to_end(RunConfig::load(&small_config(&dir_b, &norm, 2)).unwrap());
    let mut b = Trainer::resume(&dir_b.join("out")).unwrap();
    b.set_epochs(5);
    b.run(&mut Silent).unwrap();

    let report = |t: &Trainer| serde_json::to_value(t.model().report()).unwrap();
    assert_eq!(report(&a), report(&b), "same slots, stages, alpha and metrics");
    let strip = |t: &Trainer| {
        t.history().iter().map(|r| (r.epoch, r.val_accuracy, r.train_loss, r.slots.clone())).collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
    let (pa, pb) = (params(&a), params(&b));
    assert_eq!(pa.len(), pb.len());
    for (x, y) in pa.iter().zip(&pb) {
        assert!(x.equal(y), "parameters differ after resume");
    }
    assert!(a.history().iter().any(|r| r.slots[0].stage != SeedStage::Dormant));
}

#[test]
fn a_run_stepped_an_epoch_at_a_time_is_the_run_and_takes_its_opening_decisions_once() {
    let _one = one_job_at_a_time();
    let norm = plugin_lib("esper-norm");
    let whole = run_to_end(RunConfig::load(&small_config(&temp_dir("stepped-whole"), &norm, 3)).unwrap());
    let dir = temp_dir("stepped");
    let mut t = Trainer::new(RunConfig::load(&small_config(&dir, &norm, 3)).unwrap()).unwrap();
    // Stopped before epoch 1: the opening decisions (the scheduled germination) are
    // taken, and a later step must not take them again.
    let stop = StopSignal::new();
    stop.request(std::num::NonZeroUsize::MIN);
    t.set_stop_signal(stop);
    assert_eq!(t.step_epoch(&mut Silent).unwrap(), EpochStep::Stopped { epochs_done: 0 });
    t.set_stop_signal(StopSignal::new());
    assert_eq!(t.start().unwrap(), 1);
    for epoch in 1..=3 {
        assert_eq!(t.step_epoch(&mut Silent).unwrap(), EpochStep::Ran { epoch });
    }
    assert_eq!(t.step_epoch(&mut Silent).unwrap(), EpochStep::Over);
    assert_eq!(t.next_epoch(), 4);
    assert_eq!(untimed(&t), untimed(&whole));
    assert_eq!(std::fs::read_to_string(dir.join("out/checkpoints/latest")).unwrap(), "epoch-0003");
}

/// An epoch's record without its timings, for comparing runs bit for bit.
pub(crate) fn untimed(t: &Trainer) -> Vec<serde_json::Value> {
    t.history()
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            let fields = v.as_object_mut().unwrap();
            fields.remove("seconds");
            fields.remove("train_seconds");
            v
        })
        .collect()
}

#[test]
fn a_run_resumed_while_blending_through_a_gate_or_multiply_is_bit_exact() {
    let _one = one_job_at_a_time();
    let norm = plugin_lib("esper-norm");
    for blend in ["gate", "multiply"] {
        let config = |name: &str, epochs: u32| {
            let dir = temp_dir(&format!("resume-{blend}-{name}"));
            let text = std::fs::read_to_string(small_config(&dir, &norm, epochs))
                .unwrap()
                .replace("[slot]\nblend_tempo = 2", &format!("[slot]\nblend = \"{blend}\"\nblend_tempo = 3"));
            (RunConfig::load(&write(&dir, &text)).unwrap(), dir.join("out"))
        };
        let (config_a, _) = config("a", 4);
        let a = run_to_end(config_a);
        // Checkpointed after epoch 3, part-way through the alpha ramp (with the gate
        // network and its optimizer state, for GATE).
        let (config_b, out_b) = config("b", 3);
        let interrupted = run_to_end(config_b);
        let slot = &interrupted.model().slots()[0];
        assert_eq!(slot.stage(), SeedStage::Blending, "{blend}: checkpointed while blending");
        assert!(slot.alpha() > 0.0 && slot.alpha() < 1.0, "{blend}: alpha {}", slot.alpha());
        assert_eq!(!slot.gate_parameters().is_empty(), blend == "gate", "{blend}: a gate network iff GATE");
        let slot_alpha = slot.alpha();
        drop(interrupted);
        let mut b = Trainer::resume(&out_b).unwrap();
        b.set_epochs(4);
        b.run(&mut Silent).unwrap();

        assert_eq!(untimed(&a), untimed(&b), "{blend}: the same history, every loss, accuracy and event");
        let report = |t: &Trainer| serde_json::to_value(t.model().report()).unwrap();
        assert_eq!(report(&a), report(&b), "{blend}: same slots, stages, alpha and metrics");
        let (pa, pb) = (params(&a), params(&b));
        assert_eq!(pa.len(), pb.len());
        for (x, y) in pa.iter().zip(&pb) {
            assert!(x.equal(y), "{blend}: parameters differ after resume");
        }
        assert!(a.history()[3].slots[0].alpha > slot_alpha, "{blend}: the seed blends on after the resume");
    }
}

#[test]
fn a_seed_the_controller_prunes_while_holding_is_blended_out_first() {
    let _one = one_job_at_a_time();
    let dir = temp_dir("blend-out");
    let text = std::fs::read_to_string(small_config(&dir, &plugin_lib("esper-norm"), 10)).unwrap();
    // Strict gates that pass up to HOLDING but never G5, so the controller prunes the
    // seed after two epochs in HOLDING; it never prunes for a low contribution.
    let text = text
        .replace(
            "mode = \"permissive\"",
            "mode = \"strict\"\nmin_training_improvement = -1000.0\nmin_seed_gradient_ratio = 0.0\n\
             min_fossilize_contribution = 1000.0",
        )
        .replace(
            "[lifecycle.controller]\nenabled = false",
            "[lifecycle.controller]\nenabled = false\nprune_below_contribution = -1000.0\nfossilize_at_contribution = -1000.0\nmax_holding_epochs = 2\n\
             prune_ramp_epochs = 2",
        );
    // Epoch by epoch, keeping the seed's parameters after each epoch of its blend-out.
    let mut t = Trainer::new(RunConfig::load(&write(&dir, &text)).unwrap()).unwrap();
    let mut frozen = Vec::new();
    for epoch in 1..=10 {
        t.set_epochs(epoch);
        t.run(&mut Silent).unwrap();
        let slot = &t.model().slots()[0];
        if slot.prune_scheduled() {
            frozen.push(slot.seed().unwrap().trainable().iter().map(|p| p.copy()).collect::<Vec<_>>());
        }
    }
    // Frozen while blending out (esper-lite's rule): the ramp's two epochs leave them as they were.
    assert_eq!(frozen.len(), 2, "two epochs of ramp seen with the seed");
    for (a, b) in frozen[0].iter().zip(&frozen[1]) {
        assert!(a.equal(b), "a seed blending out was trained");
    }
    let events: Vec<(u32, &LifecycleEvent)> =
        t.history().iter().flat_map(|r| r.events.iter().map(move |e| (r.epoch, e))).collect();
    let scheduled = events.iter().find(|(_, e)| matches!(e, LifecycleEvent::PruneScheduled { .. }));
    let Some((at, LifecycleEvent::PruneScheduled { epochs, reason, .. })) = scheduled else {
        panic!("no prune_scheduled event: {events:?}")
    };
    assert_eq!(*epochs, 2);
    assert!(reason.starts_with("HOLDING for 2 epochs"), "{reason}");
    // It went back to BLENDING to ramp down, alpha strictly between 0 and 1 on the way,
    // then the prune came with the reason it was scheduled for; the controller left it alone.
    let record = |epoch: u32| &t.history()[epoch as usize - 1].slots[0];
    assert_eq!(record(*at).stage, SeedStage::Blending);
    let ramp = record(at + 1);
    assert!(ramp.stage == SeedStage::Blending && ramp.alpha > 0.0 && ramp.alpha < 1.0, "{ramp:?}");
    let pruned = events.iter().find(|(_, e)| matches!(e, LifecycleEvent::Pruned { .. }));
    let Some((when, LifecycleEvent::Pruned { reason: why, .. })) = pruned else { panic!("never pruned: {events:?}") };
    assert_eq!((*when, why), (at + 2, reason), "{events:?}");
    assert!(!events.iter().any(|(_, e)| matches!(e, LifecycleEvent::ActionFailed { .. })), "{events:?}");
}

#[test]
fn resume_refuses_a_missing_plugin_and_an_incomplete_checkpoint() {
    let _one = one_job_at_a_time();
    let dir = temp_dir("resume-errors");
    let plugin = dir.join("libesper_norm_copy.so");
    std::fs::copy(plugin_lib("esper-norm"), &plugin).unwrap();
    run_to_end(RunConfig::load(&small_config(&dir, &plugin, 2)).unwrap());
    let out = dir.join("out");

    // An interrupted write of epoch 3 (no COMPLETE marker, `latest` untouched).
    let partial = out.join("checkpoints/epoch-0003.tmp");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("host.safetensors"), b"truncated").unwrap();
    let t = Trainer::resume(&out).unwrap();
    assert_eq!(t.history().len(), 2, "resumed from epoch 2, the last complete one");
    drop(t);

    // A checkpoint folder without its marker is refused.
    let e = Trainer::resume(&partial).err().unwrap().to_string();
    assert!(e.contains("is incomplete"), "{e}");

    std::fs::remove_file(&plugin).unwrap();
    let e = Trainer::resume(&out).err().unwrap().to_string();
    assert!(e.contains("plugin") && e.contains("libesper_norm_copy.so is missing"), "{e}");
}

#[test]
fn cifar10_data_from_the_config() {
    let _one = one_job_at_a_time();
    let dir = temp_dir("cifar-job");
    let data = dir.join("cifar");
    std::fs::create_dir_all(&data).unwrap();
    // 20 records per file in the standard binary format: label byte + 3072 pixel bytes.
    let records = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| std::iter::once((i % 10) as u8).chain((0..3072).map(move |p| ((p + i) % 256) as u8)))
            .collect()
    };
    std::fs::write(data.join("data_batch_1.bin"), records(20)).unwrap();
    std::fs::write(data.join("test_batch.bin"), records(10)).unwrap();
    let text = std::fs::read_to_string(small_config(&dir, &plugin_lib("esper-norm"), 1))
        .unwrap()
        .replace("kind = \"synthetic\"\ntrain_size = 256\nval_size = 128", "kind = \"cifar10\"\npath = \"cifar\"");
    let path = write(&dir, &text);
    let t = run_to_end(RunConfig::load(&path).unwrap());
    assert_eq!(t.history().len(), 1);
    assert!(t.history()[0].val_accuracy >= 0.0);
}

/// The checkpoint that the first checkpoint format (`format: 1`, written before the
/// typed lifecycle vocabulary) left after epoch 2 of `small_config` with 3 epochs,
/// copied with its plugin path and output folder pointed at this machine's.
fn checkpoint_v1(dir: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/checkpoint-v1");
    let ckpt = dir.join("checkpoint-v1");
    std::fs::create_dir_all(&ckpt).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, ckpt.join(path.file_name().unwrap())).unwrap();
    }
    let norm = plugin_lib("esper-norm");
    let text = std::fs::read_to_string(ckpt.join("state.json")).unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(state["format"], 1);
    state["plugins"] = serde_json::json!([[norm, sha256_hex(&norm).unwrap()]]);
    state["config"]["plugins"][0]["path"] = serde_json::json!(norm);
    state["config"]["output"]["dir"] = serde_json::json!(dir.join("out"));
    std::fs::write(ckpt.join("state.json"), serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    ckpt
}

#[test]
fn a_checkpoint_of_the_first_format_resumes_and_runs_on() {
    let _one = one_job_at_a_time();
    let dir = temp_dir("checkpoint-v1");
    // A checkpoint folder outside a run folder: resumed into the folder named.
    let ckpt = checkpoint_v1(&dir);
    let e = Trainer::resume(&ckpt).err().unwrap().to_string();
    assert!(e.contains("is a checkpoint outside a run folder"), "{e}");
    let mut t = Trainer::resume_into(&ckpt, &dir.join("out")).unwrap();
    let h = t.history();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].events.iter().map(ToString::to_string).collect::<Vec<_>>(), ["r0c1: GERMINATED -> TRAINING"]);
    assert_eq!(h[1].events.iter().map(ToString::to_string).collect::<Vec<_>>(), ["r0c1: TRAINING -> BLENDING"]);
    assert_eq!(t.model().slots()[0].stage(), SeedStage::Blending);
    t.set_epochs(3);
    t.run(&mut Silent).unwrap();
    assert_eq!(t.history().len(), 3);
    assert!(dir.join("out/checkpoints/epoch-0003/COMPLETE").is_file());
    let state = std::fs::read_to_string(dir.join("out/checkpoints/epoch-0003/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["format"], 2, "written in the current format");
    let old = &state["history"][0]["events"][0];
    assert_eq!((&old["event"], &old["text"]), (&"note".into(), &"r0c1: GERMINATED -> TRAINING".into()), "{old}");
}

#[test]
fn a_bf16_run_trains_its_seed_through_the_lifecycle_like_fp32() {
    let _one = one_job_at_a_time();
    let norm = plugin_lib("esper-norm");
    let run = |name: &str, precision: &str| {
        let dir = temp_dir(name);
        let text = std::fs::read_to_string(small_config(&dir, &norm, 5))
            .unwrap()
            .replace("gradient_every = 2", &format!("gradient_every = 2\nprecision = \"{precision}\""));
        run_to_end(RunConfig::load(&write(&dir, &text)).unwrap())
    };
    let (fp32, bf16) = (run("fp32", "fp32"), run("bf16", "bf16"));
    assert_eq!(bf16.model().precision(), esper_runtime::config::Precision::Bf16);
    // On the CPU the steps run eagerly, and the run says why.
    let off = fp32.graphs_off().unwrap_or_default();
    assert!(off.contains("not CUDA"), "{off:?}");
    assert_eq!(fp32.graph_stats().replays, 0);
    let events: Vec<&LifecycleEvent> = bf16.history().iter().flat_map(|r| &r.events).collect();
    assert!(!events.iter().any(|e| matches!(e, LifecycleEvent::SeedFault { .. })), "no seed blamed: {events:?}");
    let stages = |t: &Trainer| t.history().iter().map(|r| r.slots[0].stage).collect::<Vec<_>>();
    assert_eq!(stages(&bf16), stages(&fp32), "the same lifecycle");
    assert!(stages(&bf16).contains(&SeedStage::Blending), "{:?}", stages(&bf16));
    // bfloat16 really ran: the same run in float32 ends elsewhere.
    let differ = params(&fp32).iter().zip(params(&bf16)).any(|(a, b)| !a.equal(&b));
    assert!(differ, "bf16 and fp32 runs ended with identical parameters: autocast did not run");
    assert!(bf16.history().iter().all(|r| r.train_loss.is_finite() && r.val_loss.is_finite()));
    // Parameters stay float32 (autocast casts on the fly); accuracy near fp32's.
    assert!(params(&bf16).iter().all(|p| p.kind() == tch::Kind::Float));
    let last = |t: &Trainer| t.history().last().unwrap().val_accuracy;
    eprintln!("final val accuracy: fp32 {:.2}%, bf16 {:.2}%", last(&fp32), last(&bf16));
    assert!((last(&fp32) - last(&bf16)).abs() <= 5.0, "fp32 {} vs bf16 {}", last(&fp32), last(&bf16));
}

/// Requests a stop during batch `batch` of epoch `epoch`.
struct StopAt {
    stop: StopSignal,
    epoch: u32,
    batch: usize,
    current: (u32, usize),
}

impl Observer for StopAt {
    fn epoch_started(&mut self, epoch: u32, _batches: usize) {
        self.current = (epoch, 0);
    }
    fn batch_done(&mut self) {
        self.current.1 += 1;
        if self.current == (self.epoch, self.batch) {
            self.stop.request(std::num::NonZeroUsize::new(7).unwrap());
        }
    }
    fn epoch_done(&mut self, record: &EpochRecord) {
        assert!(record.epoch < self.epoch, "epoch {} was stopped, yet recorded", record.epoch);
    }
}

#[test]
fn a_stop_request_ends_the_run_at_the_next_step_and_the_partial_epoch_leaves_no_trace() {
    let _one = one_job_at_a_time();
    let dir = temp_dir("stop-signal");
    let mut t = Trainer::new(RunConfig::load(&small_config(&dir, &plugin_lib("esper-norm"), 4)).unwrap()).unwrap();
    let stop = StopSignal::new();
    t.set_stop_signal(stop.clone());
    let mut observer = StopAt { stop: stop.clone(), epoch: 2, batch: 2, current: (0, 0) };
    assert_eq!(t.run(&mut observer).unwrap(), RunEnd::Stopped { epochs_done: 1 });
    assert_eq!(observer.current, (2, 2), "no step after the request");
    assert_eq!(stop.requested().map(|c| c.get()), Some(7));
    assert_eq!(t.history().iter().map(|r| r.epoch).collect::<Vec<_>>(), [1]);
    let out = dir.join("out/checkpoints");
    assert_eq!(std::fs::read_to_string(out.join("latest")).unwrap(), "epoch-0001");
    assert!(!out.join("epoch-0002").exists() && !out.join("epoch-0002.tmp").exists());
    // Requested before the run starts: no epoch runs.
    let mut t = Trainer::resume(&dir.join("out")).unwrap();
    t.set_stop_signal(stop);
    assert_eq!(t.run(&mut Silent).unwrap(), RunEnd::Stopped { epochs_done: 1 });
    assert_eq!(t.history().len(), 1);
}
