//! `esper plugin new NAME [--portable | --native | --controller] [--path DIR]`: a new
//! plugin project, DIR/NAME, with one blueprint that is the identity at birth (or, with
//! `--controller`, one controller and a run config that uses it), its conformance test
//! and its dependencies on this runtime's plugin crates (by path: they are not published).

use super::env::{libtorch_dir, source_dir};
use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Subcommand};
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Write a new blueprint plugin project, DIR/NAME, ready for `cargo test`.
    New(NewArgs),
}

#[derive(Args)]
pub struct NewArgs {
    /// The crate name, also the blueprint's name (`cnn:NAME`).
    pub name: String,
    /// A portable plugin: no libtorch, no tch, loads in any runtime of its ABI major (the default).
    #[arg(long, conflicts_with = "native")]
    pub portable: bool,
    /// A native plugin: tch built against this runtime's exact libtorch.
    #[arg(long)]
    pub native: bool,
    /// A controller plugin (native): decides when to germinate, advance and prune.
    #[arg(long, conflicts_with_all = ["portable", "native"])]
    pub controller: bool,
    /// The folder to create the project in.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub path: PathBuf,
}

impl PluginCommand {
    pub fn run(self) -> Result<ExitCode> {
        match self {
            Self::New(args) => args.run(),
        }
    }
}

/// The plugin kinds a project can be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Portable,
    Native,
    /// A native library with a controller instead of a blueprint.
    Controller,
}

const CARGO_TOML: &str = include_str!("../../templates/Cargo.toml.in");
const LIB_RS: &str = include_str!("../../templates/lib.rs.in");
const CARGO_CONFIG: &str = include_str!("../../templates/config.toml.in");
const CONTROLLER_RS: &str = include_str!("../../templates/controller.rs.in");
const CONTROLLER_RUN: &str = include_str!("../../templates/controller-run.toml.in");

/// The runtime's dev profile, as the workspace's Cargo.toml has it (a test checks): a
/// native project built into the runtime's target folder with the same profile reuses the
/// runtime's compiled dependencies, tch among them.
const NATIVE_PROFILE: &str = "[profile.dev]
opt-level = 1
debug = \"line-tables-only\"

[profile.dev.package.\"*\"]
debug = false
";

const PORTABLE_FORWARD: &str = "        \
        let conv = x.conv2d(&self.weight, Some(&self.bias), [1, 1], [1, 1], [1, 1], self.channels)?;
        x.add(&self.scale.tanh()?.mul(&conv)?)";
const NATIVE_FORWARD: &str = "        \
        // f_* calls return libtorch errors as values (`?` turns them into PluginErrors).
        let conv = x.f_conv2d(&self.weight, Some(&self.bias), [1, 1], [1, 1], [1, 1], self.channels)?;
        Ok(x.f_add(&self.scale.f_tanh()?.f_mul(&conv)?)?)";

/// Words cargo refuses as package names: Rust keywords and the standard crates.
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "std",
    "static",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// Refuses a name cargo would refuse as a package name, or one with capitals (the
/// blueprint takes the name, and blueprint names are lowercase), saying why.
pub fn check_crate_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > 64 {
        Some("it is longer than 64 characters".to_string())
    } else if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        Some(format!("{c:?} is not allowed (only ASCII letters, digits, `-` and `_`)"))
    } else if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Some("it must start with a letter".to_string())
    } else if name.chars().any(|c| c.is_ascii_uppercase()) {
        Some("use lowercase: it is also the blueprint's name, a lowercase identifier".to_string())
    } else if RESERVED.contains(&name.replace('-', "_").as_str()) {
        Some("it is a Rust keyword or a standard crate's name".to_string())
    } else {
        None
    };
    match why {
        Some(why) => bail!("`{name}` is not a valid crate name: {why}"),
        None => Ok(()),
    }
}

/// `my-seed` -> `MySeed`: the blueprint's type name.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars).collect::<String>()
        })
        .collect()
}

/// `template` with each `{{key}}` replaced by its value.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(template.to_string(), |text, (key, value)| text.replace(&format!("{{{{{key}}}}}"), value))
}

/// The project's files, path (relative to the project) and text.
pub fn project_files(name: &str, kind: Kind, source: &Path, libtorch: &Path) -> Vec<(&'static str, String)> {
    let source = source.display().to_string();
    let libtorch = libtorch.display().to_string();
    let common = "Blueprint, Init, NoOptions, Params, PluginError, Seed";
    let (kind_word, api, imports, forward) = match kind {
        Kind::Portable => ("portable", "esper_plugin_portable", format!("{common}, Tensor"), PORTABLE_FORWARD),
        Kind::Native => ("native", "esper_plugin_api", format!("tch::Tensor, {common}"), NATIVE_FORWARD),
        Kind::Controller => ("controller", "esper_plugin_api", String::new(), ""),
    };
    let dependencies = match kind {
        Kind::Portable => {
            format!("[dependencies]\nesper-plugin-portable = {{ path = \"{source}/plugin-portable\" }}\n")
        }
        Kind::Native | Kind::Controller => format!(
            "[dependencies]\nesper-plugin-api = {{ path = \"{source}/plugin-api\" }}\n\n\
             [dev-dependencies]\n# Only for the one-line conformance test (tests/conformance.rs).\n\
             esper-conformance = {{ path = \"{source}/conformance\" }}\n\n\
             # The runtime's own profile: with the same settings a shared target folder reuses\n\
             # the runtime's compiled tch and other dependencies.\n{NATIVE_PROFILE}"
        ),
    };
    let test_crate = match kind {
        Kind::Portable => "esper_plugin_portable",
        Kind::Native | Kind::Controller => "esper_conformance",
    };
    let lib = name.replace('-', "_");
    let type_name = type_name(name);
    let values = [
        ("name", name),
        ("kind", kind_word),
        ("source", source.as_str()),
        ("libtorch", libtorch.as_str()),
        ("dependencies", dependencies.as_str()),
        ("api", api),
        ("imports", imports.as_str()),
        ("type", type_name.as_str()),
        ("forward", forward),
        ("lib", lib.as_str()),
    ];
    let lib_rs = if kind == Kind::Controller { CONTROLLER_RS } else { LIB_RS };
    let mut files = vec![
        ("Cargo.toml", fill(CARGO_TOML, &values)),
        ("src/lib.rs", fill(lib_rs, &values)),
        (
            "tests/conformance.rs",
            format!("//! The Esper conformance suite on this crate's own built plugin library.\n{test_crate}::conformance_test!();\n"),
        ),
        (".gitignore", "target/\n".to_string()),
    ];
    if kind != Kind::Portable {
        files.push((".cargo/config.toml", fill(CARGO_CONFIG, &values)));
    }
    if kind == Kind::Controller {
        files.push(("run.toml", fill(CONTROLLER_RUN, &values)));
    }
    files
}

