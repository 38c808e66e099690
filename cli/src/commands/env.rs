//! `esper env`: where this runtime is, as shell variables (`eval "$(esper env)"`), for
//! building plugins against it (`esper plugin new` writes the same values into a project).

use anyhow::{Context, Result};
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

/// The runtime checkout this binary was built from (its plugin crates are not published:
/// plugins depend on them by path).
pub fn source_dir() -> Result<PathBuf> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = built
        .canonicalize()
        .with_context(|| format!("the runtime checkout this esper was built from ({}) is gone", built.display()))?;
    anyhow::ensure!(
        dir.join("plugin-portable/Cargo.toml").is_file(),
        "{} does not hold the runtime's sources (no plugin-portable/Cargo.toml)",
        dir.display()
    );
    Ok(dir)
}

/// The libtorch this binary's tch was compiled against: `LIBTORCH` as the build saw it
/// (the checkout's `.cargo/config.toml` sets it to `<checkout>/.libtorch`, the link
/// scripts/setup.sh makes), made absolute against the checkout, else `<checkout>/.libtorch`.
///
/// The link is kept, not resolved to its target: the runtime's binaries find libtorch
/// through it at run time too (their rpath), so a plugin built with this path follows
/// the runtime if setup.sh relinks it, and a build sharing the runtime's target folder
/// sees the very `LIBTORCH` the runtime's tch was built with (nothing is rebuilt).
pub fn libtorch_dir(source: &Path) -> PathBuf {
    match option_env!("LIBTORCH").filter(|p| !p.is_empty()) {
        Some(dir) => source.join(dir),
        None => source.join(".libtorch"),
    }
}

/// The variables `esper env` prints, in order.
pub fn variables() -> Result<Vec<(&'static str, String)>> {
    let exe = std::env::current_exe().context("cannot locate the esper binary")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let source = source_dir()?;
    let libtorch = libtorch_dir(&source);
    Ok(vec![
        ("ESPER", exe.display().to_string()),
        ("ESPER_SOURCE", source.display().to_string()),
        ("ESPER_ABI", esper_plugin_api::abi::ABI_VERSION.to_string()),
        ("LIBTORCH", libtorch.display().to_string()),
        ("LIBTORCH_CXX11_ABI", "1".to_string()),
    ])
}

/// A value quoted for a POSIX shell, when it needs quoting.
pub fn shell_quoted(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Prints `KEY=VALUE` lines; warns on stderr when the libtorch folder is missing.
pub fn run() -> Result<ExitCode> {
    for (key, value) in variables()? {
        if key == "LIBTORCH" && !Path::new(&value).is_dir() {
            eprintln!("warning: LIBTORCH {value} is not a folder: run scripts/setup.sh in ESPER_SOURCE");
        }
        println!("{key}={}", shell_quoted(&value));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::shell_quoted;

    #[test]
    fn values_are_quoted_only_when_a_shell_needs_it() {
        assert_eq!(shell_quoted("/a/b-c/.libtorch"), "/a/b-c/.libtorch");
        assert_eq!(shell_quoted("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(shell_quoted(""), "''");
    }
}
