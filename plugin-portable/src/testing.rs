//! Checking a plugin crate with the `esper` binary's conformance suite, from the crate's
//! own `cargo test`, with no libtorch in the test: the suite runs in the installed
//! runtime (`esper` on `PATH`, or the binary `ESPER` names).
//!
//! ```ignore
//! // tests/conformance.rs of a portable plugin crate
//! esper_plugin_portable::conformance_test!();
//! ```

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The file name cargo gives the cdylib of `package` on this platform
/// (`libmy_seed.so` for `my-seed` on Linux).
pub fn library_file_name(package: &str) -> String {
    format!("{}{}.{}", std::env::consts::DLL_PREFIX, package.replace('-', "_"), std::env::consts::DLL_EXTENSION)
}

/// The cdylib of `package` built beside the running test (`target/<profile>/` or its
/// `deps/`), the newer of the two when both exist.
pub fn crate_library(package: &str) -> PathBuf {
    let file = library_file_name(package);
    let exe = std::env::current_exe().unwrap_or_default();
    let deps = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let profile = deps.parent().map(Path::to_path_buf).unwrap_or_default();
    let candidates = [deps.join(&file), profile.join(&file)];
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    candidates
        .iter()
        .filter_map(|p| Some((modified(p)?, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| candidates[1].clone())
}

/// A file of the crate at `crate_dir` (its `Cargo.toml` or anything under `src/`) that
/// is newer than `library`: the library is stale.
pub fn newer_source(library: &Path, crate_dir: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(library).and_then(|m| m.modified()).ok()?;
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut stack = vec![crate_dir.join("src"), crate_dir.join("Cargo.toml")];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
        } else if let Ok(t) = std::fs::metadata(&path).and_then(|m| m.modified()) {
            if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                newest = Some((t, path));
            }
        }
    }
    newest.filter(|(t, _)| *t > built).map(|(_, p)| p)
}

/// The `esper` binary: `ESPER` when set, else `esper` on `PATH`.
pub fn esper_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ESPER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("ESPER names {}, which is not a file", path.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("esper")).find(|p| p.is_file()).ok_or_else(|| {
        "no `esper` binary: put it on PATH (scripts/install.sh in the runtime's checkout does) or set ESPER to its path"
            .to_string()
    })
}

/// What [`conformance_test!`](crate::conformance_test) runs: `esper conformance` on the
/// calling crate's own cdylib; panics with the report when a check fails, when the
/// library is missing or older than the crate's sources, or when there is no `esper`.
#[doc(hidden)]
pub fn assert_crate_conformant(package: &str, crate_dir: &str, blueprint: Option<&str>) {
    let library = crate_library(package);
    assert!(
        library.is_file(),
        "plugin library {} not found: make the crate `[lib] crate-type = [\"cdylib\", \"rlib\"]` so `cargo test` builds it",
        library.display()
    );
    if let Some(source) = newer_source(&library, Path::new(crate_dir)) {
        panic!("plugin library {} is older than {}: run `cargo build` first", library.display(), source.display());
    }
    let esper = esper_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut command = Command::new(&esper);
    command.arg("conformance").arg(&library);
    if let Some(b) = blueprint {
        command.args(["--blueprint", b]);
    }
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", esper.display()));
    let report = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} is not conformant ({}):\n{report}\n{errors}",
        library.display(),
        output.status
    );
    println!("{report}");
}

/// The conformance suite as one test of a plugin crate, run by the installed `esper`:
///
/// ```ignore
/// esper_plugin_portable::conformance_test!();                // every blueprint
/// esper_plugin_portable::conformance_test!("my-seed");       // or one blueprint
/// ```
#[macro_export]
macro_rules! conformance_test {
    () => {
        #[test]
        fn esper_conformance() {
            $crate::testing::assert_crate_conformant(env!("CARGO_PKG_NAME"), env!("CARGO_MANIFEST_DIR"), None);
        }
    };
    ($blueprint:expr $(,)?) => {
        #[test]
        fn esper_conformance() {
            $crate::testing::assert_crate_conformant(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_MANIFEST_DIR"),
                Some($blueprint),
            );
        }
    };
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn library_file_name_follows_cargo() {
        assert_eq!(super::library_file_name("my-seed"), "libmy_seed.so");
    }
}