impl NewArgs {
    fn kind(&self) -> Kind {
        match (self.native, self.controller) {
            (_, true) => Kind::Controller,
            (true, false) => Kind::Native,
            (false, false) => Kind::Portable,
        }
    }

    pub fn run(self) -> Result<ExitCode> {
        check_crate_name(&self.name)?;
        let kind = self.kind();
        let source = source_dir()?;
        let libtorch = libtorch_dir(&source);
        if kind != Kind::Portable {
            ensure!(
                libtorch.join("lib").is_dir(),
                "a native plugin needs the runtime's libtorch, and {} has no lib/ folder: run scripts/setup.sh in {}",
                libtorch.display(),
                source.display()
            );
        }
        let dir = self.path.join(&self.name);
        if dir.exists() {
            let empty = dir.is_dir()
                && std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?.next().is_none();
            ensure!(
                empty,
                "{} already exists and is not an empty folder: choose another NAME or --path",
                dir.display()
            );
        }
        for (path, text) in project_files(&self.name, kind, &source, &libtorch) {
            let file = dir.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        }
        // The runtime's lock file: the same versions of every dependency as the runtime
        // (for a native plugin, the very tch build), and no registry look-up for them.
        let lock = source.join("Cargo.lock");
        if lock.is_file() {
            std::fs::copy(&lock, dir.join("Cargo.lock")).with_context(|| format!("cannot copy {}", lock.display()))?;
        }
        match kind {
            Kind::Controller => {
                println!("created controller plugin `{}` in {} (controller {})", self.name, dir.display(), self.name);
                println!("run it: cd {} && cargo build && esper run run.toml", dir.display());
            }
            Kind::Native | Kind::Portable => {
                let kind_word = if kind == Kind::Native { "native" } else { "portable" };
                let (name, dir) = (&self.name, dir.display());
                println!("created {kind_word} plugin `{name}` in {dir} (blueprint cnn:{name})");
            }
        }
        println!(
            "next: cd {} && cargo test   (the conformance suite runs in `esper`: on PATH or $ESPER)",
            dir.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::{check_crate_name, project_files, type_name, Kind};
    use std::path::Path;

    #[test]
    fn crate_names_follow_cargo() {
        for good in ["my-seed", "seed_2", "a"] {
            assert!(check_crate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "2seed", "-seed", "my seed", "seed!", "fn", "std", "my/seed", "é", "MySeed"] {
            assert!(check_crate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("my-seed"), "MySeed");
        assert_eq!(type_name("gate_2x"), "Gate2x");
    }

    #[test]
    fn a_native_project_has_the_runtimes_dev_profile() {
        let profile = |manifest: &str| {
            let table: toml::Table = manifest.parse().expect("a TOML manifest");
            table.get("profile").cloned().expect("a [profile] table")
        };
        let files = project_files("my-native", Kind::Native, Path::new("/src"), Path::new("/src/.libtorch"));
        let (_, manifest) = files.iter().find(|(path, _)| *path == "Cargo.toml").expect("a Cargo.toml");
        assert_eq!(profile(manifest), profile(include_str!("../../../Cargo.toml")));
    }

    #[test]
    fn a_controller_project_registers_its_controller_and_a_run_config_that_selects_it() {
        let files = project_files("my-ctl", Kind::Controller, Path::new("/src"), Path::new("/src/.libtorch"));
        let file = |name: &str| files.iter().find(|(path, _)| *path == name).map(|(_, t)| t.as_str()).unwrap();
        assert!(file("src/lib.rs").contains("esper_plugin_api::register_controller!(MyCtl);"));
        assert!(file("src/lib.rs").contains("const NAME: &'static str = \"my-ctl\";"));
        assert!(file("Cargo.toml").contains("esper-plugin-api = { path = \"/src/plugin-api\" }"));
        let run: toml::Table = file("run.toml").parse().expect("a TOML run config");
        let controller = &run["lifecycle"]["controller"];
        assert_eq!(controller["plugin"].as_str(), Some("target/debug/libmy_ctl.so"));
        assert_eq!(controller["name"].as_str(), Some("my-ctl"));
        assert!(files.iter().any(|(path, _)| *path == ".cargo/config.toml"), "native: LIBTORCH and rpath");
    }
}
