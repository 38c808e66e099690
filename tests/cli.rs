//! The `esper` binary's plugin commands and help, as a user runs them.

use esper_tests::{plugin_lib, target_dir};
use std::process::{Command, Output};

fn esper(args: &[&str]) -> Output {
    let bin = target_dir().join("esper");
    assert!(bin.is_file(), "{} is not built (cargo build --workspace)", bin.display());
    Command::new(bin).args(args).env("RUST_LOG", "warn").output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn plugins_list_shows_every_blueprint_with_its_library() {
    let norm = plugin_lib("esper-norm");
    let broken = plugin_lib("esper-fixture-broken");
    let out = esper(&["plugins", "list", norm.to_str().unwrap(), broken.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1 + 8, "norm and the 8 broken blueprints: {text}");
    let norm_line = text.lines().find(|l| l.starts_with("cnn:norm ")).expect("cnn:norm listed");
    assert!(norm_line.contains("~130") && norm_line.contains("libesper_norm.so"), "{norm_line}");
    // With no path: the norm plugin built beside the binary.
    let out = esper(&["plugins", "list"]);
    assert!(stdout(&out).starts_with("cnn:norm "), "{}", stdout(&out));
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
