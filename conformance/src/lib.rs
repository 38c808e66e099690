//! The plugin conformance suite: does a blueprint plugin behave as the runtime needs?
//!
//! Three ways in, one suite:
//!
//! * `esper conformance LIB [--blueprint NAME] [--json]`: a readable report (or JSON) and
//!   a non-zero exit status when a check fails; each blueprint's checks run in a process
//!   of their own under a time limit and a memory cap ([`run_suite_isolated`]);
//! * [`conformance_test!`](crate::conformance_test): one line in a plugin crate's tests;
//! * [`run_suite`] from Rust (the workspace tests run it on every shipped plugin and on
//!   the broken fixtures).
//!
//! The suite loads the library into a fresh [`BlueprintRegistry`] (which checks the ABI
//! layout and the handshake), then runs every blueprint check of [`CHECKS`] on each
//! blueprint, on inputs of the blueprint's own [`Topology`] (`(B, C, H, W)` for `cnn`,
//! `(B, T, C)` for `transformer`), on the CPU; `device_move` moves seeds to CUDA when a device is available
//! (else CPU to CPU, and says so). Each check reports pass, fail, warn or skip with a
//! one-line reason. Panics inside the plugin are contained by the ABI and reported (by
//! `no_panic`); a libtorch error on the runtime's side fails the check it happened in.
//! The suite never panics itself.

mod checks;
mod child;
mod controllers;
mod report;
mod supervise;
mod table;
mod topology;
pub mod wire;

pub use checks::{
    guarded, host_isolation_with, Subject, BATCHES, CAUSAL_LENGTH, CAUSAL_SPLITS, CHANNELS, ESTIMATE_FACTOR,
    KNOWN_TOPOLOGIES, PRIMARY_CHANNELS, SIZES, UNKNOWN_OPTION,
};
pub use child::{apply_memory_cap, serve_blueprint, MemoryCap};
pub use report::{BlueprintReport, Check, CheckResult, HandshakeReport, Status, SuiteReport, Summary};
pub use supervise::{run_suite_isolated, Limits, Progress};
pub use table::{CheckSpec, Runner, Scope, CHECKS};
pub use topology::{SuiteInputs, Topology, SEQUENCE_LENGTHS};

use esper_runtime::{device::cuda_available, plugin::BlueprintRegistry};
use std::path::{Path, PathBuf};
use tch::Device;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct SuiteOptions {
    /// Only this blueprint (`topology:name`, or the bare name when unambiguous); all when `None`.
    pub blueprint: Option<String>,
    /// Where `device_move` moves seeds; `None`: CUDA when available, else the CPU.
    pub move_to: Option<Device>,
}

/// Where `device_move` goes by default: the first CUDA device when there is one.
pub fn default_move_target() -> Device {
    if cuda_available() {
        Device::Cuda(0)
    } else {
        Device::Cpu
    }
}

/// Runs the suite on the plugin library at `library`, every blueprint in this process.
pub fn run_suite(library: &Path, options: &SuiteOptions) -> SuiteReport {
    let prepared = match Prepared::new(library, options) {
        Ok(prepared) => prepared,
        Err(report) => return *report,
    };
    let blueprints = prepared
        .selected
        .iter()
        .map(|key| blueprint_report(&prepared.registry, key, prepared.target, &mut |_| {}))
        .collect();
    prepared.finish(blueprints)
}

/// The library loaded and its library-level checks run: what the blueprints' checks
/// start from, in this process or in one per blueprint ([`run_suite_isolated`]).
pub(crate) struct Prepared {
    plugin: PathBuf,
    registry: BlueprintRegistry,
    target: Device,
    handshake: Option<HandshakeReport>,
    /// The library-level results ([`Check::library`]).
    checks: Vec<CheckResult>,
    /// The keys of the blueprints to check.
    selected: Vec<String>,
}

