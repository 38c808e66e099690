//! Data-parallel runs on the CPU with Gloo: ranks through `esper run --nproc`, through
//! torchrun, and started by hand to kill one. Every rank compares its model with the
//! others' after each epoch (slots, stages, alphas and a hash of every parameter's bytes)
//! and the run stops if they differ, so a run that finishes ran in lockstep.

use esper_tests::{esper, esper_bin, plugin_lib, temp_dir, write_file, SmallJob};
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// A small CNN job with a `norm` seed scheduled at epoch 1 and quick gates, `epochs`
/// long, its ranks waiting `timeout_s` for each other.
fn job(dir: &Path, epochs: u32, timeout_s: u32) -> PathBuf {
    let sections = format!(
        "[slot]\nblend_tempo = 2\n\n[lifecycle.gates]\nmode = \"permissive\"\nmin_blending_epochs = 1\n\
         min_gradient_health_for_blending = 0.0\n\n[distributed]\ntimeout_s = {timeout_s}.0\n"
    );
    let norm = plugin_lib("esper-norm");
    let text = SmallJob {
        plugin: &norm,
        epochs,
        batch_size: 32,
        memory_format: "channels_last",
        blueprint: Some("norm"),
        sections: &sections,
    }
    .text();
    write_file(dir, "run.toml", &text)
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The epochs' stages of slot 0 in `report`.
fn stages(report: &serde_json::Value) -> Vec<String> {
    report["epochs"].as_array().unwrap().iter().map(|e| e["slots"][0]["stage"].as_str().unwrap().to_string()).collect()
}

#[test]
fn two_ranks_through_nproc_train_in_lockstep_on_half_the_data_each() {
    let dir = temp_dir("dist-nproc");
    let config = job(&dir, 3, 60);
    let out = esper().args(["run", "--nproc", "2"]).arg(&config).env("RUST_LOG", "info").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Both ranks joined and compared their models every epoch (a difference ends the run).
    assert_eq!(stderr.matches("joined the other ranks").count(), 2, "{stderr}");
    let report = report(&dir);
    let s = stages(&report);
    assert!(s.contains(&"BLENDING".to_string()), "the seed went on in lockstep: {s:?}");
    // One table, rank 0's.
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("epoch train_loss").count(), 1);
    // Each rank took half the steps of a single process at the same batch size.
    let single = temp_dir("dist-single");
    let config = job(&single, 1, 60);
    assert!(esper().arg("run").arg(&config).status().unwrap().success());
    let steps = |r: &serde_json::Value| r["epochs"][0]["steps"].as_u64().unwrap();
    assert_eq!(steps(&report), steps(&self::report(&single)).div_ceil(2));
    // A one-process run resumes on two ranks (the state does not depend on the ranks).
    let out =
        esper().args(["run", "--nproc", "2", "--epochs", "2", "--resume"]).arg(single.join("out")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resumed = self::report(&single);
    assert_eq!(resumed["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(resumed["epochs"][1]["steps"], report["epochs"][0]["steps"], "epoch 2 on two ranks");
}

#[test]
fn torchrun_launches_the_ranks() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository");
    let torchrun = std::fs::read_link(repo.join(".esper-python"))
        .map(|python| python.with_file_name("torchrun"))
        .unwrap_or_default();
    assert!(
        torchrun.is_file(),
        "torchrun is not beside the project's Python ({}); scripts/setup.sh installs it",
        torchrun.display()
    );
    let dir = temp_dir("dist-torchrun");
    let config = job(&dir, 2, 60);
    let out = Command::new(&torchrun)
        .args(["--nproc-per-node", "2", "--master-port", &free_port().to_string(), "--no-python"])
        .arg(esper_bin())
        .arg("run")
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("joined the other ranks").count(), 2, "{stderr}");
    assert_eq!(report(&dir)["epochs"].as_array().unwrap().len(), 2);
}

#[test]
fn a_killed_rank_ends_the_other_within_the_timeout_and_the_run_resumes() {
    let dir = temp_dir("dist-kill");
    let config = job(&dir, 6, 5);
    let port = free_port().to_string();
    let rank = |r: &str| {
        Command::new(esper_bin())
            .arg("run")
            .arg(&config)
            .envs([("WORLD_SIZE", "2"), ("RANK", r), ("LOCAL_RANK", r), ("MASTER_ADDR", "127.0.0.1")])
            .env("MASTER_PORT", &port)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (zero, mut one) = (rank("0"), rank("1"));
    // Once epoch 2's checkpoint is complete, rank 1 dies.
    let latest = dir.join("out/checkpoints/epoch-0002");
    let started = Instant::now();
    while !latest.join("state.json").is_file() {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint of epoch 2");
        std::thread::sleep(Duration::from_millis(50));
    }
    one.kill().unwrap();
    let _ = one.wait();
    let killed_at = Instant::now();
    let out = zero.wait_with_output().unwrap();
    let waited = killed_at.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(waited < Duration::from_secs(5 + 20), "rank 0 ended {waited:?} after rank 1 died");
    assert!(stderr.contains("rank 0 of 2") && stderr.contains("timeout_s = 5"), "{stderr}");
    // The last complete checkpoint is intact: one process finishes the run from it.
    let out = esper().args(["run", "--resume"]).arg(dir.join("out")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report(&dir)["epochs"].as_array().unwrap().len(), 6);
}
