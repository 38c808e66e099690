//! Watching a run: `esper watch --plain` following a run another process writes (started
//! before the run's folder exists), `--once` on the finished run printing the run's
//! table, and the TensorBoard event files read back by TensorBoard's own reader
//! (`EventAccumulator`, in the Python `scripts/setup.sh` links as `.esper-python`).

use esper_tests::{esper, plugin_lib, stderr, stdout, temp_dir, wait_for, write_file, SmallJob};
use serde_json::Value;
use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

/// A small job of `epochs` epochs with a `norm` seed going through its stages, slow
/// enough per epoch (16 steps) for a watcher polling every 50 ms to see each epoch.
fn job(dir: &Path, epochs: u32, output: &str) -> std::path::PathBuf {
    let plugin = plugin_lib("esper-norm");
    let sections = "[slot]\nblend_tempo = 2\n\n[lifecycle.gates]\nmode = \"permissive\"\nmin_blending_epochs = 1\n\
                    min_gradient_health_for_blending = 0.0\n";
    let job = SmallJob {
        plugin: &plugin,
        epochs,
        batch_size: 16,
        memory_format: "channels_last",
        blueprint: Some("norm"),
        sections,
    };
    write_file(dir, "run.toml", &format!("{}{output}", job.text()))
}

/// Waits up to `secs` for `child` to exit and returns its output.
fn finish(mut child: Child, what: &str, secs: u64) -> std::process::Output {
    wait_for(what, secs, || child.try_wait().expect("polling the child").is_some());
    child.wait_with_output().expect("collecting the child's output")
}

/// The epoch table in `text` (as `esper run` prints it): its header and one row per epoch.
fn table_lines(text: &str) -> Vec<&str> {
    let mut lines = text.lines().skip_while(|l| !l.trim_start().starts_with("epoch train_loss"));
    let header = lines.next().into_iter();
    header.chain(lines.take_while(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))).collect()
}

#[test]
fn esper_watch_follows_a_live_run_then_prints_its_final_table() {
    let dir = temp_dir("watch-live");
    let config = job(&dir, 4, "");
    let out = dir.join("out");
    // The watcher starts first, and says it waits: the run folder does not exist yet.
    let mut watch = esper()
        .args(["watch", "--plain", "--interval-ms", "50"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (seen, mut pipe) = (seen.clone(), watch.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut chunk) {
                seen.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
    };
    wait_for("esper watch to wait for the run", 60, || seen.lock().unwrap().contains("waiting for the run"));
    assert!(!out.exists());
    let run = esper().arg("run").arg(&config).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let run = finish(run, "esper run", 300);
    assert!(run.status.success(), "{}\n{}", stdout(&run), stderr(&run));
    let watch = finish(watch, "esper watch to end with the run", 30);
    reader.join().unwrap();
    let (shown, errors) = (seen.lock().unwrap().clone(), stderr(&watch));
    assert!(watch.status.success(), "{shown}\n{errors}");
    // It waited for the run, saw epochs appear while it ran, then the end.
    assert!(shown.starts_with(&format!("esper watch {}: waiting for the run", out.display())), "{shown}");
    let live: Vec<u32> = shown
        .lines()
        .filter(|l| l.contains(": running (pid "))
        .filter_map(|l| l.rsplit_once(", epoch ").and_then(|(_, e)| e.parse().ok()))
        .collect();
    let mut distinct = live.clone();
    distinct.dedup();
    assert!(distinct.len() >= 2, "at least two epochs seen live, got {live:?}:\n{shown}");
    assert!(distinct.windows(2).all(|w| w[0] < w[1]), "epochs appear in order: {live:?}");
    // Its last view is the finished run with the whole table, as `esper run` printed it.
    let last = shown.rsplit_once("esper watch ").map(|(_, l)| l).unwrap_or_default();
    assert!(last.starts_with(&format!("{}: finished, epoch 4", out.display())), "{last}");
    let table = table_lines(stdout(&run).as_str()).join("\n");
    assert_eq!(table.lines().count(), 5, "{}", stdout(&run));
    assert!(last.contains(&table), "the final view has the run's table:\n{table}\n---\n{last}");
    for stage in ["TRAINING", "BLENDING"] {
        assert!(last.contains(stage), "{last}");
    }
    // `--once` on the finished run: the same table, once, exit 0.
    let once = esper().args(["watch", "--plain", "--once"]).arg(&out).output().unwrap();
    assert!(once.status.success(), "{}", stderr(&once));
    let once = stdout(&once);
    assert!(once.starts_with(&format!("esper watch {}: finished, epoch 4\n", out.display())), "{once}");
    assert!(once.contains(&table), "{once}");
    assert!(once.contains("slots:\n  r0c1   ") && once.contains("norm ("), "the slot and its seed: {once}");
    check_tensorboard(&out, 1);
    // Resumed, the run adds an event file, and both read as one run; watch shows epoch 5.
    let resumed = esper().args(["run", "--resume"]).arg(&out).args(["--epochs", "5"]).output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    check_tensorboard(&out, 2);
    let once = stdout(&esper().args(["watch", "--once"]).arg(&out).output().unwrap());
    assert!(once.starts_with(&format!("esper watch {}: finished, epoch 5\n", out.display())), "{once}");
    assert_eq!(table_lines(&once).len(), 6, "{once}");
}

/// TensorBoard's reader finds every scalar of every epoch with the value `report.json`
/// records (as float32), and the lifecycle events as text, in the `runs` event files.
fn check_tensorboard(out: &Path, runs: usize) {
    let logdir = out.join("tensorboard");
    let files: Vec<_> = std::fs::read_dir(&logdir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), runs, "one event file per esper run: {files:?}");
    assert!(files.iter().all(|f| f.to_string_lossy().starts_with("events.out.tfevents.")), "{files:?}");
    let python = esper_tests::parity::python();
    let script = r#"
import json, sys
try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError as e:
    sys.exit(f"the Python package `tensorboard` is missing ({e}): run scripts/setup.sh, or pip install tensorboard")
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "tensors": 0})
acc.Reload()
tags = acc.Tags()
out = {"scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
       "text": {t: [[e.step, e.tensor_proto.string_val[0].decode()] for e in acc.Tensors(t)] for t in tags["tensors"]}}
