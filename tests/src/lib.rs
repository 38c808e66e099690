//! Helpers for the workspace tests: where the built plugin libraries are, and models
//! with seeds in a given stage.

pub mod model;
pub mod parity;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// Names the folder that holds the built `esper` binary and plugin libraries when the
/// tests run away from the cargo target folder (a test binary copied to the GPU machine
/// by `scripts/test-gpu.sh --pack`).
pub const TARGET_DIR_ENV: &str = "ESPER_TARGET_DIR";

/// The cargo output folder the test binary runs from (`target/<profile>`), or
/// `$ESPER_TARGET_DIR` when that is set.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(TARGET_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(|d| d.parent()).expect("test binary is inside target/<profile>/deps").to_path_buf()
}

/// Path of the built plugin library of crate `crate_name` (e.g. `esper-norm`).
/// Panics with a clear message when it has not been built.
pub fn plugin_lib(crate_name: &str) -> PathBuf {
    let path = target_dir().join(esper_runtime::plugin::library_file_name(crate_name));
    assert!(
        path.is_file(),
        "{} is not built; build the workspace first (`cargo build --workspace`, as scripts/test.sh does)",
        path.display()
    );
    path
}

/// In-process jobs and every other in-process user of libtorch's random generator in one
/// test binary (it is one per process) take turns: a job seeds it and draws from it at
/// epoch boundaries, so another test drawing meanwhile would change the job's weights.
pub fn one_job_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static JOBS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    JOBS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small CPU job for tests, as config text: slot r0c1, a base-8 host, 256/128 synthetic
/// samples, gradients every 2 steps, the controller off, output in `out` beside the
/// config file (write it into the test's folder).
pub struct SmallJob<'a> {
    pub plugin: &'a Path,
    pub epochs: u32,
    pub batch_size: u32,
    /// `channels_last` or `contiguous`.
    pub memory_format: &'a str,
    /// Germinated into r0c1 before epoch 1 (by the schedule), if any.
    pub blueprint: Option<&'a str>,
    /// More config text (`[slot]`, `[lifecycle.gates]`, ...), placed before the controller.
    pub sections: &'a str,
}

impl SmallJob<'_> {
    pub fn text(&self) -> String {
        let schedule = self.blueprint.map_or(String::new(), |b| {
            format!("[[lifecycle.schedule]]\nepoch = 1\nslot = \"r0c1\"\nblueprint = \"{b}\"\n")
        });
        format!(
            r#"
device = "cpu"
slots = ["r0c1"]

[[plugins]]
path = "{plugin}"

[host]
base_channels = 8
memory_format = "{memory_format}"

[data]
kind = "synthetic"
train_size = 256
val_size = 128

[training]
epochs = {epochs}
batch_size = {batch_size}
gradient_every = 2

{sections}
[lifecycle.controller]
enabled = false

{schedule}
[output]
dir = "out"
"#,
            plugin = self.plugin.display(),
            memory_format = self.memory_format,
            epochs = self.epochs,
            batch_size = self.batch_size,
            sections = self.sections,
        )
    }
}

/// A small CPU language-model job for tests, as config text: a 2-layer transformer host
/// of width 32 (slots r0c0 and r0c1), the embedded corpus cut to 20 kB, byte tokens in
/// windows of 16, 8 batches of 8 an epoch, Adam, the controller off unless `sections`
/// turns it on, output in `out` beside the config file.
pub struct TextJob<'a> {
    /// The transformer blueprint library.
    pub plugin: &'a Path,
    pub epochs: u32,
    /// Germinated into r0c1 before epoch 1 (by the schedule), if any.
    pub blueprint: Option<&'a str>,
    /// More config text (`[slot]`, `[lifecycle.gates]`, ...), placed before the controller.
    pub sections: &'a str,
    /// The `[lifecycle.controller]` table's body.
    pub controller: &'a str,
}

impl TextJob<'_> {
    pub fn text(&self) -> String {
        let schedule = self.blueprint.map_or(String::new(), |b| {
            format!("[[lifecycle.schedule]]\nepoch = 1\nslot = \"r0c1\"\nblueprint = \"{b}\"\n")
        });
        format!(
            r#"
device = "cpu"
slots = ["r0c0", "r0c1"]

[[plugins]]
path = "{plugin}"

[host]
kind = "transformer"
vocab_size = 256
n_embd = 32
n_head = 2
n_layer = 2
block_size = 16
num_segments = 2
dropout = 0.0

[data]
kind = "text"
source = {{ kind = "embedded", bytes = 20000 }}
block_size = 16
batches_per_epoch = 8

[training]
epochs = {epochs}
batch_size = 8
gradient_every = 2
host_optimizer = {{ kind = "adam", lr = 0.01 }}
seed_optimizer = {{ kind = "adam", lr = 0.01 }}

{sections}
[lifecycle.controller]
{controller}

{schedule}
[output]
dir = "out"
"#,
            plugin = self.plugin.display(),
            epochs = self.epochs,
            sections = self.sections,
            controller = self.controller,
        )
    }
}

/// A fresh, empty temporary folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("esper-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Path of the built `esper` binary. Panics with a clear message when it has not been
/// built.
pub fn esper_bin() -> PathBuf {
    let bin = target_dir().join("esper");
    assert!(
        bin.is_file(),
        "{} is not built; build the workspace first (`cargo build --workspace`, as scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A command running the built `esper` binary, logging at `warn` (`RUST_LOG`; a test
/// that wants more sets it again).
pub fn esper() -> Command {
    let mut c = Command::new(esper_bin());
    c.env("RUST_LOG", "warn");
    c
}

/// A finished command's stdout, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A finished command's stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Every file under `dir` (relative path and bytes; links as their target path), to
/// check that a folder was left exactly as it was.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, into: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
            let path = entry.expect("folder entry").path();
            let kind = std::fs::symlink_metadata(&path).expect("metadata").file_type();
            let key = path.strip_prefix(root).expect("under root").to_path_buf();
            if kind.is_symlink() {
                into.insert(key, std::fs::read_link(&path).expect("link").into_os_string().into_encoded_bytes());
            } else if kind.is_dir() {
                into.insert(key, b"<dir>".to_vec());
                walk(root, &path, into);
            } else {
                into.insert(key, std::fs::read(&path).expect("file"));
            }
        }
    }
    let mut files = std::collections::BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

/// Files and folders under `dir` named `*.tmp`: what an interrupted write leaves.
pub fn tmp_leftovers(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir).into_keys().filter(|p| p.extension().is_some_and(|e| e == "tmp")).collect()
}

/// Polls `done` every 50 ms for up to `secs` seconds; panics naming `what` if it never holds.
pub fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < until, "waited {secs} s for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Sends signal `name` (`INT`, `TERM`, `KILL`) to process `pid` with `kill`.
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("running kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The epochs `report.json` in run folder `out` records.
pub fn report_epochs(out: &Path) -> Vec<u64> {
    let path = out.join("report.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let report: serde_json::Value = serde_json::from_slice(&text).expect("report.json is JSON");
    report["epochs"].as_array().expect("epochs").iter().map(|e| e["epoch"].as_u64().expect("epoch")).collect()
}
