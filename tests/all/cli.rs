//! The `esper` binary's plugin commands and help, as a user runs them, and the
//! documentation's examples run through it (`docs`).

mod docs;

use esper_tests::{plugin_lib, stdout, SmallJob};
use std::process::Output;

fn esper(args: &[&str]) -> Output {
    esper_tests::esper().args(args).output().unwrap()
}

#[test]
fn plugins_list_shows_every_blueprint_with_its_library() {
    let norm = plugin_lib("esper-norm");
    let broken = plugin_lib("esper-fixture-broken");
    let out = esper(&["plugins", "list", norm.to_str().unwrap(), broken.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1 + 9, "norm and the 9 broken blueprints: {text}");
    let norm_line = text.lines().find(|l| l.starts_with("cnn:norm ")).expect("cnn:norm listed");
    // A plugin's description is shown escaped.
    assert!(!out.stdout.contains(&0x1b) && text.contains("terminal escapes (\\u{1b}[31m)"), "{text}");
    assert!(norm_line.contains("~130") && norm_line.contains("libesper_norm.so"), "{norm_line}");
    // With no path: the shipped plugins built beside the binary, norm, the CNN library
    // and the transformer library (esper-lite's catalogues) with their estimates.
    let out = esper(&["plugins", "list"]);
    let text = stdout(&out);
    let listed: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    for (blueprint, estimate) in [
        ("cnn:norm", "~130"),
        ("cnn:noop", "~0"),
        ("cnn:attention", "~2000"),
        ("cnn:depthwise", "~4800"),
        ("cnn:bottleneck", "~4500"),
        ("cnn:conv_small", "~4200"),
        ("cnn:conv_light", "~37000"),
        ("cnn:conv_heavy", "~74000"),
        ("transformer:noop", "~0"),
        ("transformer:norm", "~130"),
        ("transformer:lora", "~1000"),
        ("transformer:lora_large", "~4100"),
        ("transformer:attention", "~16600"),
        ("transformer:flex_attention", "~16600"),
        ("transformer:mlp_small", "~16600"),
        ("transformer:mlp", "~33000"),
    ] {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(blueprint));
        assert!(line.is_some_and(|l| l.contains(estimate)), "{blueprint} {estimate}: {text}");
    }
    assert_eq!(listed.len(), 16, "{text}");
    // Every name in one column, the longest one included.
    let column = |l: &str| l.find('~').unwrap();
    assert!(text.lines().all(|l| column(l) == column(text.lines().next().unwrap())), "{text}");
}

