//! The plugin loader and the `norm` plugin, through the real built libraries.

use esper_plugin_api::abi::{AbiVersion, ABI_VERSION};
use esper_runtime::plugin::{
    library_file_name, BlueprintRegistry, ElfProblem, FileProblem, LoadError, LoadedPlugin, OptionsSchema, PluginKind,
    Segment,
};
use esper_tests::{esper, plugin_lib, stderr, stdout, target_dir, temp_dir, write_file, SmallJob};
use serde_json::{json, Value};
use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
};
use tch::{Device, Kind, Tensor};

fn registry_with(crates: &[&str]) -> BlueprintRegistry {
    let mut r = BlueprintRegistry::new();
    for c in crates {
        r.load(&plugin_lib(c)).unwrap_or_else(|e| panic!("loading {c}: {e}"));
    }
    r
}

fn load_err(path: &std::path::Path) -> LoadError {
    BlueprintRegistry::new().load(path).expect_err("load should fail")
}

fn keys(r: &BlueprintRegistry) -> Vec<String> {
    r.list().map(|(k, _, _)| k.to_string()).collect()
}

#[test]
fn norm_plugin_loads_with_matching_handshake() {
    let r = registry_with(&["esper-norm"]);
    assert_eq!(keys(&r), vec!["cnn:norm"]);
    let plugin = r.plugins().next().unwrap();
    let h = plugin.handshake().expect("a native plugin");
    assert_eq!(h.plugin_name.as_str(), "esper-norm");
    assert_eq!(h.libtorch.as_str(), "2.11.0");
    assert_eq!(h.tch.as_str(), esper_plugin_api::abi::TCH_VERSION);
    let (_, d) = r.resolve("norm").unwrap();
    assert_eq!(d.param_estimate, 130);
    assert_eq!(d.topology.as_str(), "cnn");
}

/// Groups the DESIGN rule gives: 16 channels per group where possible.
const EXPECTED_GROUPS: [(i64, i64); 6] = [(16, 1), (48, 2), (64, 4), (80, 4), (112, 4), (256, 16)];

#[test]
fn norm_group_count_and_shape_for_each_channel_count() {
    let r = registry_with(&["esper-norm"]);
    for (c, groups) in EXPECTED_GROUPS {
        let seed = r.create_seed("cnn:norm", c, &Value::Null, Device::Cpu).unwrap();
        // Parameters are runtime-owned: turn the blend fully on from this side.
        let vars = seed.vars().variables();
        let _ = tch::no_grad(|| vars["scale"].shallow_clone().fill_(10.0));
        let x = Tensor::randn([2, c, 5, 7], (Kind::Float, Device::Cpu));
        let y = seed.forward(&x, true).unwrap();
        assert_eq!(y.size(), x.size(), "shape preserved for {c} channels");
        let with = |g: i64| {
            let gn = x.group_norm(g, Some(&vars["weight"]), Some(&vars["bias"]), 1e-5, true);
            &x + (gn - &x) * 10f64.tanh()
        };
        let err = |g: i64| (&y - with(g)).abs().max().double_value(&[]);
        assert!(err(groups) < 1e-5, "{c} channels: output matches {groups} groups (err {})", err(groups));
        // The check discriminates: a neighbouring group count gives another output.
        let other = if c % (groups * 2) == 0 { groups * 2 } else { groups / 2 };
        if other >= 1 {
            assert!(err(other) > 1e-3, "{c} channels: {other} groups must differ");
        }
    }
}

#[test]
fn norm_is_the_identity_at_birth_and_scale_gets_a_gradient() {
    let r = registry_with(&["esper-norm"]);
    let seed = r.create_seed("norm", 64, &json!({}), Device::Cpu).unwrap();
    assert_eq!(seed.num_parameters(), 64 + 64 + 1);
    let x = Tensor::randn([4, 64, 8, 8], (Kind::Float, Device::Cpu));
    let y = seed.forward(&x, true).unwrap();
    assert_eq!((&y - &x).abs().max().double_value(&[]), 0.0, "identity at birth");
    (&y * &y).sum(Kind::Float).backward();
    let scale = &seed.vars().variables()["scale"];
    let g = scale.grad();
    assert!(g.defined(), "scale has a gradient");
    assert!(g.abs().double_value(&[0]) > 0.0, "scale gradient is non-zero");
}

