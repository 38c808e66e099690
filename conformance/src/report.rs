//! What the conformance suite reports: one [`CheckResult`] per check, grouped per
//! blueprint, with serde `Serialize` for `--json` and a readable rendering.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{fmt, path::PathBuf};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// Fails the suite.
    Fail,
    /// Worth a look, but does not fail the suite.
    Warn,
    /// Could not run (e.g. no seed because `create` failed); the reason says why.
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Warn => "warn",
            Status::Skip => "skip",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}

/// Every check of the suite, in report order. Serialized (and printed) as its
/// [`name`](Check::name); names, descriptions, scopes and runners are in the one table,
/// [`CHECKS`](super::table::CHECKS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    // Per library.
    Handshake,
    Blueprints,
    Controllers,
    ControllerDeterministic,
    ControllerEdgeObservations,
    ControllerWellFormed,
    // Per blueprint.
    Metadata,
    Create,
    ShapeDtypeDevice,
    TrainEvalFlag,
    ParameterGradients,
    HostIsolation,
    InputUntouched,
    ChannelsLast,
    FiniteOutputs,
    Determinism,
    Causal,
    DeviceMove,
    ParamEstimate,
    UnknownOptions,
    NoPanic,
    // Per blueprint, reported by `esper conformance`'s process supervisor only.
    TimeLimit,
    MemoryLimit,
    ChildProcess,
}

impl Check {
    /// Its row of the table.
    pub fn spec(self) -> &'static super::table::CheckSpec {
        &super::table::CHECKS[self as usize]
    }

    /// The check's name in reports and JSON.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// What the check requires, in one line.
    pub fn what(self) -> &'static str {
        self.spec().what
    }

    /// The checks run once per library, in report order.
    pub fn library() -> impl Iterator<Item = Check> {
        super::table::CHECKS.iter().filter(|s| s.scope.is_library()).map(|s| s.check)
    }

    /// The controller checks (run once per library, on each controller it exports).
    pub fn controller() -> impl Iterator<Item = Check> {
        super::table::CHECKS.iter().filter(|s| matches!(s.scope, super::table::Scope::Controller)).map(|s| s.check)
    }

    /// The checks run for each blueprint, in report order.
    pub fn blueprint() -> impl Iterator<Item = Check> {
        super::table::CHECKS.iter().filter(|s| s.scope.runs_per_blueprint()).map(|s| s.check)
    }

    /// The check named `name` (as [`Check::name`] gives it).
    pub fn from_name(name: &str) -> Option<Check> {
        super::table::CHECKS.iter().find(|s| s.name == name).map(|s| s.check)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for Check {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Check::from_name(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown check `{name}`")))
    }
}

/// One check's outcome and why.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: Check,
    pub status: Status,
    /// One line: why it passed, failed, warned or was skipped.
    pub reason: String,
    /// What the check requires (from [`Check::what`]).
    pub requires: &'static str,
}

impl CheckResult {
    /// A libtorch error inside `reason` keeps its reason and loses its C++ frame list (the
    /// full text goes to the debug log), whichever check built the message.
    pub fn new(check: Check, status: Status, reason: impl Into<String>) -> Self {
        let reason = esper_runtime::torch_error::summarize(&format!("conformance check {check}"), &reason.into());
        Self { check, status, reason, requires: check.what() }
    }
    pub fn pass(check: Check, reason: impl Into<String>) -> Self {
        Self::new(check, Status::Pass, reason)
    }
    pub fn fail(check: Check, reason: impl Into<String>) -> Self {
        Self::new(check, Status::Fail, reason)
    }
    pub fn warn(check: Check, reason: impl Into<String>) -> Self {
        Self::new(check, Status::Warn, reason)
    }
    pub fn skip(check: Check, reason: impl Into<String>) -> Self {
        Self::new(check, Status::Skip, reason)
    }
    /// Pass with the `Ok` reason, fail with the `Err` one.
    pub fn from_outcome(check: Check, outcome: Result<String, String>) -> Self {
        match outcome {
            Ok(reason) => Self::pass(check, reason),
            Err(reason) => Self::fail(check, reason),
        }
    }
}

/// The versions a plugin states in its handshake, beside the runtime's.
#[derive(Debug, Clone, Serialize)]
pub struct HandshakeReport {
    /// The library's kind (`native` or `portable`).
    pub kind: String,
    /// The ABI version the plugin was built against, `MAJOR.MINOR`.
    pub abi: String,
    /// The runtime's ABI version.
    pub runtime_abi: String,
    pub plugin_name: String,
    pub plugin_version: String,
    /// The plugin API crate, libtorch and tch versions a native plugin was built with;
    /// `null` for a portable plugin, which links none of them.
    pub plugin_api: Option<String>,
    pub libtorch: Option<String>,
    pub tch: Option<String>,
    pub runtime_plugin_api: String,
    pub runtime_libtorch: String,
    pub runtime_tch: String,
}