impl Prepared {
    /// Loads `library` and runs the library-level checks; the whole (failed) report when
    /// it does not load.
    fn new(library: &Path, options: &SuiteOptions) -> Result<Self, Box<SuiteReport>> {
        let target = options.move_to.unwrap_or_else(default_move_target);
        let plugin = library.to_path_buf();
        let mut registry = BlueprintRegistry::new();
        let loaded = if library.is_dir() {
            Err(format!("{} is a folder; give one plugin library file", library.display()))
        } else {
            registry.load(library).map_err(|e| esper_runtime::error::chain(&e))
        };
        if let Err(e) = loaded {
            let checks = vec![
                CheckResult::fail(Check::Handshake, e),
                CheckResult::skip(Check::Blueprints, "the library did not load"),
            ];
            return Err(Box::new(SuiteReport::new(plugin, None, checks::device_name(target), checks, Vec::new())));
        }
        let (handshake, handshake_check) = handshake(&registry);
        let mut checks = vec![handshake_check];
        let keys: Vec<String> = registry.list().map(|(k, _, _)| k.to_string()).collect();
        let controller_checks = controllers::controller_checks(&registry);
        let has_controllers = controller_checks.first().is_some_and(|c| c.status == report::Status::Pass);
        let selected = match &options.blueprint {
            None if keys.is_empty() && has_controllers => {
                checks.push(CheckResult::pass(Check::Blueprints, "none (a controller library)"));
                Vec::new()
            }
            None if keys.is_empty() => {
                checks.push(CheckResult::fail(
                    Check::Blueprints,
                    "the library exports no blueprint (no register_blueprint!)",
                ));
                Vec::new()
            }
            None => {
                checks.push(CheckResult::pass(Check::Blueprints, format!("{}: {}", keys.len(), keys.join(", "))));
                keys
            }
            Some(name) => match registry.resolve(name) {
                Ok((key, _)) => {
                    checks.push(CheckResult::pass(
                        Check::Blueprints,
                        format!("checking `{key}` of: {}", keys.join(", ")),
                    ));
                    vec![key.to_string()]
                }
                Err(e) => {
                    checks.push(CheckResult::fail(Check::Blueprints, e.to_string()));
                    Vec::new()
                }
            },
        };
        checks.extend(controller_checks);
        Ok(Self { plugin, registry, target, handshake, checks, selected })
    }

    /// The report, with the blueprints' results.
    fn finish(self, blueprints: Vec<BlueprintReport>) -> SuiteReport {
        SuiteReport::new(self.plugin, self.handshake, checks::device_name(self.target), self.checks, blueprints)
    }
}