#[test]
fn missing_file_is_named() {
    let path = temp_dir("missing").join("libnothing.so");
    let e = load_err(&path);
    assert!(matches!(e, LoadError::NotFound { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("plugin library {} does not exist", path.display()));
}

#[test]
fn a_file_that_is_no_library_is_not_a_plugin() {
    let path = temp_dir("garbage").join("libgarbage.so");
    std::fs::write(&path, b"this is not an ELF file").unwrap();
    let e = load_err(&path);
    let msg = e.to_string();
    assert!(
        matches!(&e, LoadError::BadFile { problem: FileProblem::Elf(ElfProblem::NotElf { .. }), .. }),
        "refused before the dynamic loader: {e:?}"
    );
    assert!(msg.contains("libgarbage.so") && msg.contains("cannot open it as a shared library"), "{msg}");
}

#[test]
fn a_library_without_root_module_is_not_a_plugin() {
    let path = plugin_lib("esper-fixture-not-a-plugin");
    let e = load_err(&path);
    let msg = e.to_string();
    assert!(matches!(e, LoadError::NotAPlugin { .. }), "{e:?}");
    assert!(msg.contains("libesper_fixture_not_a_plugin.so is not an Esper plugin"), "{msg}");
    assert!(msg.contains("exports no abi_stable root module"), "{msg}");
}

#[test]
fn layout_mismatch_is_refused_by_the_abi_check() {
    let e = load_err(&plugin_lib("esper-fixture-layout-mismatch"));
    let msg = e.to_string();
    assert!(matches!(e, LoadError::AbiMismatch { .. }), "{e:?}");
    assert!(msg.contains("libesper_fixture_layout_mismatch.so has an incompatible ABI layout"), "{msg}");
}

#[test]
fn version_mismatch_names_both_sides() {
    let e = load_err(&plugin_lib("esper-fixture-wrong-version"));
    let msg = e.to_string();
    assert!(matches!(e, LoadError::VersionMismatch { .. }), "{e:?}");
    assert!(msg.contains("libesper_fixture_wrong_version.so was built with other versions"), "{msg}");
    assert!(msg.contains("libtorch: plugin built with 2.10.0, runtime has 2.11.0"), "{msg}");
    assert!(msg.contains("tch: plugin built with 0.23.0, runtime has 0.24.0"), "{msg}");
}

#[test]
fn the_same_blueprint_from_two_plugins_is_refused_and_nothing_is_lost() {
    let mut r = registry_with(&["esper-norm"]);
    let dup = plugin_lib("esper-fixture-duplicate-norm");
    let e = r.load(&dup).expect_err("duplicate");
    let msg = e.to_string();
    assert!(matches!(e, LoadError::Duplicate { .. }), "{e:?}");
    assert!(msg.contains("`cnn:norm` is exported by two plugins"), "{msg}");
    assert!(msg.contains("libesper_norm.so") && msg.contains("libesper_fixture_duplicate_norm.so"), "{msg}");
    // The registry is as it was: the real norm still serves.
    assert_eq!(keys(&r), vec!["cnn:norm"]);
    assert_eq!(r.plugins().count(), 1);
    assert!(r.create_seed("norm", 16, &Value::Null, Device::Cpu).is_ok());
    // Loading the same file again is not a conflict.
    r.load(&plugin_lib("esper-norm")).unwrap();
    assert_eq!(r.plugins().count(), 1);
}

#[test]
fn unknown_blueprint_lists_the_available_ones() {
    let r = registry_with(&["esper-norm", "esper-fixture-broken"]);
    let e = r.create_seed("attention", 16, &Value::Null, Device::Cpu).err().expect("unknown");
    assert_eq!(
        e.to_string(),
        "unknown blueprint `attention`; available: cnn:dead-parameter, cnn:emit-nan, cnn:eval-updates-buffer, \
         cnn:garbled-error, cnn:ignore-options, cnn:nondeterministic, cnn:norm, cnn:panic-create, cnn:panic-forward, cnn:shape-change"
    );
}

#[test]
fn bad_options_name_the_key() {
    let r = registry_with(&["esper-norm"]);
    let e = r.create_seed("norm", 16, &json!({"groups": 4}), Device::Cpu).err().expect("bad options");
    let msg = e.to_string();
    assert!(matches!(e, LoadError::BadOptions { .. }), "{e:?}");
    assert!(msg.contains("bad options for blueprint `cnn:norm`") && msg.contains("libesper_norm.so"), "{msg}");
    assert!(msg.contains("unknown field `groups`"), "{msg}");
    let e = r.create_seed("norm", 16, &json!([1, 2]), Device::Cpu).err().expect("not an object");
    assert!(e.to_string().contains("options must be a JSON object"), "{e}");
}

#[test]
fn a_panic_in_create_is_contained_and_reported() {
    let r = registry_with(&["esper-norm", "esper-fixture-broken"]);
    let e = r.create_seed("panic-create", 24, &Value::Null, Device::Cpu).err().expect("panic");
    let msg = e.to_string();
    assert!(matches!(e, LoadError::Panicked { .. }), "{e:?}");
    assert!(msg.contains("libesper_fixture_broken.so panicked in blueprint `cnn:panic-create`"), "{msg}");
    assert!(msg.contains("deliberate panic in create (24 channels)"), "{msg}");
    // The process is up and the registry still works.
    let seed = r.create_seed("norm", 16, &Value::Null, Device::Cpu).unwrap();
    assert!(seed.forward(&Tensor::zeros([1, 16, 2, 2], (Kind::Float, Device::Cpu)), false).is_ok());
}

#[test]
fn a_panic_in_forward_is_contained_and_reported() {
    let r = registry_with(&["esper-fixture-broken"]);
    let seed = r.create_seed("panic-forward", 8, &Value::Null, Device::Cpu).unwrap();
    let x = Tensor::zeros([1, 8, 4, 4], (Kind::Float, Device::Cpu));
    for _ in 0..2 {
        let e = seed.forward(&x, true).expect_err("panic");
        let msg = e.to_string();
        assert!(matches!(e, LoadError::Panicked { .. }), "{e:?}");
        assert!(msg.contains("deliberate panic in forward on input [1, 8, 4, 4]"), "{msg}");
    }
}

#[test]
fn a_plugins_error_text_comes_back_escaped_and_cut() {
    use esper_runtime::plugin::text::MAX_TEXT_BYTES;
    let r = registry_with(&["esper-fixture-broken"]);
    // Its 1 MB messages start with ESC[31m and are full of escapes, newlines and a
    // bidirectional override.
    let create = r.create_seed("garbled-error", 8, &json!({"in_create": true}), Device::Cpu).err().expect("fails");
    let seed = r.create_seed("garbled-error", 8, &Value::Null, Device::Cpu).unwrap();
    let forward = seed.forward(&Tensor::zeros([1, 8, 4, 4], (Kind::Float, Device::Cpu)), true).expect_err("fails");
    for (e, call) in [(create, "create"), (forward, "forward")] {
        let msg = e.to_string();
        assert!(matches!(e, LoadError::Failed { .. }), "{e:?}");
        assert!(msg.contains(&format!("failed: \\u{{1b}}[31mgarbled {call}: \\u{{1b}}[31mred")), "{call}: {msg:.300}");
        assert!(!msg.chars().any(|c| c.is_control() || c == '\u{202e}'), "{call}: {msg:?}");
        assert!(msg.len() < MAX_TEXT_BYTES + 300 && msg.ends_with(" bytes cut]"), "{call}: {} bytes", msg.len());
    }
}

#[test]
fn a_folder_loads_every_library_in_it_or_nothing() {
    let dir = temp_dir("folder-ok");
    std::fs::copy(plugin_lib("esper-norm"), dir.join("libesper_norm.so")).unwrap();
    std::fs::copy(plugin_lib("esper-fixture-broken"), dir.join("libbroken.so")).unwrap();
    std::fs::write(dir.join("README.txt"), "not a library").unwrap();
    let mut r = BlueprintRegistry::new();
    let added = r.load(&dir).unwrap();
    assert_eq!(added.len(), 10);
    assert!(added.contains(&"cnn:norm".to_string()) && added.contains(&"cnn:panic-forward".to_string()));

    // A folder with one bad library adds nothing.
    let bad = temp_dir("folder-bad");
    std::fs::copy(plugin_lib("esper-norm"), bad.join("liba_norm.so")).unwrap();
    std::fs::copy(plugin_lib("esper-fixture-wrong-version"), bad.join("libb_wrong.so")).unwrap();
    let mut r = BlueprintRegistry::new();
    let e = r.load(&bad).expect_err("wrong version inside");
    assert!(e.to_string().contains("libb_wrong.so"), "{e}");
    assert_eq!(r.list().count(), 0);

    let empty = temp_dir("folder-empty");
    let e = BlueprintRegistry::new().load(&empty).expect_err("empty");
    assert_eq!(e.to_string(), format!("plugin folder {} has no plugin libraries (*.so)", empty.display()));
}

/// The plugin built against the plugin API frozen at ABI 1.0 (`tests/abi-1.0`, its own
/// Cargo project, built by scripts/test.sh into this target folder).
fn abi_1_0_lib() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("abi-1.0");
    let path = target_dir().join(library_file_name("esper-fixture-abi-1-0"));
    assert!(
        path.is_file(),
        "{} is not built. The ABI 1.0 fixture is its own Cargo project, built before the workspace tests into \
         the same target folder:\n    cargo build --manifest-path tests/abi-1.0/Cargo.toml --target-dir target\n\
         (scripts/test.sh does this before `cargo test`)",
        path.display()
    );
    if let Some(source) = esper_conformance::newer_source(&path, &dir.join("plugin")) {
        panic!("{} is older than {}: rebuild it (scripts/test.sh does)", path.display(), source.display());
    }
    path
}

#[test]
fn a_plugin_built_against_abi_1_0_loads_creates_runs_and_conforms_in_this_runtime() {
    // The premise: this runtime is a later minor of the same major.
    assert_eq!(ABI_VERSION.major, 1);
    const { assert!(ABI_VERSION.minor > 0, "the runtime must be newer than the fixture for this test to mean anything") };
    let lib = abi_1_0_lib();
    let mut r = BlueprintRegistry::new();
    assert_eq!(r.load(&lib).unwrap(), vec!["cnn:legacy-gain"]);
    let plugin = r.plugins().next().unwrap();
    assert_eq!(plugin.abi_version(), AbiVersion::new(1, 0));
    assert_eq!(plugin.kind(), PluginKind::Native);
    assert_eq!(plugin.name_and_version().0, "esper-fixture-abi-1-0");
    // ABI 1.0 has no describe_options: absent, not a panic and not an error.
    assert_eq!(r.options_schema("legacy-gain").unwrap(), OptionsSchema::NotInAbi(AbiVersion::new(1, 0)));

    let x = Tensor::randn([2, 16, 5, 5], (Kind::Float, Device::Cpu));
    let seed = r.create_seed("legacy-gain", 16, &json!({}), Device::Cpu).unwrap();
    assert_eq!(seed.num_parameters(), 16);
    let y = seed.forward(&x, true).unwrap();
    assert_eq!((&y - &x).abs().max().double_value(&[]), 0.0, "identity at birth");
    let _ = tch::no_grad(|| seed.vars().variables()["gain"].shallow_clone().fill_(0.5));
    let y = seed.forward(&x, false).unwrap();
    let expected = &x * (1.0 + 0.5f64.tanh());
    assert!((&y - expected).abs().max().double_value(&[]) < 1e-6, "y = x * (1 + tanh(gain))");
    let one = r.create_seed("legacy-gain", 16, &json!({"per_channel": false}), Device::Cpu).unwrap();
    assert_eq!(one.num_parameters(), 1, "its options reach it");
    let e = r.create_seed("legacy-gain", 16, &json!({"per_chanel": false}), Device::Cpu).err().expect("bad key");
    assert!(e.to_string().contains("unknown field `per_chanel`"), "{e}");

    let report = esper_conformance::run_suite(&lib, &esper_conformance::SuiteOptions::default());
    assert!(report.passed, "{}", report.render());
    let h = report.handshake.as_ref().expect("handshake");
    assert_eq!((h.abi.as_str(), h.runtime_abi.as_str()), ("1.0", ABI_VERSION.to_string().as_str()));
}

#[test]
fn a_plugin_of_abi_2_0_is_refused_naming_both_versions() {
    let e = load_err(&plugin_lib("esper-fixture-abi-2-0"));
    let msg = e.to_string();
    assert!(matches!(e, LoadError::VersionMismatch { .. }), "{e:?}");
    assert!(msg.contains("libesper_fixture_abi_2_0.so was built with other versions than this runtime"), "{msg}");
    assert!(msg.contains(&format!("plugin built against ABI 2.0, runtime has ABI {ABI_VERSION}")), "{msg}");
    assert!(msg.contains("another major version"), "{msg}");
}

#[test]
fn a_plugin_of_a_newer_minor_abi_is_refused_naming_both_versions() {
    let e = load_err(&plugin_lib("esper-fixture-abi-1-9"));
    let msg = e.to_string();
    assert!(matches!(e, LoadError::VersionMismatch { .. }), "{e:?}");
    assert!(msg.contains("libesper_fixture_abi_1_9.so"), "{msg}");
    assert!(msg.contains(&format!("plugin built against ABI 1.9, runtime has ABI {ABI_VERSION}")), "{msg}");
    assert!(msg.contains("the plugin is newer"), "{msg}");
    // Only the ABI: its libtorch and tch are the runtime's.
    assert!(!msg.contains("libtorch:") && !msg.contains("tch:"), "{msg}");
}

#[test]
fn a_current_plugin_without_a_schema_says_so() {
    let r = registry_with(&["esper-norm"]);
    let plugin = r.plugins().next().unwrap();
    assert_eq!((plugin.kind(), plugin.abi_version()), (PluginKind::Native, ABI_VERSION));
    assert_eq!(r.options_schema("norm").unwrap(), OptionsSchema::NotPublished);
    assert!(matches!(r.options_schema("nothing"), Err(LoadError::UnknownBlueprint { .. })));
}

/// Broken library files, each with a word its refusal must say: cut copies of the real
/// `norm` plugin (4 KB, 100 KB, 1 MiB, one byte short), an empty file, a file that is no
/// ELF, `norm` with its machine patched to aarch64, a directory named like a library, and
/// a symbolic link loop.
fn broken_libraries(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let norm = std::fs::read(plugin_lib("esper-norm")).unwrap();
    let mut cases = Vec::new();
    for (name, cut) in [("4k", 4096), ("100k", 100_000), ("1m", 1 << 20), ("short1", norm.len() - 1)] {
        cases.push((write_bytes(dir, &format!("libcut_{name}.so"), &norm[..cut]), "the file is truncated"));
    }
    cases.push((write_bytes(dir, "libempty.so", b""), "the file is empty (0 bytes"));
    cases.push((write_bytes(dir, "libtext.so", b"#!/bin/sh\necho I am no library\n"), "not an ELF file"));
    let mut aarch64 = norm.clone();
    aarch64[18..20].copy_from_slice(&183u16.to_le_bytes()); // e_machine: EM_AARCH64
    cases.push((write_bytes(dir, "libaarch64.so", &aarch64), "built for aarch64"));
    let folder = dir.join("libfolder.so");
    std::fs::create_dir_all(&folder).unwrap();
    cases.push((folder, "folder"));
    let (a, b) = (dir.join("libloop_a.so"), dir.join("libloop_b.so"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    cases.push((a, "symbolic link loop"));
    cases
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn broken_library_files_are_refused_before_the_dynamic_loader_sees_them() {
    let dir = temp_dir("broken-files");
    for (path, why) in broken_libraries(&dir) {
        let e = load_err(&path);
        let msg = e.to_string();
        assert!(msg.contains(&*path.file_name().unwrap().to_string_lossy()) && msg.contains(why), "{msg}");
        if path.is_dir() {
            assert!(matches!(e, LoadError::EmptyFolder { .. }), "a folder is a folder of plugins: {e:?}");
            let e = LoadedPlugin::load(&path).unwrap_err();
            assert!(matches!(e, LoadError::BadFile { problem: FileProblem::Directory, .. }), "{e:?}");
        } else {
            assert!(matches!(e, LoadError::BadFile { .. }), "{path:?}: {e:?}");
        }
    }
    let cut = dir.join("libcut_100k.so");
    let e = load_err(&cut);
    let LoadError::BadFile { problem: FileProblem::Elf(problem), .. } = &e else { panic!("{e:?}") };
    assert!(matches!(problem, ElfProblem::SegmentPastEnd { segment: Segment::Load, len: 100_000, .. }), "{e:?}");
    // Pinned, the bytes read for the hash are checked before the private copy is opened.
    let sha = esper_runtime::config::sha256_hex(&cut).unwrap();
    let e = BlueprintRegistry::new().load_pinned(&cut, Some(&sha)).unwrap_err();
    assert!(matches!(e, LoadError::BadFile { problem: FileProblem::Elf(ElfProblem::SegmentPastEnd { .. }), .. }));
    assert!(e.to_string().contains(&*cut.canonicalize().unwrap().to_string_lossy()), "names the original: {e}");
}

/// `esper ARGS` ended by an exit status of 1 or 2 (never a signal), saying `words`.
fn assert_refused(args: &[&std::ffi::OsStr], dir: &Path, words: &[&str]) {
    let out = esper().args(args).current_dir(dir).output().unwrap();
    let text = format!("{}\n{}", stdout(&out), stderr(&out));
    assert!(
        out.status.code().is_some() && out.status.signal().is_none(),
        "esper {args:?} ended by a signal: {:?}\n{text}",
        out.status
    );
    assert!(matches!(out.status.code(), Some(1 | 2)), "esper {args:?}: {:?}\n{text}", out.status);
    for w in words {
        assert!(text.contains(w), "esper {args:?} should say {w:?}:\n{text}");
    }
}

#[test]
fn no_command_ends_by_a_signal_for_a_broken_library_file() {
    let dir = temp_dir("broken-files-cli");
    // One thread per file: each command is a process start, most of it waiting.
    std::thread::scope(|scope| {
        for (path, why) in broken_libraries(&dir) {
            let dir = &dir;
            scope.spawn(move || {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let words = [name.as_str(), why];
                assert_refused(&["plugins".as_ref(), "list".as_ref(), path.as_os_str()], dir, &words);
                assert_refused(&["conformance".as_ref(), path.as_os_str()], dir, &words);
                let job = SmallJob {
                    plugin: &path,
                    epochs: 1,
                    batch_size: 64,
                    memory_format: "contiguous",
                    blueprint: None,
                    sections: "",
                };
                let config = write_file(dir, &format!("{name}.toml"), &job.text());
                let output = dir.join(format!("out-{name}"));
                let run = ["run".as_ref(), config.as_os_str(), "--output".as_ref(), output.as_os_str()];
                assert_refused(&run, dir, &words);
            });
        }
    });
    let (cut, config) = (dir.join("libcut_4k.so"), dir.join("libcut_4k.so.toml"));
    let words = ["libcut_4k.so", "the file is truncated"];
    assert_refused(&["plugins".as_ref(), "inspect".as_ref(), cut.as_os_str()], &dir, &words);
    assert_refused(&["config".as_ref(), "check".as_ref(), config.as_os_str()], &dir, &words);
}

#[test]
fn resuming_a_run_whose_plugin_was_cut_short_is_refused_without_a_signal() {
    let dir = temp_dir("resume-cut-plugin");
    let plugin = dir.join("libnorm_copy.so");
    std::fs::copy(plugin_lib("esper-norm"), &plugin).unwrap();
    let job = SmallJob {
        plugin: &plugin,
        epochs: 1,
        batch_size: 64,
        memory_format: "contiguous",
        blueprint: Some("norm"),
        sections: "",
    };
    let config = write_file(&dir, "job.toml", &job.text());
    let out = esper().arg("run").arg(&config).current_dir(&dir).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&plugin).unwrap();
    std::fs::write(&plugin, &bytes[..100_000]).unwrap();
    let out_dir = dir.join("out");
    let resume = ["run".as_ref(), "--resume".as_ref(), out_dir.as_os_str(), "--epochs".as_ref(), "2".as_ref()];
    assert_refused(&resume, &dir, &["libnorm_copy.so"]);
}
