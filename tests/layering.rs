//! One crate per audience: the runtime library and the conformance suite (what a
//! plugin's one-line test compiles) pull in no command-line, terminal or plotting crate;
//! those are the `esper` binary's (`esper-cli`).

use std::process::Command;

/// The crates (by name) in the normal-dependency tree of workspace package `package`.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

const FRONT_END: [&str; 4] = ["clap", "indicatif", "plotters", "tracing-subscriber"];

#[test]
fn the_runtime_library_and_the_conformance_suite_have_no_front_end_dependency() {
    for package in ["esper-runtime", "esper-conformance"] {
        let deps = dependencies(package);
        assert!(deps.iter().any(|d| d == "tch"), "premise: {package} depends on tch: {deps:?}");
        let found: Vec<&&str> = FRONT_END.iter().filter(|f| deps.iter().any(|d| d == *f)).collect();
        assert!(found.is_empty(), "{package} depends on {found:?}");
    }
    // The binary is where they live (so the check above looks for the right names).
    let cli = dependencies("esper-cli");
    for f in FRONT_END {
        assert!(cli.iter().any(|d| d == f), "premise: esper-cli depends on {f}");
    }
}

#[test]
fn the_example_plugin_tests_with_the_conformance_crate_only() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/blueprint-plugin/Cargo.toml"))
            .expect("the example plugin's manifest");
    let dev = manifest.split("[dev-dependencies]").nth(1).expect("a [dev-dependencies] table");
    let dev = dev.split("\n[").next().unwrap_or_default();
    let names: Vec<&str> = dev
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split('=').next().map(str::trim))
        .collect();
    assert_eq!(names, ["esper-conformance"], "{dev}");
}
