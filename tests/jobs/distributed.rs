//! Data-parallel runs on the CPU with Gloo: ranks through `esper run --nproc`, through
//! torchrun, and started by hand to kill one (and, on a machine with two GPUs, over NCCL
//! in CUDA graphs). Every rank compares its model with the
//! others' after each epoch (slots, stages, alphas and a hash of every parameter's bytes)
//! and the run stops if they differ, so a run that finishes ran in lockstep.

use esper_tests::{esper, esper_bin, plugin_lib, temp_dir, write_file, SmallJob, TextJob};
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

/// Rank `rank` of a 2-rank run of `config` started by hand (torchrun's variables, the
/// store at `port`), its stderr piped.
fn rank_of_two(config: &Path, port: u16, rank: u8) -> std::process::Child {
    let r = rank.to_string();
    Command::new(esper_bin())
        .arg("run")
        .arg(config)
        .envs([("WORLD_SIZE", "2"), ("RANK", &r), ("LOCAL_RANK", &r), ("MASTER_ADDR", "127.0.0.1")])
        .env("MASTER_PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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
    assert_eq!(stderr.matches("the device is Cpu, not CUDA").count(), 2, "{stderr}");
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

/// Two ranks over NCCL, each on its own GPU, their steps captured in CUDA graphs (the
/// gradient allreduces and the synchronised BatchNorms' exchanges inside): the run ends
/// with the ranks' models compared every epoch (bit for bit), the seed's lifecycle in
/// lockstep, and steps replayed on both ranks.
#[test]
#[ignore = "needs two GPUs: run scripts/test-gpu.sh"]
fn nccl_two_gpus_train_in_lockstep_in_cuda_graphs() {
    let gpus = tch::Cuda::device_count();
    assert!(gpus >= 2, "needs two CUDA devices, found {gpus}");
    for sync in [false, true] {
        let dir = temp_dir(&format!("dist-nccl-graphs-{sync}"));
        let text = std::fs::read_to_string(job(&dir, 3, 120)).unwrap();
        let text = text.replace("device = \"cpu\"", "device = \"cuda\"");
        let text = text.replace("[distributed]\n", &format!("[distributed]\nsync_batchnorm = {sync}\n"));
        let config = write_file(&dir, "run.toml", &text);
        let log = "info,esper_runtime::train::graph=debug";
        let out = esper().args(["run", "--nproc", "2"]).arg(&config).env("RUST_LOG", log).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(stderr.matches("CUDA graphs on").count(), 2, "{stderr}");
        assert!(!stderr.contains("cuda_graph_refused"), "{stderr}");
        // One capture per topology on each rank: the seed's stage changes twice at least.
        assert!(stderr.matches("training step captured").count() >= 4, "{stderr}");
        let report = report(&dir);
        assert!(stages(&report).contains(&"BLENDING".to_string()), "{:?}", stages(&report));
    }
}

/// bfloat16 mixed precision on two ranks, with synchronised BatchNorms (which take the
/// bfloat16 activations and keep float32 statistics): the ranks train in lockstep (their
/// models compared every epoch) through the seed's lifecycle, and the loss falls.
#[test]
fn two_ranks_train_in_bf16_with_synchronised_batchnorm() {
    let dir = temp_dir("dist-bf16");
    let text = std::fs::read_to_string(job(&dir, 3, 60)).unwrap();
    let text = text.replace("gradient_every = 2", "gradient_every = 2\nprecision = \"bf16\"");
    let text = text.replace("[distributed]\n", "[distributed]\nsync_batchnorm = true\n");
    assert!(text.contains("precision = \"bf16\"") && text.contains("sync_batchnorm = true"), "{text}");
    let config = write_file(&dir, "run.toml", &text);
    let out = esper().args(["run", "--nproc", "2"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report(&dir);
    assert!(stages(&report).contains(&"BLENDING".to_string()), "{:?}", stages(&report));
    let loss = |e: usize| report["epochs"][e]["train_loss"].as_f64().unwrap();
    assert!(loss(2) < loss(0), "the loss fell: {} then {}", loss(0), loss(2));
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
    // With synchronised BatchNorms, rank 0 may be waiting in one of their exchanges.
    for sync in [false, true] {
        let dir = temp_dir(&format!("dist-kill-{sync}"));
        let config = job(&dir, 6, 5);
        if sync {
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(&config, text.replace("[distributed]\n", "[distributed]\nsync_batchnorm = true\n")).unwrap();
        }
        killed_rank_ends_the_other(&dir, &config);
    }
}

/// Rank 1 of a 2-rank run of `config` (in `dir`) killed after epoch 2's checkpoint: rank 0
/// ends within the timeout naming itself and the setting, and one process resumes the run
/// from that checkpoint.
fn killed_rank_ends_the_other(dir: &Path, config: &Path) {
    let port = free_port();
    let (zero, mut one) = (rank_of_two(config, port, 0), rank_of_two(config, port, 1));
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
    assert_eq!(report(dir)["epochs"].as_array().unwrap().len(), 6);
}

/// The largest difference between two checkpoints' tensors of the same names, relative
/// to the tensor's largest magnitude.
fn largest_relative_difference(a: &Path, b: &Path) -> f64 {
    let load = |p: &Path| -> std::collections::BTreeMap<String, tch::Tensor> {
        tch::Tensor::read_safetensors(p).unwrap().into_iter().collect()
    };
    let (a, b) = (load(a), load(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = 0f64;
    for (name, x) in &a {
        let y = &b[name];
        let scale = x.abs().max().double_value(&[]).max(1e-12);
        let diff = (x - y).abs().max().double_value(&[]) / scale;
        worst = worst.max(diff);
    }
    worst
}

/// Asserts that the run in `two` (2 ranks at batch B) took the steps of the run in
/// `one` (1 rank at 2B): the same stages of slot `slot` (the seed blending at some
/// epoch, so its parameters took part), losses within 1e-4 each epoch, and after epoch 3
/// the host's and the seed's parameters within `bound` of each tensor's scale.
fn assert_same_steps(two: &Path, one: &Path, slot: usize, seed_file: &str, bound: f64) {
    let (r2, r1) = (report(two), report(one));
    let stages = |r: &serde_json::Value| -> Vec<String> {
        let epochs = r["epochs"].as_array().unwrap();
        epochs.iter().map(|e| e["slots"][slot]["stage"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(stages(&r2), stages(&r1));
    assert!(stages(&r1).contains(&"BLENDING".to_string()), "the seed's parameters took part: {:?}", stages(&r1));
    for (e2, e1) in r2["epochs"].as_array().unwrap().iter().zip(r1["epochs"].as_array().unwrap()) {
        assert_eq!(e2["steps"], e1["steps"]);
        for key in ["train_loss", "val_loss"] {
            let (a, b) = (e2[key].as_f64().unwrap(), e1[key].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-4 * b.abs(), "epoch {}: {key} {a} on 2 ranks, {b} on 1", e1["epoch"]);
        }
    }
    for file in ["host.safetensors", seed_file] {
        let worst = largest_relative_difference(&last_checkpoint(two, file), &last_checkpoint(one, file));
        assert!(worst < bound, "{file}: parameters differ by {worst:e} of their scale");
        eprintln!("{file}: largest relative difference {worst:e}");
    }
}

/// `file` of epoch 3's checkpoint of the run in `dir`.
fn last_checkpoint(dir: &Path, file: &str) -> PathBuf {
    dir.join("out/checkpoints/epoch-0003").join(file)
}

/// Gradients averaged over 2 ranks at batch B are the gradients of one batch of 2B made of
/// both ranks' examples (the shards interleave one draw), so the runs agree up to the order
/// of float sums (measured: about 1e-6 of each tensor's scale after 24 steps; the bound is
/// 1e-4). A transformer has no BatchNorm, whose per-rank statistics would differ.
#[test]
fn two_ranks_at_batch_b_match_one_rank_at_batch_2b() {
    let plugin = plugin_lib("esper-transformer");
    let gates = "[slot]\nblend_tempo = 2\n\n[lifecycle.gates]\nmode = \"permissive\"\nmin_blending_epochs = 1\n\
                 min_gradient_health_for_blending = 0.0\n";
    let job =
        TextJob { plugin: &plugin, epochs: 3, blueprint: Some("lora"), sections: gates, controller: "enabled = false" };
    let run = |name: &str, batch: u32, nproc: &[&str]| {
        let dir = temp_dir(name);
        // SGD: Adam's normalisation would magnify the float noise of near-zero gradients.
        let sgd = "{ kind = \"sgd\", lr = 0.1, momentum = 0.9, weight_decay = 0.0 }";
        let text = job.text().replace("batch_size = 8", &format!("batch_size = {batch}"));
        let text = text.replace("{ kind = \"adam\", lr = 0.01 }", sgd);
        let config = write_file(&dir, "run.toml", &text);
        let out = esper().arg("run").args(nproc).arg(&config).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        dir
    };
    let (two, one) = (run("dist-b", 4, &["--nproc", "2"]), run("dist-2b", 8, &[]));
    assert_same_steps(&two, &one, 1, "slot-r0c1.safetensors", 1e-4);
}

/// With `sync_batchnorm`, the CNN host's BatchNorms normalise with both ranks' batches
/// together, so 2 ranks at batch B match 1 rank at 2B as the transformer does above. A
/// BatchNorm network under momentum SGD magnifies the float noise of the sums' order
/// more than the transformer (measured after 24 steps: at most 3e-5 apart, 7e-4 of the
/// smallest tensor's scale, a BatchNorm bias; the bound is 2e-3). Each rank's own
/// statistics (the default) put the runs 1e-2 apart, 0.4 of that bias's scale (the
/// bound: over 5e-2).
#[test]
fn with_sync_batchnorm_two_ranks_at_batch_b_match_one_rank_at_batch_2b() {
    let norm = plugin_lib("esper-norm");
    let run = |name: &str, batch: u32, sync: bool, nproc: &[&str]| {
        let dir = temp_dir(name);
        let sgd = "{ kind = \"sgd\", lr = 0.05, momentum = 0.9, weight_decay = 0.0 }";
        let sections = format!(
            "host_optimizer = {sgd}\nseed_optimizer = {sgd}\n\n[slot]\nblend_tempo = 2\n\n[lifecycle.gates]\n\
             mode = \"permissive\"\nmin_blending_epochs = 1\nmin_gradient_health_for_blending = 0.0\n\n\
             [distributed]\ntimeout_s = 60.0\nsync_batchnorm = {sync}\n"
        );
        let job = SmallJob {
            plugin: &norm,
            epochs: 3,
            batch_size: batch,
            memory_format: "channels_last",
            blueprint: Some("norm"),
            sections: &sections,
        };
        let config = write_file(&dir, "run.toml", &job.text());
        let out = esper().arg("run").args(nproc).arg(&config).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        dir
    };
    let synced = run("dist-syncbn-b", 16, true, &["--nproc", "2"]);
    let one = run("dist-syncbn-2b", 32, true, &[]);
    let own = run("dist-ownbn-b", 16, false, &["--nproc", "2"]);
    assert_same_steps(&synced, &one, 0, "slot-r0c1.safetensors", 2e-3);
    let host = "host.safetensors";
    let apart = largest_relative_difference(&last_checkpoint(&own, host), &last_checkpoint(&one, host));
    assert!(apart > 5e-2, "each rank's own statistics should differ from the global batch's: {apart:e}");
    eprintln!("{host}: largest relative difference with each rank's own statistics {apart:e}");
}

/// A seed at fault on one rank only (the fixture misbehaves where `RANK` is 1) is pruned on
/// both ranks at the same step: the run finishes, which it cannot if the ranks' models
/// differ after an epoch. Rank 0's events name the fault, and for a fault seen in the
/// step (not a health flag, which every rank reads as the union of all ranks' flags) the
/// rank that saw it.
#[test]
fn a_seed_at_fault_on_one_rank_is_pruned_on_every_rank() {
    let fixture = plugin_lib("esper-fixture-misbehaving");
    // `inf-output`'s gradients stay finite: only rank 1's output flag shows it.
    // With synchronised BatchNorms the host's forward and backward exchange too: rank 1
    // finishes the host's forward past its faulty seed, and the ranks agree on the fault
    // before the backward (else they wait on each other until the timeout).
    let cases = [
        ("wrong-dtype", "wrong_dtype", true, false),
        ("nan-after-n-steps", "non_finite", false, false),
        ("inf-output", "non_finite", false, false),
        // Rank 1's backward fails part way: its share of the gradient exchange, started
        // in the backward, is completed with zeros so that rank 0's ends.
        ("backward-error", "backward_error", true, false),
        ("wrong-dtype", "wrong_dtype", true, true),
        // With synchronised BatchNorms, rank 0's backward waits in the BatchNorms'
        // exchanges: rank 1 makes those its failed backward did not, with zeros.
        ("backward-error", "backward_error", true, true),
    ];
    for (blueprint, code, names_rank, sync) in cases {
        let dir = temp_dir(&format!("dist-fault-{blueprint}-{sync}"));
        let sections = format!("[distributed]\ntimeout_s = 30.0\nsync_batchnorm = {sync}\n");
        let job = SmallJob {
            plugin: &fixture,
            epochs: 2,
            batch_size: 32,
            memory_format: "channels_last",
            blueprint: Some(blueprint),
            sections: &sections,
        };
        let text = job.text().replace(
            &format!("blueprint = \"{blueprint}\"\n"),
            &format!("blueprint = \"{blueprint}\"\noptions = {{ rank = 1 }}\n"),
        );
        assert!(text.contains("options = { rank = 1 }"), "{text}");
        let config = write_file(&dir, "run.toml", &text);
        let out = esper().args(["run", "--nproc", "2"]).arg(&config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{blueprint}: {stderr}");
        let events = std::fs::read_to_string(dir.join("out/events.jsonl")).unwrap();
        let pruned = events.lines().find(|l| l.contains("\"pruned\"") || l.contains("pruned (")).unwrap_or_default();
        assert!(pruned.contains(code), "{blueprint}: {events}");
        assert_eq!(pruned.contains("(on rank 1)"), names_rank, "{blueprint}: {pruned}");
        assert_eq!(report(&dir)["epochs"].as_array().unwrap().len(), 2);
    }
}

/// A stop asked of one rank stops every rank at the same step: SIGINT to rank 1 alone
/// (a rank stopping alone would leave rank 0 failing in its next exchange). Both exit 130;
/// rank 0 writes the report of the epochs done and says why it stopped. Then Ctrl-C on
/// `esper run --nproc 2`, which passes it on: one message, exit 130, no failure reported.
#[test]
fn a_stop_asked_of_one_rank_stops_every_rank_at_the_same_step() {
    let dir = temp_dir("dist-sigint");
    let config = job(&dir, 1000, 120);
    let out = dir.join("out");
    let port = free_port();
    let (zero, one) = (rank_of_two(&config, port, 0), rank_of_two(&config, port, 1));
    esper_tests::wait_for("the first checkpoint", 120, || out.join("checkpoints/epoch-0001/COMPLETE").is_file());
    esper_tests::send_signal(one.id(), "INT");
    let (zero, one) = (zero.wait_with_output().unwrap(), one.wait_with_output().unwrap());
    let e0 = String::from_utf8_lossy(&zero.stderr);
    assert_eq!((zero.status.code(), one.status.code()), (Some(130), Some(130)), "{e0}");
    assert!(e0.contains("stopped by another rank's stop signal during epoch"), "{e0}");
    let done = esper_tests::report_epochs(&out);
    assert!(!done.is_empty() && done.len() < 1000, "{done:?}");

    let mut resume = esper();
    resume.args(["run", "--nproc", "2", "--resume"]).arg(&out).args(["--epochs", "1000"]);
    let run = resume.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let before = done.len();
    esper_tests::wait_for("a new epoch", 120, || {
        esper_tests::report_epochs(&out).len() > before || latest_after(&out, before)
    });
    esper_tests::send_signal(run.id(), "INT");
    let ended = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(130), "{stderr}");
    assert_eq!(stderr.matches("stopped by SIGINT").count(), 1, "rank 0's message alone: {stderr}");
    assert!(!stderr.contains("failed"), "{stderr}");
}

/// Whether `out` holds a checkpoint of an epoch after `epoch`.
fn latest_after(out: &Path, epoch: usize) -> bool {
    out.join(format!("checkpoints/epoch-{:04}/COMPLETE", epoch + 1)).is_file()
}