/// The report of blueprint `key` of `registry` (a failed `create` when it cannot be
/// resolved), telling `observe` of each check as it starts and ends.
fn blueprint_report(
    registry: &BlueprintRegistry,
    key: &str,
    move_to: Device,
    observe: &mut dyn FnMut(CheckEvent<'_>),
) -> BlueprintReport {
    match Subject::new(registry, key) {
        Ok(subject) => run_blueprint_observed(&subject, move_to, observe),
        Err(e) => {
            let result = CheckResult::fail(Check::Create, e.to_string());
            observe(CheckEvent::Finished(&result));
            BlueprintReport::new(key.to_string(), vec![result])
        }
    }
}

fn handshake(registry: &BlueprintRegistry) -> (Option<HandshakeReport>, CheckResult) {
    let Some(plugin) = registry.plugins().next() else {
        return (None, CheckResult::fail(Check::Handshake, "no plugin loaded"));
    };
    let native = plugin.handshake();
    let (plugin_name, plugin_version) = plugin.name_and_version();
    let report = HandshakeReport {
        kind: plugin.kind().to_string(),
        abi: plugin.abi_version().to_string(),
        runtime_abi: esper_plugin_api::abi::ABI_VERSION.to_string(),
        plugin_name: plugin_name.to_string(),
        plugin_version: plugin_version.to_string(),
        plugin_api: native.map(|h| h.plugin_api.to_string()),
        libtorch: native.map(|h| h.libtorch.to_string()),
        tch: native.map(|h| h.tch.to_string()),
        runtime_plugin_api: esper_plugin_api::abi::PLUGIN_API_VERSION.to_string(),
        runtime_libtorch: esper_plugin_api::abi::LIBTORCH_VERSION.to_string(),
        runtime_tch: esper_plugin_api::abi::TCH_VERSION.to_string(),
    };
    let mismatches = native.map(|h| h.mismatches()).unwrap_or_default();
    let built_with = match (&report.libtorch, &report.tch) {
        (Some(libtorch), Some(tch)) => format!("libtorch {libtorch}, tch {tch}: accepted; ABI layout accepted"),
        _ => "no libtorch of its own (its ops run in the runtime's); its description is well-formed".to_string(),
    };
    let check = if mismatches.is_empty() {
        CheckResult::pass(
            Check::Handshake,
            format!(
                "{} {} ({}): ABI {} (runtime {}), {built_with}",
                report.plugin_name, report.plugin_version, report.kind, report.abi, report.runtime_abi,
            ),
        )
    } else {
        // The loader refuses these; kept so a loader regression cannot pass silently.
        let lines: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
        CheckResult::fail(Check::Handshake, lines.join("; "))
    };
    (Some(report), check)
}

/// A blueprint check starting or ending.
#[derive(Debug, Clone, Copy)]
pub enum CheckEvent<'a> {
    Started(Check),
    Finished(&'a CheckResult),
}

/// Runs every blueprint check of the table on one blueprint, in order. When no seed can
/// be created, the checks that need one are skipped, saying why (`create` itself fails).
/// Every check runs guarded: an error on the runtime's side fails that check only.
pub fn run_blueprint(subject: &Subject<'_>, move_to: Device) -> BlueprintReport {
    run_blueprint_observed(subject, move_to, &mut |_| {})
}

/// [`run_blueprint`], telling `observe` of each check as it starts and ends.
pub fn run_blueprint_observed(
    subject: &Subject<'_>,
    move_to: Device,
    observe: &mut dyn FnMut(CheckEvent<'_>),
) -> BlueprintReport {
    let mut no_seed = None;
    let mut results = Vec::new();
    for spec in &CHECKS {
        let (run, needs_seed) = match spec.scope {
            Scope::Library | Scope::Controller | Scope::Process => continue,
            Scope::Seed(run) => (run, true),
            Scope::Blueprint(run) => (run, false),
        };
        observe(CheckEvent::Started(spec.check));
        let missing_seed = if needs_seed {
            no_seed.get_or_insert_with(|| subject.create(PRIMARY_CHANNELS).err()).as_ref()
        } else {
            None
        };
        let result = match missing_seed {
            Some(e) => CheckResult::skip(spec.check, format!("no seed to check: {e}")),
            None => guarded(spec.check, || run(subject, move_to)),
        };
        observe(CheckEvent::Finished(&result));
        results.push(result);
    }
    BlueprintReport::new(subject.key().to_string(), results)
}

/// The plugin library of package `package` as built for the running test binary, and
/// the staleness check of a crate's sources against it: shared with portable plugins'
/// tests, which run without this crate.
pub use esper_plugin_portable::testing::{crate_library, newer_source};

/// Runs the suite and panics, printing the report, when a check fails. Prints the
/// report on success too (shown with `cargo test -- --nocapture`).
pub fn assert_conformant(library: &Path, blueprint: Option<&str>) {
    assert!(
        library.is_file(),
        "plugin library {} not found: the crate must be a cdylib (`[lib] crate-type = [\"cdylib\", \"rlib\"]`) \
         whose library name is the package name with '-' as '_', built into the same target folder as this test",
        library.display()
    );
    let report = run_suite(library, &SuiteOptions { blueprint: blueprint.map(str::to_string), move_to: None });
    if !report.passed {
        panic!("plugin {} is not conformant:\n\n{}", library.display(), report.render());
    }
    println!("{}", report.render());
}

/// What [`conformance_test!`](crate::conformance_test) runs: the suite on the calling
/// crate's own cdylib, refusing a library older than the crate's sources.
#[doc(hidden)]
pub fn assert_crate_conformant(package: &str, crate_dir: &str, blueprint: Option<&str>) {
    let library = crate_library(package);
    if let Some(source) = newer_source(&library, Path::new(crate_dir)) {
        panic!(
            "plugin library {} is older than {}: it was not rebuilt for this test. Add \"rlib\" to `[lib] crate-type` \
             (`[\"cdylib\", \"rlib\"]`: `cargo test` then rebuilds the plugin), or run `cargo build` first",
            library.display(),
            source.display()
        );
    }
    assert_conformant(&library, blueprint);
}

/// The conformance suite as one test of a plugin crate. In `tests/conformance.rs`:
///
/// ```ignore
/// esper_conformance::conformance_test!();                      // every blueprint of this crate
/// esper_conformance::conformance_test!("channel-scale");       // or one blueprint
/// esper_conformance::conformance_test!(scale_conforms, "channel-scale"); // named, to have several
/// ```
///
/// It expands to a `#[test]` that runs the suite on the crate's own built cdylib
/// (`lib<crate_name>.so` beside the test binary, see [`crate_library`]) and fails,
/// printing the report, when any check fails. Make the crate `["cdylib", "rlib"]`, so
/// that `cargo test` rebuilds the library first; a library older than the crate's
/// sources is refused rather than checked.
#[macro_export]
macro_rules! conformance_test {
    (@test $name:ident, $blueprint:expr) => {
        #[test]
        fn $name() {
            $crate::assert_crate_conformant(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_MANIFEST_DIR"),
                $blueprint,
            );
        }
    };
    () => {
        $crate::conformance_test!(@test esper_conformance, ::core::option::Option::None);
    };
    ($name:ident, $blueprint:expr $(,)?) => {
        $crate::conformance_test!(@test $name, ::core::option::Option::Some($blueprint));
    };
    ($blueprint:expr $(,)?) => {
        $crate::conformance_test!(@test esper_conformance, ::core::option::Option::Some($blueprint));
    };
}
