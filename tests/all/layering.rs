//! One crate per audience: the runtime library and the conformance suite (what a
//! plugin's one-line test compiles) pull in no command-line, terminal or plotting crate;
//! those are the `esper` binary's (`esper-cli`).

use std::process::Command;

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The crates (by name) in the normal-dependency tree of workspace package `package`.
fn dependencies(package: &str) -> Vec<String> {
    tree(package, "normal")
}

/// The crates (by name) in the dependency tree of workspace package `package`, along
/// the dependency kinds `edges` (`cargo tree -e`).
fn tree(package: &str, edges: &str) -> Vec<String> {
    let out = Command::new(cargo())
        .args(["tree", "--offline", "-e", edges, "--prefix", "none", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

const FRONT_END: [&str; 6] = ["clap", "indicatif", "plotters", "tracing-subscriber", "ratatui", "crossterm"];

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
fn portable_plugins_depend_on_no_libtorch_crate() {
    for package in ["esper-plugin-sys", "esper-plugin-portable", "esper-norm-portable"] {
        let deps = dependencies(package);
        assert!(deps.iter().any(|d| d == "esper-plugin-sys"), "premise: {deps:?}");
        let found: Vec<&String> =
            deps.iter().filter(|d| ["tch", "torch-sys", "abi_stable"].contains(&d.as_str())).collect();
        assert!(found.is_empty(), "{package} depends on {found:?}");
    }
}

/// The workspace's own crates (by name).
fn workspace_crates() -> Vec<String> {
    let out = Command::new(cargo())
        .args(["metadata", "--offline", "--no-deps", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("cargo metadata lists packages");
    packages.iter().filter_map(|p| p["name"].as_str().map(str::to_string)).collect()
}

/// A native plugin builds the plugin API and nothing else of the workspace: not the
/// portable ABI's crates (the C header's mirror, the author crate, the runtime's op
/// table), which only portable plugins and the runtime use.
#[test]
fn native_plugins_build_no_other_workspace_crate_than_the_plugin_api() {
    let workspace = workspace_crates();
    for c in ["esper-plugin-sys", "esper-plugin-portable", "esper-portable-runtime"] {
        assert!(workspace.iter().any(|w| w == c), "premise: {c} is a workspace crate: {workspace:?}");
    }
    for (package, allowed) in
        [("esper-plugin-api", &["esper-plugin-api"][..]), ("esper-norm", &["esper-norm", "esper-plugin-api"][..])]
    {
        let deps = tree(package, "normal,build");
        assert!(deps.iter().any(|d| d == "tch"), "premise: {package} depends on tch: {deps:?}");
        let found: Vec<&String> =
            deps.iter().filter(|d| workspace.contains(d) && !allowed.contains(&d.as_str())).collect();
        assert!(found.is_empty(), "{package} depends on the workspace crates {found:?}");
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

/// Functions (outside test modules) longer than `max` lines in the `.rs` files under
/// `dir`, as `path:line name (N lines)`. A function runs from its `fn` line to the first
/// line that closes it at its own indentation (rustfmt's layout).
fn long_functions(dir: &std::path::Path, max: usize) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                let lines: Vec<&str> = text.lines().collect();
                let end = lines.windows(2).position(|w| w[0] == "#[cfg(test)]" && w[1].starts_with("mod tests"));
                let lines = &lines[..end.unwrap_or(lines.len())];
                for (i, line) in lines.iter().enumerate() {
                    let body = line.trim_start();
                    let indent = &line[..line.len() - body.len()];
                    let signature =
                        ["fn ", "pub fn ", "pub(crate) fn ", "pub(super) fn ", "const fn ", "pub const fn "];
                    if !signature.iter().any(|s| body.starts_with(s)) || body.ends_with(';') || body.ends_with('}') {
                        continue;
                    }
                    let close = format!("{indent}}}");
                    let Some(len) = lines[i..].iter().position(|l| *l == close) else { continue };
                    if len + 1 > max {
                        let name = body.split("fn ").nth(1).and_then(|r| r.split(['(', '<']).next()).unwrap_or("?");
                        found.push(format!("{}:{} {name} ({} lines)", path.display(), i + 1, len + 1));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn no_function_of_the_runtime_library_is_over_60_lines() {
    let src = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime/src"));
    let long = long_functions(src, 60);
    assert!(long.is_empty(), "split these into named steps:\n{}", long.join("\n"));
    // The scan sees functions: the longest ones are close to the limit, not absent.
    assert!(!long_functions(src, 40).is_empty(), "premise: the scan finds functions of over 40 lines");
}