/// One blueprint's checks.
#[derive(Debug, Clone, Serialize)]
pub struct BlueprintReport {
    /// `topology:name`.
    pub name: String,
    pub passed: bool,
    pub checks: Vec<CheckResult>,
}

impl BlueprintReport {
    pub fn new(name: String, checks: Vec<CheckResult>) -> Self {
        let passed = checks.iter().all(|c| c.status != Status::Fail);
        Self { name, passed, checks }
    }
    /// The result of `check`, if it ran for this blueprint.
    pub fn check(&self, check: Check) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.check == check)
    }
    /// The checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }
}

/// How many checks ended in each status, over the whole report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub warn: usize,
    pub skip: usize,
}

/// The whole suite's report for one plugin library.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    /// The library checked.
    pub plugin: PathBuf,
    /// No check failed (warnings and skips do not fail).
    pub passed: bool,
    /// The handshake, when the library could be loaded.
    pub handshake: Option<HandshakeReport>,
    /// Where the device-move check moved seeds (`cuda:0`, or `cpu` without CUDA).
    pub device_move_target: String,
    /// Library-level checks ([`Check::library`]).
    pub checks: Vec<CheckResult>,
    pub blueprints: Vec<BlueprintReport>,
    pub summary: Summary,
}

impl SuiteReport {
    pub fn new(
        plugin: PathBuf,
        handshake: Option<HandshakeReport>,
        device_move_target: String,
        checks: Vec<CheckResult>,
        blueprints: Vec<BlueprintReport>,
    ) -> Self {
        let mut summary = Summary::default();
        for c in checks.iter().chain(blueprints.iter().flat_map(|b| b.checks.iter())) {
            match c.status {
                Status::Pass => summary.pass += 1,
                Status::Fail => summary.fail += 1,
                Status::Warn => summary.warn += 1,
                Status::Skip => summary.skip += 1,
            }
        }
        Self { plugin, passed: summary.fail == 0, handshake, device_move_target, checks, blueprints, summary }
    }

    /// The report of blueprint `name` (`topology:name` or the bare name).
    pub fn blueprint(&self, name: &str) -> Option<&BlueprintReport> {
        self.blueprints.iter().find(|b| b.name == name || b.name.split_once(':').is_some_and(|(_, n)| n == name))
    }

    /// The library-level result of `check`.
    pub fn check(&self, check: Check) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.check == check)
    }

    /// The readable report (what `esper conformance` prints).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, indent: &str, c: &CheckResult| {
            out.push_str(&format!("{indent}{:<4}  {:<20} {}\n", c.status.label(), c.check.name(), c.reason));
        };
        out.push_str(&format!("Esper plugin conformance: {}\n", self.plugin.display()));
        for c in &self.checks {
            line(&mut out, "  ", c);
        }
        for b in &self.blueprints {
            out.push_str(&format!("\nblueprint {}: {}\n", b.name, if b.passed { "PASS" } else { "FAIL" }));
            for c in &b.checks {
                line(&mut out, "  ", c);
            }
        }
        let s = self.summary;
        out.push_str(&format!(
            "\n{}: {} blueprint(s); {} passed, {} failed, {} warning(s), {} skipped (device move to {})\n",
            if self.passed { "PASS" } else { "FAIL" },
            self.blueprints.len(),
            s.pass,
            s.fail,
            s.warn,
            s.skip,
            self.device_move_target,
        ));
        if !self.passed {
            out.push_str("failed:\n");
            for c in &self.checks {
                if c.status == Status::Fail {
                    out.push_str(&format!("  {}: {}\n", c.check, c.requires));
                }
            }
            for b in &self.blueprints {
                for c in b.failed() {
                    out.push_str(&format!("  {} {}: {}\n", b.name, c.check, c.requires));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libtorch_error_in_a_reason_is_reported_without_its_frames() {
        let full = esper_runtime::torch_error::matmul_error();
        assert!(full.contains("frame #"), "premise: libtorch's text has frames: {full}");
        let c = CheckResult::fail(Check::ShapeDtypeDevice, format!("forward failed: {full}"));
        assert!(c.reason.starts_with("forward failed: ") && c.reason.contains("shapes cannot be multiplied"), "{c:?}");
        let report = SuiteReport::new(
            PathBuf::from("/p/lib.so"),
            None,
            "cpu".into(),
            vec![],
            vec![BlueprintReport::new("cnn:x".into(), vec![c])],
        );
        let shown = report.render();
        let json = serde_json::to_string(&report).unwrap_or_default();
        for text in [&shown, &json] {
            assert!(text.contains("shapes cannot be multiplied"), "{text}");
            assert!(!text.contains("frame #") && !text.contains("Exception raised from"), "{text}");
        }
    }
}
