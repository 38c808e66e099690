//! The suite's one table: every check with its name, what it requires, where it runs
//! and how. The report, `esper conformance` (text and JSON) and the tests all take their
//! lists from here; [`Check`]'s variants are in the same order (tested).

use super::{
    checks::{self, Subject},
    report::{Check, CheckResult},
};
use tch::Device;

/// Runs one blueprint check; the device is where `device_move` moves seeds.
pub type Runner = fn(&Subject<'_>, Device) -> CheckResult;

/// Where a check runs.
#[derive(Clone, Copy)]
pub enum Scope {
    /// Once per library (run by the suite itself, before any blueprint).
    Library,
    /// Once per library that exports controllers (ABI 1.3), on each of them; a library
    /// without any reports only `controllers` (a skip).
    Controller,
    /// For each blueprint.
    Blueprint(Runner),
    /// For each blueprint that can create a seed (skipped, saying why, otherwise).
    Seed(Runner),
    /// Reported for a blueprint by `esper conformance`, which runs each blueprint's
    /// checks in a process of its own, only when that process breaks a limit or dies.
    Process,
}

impl Scope {
    pub fn is_library(self) -> bool {
        matches!(self, Scope::Library)
    }
    /// Run by [`run_blueprint`](crate::run_blueprint) for each blueprint.
    pub fn runs_per_blueprint(self) -> bool {
        matches!(self, Scope::Blueprint(_) | Scope::Seed(_))
    }
}

/// One row of the table.
pub struct CheckSpec {
    pub check: Check,
    pub name: &'static str,
    /// What the check requires, in one line.
    pub what: &'static str,
    pub scope: Scope,
}

/// Every check, in report order (`no_panic` last of those run: it sums up the others'
/// panics; the process supervisor's after it).
pub const CHECKS: [CheckSpec; 24] = [
    CheckSpec {
        check: Check::Handshake,
        name: "handshake",
        what: "the library loads: ABI version accepted; native: abi_stable layout, libtorch and tch match; portable: \
               its description well-formed",
        scope: Scope::Library,
    },
    CheckSpec {
        check: Check::Blueprints,
        name: "blueprints",
        what: "the library exports at least one blueprint or controller (and the blueprint asked for)",
        scope: Scope::Library,
    },
    CheckSpec {
        check: Check::Controllers,
        name: "controllers",
        what: "the controllers the library exports (ABI 1.3) can be listed and created with no options",
        scope: Scope::Controller,
    },
    CheckSpec {
        check: Check::ControllerDeterministic,
        name: "controller_deterministic",
        what: "two fresh instances of each controller answer the same observations with the same decisions",
        scope: Scope::Controller,
    },
    CheckSpec {
        check: Check::ControllerEdgeObservations,
        name: "controller_edge_observations",
        what: "no error and no panic when no slot is free, every slot is embargoed, the history is empty, no \
               blueprint is loaded, or there are no slots",
        scope: Scope::Controller,
    },
    CheckSpec {
        check: Check::ControllerWellFormed,
        name: "controller_well_formed",
        what: "every decision reads as one, names a slot and blueprint of the observation, is legal by its masks, \
               at most one per slot",
        scope: Scope::Controller,
    },
    CheckSpec {
        check: Check::Metadata,
        name: "metadata",
        what: "name and topology are non-empty identifiers; the description is one non-empty line",
        scope: Scope::Blueprint(|s, _| checks::metadata(s.descriptor())),
    },
    CheckSpec {
        check: Check::Create,
        name: "create",
        what: "create succeeds with no options for every channel count tried",
        scope: Scope::Blueprint(|s, _| checks::create(s)),
    },
    CheckSpec {
        check: Check::ShapeDtypeDevice,
        name: "shape_dtype_device",
        what: "train- and eval-mode outputs have the input's shape (exactly: no broadcasting), dtype and device for \
               every channel count, size and batch",
        scope: Scope::Seed(|s, _| checks::shape_dtype_device(s)),
    },
    CheckSpec {
        check: Check::TrainEvalFlag,
        name: "train_eval_flag",
        what: "forward runs with train=true and train=false (same shape, finite); forward changes no parameter and \
               eval mode changes no buffer",
        scope: Scope::Seed(|s, _| checks::train_eval_flag(s)),
    },
    CheckSpec {
        check: Check::ParameterGradients,
        name: "parameter_gradients",
        what: "every trainable parameter gets a gradient from a train-mode backward",
        scope: Scope::Seed(|s, _| checks::parameter_gradients(s)),
    },
    CheckSpec {
        check: Check::HostIsolation,
        name: "host_isolation",
        what: "through the runtime's isolation layer (straight-through, ADD, MULTIPLY) no gradient reaches the host \
               input through the seed, while the seed's parameters still get theirs",
        scope: Scope::Seed(|s, _| checks::host_isolation(s)),
    },
    CheckSpec {
        check: Check::InputUntouched,
        name: "input_untouched",
        what: "repeated train- and eval-mode forwards never write their input (version counter and values), for \
               contiguous and channels-last hosts through the isolation layer",
        scope: Scope::Seed(|s, _| checks::input_untouched(s)),
    },
    CheckSpec {
        check: Check::ChannelsLast,
        name: "channels_last",
        what: "a channels-last host (transformer: a time-major one) survives backward through the isolation layer \
               (BUG-005), and such an input gives the same output as a contiguous one",
        scope: Scope::Seed(|s, _| checks::channels_last(s)),
    },
    CheckSpec {
        check: Check::FiniteOutputs,
        name: "finite_outputs",
        what: "outputs stay finite over repeated calls on normal inputs (randn, relu(randn), zeros), train and eval",
        scope: Scope::Seed(|s, _| checks::finite_outputs(s)),
    },
    CheckSpec {
        check: Check::Determinism,
        name: "determinism",
        what: "eval mode: the same input and parameters give the same output (twice, and in a second seed with the \
               parameters copied)",
        scope: Scope::Seed(|s, _| checks::determinism(s)),
    },
    CheckSpec {
        check: Check::Causal,
        name: "causal",
        what: "transformer: changing the features at positions > t leaves the output at positions <= t exactly \
               unchanged, and the outputs at positions <= t send exactly zero gradient to the inputs after t",
        scope: Scope::Seed(|s, _| checks::causal(s)),
    },
    CheckSpec {
        check: Check::DeviceMove,
        name: "device_move",
        what: "the seed still works after its parameters move device (CUDA when available): outputs on that device \
               over repeated train-mode calls",
        scope: Scope::Seed(checks::device_move),
    },
    CheckSpec {
        check: Check::ParamEstimate,
        name: "param_estimate",
        what: "the declared parameter estimate is within a factor 10 of the actual count",
        scope: Scope::Seed(|s, _| checks::param_estimate(s)),
    },
    CheckSpec {
        check: Check::UnknownOptions,
        name: "unknown_options",
        what: "an unknown option key is refused as bad options, naming the key",
        scope: Scope::Blueprint(|s, _| checks::unknown_options(s)),
    },
    CheckSpec {
        check: Check::NoPanic,
        name: "no_panic",
        what: "no create, forward or drop panicked (panics are contained by the ABI and reported here)",
        scope: Scope::Blueprint(|s, _| checks::no_panic(s)),
    },
    CheckSpec {
        check: Check::TimeLimit,
        name: "time_limit",
        what: "the blueprint's checks finish within `esper conformance --timeout-s` (no forward, backward or create \
               hangs)",
        scope: Scope::Process,
    },
    CheckSpec {
        check: Check::MemoryLimit,
        name: "memory_limit",
        what:
            "the blueprint's checks stay within `esper conformance --memory-limit-gib` (no allocation fails for want \
               of memory)",
        scope: Scope::Process,
    },
    CheckSpec {
        check: Check::ChildProcess,
        name: "child_process",
        what: "the process running the blueprint's checks reports every check and exits normally (no signal, no \
               abort)",
        scope: Scope::Process,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_the_enum_and_names_are_unique() {
        for (i, spec) in CHECKS.iter().enumerate() {
            assert_eq!(spec.check as usize, i, "{} is out of order", spec.name);
            assert!(CHECKS[..i].iter().all(|s| s.name != spec.name), "{} twice", spec.name);
        }
        let process = CHECKS.iter().filter(|s| matches!(s.scope, Scope::Process)).count();
        let per_library = Check::library().count() + Check::controller().count();
        assert_eq!(per_library + Check::blueprint().count() + process, CHECKS.len());
        assert_eq!(Check::blueprint().last(), Some(Check::NoPanic), "no_panic sums up the others: last");
        for spec in &CHECKS {
            assert_eq!(Check::from_name(spec.name), Some(spec.check));
        }
    }
}