print(json.dumps(out))
"#;
    let read = Command::new(&python).arg("-c").arg(script).arg(&logdir).output().unwrap_or_else(|e| {
        panic!("cannot run {} (the Python with `tensorboard`, see scripts/setup.sh): {e}", python.display())
    });
    assert!(read.status.success(), "TensorBoard's reader failed:\n{}", stderr(&read));
    let read: Value = serde_json::from_str(&stdout(&read)).expect("the reader prints JSON");
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let epochs = report["epochs"].as_array().unwrap();
    // The scalars expected, from report.json: (tag, epoch, value).
    let mut expected: Vec<(String, u64, f64)> = Vec::new();
    for e in epochs {
        let epoch = e["epoch"].as_u64().unwrap();
        let f = |k: &str| e[k].as_f64().unwrap();
        for (tag, v) in [
            ("loss/train", f("train_loss")),
            ("loss/val", f("val_loss")),
            ("accuracy/train", f("train_accuracy")),
            ("accuracy/val", f("val_accuracy")),
            ("time/epoch_s", f("seconds")),
            ("time/step_ms", f("train_seconds") * 1000.0 / f("steps")),
        ] {
            expected.push((tag.into(), epoch, v));
        }
        for s in e["slots"].as_array().unwrap() {
            let slot = s["slot"].as_str().unwrap();
            expected.push((format!("slot/{slot}/alpha"), epoch, s["alpha"].as_f64().unwrap()));
            if let Some(c) = s["contribution"].as_f64() {
                expected.push((format!("slot/{slot}/contribution"), epoch, c));
            }
            if let Some(p) = s["seed"]["parameters"].as_f64() {
                expected.push((format!("slot/{slot}/seed_parameters"), epoch, p));
            }
        }
    }
    assert!(expected.iter().any(|(t, _, _)| t.ends_with("/contribution")), "a contribution was measured");
    assert!(expected.iter().any(|(t, _, v)| t.ends_with("/seed_parameters") && *v > 0.0), "the seed's parameters");
    let scalars = read["scalars"].as_object().unwrap();
    let mut found = 0;
    for (tag, epoch, value) in &expected {
        let points = scalars.get(tag).and_then(Value::as_array).unwrap_or_else(|| panic!("no scalar `{tag}`: {read}"));
        let point = points
            .iter()
            .find(|p| p[0].as_u64() == Some(*epoch))
            .unwrap_or_else(|| panic!("`{tag}` has no step {epoch}: {points:?}"));
        let got = point[1].as_f64().unwrap();
        assert_eq!(got as f32, *value as f32, "`{tag}` at epoch {epoch}: {got} vs {value} in report.json");
        found += 1;
    }
    let written: usize = scalars.values().map(|v| v.as_array().unwrap().len()).sum();
    assert_eq!(written, found, "no scalar beyond report.json's: {read}");
    // The lifecycle events as text, at the epoch they happened.
    let text = &read["text"]["lifecycle/events"];
    let first_events: Vec<String> =
        epochs[0]["events"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap().to_string()).collect();
    assert!(!first_events.is_empty());
    let at_1 = text.as_array().and_then(|t| t.iter().find(|p| p[0] == 1)).unwrap_or_else(|| panic!("{read}"));
    for e in &first_events {
        assert!(at_1[1].as_str().unwrap().contains(e.as_str()), "{e} in {at_1}");
    }
}

#[test]
fn tensorboard_false_writes_no_event_files_and_once_refuses_a_folder_without_a_run() {
    let dir = temp_dir("watch-no-tensorboard");
    let config = job(&dir, 1, "tensorboard = false\n");
    let run = esper().arg("run").arg(&config).output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(dir.join("out/report.json").is_file() && !dir.join("out/tensorboard").exists());
    // An empty folder holds no run: --once says so and exits 1.
    let empty = temp_dir("watch-empty");
    let once = esper().args(["watch", "--once"]).arg(&empty).output().unwrap();
    assert_eq!(once.status.code(), Some(1), "{}", stdout(&once));
    let e = stderr(&once);
    assert!(e.contains(&format!("{} holds no run yet", empty.display())) && e.contains("--once"), "{e}");
}