#[test]
fn plugins_inspect_compares_declared_and_actual_parameters() {
    let norm = plugin_lib("esper-norm");
    let out = esper(&["plugins", "inspect", norm.to_str().unwrap(), "--channels", "48"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert!(text.contains("plugin   esper-norm 0.1.0"), "{text}");
    assert!(text.contains("built with plugin API 0.1.0, libtorch 2.11.0, tch 0.24.0"), "{text}");
    assert!(text.contains("parameters at 48 channels: declared ~130, actual 97"), "{text}");
    // A blueprint that cannot be created says so instead of failing the command.
    let out = esper(&["plugins", "inspect", plugin_lib("esper-fixture-broken").to_str().unwrap()]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("cannot create: plugin"), "{}", stdout(&out));
}

#[test]
fn a_bad_library_is_a_clear_error_and_a_failure_exit() {
    let out = esper(&["plugins", "inspect", plugin_lib("esper-fixture-wrong-version").to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: plugin ") && stderr.contains("libtorch: plugin built with 2.10.0"), "{stderr}");
}

/// Every line of `text` (what `what` holds) is free of ESC and at most `limit` bytes.
fn assert_clean(what: &str, text: &[u8], limit: usize) {
    assert!(!text.contains(&0x1b), "{what} holds an ESC byte");
    let longest = text.split(|&b| b == b'\n').map(<[u8]>::len).max().unwrap_or(0);
    assert!(longest <= limit, "{what} has a line of {longest} bytes (limit {limit})");
}

#[test]
fn a_plugins_garbled_error_reaches_no_terminal_and_no_file_raw() {
    use esper_runtime::plugin::text::MAX_TEXT_BYTES;
    // The fixture fails with 1 MB of text full of escapes (starting with ESC[31m), in
    // forward (refused by the germination probe, mid-run) or in create (refused by the
    // preflight). An event line holds the capped text three times (its message, the
    // record's `reason` and `text`), the record's copies JSON-escaped twice; whatever
    // the plugin's text, a line stays within a few caps.
    let line_limit = 5 * MAX_TEXT_BYTES;
    let dir = esper_tests::temp_dir("garbled");
    let broken = plugin_lib("esper-fixture-broken");
    let job = SmallJob {
        plugin: &broken,
        epochs: 1,
        batch_size: 64,
        memory_format: "contiguous",
        blueprint: Some("garbled-error"),
        sections: "",
    };
    let config = esper_tests::write_file(&dir, "run.toml", &job.text());
    let out = esper(&["run", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_clean("stdout", &out.stdout, line_limit);
    assert_clean("stderr", &out.stderr, line_limit);
    let events = std::fs::read(dir.join("out/events.jsonl")).unwrap();
    assert_clean("events.jsonl", &events, line_limit);
    assert!(events.len() < 64 << 10, "events.jsonl is {} bytes", events.len());
    let report = std::fs::read(dir.join("out/report.json")).unwrap();
    assert_clean("report.json", &report, line_limit);
    assert_clean(
        "the checkpoint",
        &std::fs::read(dir.join("out/checkpoints/epoch-0001/state.json")).unwrap(),
        line_limit,
    );
    // The failure is recorded, its text escaped visibly and cut.
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    let failed = &report["epochs"][0]["events"][0];
    assert_eq!((&failed["event"], &failed["slot"]), (&"germination_failed".into(), &"r0c1".into()), "{failed}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("\\u{1b}[31mgarbled forward: \\u{1b}[31mred") && reason.contains(" bytes cut]"),
        "{reason:.300}"
    );
    assert!(reason.len() < MAX_TEXT_BYTES + 1024, "{} bytes", reason.len());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\\u{1b}[31mgarbled forward"));

    // In create: `config check` refuses it, its message escaped and cut.
    let text = job
        .text()
        .replace("blueprint = \"garbled-error\"", "blueprint = \"garbled-error\"\noptions = { in_create = true }");
    let config = esper_tests::write_file(&dir, "create.toml", &text);
    let out = esper(&["config", "check", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_clean("config check's stderr", &out.stderr, MAX_TEXT_BYTES + 1024);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("lifecycle.schedule[0]") && e.contains("\\u{1b}[31mgarbled create"), "{e:.500}");
}

#[test]
fn help_is_everywhere() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["plugins", "--help"],
        &["plugins", "list", "--help"],
        &["plugins", "inspect", "--help"],
        &["config", "check", "--help"],
        &["conformance", "--help"],
    ] {
        let out = esper(args);
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage: esper"), "{args:?}: {}", stdout(&out));
    }
    assert!(!esper(&["frobnicate"]).status.success());
}

fn checkpoints(out: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_second_run_into_the_same_folder_is_refused_unless_overwrite_or_resume() {
    let dir = esper_tests::temp_dir("run-twice");
    let config = dir.join("run.toml");
    let norm = plugin_lib("esper-norm");
    std::fs::write(
        &config,
        SmallJob {
            plugin: &norm,
            epochs: 3,
            batch_size: 64,
            memory_format: "channels_last",
            blueprint: None,
            sections: "",
        }
        .text(),
    )
    .unwrap();
    let (config, out) = (config.to_str().unwrap(), dir.join("out"));
    let run = esper(&["run", config]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(checkpoints(&out), ["epoch-0002", "epoch-0003", "latest"]);

    // Again into the same folder: refused, nothing touched, the three ways out named.
    let again = esper(&["run", config]);
    assert_eq!(again.status.code(), Some(1));
    let e = String::from_utf8_lossy(&again.stderr);
    let shown = out.display().to_string();
    assert!(e.starts_with(&format!("error: output folder {shown} is not empty")), "{e}");
    assert!(e.contains(&format!("--resume {shown}")) && e.contains("--overwrite") && e.contains("--output DIR"), "{e}");
    assert_eq!(checkpoints(&out), ["epoch-0002", "epoch-0003", "latest"]);

    // --overwrite starts over: none of the earlier run's checkpoints survive.
    let fresh = esper(&["run", config, "--overwrite", "--epochs", "1"]);
    assert!(fresh.status.success(), "{}", String::from_utf8_lossy(&fresh.stderr));
    assert_eq!(checkpoints(&out), ["epoch-0001", "latest"]);
    assert_eq!(std::fs::read_to_string(out.join("checkpoints/latest")).unwrap(), "epoch-0001");

    // --resume continues it; the new checkpoint does not remove the one before.
    let resumed = esper(&["run", "--resume", out.to_str().unwrap(), "--epochs", "2"]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(checkpoints(&out), ["epoch-0001", "epoch-0002", "latest"]);

    // The two cannot be combined.
    let both = esper(&["run", "--resume", out.to_str().unwrap(), "--overwrite"]);
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
}

#[test]
fn redirected_logs_have_no_escape_codes_and_the_plot_its_labels_without_system_fonts() {
    let dir = esper_tests::temp_dir("plain-logs");
    // No system fonts: fontconfig reads an empty config (the plot's font is embedded).
    let norm = plugin_lib("esper-norm");
    let fonts = esper_tests::write_file(&dir, "fonts.conf", "<?xml version=\"1.0\"?>\n<fontconfig></fontconfig>\n");
    let config = esper_tests::write_file(
        &dir,
        "run.toml",
        &SmallJob {
            plugin: &norm,
            epochs: 1,
            batch_size: 32,
            memory_format: "channels_last",
            blueprint: None,
            sections: "",
        }
        .text(),
    );
    let run = esper_tests::esper()
        .arg("run")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("FONTCONFIG_FILE", &fonts)
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let e = esper_tests::stderr(&run);
    assert!(run.status.success(), "{e}");
    assert!(e.contains("run prepared"), "the run logs at info: {e}");
    assert!(!e.contains("\x1b["), "stderr is not a terminal, yet has escape codes: {e:?}");
    let out = stdout(&run);
    assert!(!out.contains("no labels"), "{out}");
    let png = std::fs::read(dir.join("out/report.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn compare_runs_the_schedule_once_per_blueprint_and_once_without_a_seed() {
    let dir = esper_tests::temp_dir("compare");
    let norm = plugin_lib("esper-norm");
    let job = SmallJob {
        plugin: &norm,
        epochs: 2,
        batch_size: 64,
        memory_format: "channels_last",
        blueprint: Some("norm"),
        sections: "",
    };
    let config = esper_tests::write_file(&dir, "compare.toml", &job.text());
    let out = esper(&["compare", config.to_str().unwrap(), "--blueprints", "cnn:norm"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert!(text.lines().nth(1).is_some_and(|l| l.starts_with("(none)")), "{text}");
    assert!(text.lines().nth(2).is_some_and(|l| l.starts_with("cnn:norm")), "{text}");
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/compare.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["blueprint"].is_null(), rows[0]["seed_parameters"].as_i64()), (true, Some(0)));
    // norm at r0c1 of a base-8 host: 16 channels, 2 * 16 + 1 parameters (unless pruned).
    let params = rows[1]["seed_parameters"].as_i64().unwrap();
    let stage = rows[1]["final_stages"][0].as_str().unwrap();
    assert!(params == 33 || ["PRUNED", "EMBARGOED"].contains(&stage), "{rows:?}");
    assert!(rows.iter().all(|r| r["step_ms"].as_f64().unwrap() > 0.0), "{rows:?}");
    assert_eq!(&std::fs::read(dir.join("out/compare.png")).unwrap()[1..4], b"PNG");
}

/// `esper env` as `KEY -> VALUE`.
fn env_vars() -> std::collections::HashMap<String, String> {
    let out = esper(&["env"]);
    assert!(out.status.success(), "{}", esper_tests::stderr(&out));
    let text = stdout(&out);
    text.lines()
        .map(|l| l.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {l}\n{text}")))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

#[test]
fn env_prints_the_runtime_the_checkout_and_its_libtorch() {
    let vars = env_vars();
    let path = |key: &str| std::path::PathBuf::from(vars.get(key).unwrap_or_else(|| panic!("no {key}: {vars:?}")));
    assert_eq!(path("ESPER").canonicalize().unwrap(), esper_tests::esper_bin().canonicalize().unwrap());
    assert!(path("ESPER_SOURCE").join("plugin-portable/Cargo.toml").is_file(), "{vars:?}");
    assert_eq!(vars["ESPER_ABI"], esper_plugin_api::abi::ABI_VERSION.to_string());
    assert_eq!(vars["ESPER_ABI"], "1.3");
    let libtorch = path("LIBTORCH");
    assert!(libtorch.is_absolute() && libtorch.join("lib").is_dir(), "{vars:?}");
    assert_eq!(vars["LIBTORCH_CXX11_ABI"], "1");
}

#[test]
fn plugin_new_writes_a_portable_project_by_default_and_a_native_one() {
    let dir = esper_tests::temp_dir("plugin-new");
    let vars = env_vars();
    let source = &vars["ESPER_SOURCE"];
    let out = esper(&["plugin", "new", "my-seed", "--path", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", esper_tests::stderr(&out));
    let read = |path: &str| {
        std::fs::read_to_string(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}\n{}", stdout(&out)))
    };
    let cargo = read("my-seed/Cargo.toml");
    assert!(cargo.contains("name = \"my-seed\"") && cargo.contains("crate-type = [\"cdylib\", \"rlib\"]"), "{cargo}");
    assert!(cargo.contains(&format!("esper-plugin-portable = {{ path = \"{source}/plugin-portable\" }}")), "{cargo}");
    assert!(cargo.contains("not published") && cargo.lines().any(|l| l == "[workspace]"), "{cargo}");
    assert!(!cargo.contains("esper-plugin-api") && !cargo.contains("tch"), "{cargo}");
    let lib = read("my-seed/src/lib.rs");
    assert!(lib.contains("const NAME: &'static str = \"my-seed\";"), "{lib}");
    assert!(lib.contains("Init::Zeros") && lib.contains("esper_plugin_portable::export_plugin!();"), "{lib}");
    assert_eq!(lib.matches("register_blueprint!").count(), 1, "{lib}");
    assert!(read("my-seed/tests/conformance.rs").contains("esper_plugin_portable::conformance_test!();"));
    assert_eq!(read("my-seed/.gitignore"), "target/\n");
    assert!(!dir.join("my-seed/.cargo").exists(), "a portable project needs no libtorch settings");

    let out = esper(&["plugin", "new", "my-native", "--native", "--path", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", esper_tests::stderr(&out));
    let cargo = read("my-native/Cargo.toml");
    assert!(cargo.contains(&format!("esper-plugin-api = {{ path = \"{source}/plugin-api\" }}")), "{cargo}");
    assert!(cargo.contains(&format!("esper-conformance = {{ path = \"{source}/conformance\" }}")), "{cargo}");
    assert!(cargo.lines().any(|l| l == "[workspace]") && cargo.contains("[dev-dependencies]"), "{cargo}");
    assert!(read("my-native/src/lib.rs").contains("esper_plugin_api::register_blueprint!(MyNative);"));
    assert!(read("my-native/tests/conformance.rs").contains("esper_conformance::conformance_test!();"));
    let config = read("my-native/.cargo/config.toml");
    let libtorch = &vars["LIBTORCH"];
    assert!(config.contains(&format!("LIBTORCH = \"{libtorch}\"")), "{config}");
    assert!(config.contains("LIBTORCH_CXX11_ABI = \"1\""), "{config}");
    assert!(config.contains(&format!("-Wl,-rpath,{libtorch}/lib")), "{config}");
}

#[test]
fn plugin_new_refuses_bad_names_and_existing_folders() {
    let dir = esper_tests::temp_dir("plugin-new-refused");
    let new = |name: &str| esper(&["plugin", "new", name, "--path", dir.to_str().unwrap()]);
    for (name, why) in [
        ("2seed", "must start with a letter"),
        ("my seed", "is not allowed"),
        ("fn", "Rust keyword"),
        ("", "it is empty"),
    ] {
        let out = new(name);
        let err = esper_tests::stderr(&out);
        assert!(!out.status.success(), "{name:?} accepted");
        assert!(err.contains(&format!("`{name}` is not a valid crate name")) && err.contains(why), "{name:?}: {err}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing written for a bad name");
    // An empty folder is taken; one with anything in it (or a file) is refused.
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    assert!(new("empty").status.success());
    for taken in ["empty", "file"] {
        if taken == "file" {
            std::fs::write(dir.join("file"), "").unwrap();
        }
        let out = new(taken);
        assert!(!out.status.success(), "{taken} accepted");
        assert!(esper_tests::stderr(&out).contains("already exists and is not an empty folder"), "{taken}");
    }
    assert!(!esper(&["plugin", "new", "x", "--portable", "--native"]).status.success());
}

// ---- Run folders: one process at a time, resumed where they are, written safely ----

/// A config in `dir` for a fast run of `epochs` epochs (no seed), output `dir/out`.
fn fast_job(dir: &std::path::Path, epochs: u32) -> std::path::PathBuf {
    let norm = plugin_lib("esper-norm");
    let job = SmallJob {
        plugin: &norm,
        epochs,
        batch_size: 64,
        memory_format: "channels_last",
        blueprint: None,
        sections: "",
    };
    esper_tests::write_file(dir, "run.toml", &job.text())
}

/// `esper run ARGS`, run to its end.
fn run_esper(args: &[&std::ffi::OsStr]) -> Output {
    esper_tests::esper().arg("run").args(args).output().unwrap()
}

/// `esper run ARGS` started in the background, its output captured.
fn spawn_esper(args: &[&std::ffi::OsStr]) -> std::process::Child {
    esper_tests::esper()
        .arg("run")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn latest(out: &std::path::Path) -> String {
    std::fs::read_to_string(out.join("checkpoints/latest")).unwrap_or_default()
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

#[test]
fn a_second_process_on_a_run_folder_is_refused_at_once_naming_the_first() {
    let dir = esper_tests::temp_dir("lock");
    let config = fast_job(&dir, 1000);
    let out = dir.join("out");
    let mut first = spawn_esper(&[config.as_os_str()]);
    let pid = first.id();
    esper_tests::wait_for("the first run's lock and checkpoint", 60, || {
        std::fs::read_to_string(out.join(".esper.lock")).is_ok_and(|t| t == format!("{pid}\n"))
            && !latest(&out).is_empty()
    });
    let busy = format!("error: run folder {} is in use by another esper process (PID {pid}", out.display());
    for args in
        [vec![config.as_os_str()], vec![config.as_os_str(), os("--overwrite")], vec![os("--resume"), out.as_os_str()]]
    {
        let started = std::time::Instant::now();
        let second = run_esper(&args);
        let e = esper_tests::stderr(&second);
        assert_eq!(second.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.starts_with(&busy), "{args:?}: {e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{args:?} was not refused at once");
        assert!(first.try_wait().unwrap().is_none(), "the first run goes on");
        assert!(out.join("checkpoints").is_dir() && out.join("events.jsonl").is_file(), "{args:?} removed files");
    }
    // The lock goes with its process, however it ends (kill -9 here).
    first.kill().unwrap();
    first.wait().unwrap();
    let done: u32 = latest(&out).trim_start_matches("epoch-").parse().unwrap();
    let resumed = run_esper(&[os("--resume"), out.as_os_str(), os("--epochs"), os(&(done + 1).to_string())]);
    assert!(resumed.status.success(), "{}", esper_tests::stderr(&resumed));
    assert_eq!(latest(&out), format!("epoch-{:04}", done + 1));
}

#[test]
fn a_copied_or_moved_run_folder_continues_where_it_is() {
    let dir = esper_tests::temp_dir("moved");
    let config = fast_job(&dir, 1);
    let (a, b, c) = (dir.join("rA"), dir.join("rB"), dir.join("rC"));
    let first = run_esper(&[config.as_os_str(), os("--output"), a.as_os_str()]);
    assert!(first.status.success(), "{}", esper_tests::stderr(&first));
    let check = |run: &std::path::Path| {
        assert_eq!(latest(run), "epoch-0002");
        assert_eq!(esper_tests::report_epochs(run), [1, 2]);
        let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
        assert_eq!(events.matches("\"event\":\"epoch\"").count(), 2, "both epochs' events in {}", run.display());
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("checkpoints/epoch-0002/state.json")).unwrap()).unwrap();
        assert_eq!(state["config"]["output"]["dir"], run.to_str().unwrap());
    };
    // A copy continues in the copy; the original is not touched.
    assert!(std::process::Command::new("cp").arg("-r").arg(&a).arg(&c).status().unwrap().success());
    let original = esper_tests::snapshot(&a);
    let resumed = run_esper(&[os("--resume"), c.as_os_str(), os("--epochs"), os("2")]);
    assert!(resumed.status.success(), "{}", esper_tests::stderr(&resumed));
    check(&c);
    assert!(esper_tests::snapshot(&a) == original, "resuming the copy changed the original");
    // A moved folder continues where it is now; nothing is written to where it was.
    std::fs::rename(&a, &b).unwrap();
    let resumed = run_esper(&[os("--resume"), b.as_os_str(), os("--epochs"), os("2")]);
    assert!(resumed.status.success(), "{}", esper_tests::stderr(&resumed));
    check(&b);
    assert!(!a.exists(), "the old path was written to");
    // --output cannot send a resumed run elsewhere: refused, the way out named.
    let d = dir.join("rD");
    let both = run_esper(&[os("--resume"), b.as_os_str(), os("--output"), d.as_os_str()]);
    let e = esper_tests::stderr(&both);
    assert_eq!(both.status.code(), Some(2), "{e}");
    assert!(
        e.contains("--resume continues a run in its own folder, so it takes no --output") && e.contains("cp -r"),
        "{e}"
    );
    assert!(!d.exists());
    let help = stdout(&esper(&["run", "--help"]));
    assert!(
        help.contains("a moved or copied run folder continues where it is") && help.contains("Not with --output"),
        "{help}"
    );
}

#[test]
fn resume_follows_latest_only_inside_the_run_and_falls_back_to_a_complete_checkpoint() {
    let dir = esper_tests::temp_dir("latest");
    let config = fast_job(&dir, 2);
    let out = dir.join("out");
    let first = run_esper(&[config.as_os_str()]);
    assert!(first.status.success(), "{}", esper_tests::stderr(&first));
    let other = dir.join("other");
    assert!(std::process::Command::new("cp").arg("-r").arg(&out).arg(&other).status().unwrap().success());
    let theirs = esper_tests::snapshot(&other);
    // `latest` naming another run's checkpoint is refused.
    std::fs::write(out.join("checkpoints/latest"), "../../other/checkpoints/epoch-0002").unwrap();
    let refused = run_esper(&[os("--resume"), out.as_os_str(), os("--epochs"), os("3")]);
    let e = esper_tests::stderr(&refused);
    assert_eq!(refused.status.code(), Some(1), "{e}");
    assert!(e.contains("names `../../other/checkpoints/epoch-0002`, not a checkpoint folder epoch-NNNN inside"), "{e}");
    assert!(esper_tests::snapshot(&other) == theirs);
    // The newest checkpoint without its marker: the one before is used, with a warning.
    std::fs::write(out.join("checkpoints/latest"), "epoch-0002").unwrap();
    std::fs::remove_file(out.join("checkpoints/epoch-0002/COMPLETE")).unwrap();
    let resumed = run_esper(&[os("--resume"), out.as_os_str(), os("--epochs"), os("3")]);
    let e = esper_tests::stderr(&resumed);
    assert!(resumed.status.success(), "{e}");
    let warning = format!(
        "names epoch-0002, which is incomplete (no COMPLETE marker): resuming from {}, the newest complete checkpoint",
        out.join("checkpoints/epoch-0001").display()
    );
    assert!(e.contains("WARN") && e.contains(&warning), "{e}");
    assert_eq!(esper_tests::report_epochs(&out), [1, 2, 3]);
    assert_eq!(latest(&out), "epoch-0003");
    assert!(esper_tests::snapshot(&other) == theirs);
}

#[test]
fn a_link_in_place_of_a_run_file_is_refused_and_its_target_left_alone() {
    let dir = esper_tests::temp_dir("links");
    let config = fast_job(&dir, 1);
    let out = dir.join("out");
    let first = run_esper(&[config.as_os_str()]);
    assert!(first.status.success(), "{}", esper_tests::stderr(&first));
    let precious = esper_tests::write_file(&dir, "precious.txt", "precious");
    for name in ["report.json", "events.jsonl"] {
        let kept = dir.join(format!("{name}.kept"));
        std::fs::rename(out.join(name), &kept).unwrap();
        std::os::unix::fs::symlink(&precious, out.join(name)).unwrap();
        let refused = run_esper(&[os("--resume"), out.as_os_str(), os("--epochs"), os("2")]);
        let e = esper_tests::stderr(&refused);
        assert_eq!(refused.status.code(), Some(1), "{name}: {e}");
        assert!(e.starts_with(&format!("error: {} is a symbolic link", out.join(name).display())), "{e}");
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious", "{name}: the link's target was written");
        assert_eq!(latest(&out), "epoch-0001", "{name}: the run went on");
        std::fs::remove_file(out.join(name)).unwrap();
        std::fs::rename(&kept, out.join(name)).unwrap();
    }
}

#[test]
fn a_full_disk_keeps_the_last_report_and_checkpoint_and_leaves_no_tmp() {
    // A file size limit (RLIMIT_FSIZE, set with prlimit(1) on the running child: no
    // privileges needed) with SIGXFSZ ignored: a write past it fails with EFBIG, as on
    // a full disk. It is set once the run has resumed (loading a plugin writes a private
    // copy of it); the seed sleeps 1 s a step from then on, so the epoch is still under
    // way.
    let dir = esper_tests::temp_dir("full-disk");
    let config = sleepy_job(&dir, 1, 1);
    let out = dir.join("out");
    let first = run_esper(&[config.as_os_str(), os("--epochs"), os("1")]);
    assert!(first.status.success(), "{}", esper_tests::stderr(&first));
    let size = |p: &str| std::fs::metadata(out.join(p)).unwrap().len();
    let resumed =
        || std::fs::read_to_string(out.join("events.jsonl")).unwrap().matches("\"message\":\"resumed\"").count();
    let limited = |bytes: u64| {
        let before = resumed();
        let run = std::process::Command::new("bash")
            .args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\""])
            .arg(esper_tests::esper_bin())
            .args([os("run"), os("--resume"), out.as_os_str(), os("--epochs"), os("2")])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        esper_tests::wait_for("the run to resume", 60, || resumed() > before);
        let pid = run.id().to_string();
        let fsize = format!("--fsize={bytes}");
        assert!(std::process::Command::new("prlimit").args(["--pid", &pid, &fsize]).status().unwrap().success());
        run.wait_with_output().unwrap()
    };
    // The checkpoint's largest file does not fit: the run ends, the last good state kept.
    let host = size("checkpoints/epoch-0001/host.safetensors");
    let before = esper_tests::snapshot(&out);
    let full = limited(host - 2048);
    let e = esper_tests::stderr(&full);
    assert_eq!(full.status.code(), Some(1), "{e}");
    assert!(e.contains("epoch 2: writing the checkpoint failed") && e.contains("host.safetensors"), "{e}");
    assert!(esper_tests::tmp_leftovers(&out).is_empty(), "{:?}", esper_tests::tmp_leftovers(&out));
    let after = esper_tests::snapshot(&out);
    for kept in ["report.json", "report.png", "checkpoints/latest", "checkpoints/epoch-0001/host.safetensors"] {
        let kept = std::path::Path::new(kept);
        assert!(after[kept] == before[kept], "{} changed", kept.display());
    }
    assert!(!out.join("checkpoints/epoch-0002").exists());
    // The checkpoint fits and the plot does not: the new report.json is in place, the
    // previous report.png kept whole.
    let png = std::fs::read(out.join("report.png")).unwrap();
    let limit = host.max(size("checkpoints/epoch-0001/optim-host.safetensors")) + 2048;
    assert!(png.len() as u64 > limit + 1024, "premise: the plot is larger than the checkpoint's files");
    let full = limited(limit);
    let e = esper_tests::stderr(&full);
    assert_eq!(full.status.code(), Some(1), "{e}");
    assert!(e.contains("report.png"), "{e}");
    assert_eq!(std::fs::read(out.join("report.png")).unwrap(), png);
    assert_eq!(esper_tests::report_epochs(&out), [1, 2]);
    assert_eq!(latest(&out), "epoch-0002");
    assert!(esper_tests::tmp_leftovers(&out).is_empty(), "{:?}", esper_tests::tmp_leftovers(&out));
}

#[test]
fn sigint_and_sigterm_stop_the_run_with_its_report_and_say_how_to_resume() {
    let dir = esper_tests::temp_dir("signals");
    let config = fast_job(&dir, 1000);
    let out = dir.join("out");
    let resume = format!("continue with `esper run --resume {}`", out.display());
    for (signal, code, args) in [
        ("INT", 130, vec![config.as_os_str()]),
        ("TERM", 143, vec![os("--resume"), out.as_os_str(), os("--epochs"), os("1000")]),
    ] {
        let before = latest(&out);
        let run = spawn_esper(&args);
        esper_tests::wait_for("a new checkpoint", 60, || !latest(&out).is_empty() && latest(&out) != before);
        esper_tests::send_signal(run.id(), signal);
        let ended = run.wait_with_output().unwrap();
        let e = esper_tests::stderr(&ended);
        assert_eq!(ended.status.code(), Some(code), "SIG{signal}: {e}");
        let done: u64 = latest(&out).trim_start_matches("epoch-").parse().unwrap();
        assert!(e.contains(&format!("stopped by SIG{signal} during epoch {} (not recorded)", done + 1)), "{e}");
        assert!(e.contains(&format!("covers epochs 1-{done}")) && e.contains(&resume), "{e}");
        assert_eq!(esper_tests::report_epochs(&out), (1..=done).collect::<Vec<_>>());
        assert!(esper_tests::stdout(&ended).contains("validation accuracy:"), "the table is printed");
    }
}

/// A run whose seed (`sleepy`, the hostile fixture, germinated before epoch 1) sleeps
/// `sleep_s` seconds in each train-mode forward after its first `after` (the germination
/// probe makes one; a seed trains from epoch 2).
fn sleepy_job(dir: &std::path::Path, after: u32, sleep_s: u32) -> std::path::PathBuf {
    let hostile = plugin_lib("esper-fixture-hostile");
    let job = SmallJob {
        plugin: &hostile,
        epochs: 2,
        batch_size: 64,
        memory_format: "channels_last",
        blueprint: Some("sleepy"),
        sections: "",
    };
    let options = format!("blueprint = \"sleepy\"\noptions = {{ after = {after}, sleep_s = {sleep_s} }}\n");
    esper_tests::write_file(dir, "run.toml", &job.text().replace("blueprint = \"sleepy\"\n", &options))
}

/// Whether the run in `out` has logged that it is prepared (its seed is germinated next).
fn prepared(out: &std::path::Path) -> bool {
    std::fs::read_to_string(out.join("events.jsonl")).is_ok_and(|t| t.contains("\"message\":\"run prepared\""))
}

#[test]
fn a_stop_in_the_first_epoch_writes_nothing_and_a_second_ctrl_c_exits_at_once() {
    let dir = esper_tests::temp_dir("sigint-first-epoch");
    let out = dir.join("out");
    // One SIGINT: the germination probe under way ends (the seed sleeps 2 s in it), then
    // the run stops before its first step.
    let config = sleepy_job(&dir, 0, 2);
    let run = spawn_esper(&[config.as_os_str()]);
    esper_tests::wait_for("the run to be prepared", 60, || prepared(&out));
    esper_tests::send_signal(run.id(), "INT");
    let ended = run.wait_with_output().unwrap();
    let e = esper_tests::stderr(&ended);
    assert_eq!(ended.status.code(), Some(130), "{e}");
    assert!(e.contains("stopped by SIGINT during epoch 1, before any epoch ended: no report and no checkpoint"), "{e}");
    assert!(!out.join("report.json").exists() && !out.join("checkpoints").exists());
    let nothing = run_esper(&[os("--resume"), out.as_os_str()]);
    let e = esper_tests::stderr(&nothing);
    assert_eq!(nothing.status.code(), Some(1), "{e}");
    let expected =
        format!("{} has no complete checkpoint yet: the run stopped before its first epoch ended", out.display());
    assert!(e.contains(&expected), "{e}");
    // Two: the second ends the process at once, though the probe still sleeps (30 s).
    let config = sleepy_job(&dir, 0, 30);
    let out = dir.join("out-2");
    let mut run = spawn_esper(&[config.as_os_str(), os("--output"), out.as_os_str()]);
    esper_tests::wait_for("the run to be prepared", 60, || prepared(&out));
    std::thread::sleep(std::time::Duration::from_millis(500));
    esper_tests::send_signal(run.id(), "INT");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(run.try_wait().unwrap().is_none(), "the first SIGINT waits for the step to end");
    let started = std::time::Instant::now();
    esper_tests::send_signal(run.id(), "INT");
    let ended = run.wait_with_output().unwrap();
    assert_eq!(ended.status.code(), Some(130), "{}", esper_tests::stderr(&ended));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the second SIGINT did not end the run at once");
    assert!(!esper_tests::stderr(&ended).contains("stopped by"), "{}", esper_tests::stderr(&ended));
}
