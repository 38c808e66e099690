//! What happened to a slot, as one typed value: germination (or its failure), gate
//! evaluation, stage change, prune, seed fault, quarantine, failed action or failed
//! release, a seed call over the watchdog's limit. A slot
//! produces its events; the trainer collects them, emits each once to tracing
//! ([`LifecycleEvent::emit`], so `events.jsonl` has it) and keeps it in the epoch's
//! record (`report.json`, the checkpoint, the end-of-run table). `Display` gives the
//! line the report shows (e.g. `r0c1: pruned (input_written ...)`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{check::GateCheck, gates::GateLevel, stage::SeedStage};
use crate::isolation::WatchPhase;

/// Why a germination failed, as code inspects it (`cause` in JSON, snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GerminationFailure {
    /// No loaded blueprint has the name (or more than one has it).
    UnknownBlueprint,
    /// The blueprint refused its options.
    BadOptions,
    /// The blueprint's create returned an error.
    CreateFailed,
    /// The blueprint panicked while creating the seed (contained).
    CreatePanicked,
    /// The runtime refused a parameter the blueprint asked for (over the seed's cap, or
    /// malformed).
    ParameterRefused,
    /// The germination probe refused the seed (its forward failed, broke the output
    /// contract or was not finite).
    ProbeRefused,
    /// The slot refused the seed (not dormant, embargoed, or a wrong channel count).
    SlotRefused,
    /// The runtime's own side failed (a libtorch error outside the plugin).
    RuntimeFailed,
}

/// One lifecycle event of an epoch. In JSON it is an object tagged by `event`
/// (`germinated`, `stage_changed`, `pruned`, ...) with its fields and its `text`; an
/// event of the first report/checkpoint format (a plain line) reads as [`Note`].
///
/// [`Note`]: LifecycleEvent::Note
#[derive(Debug, Clone, PartialEq)]
pub enum LifecycleEvent {
    Germinated {
        slot: String,
        blueprint: String,
    },
    /// A germination the controller or the schedule decided failed: the slot stays
    /// DORMANT. `plugin` is the library of `blueprint` (none when it is not loaded);
    /// `reason` the error, naming blueprint and library.
    GerminationFailed {
        slot: String,
        blueprint: String,
        plugin: Option<String>,
        cause: GerminationFailure,
        reason: String,
    },
    /// A seed resting at a partial alpha target goes on to full amplitude.
    BlendContinued {
        slot: String,
    },
    /// The gate to the next stage was evaluated (passed or not), with the checks failed.
    GateEvaluated {
        slot: String,
        gate: GateLevel,
        passed: bool,
        failed: Vec<GateCheck>,
    },
    StageChanged {
        slot: String,
        from: SeedStage,
        to: SeedStage,
    },
    Pruned {
        slot: String,
        reason: String,
    },
    /// A prune by blend-out: alpha ramps to 0 over `epochs` epochs, then the seed is pruned.
    PruneScheduled {
        slot: String,
        epochs: u32,
        reason: String,
    },
    /// A seed broke the output contract, failed, or went non-finite (`code` is the
    /// fault's stable code, e.g. `input_written`); a prune or quarantine follows.
    SeedFault {
        slot: String,
        blueprint: String,
        code: String,
        detail: String,
    },
    /// A fossilized seed at fault: it cannot be pruned, so its module is dropped and the
    /// slot runs without it.
    Quarantined {
        slot: String,
        reason: String,
    },
    /// A controller action (other than a germination) the lifecycle refused, for `slot`
    /// (empty in a record written before actions named their slot).
    ActionFailed {
        slot: String,
        error: String,
    },
    /// The plugin failed to release a dropped seed (contained).
    ReleaseFailed {
        slot: String,
        error: String,
    },
    /// The seed watchdog saw a call run past its limit while it was still running
    /// (emitted by the watchdog's thread at once; see [`crate::isolation::watchdog`]).
    /// A forward's seed is pruned (reason `timeout`) when the call returns; an overdue
    /// backward is reported only.
    SeedOverdue {
        slot: String,
        seed_id: String,
        blueprint: String,
        plugin: String,
        phase: WatchPhase,
        /// How long the call had run when reported, and its limit, in seconds.
        seconds: f64,
        limit_s: f64,
    },
    /// A controller's decision the runtime refused (never applied): `controller` names
    /// it, `slot` the slot (empty when the decision names none), `decision` is the decision
    /// as JSON and `reason` why (see [`crate::control::validate`]).
    DecisionRefused {
        controller: String,
        slot: String,
        decision: String,
        reason: String,
    },
    /// A controller failed (an error, or a panic, contained): the run waits this epoch.
    ControllerFailed {
        controller: String,
        reason: String,
    },
    /// An event recorded as text only (the first format).
    Note(String),
}

impl fmt::Display for LifecycleEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifecycleEvent::Germinated { slot, blueprint } => write!(f, "{slot}: germinated {blueprint}"),
            LifecycleEvent::GerminationFailed { slot, blueprint, reason, .. } => {
                write!(f, "{slot}: germination of {blueprint} failed, the slot stays DORMANT: {reason}")
            }
            LifecycleEvent::BlendContinued { slot } => write!(f, "{slot}: blending on to full amplitude"),
            LifecycleEvent::GateEvaluated { slot, gate, passed: true, .. } => write!(f, "{slot}: {gate:?} passed"),
            LifecycleEvent::GateEvaluated { slot, gate, failed, .. } => {
                write!(f, "{slot}: {gate:?} failed ({})", super::check::join_checks(failed))
            }
            LifecycleEvent::StageChanged { slot, from, to } => write!(f, "{slot}: {from} -> {to}"),
            LifecycleEvent::Pruned { slot, reason } => write!(f, "{slot}: pruned ({reason})"),
            LifecycleEvent::PruneScheduled { slot, epochs, reason } => {
                write!(f, "{slot}: blending out over {epochs} epochs, then pruned ({reason})")
            }
            LifecycleEvent::SeedFault { slot, blueprint, code, detail } => {
                write!(f, "{slot}: seed fault ({code}) by {blueprint}: {detail}")
            }
            LifecycleEvent::Quarantined { slot, reason } => write!(f, "{slot}: fossilized seed quarantined ({reason})"),
            LifecycleEvent::ActionFailed { slot, error } if slot.is_empty() => write!(f, "failed: {error}"),
            LifecycleEvent::ActionFailed { slot, error } => write!(f, "{slot}: action failed: {error}"),
            LifecycleEvent::ReleaseFailed { slot, error } => {
                write!(f, "{slot}: dropping seed failed (contained): {error}")
            }
            LifecycleEvent::SeedOverdue { slot, seed_id, blueprint, plugin, phase, seconds, limit_s } => {
                let seed = format!("seed `{seed_id}` (blueprint `{blueprint}`, plugin {plugin})");
                match phase {
                    WatchPhase::Forward => write!(
                        f,
                        "{slot}: {seed} is still in its forward after {seconds:.1} s, over its limit of {limit_s} s \
                         ([training] seed_timeout_s); it is pruned when the call returns"
                    ),
                    WatchPhase::Backward => write!(
                        f,
                        "{slot}: the backward pass is still running after {seconds:.1} s, over the limit of {limit_s} \
                         s ([training] seed_timeout_s), with {seed} running; reported only: the backward runs \
                         libtorch's kernels for the host and every seed together, none of them plugin code"
                    ),
                }
            }
            LifecycleEvent::DecisionRefused { controller, slot, decision, reason } => {
                let at = if slot.is_empty() { String::new() } else { format!("{slot}: ") };
                write!(f, "{at}decision {decision} of controller `{controller}` refused: {reason}")
            }
            LifecycleEvent::ControllerFailed { controller, reason } => {
                write!(f, "controller `{controller}` failed (contained; waiting this epoch): {reason}")
            }
            LifecycleEvent::Note(text) => f.write_str(text),
        }
    }
}

/// The JSON form: tagged, with the fields and the text.
#[derive(Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Tagged {
    Germinated {
        slot: String,
        blueprint: String,
    },
    GerminationFailed {
        slot: String,
        blueprint: String,
        plugin: Option<String>,
        cause: GerminationFailure,
        reason: String,
    },
    BlendContinued {
        slot: String,
    },
    GateEvaluated {
        slot: String,
        gate: GateLevel,
        passed: bool,
        failed: Vec<GateCheck>,
    },
    StageChanged {
        slot: String,
        from: SeedStage,
        to: SeedStage,
    },
    Pruned {
        slot: String,
        reason: String,
    },
    PruneScheduled {
        slot: String,
        epochs: u32,
        reason: String,
    },
    SeedFault {
        slot: String,
        blueprint: String,
        code: String,
        detail: String,
    },
    Quarantined {
        slot: String,
        reason: String,
    },
    ActionFailed {
        #[serde(default)]
        slot: String,
        error: String,
    },
    ReleaseFailed {
        slot: String,
        error: String,
    },
    SeedOverdue {
        slot: String,
        seed_id: String,
        blueprint: String,
        plugin: String,
        phase: WatchPhase,
        seconds: f64,
        limit_s: f64,
    },
    DecisionRefused {
        controller: String,
        slot: String,
        decision: String,
        reason: String,
    },
    ControllerFailed {
        controller: String,
        reason: String,
    },
    Note {
        text: String,
    },
}

#[derive(Serialize, Deserialize)]
struct WithText {
    #[serde(flatten)]
    event: Tagged,
    #[serde(default, skip_deserializing)]
    text: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AnyFormat {
    Typed(WithText),
    Text(String),
}

impl From<LifecycleEvent> for Tagged {
    fn from(e: LifecycleEvent) -> Self {
        match e {
            LifecycleEvent::Germinated { slot, blueprint } => Tagged::Germinated { slot, blueprint },
            LifecycleEvent::GerminationFailed { slot, blueprint, plugin, cause, reason } => {
                Tagged::GerminationFailed { slot, blueprint, plugin, cause, reason }
            }
            LifecycleEvent::BlendContinued { slot } => Tagged::BlendContinued { slot },
            LifecycleEvent::GateEvaluated { slot, gate, passed, failed } => {
                Tagged::GateEvaluated { slot, gate, passed, failed }
            }
            LifecycleEvent::StageChanged { slot, from, to } => Tagged::StageChanged { slot, from, to },
            LifecycleEvent::Pruned { slot, reason } => Tagged::Pruned { slot, reason },
            LifecycleEvent::PruneScheduled { slot, epochs, reason } => Tagged::PruneScheduled { slot, epochs, reason },
            LifecycleEvent::SeedFault { slot, blueprint, code, detail } => {
                Tagged::SeedFault { slot, blueprint, code, detail }
            }
            LifecycleEvent::Quarantined { slot, reason } => Tagged::Quarantined { slot, reason },
            LifecycleEvent::ActionFailed { slot, error } => Tagged::ActionFailed { slot, error },
            LifecycleEvent::ReleaseFailed { slot, error } => Tagged::ReleaseFailed { slot, error },
            LifecycleEvent::SeedOverdue { slot, seed_id, blueprint, plugin, phase, seconds, limit_s } => {
                Tagged::SeedOverdue { slot, seed_id, blueprint, plugin, phase, seconds, limit_s }
            }
            LifecycleEvent::DecisionRefused { controller, slot, decision, reason } => {
                Tagged::DecisionRefused { controller, slot, decision, reason }
            }
            LifecycleEvent::ControllerFailed { controller, reason } => Tagged::ControllerFailed { controller, reason },
            LifecycleEvent::Note(text) => Tagged::Note { text },
        }
    }
}

impl From<Tagged> for LifecycleEvent {
    fn from(e: Tagged) -> Self {
        match e {
            Tagged::Germinated { slot, blueprint } => LifecycleEvent::Germinated { slot, blueprint },
            Tagged::GerminationFailed { slot, blueprint, plugin, cause, reason } => {
                LifecycleEvent::GerminationFailed { slot, blueprint, plugin, cause, reason }
            }
            Tagged::BlendContinued { slot } => LifecycleEvent::BlendContinued { slot },
            Tagged::GateEvaluated { slot, gate, passed, failed } => {
                LifecycleEvent::GateEvaluated { slot, gate, passed, failed }
            }
            Tagged::StageChanged { slot, from, to } => LifecycleEvent::StageChanged { slot, from, to },
            Tagged::Pruned { slot, reason } => LifecycleEvent::Pruned { slot, reason },
            Tagged::PruneScheduled { slot, epochs, reason } => LifecycleEvent::PruneScheduled { slot, epochs, reason },
            Tagged::SeedFault { slot, blueprint, code, detail } => {
                LifecycleEvent::SeedFault { slot, blueprint, code, detail }
            }
            Tagged::Quarantined { slot, reason } => LifecycleEvent::Quarantined { slot, reason },
            Tagged::ActionFailed { slot, error } => LifecycleEvent::ActionFailed { slot, error },
            Tagged::ReleaseFailed { slot, error } => LifecycleEvent::ReleaseFailed { slot, error },
            Tagged::SeedOverdue { slot, seed_id, blueprint, plugin, phase, seconds, limit_s } => {
                LifecycleEvent::SeedOverdue { slot, seed_id, blueprint, plugin, phase, seconds, limit_s }
            }
            Tagged::DecisionRefused { controller, slot, decision, reason } => {
                LifecycleEvent::DecisionRefused { controller, slot, decision, reason }
            }
            Tagged::ControllerFailed { controller, reason } => LifecycleEvent::ControllerFailed { controller, reason },
            Tagged::Note { text } => LifecycleEvent::Note(text),
        }
    }
}

impl LifecycleEvent {
    /// The event's name: its `event` tag in JSON and in `events.jsonl`.
    pub fn name(&self) -> &'static str {
        match self {
            LifecycleEvent::Germinated { .. } => "germinated",
            LifecycleEvent::GerminationFailed { .. } => "germination_failed",
            LifecycleEvent::BlendContinued { .. } => "blend_continued",
            LifecycleEvent::GateEvaluated { .. } => "gate_evaluated",
            LifecycleEvent::StageChanged { .. } => "stage_changed",
            LifecycleEvent::Pruned { .. } => "pruned",
            LifecycleEvent::PruneScheduled { .. } => "prune_scheduled",
            LifecycleEvent::SeedFault { .. } => "seed_fault",
            LifecycleEvent::Quarantined { .. } => "quarantined",
            LifecycleEvent::ActionFailed { .. } => "action_failed",
            LifecycleEvent::ReleaseFailed { .. } => "release_failed",
            LifecycleEvent::SeedOverdue { .. } => "seed_overdue",
            LifecycleEvent::DecisionRefused { .. } => "decision_refused",
            LifecycleEvent::ControllerFailed { .. } => "controller_failed",
            LifecycleEvent::Note(_) => "note",
        }
    }

    /// The slot it happened to (none for a note, or a failed action recorded before
    /// actions named their slot).
    pub fn slot(&self) -> Option<&str> {
        match self {
            LifecycleEvent::ActionFailed { slot, .. } | LifecycleEvent::DecisionRefused { slot, .. }
                if slot.is_empty() =>
            {
                None
            }
            LifecycleEvent::DecisionRefused { slot, .. } => Some(slot),
            LifecycleEvent::Germinated { slot, .. }
            | LifecycleEvent::GerminationFailed { slot, .. }
            | LifecycleEvent::ActionFailed { slot, .. }
            | LifecycleEvent::BlendContinued { slot }
            | LifecycleEvent::GateEvaluated { slot, .. }
            | LifecycleEvent::StageChanged { slot, .. }
            | LifecycleEvent::Pruned { slot, .. }
            | LifecycleEvent::PruneScheduled { slot, .. }
            | LifecycleEvent::SeedFault { slot, .. }
            | LifecycleEvent::Quarantined { slot, .. }
            | LifecycleEvent::ReleaseFailed { slot, .. }
            | LifecycleEvent::SeedOverdue { slot, .. } => Some(slot),
            LifecycleEvent::Note(_) | LifecycleEvent::ControllerFailed { .. } => None,
        }
    }

    /// Something went wrong (logged as a warning): a failed germination, a seed fault, a
    /// quarantine, a failed action or release, an overdue call.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            LifecycleEvent::GerminationFailed { .. }
                | LifecycleEvent::SeedFault { .. }
                | LifecycleEvent::Quarantined { .. }
                | LifecycleEvent::ActionFailed { .. }
                | LifecycleEvent::ReleaseFailed { .. }
                | LifecycleEvent::SeedOverdue { .. }
                | LifecycleEvent::DecisionRefused { .. }
                | LifecycleEvent::ControllerFailed { .. }
        )
    }

    /// Worth a place in the end-of-run table: everything but gate evaluations, whose
    /// outcome shows as the stage change that follows a pass (the record keeps them all).
    pub fn is_headline(&self) -> bool {
        !matches!(self, LifecycleEvent::GateEvaluated { .. })
    }

    /// The one place an event goes to tracing: a line with `event` (its [`name`]),
    /// `slot`, and the event as JSON in `record`; warnings at warn level.
    ///
    /// [`name`]: LifecycleEvent::name
    pub fn emit(&self) {
        let record = serde_json::to_string(self).unwrap_or_default();
        let (event, slot) = (self.name(), self.slot().unwrap_or(""));
        if self.is_warning() {
            tracing::warn!(event, slot, record = %record, "{self}");
        } else {
            tracing::info!(event, slot, record = %record, "{self}");
        }
    }
}

impl Serialize for LifecycleEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WithText { text: self.to_string(), event: self.clone().into() }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for LifecycleEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match AnyFormat::deserialize(deserializer)? {
            AnyFormat::Typed(t) => t.event.into(),
            AnyFormat::Text(text) => LifecycleEvent::Note(text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_tagged_with_the_text_and_reads_back_and_old_lines_read_as_notes() {
        let all = [
            LifecycleEvent::Germinated { slot: "r0c1".into(), blueprint: "norm".into() },
            LifecycleEvent::GerminationFailed {
                slot: "r0c1".into(),
                blueprint: "cnn:norm".into(),
                plugin: Some("/p/libesper_norm.so".into()),
                cause: GerminationFailure::BadOptions,
                reason: "bad options for blueprint `cnn:norm`: unknown field `widht`".into(),
            },
            LifecycleEvent::GerminationFailed {
                slot: "r1c1".into(),
                blueprint: "nowhere".into(),
                plugin: None,
                cause: GerminationFailure::UnknownBlueprint,
                reason: "unknown blueprint `nowhere`".into(),
            },
            LifecycleEvent::BlendContinued { slot: "r0c1".into() },
            LifecycleEvent::GateEvaluated {
                slot: "r0c1".into(),
                gate: GateLevel::G2,
                passed: false,
                failed: vec![GateCheck::SeedGradientLow { ratio: 0.05 }, GateCheck::GradientStatsNeverMeasured],
            },
            LifecycleEvent::StageChanged { slot: "r0c1".into(), from: SeedStage::Training, to: SeedStage::Blending },
            LifecycleEvent::Pruned { slot: "r0c1".into(), reason: "input_written: x".into() },
            LifecycleEvent::PruneScheduled { slot: "r0c1".into(), epochs: 3, reason: "stalled".into() },
            LifecycleEvent::SeedFault {
                slot: "r0c1".into(),
                blueprint: "cnn:x".into(),
                code: "wrong_dtype".into(),
                detail: "output dtype Double, expected Float".into(),
            },
            LifecycleEvent::Quarantined { slot: "r0c1".into(), reason: "non_finite: non-finite outputs".into() },
            LifecycleEvent::ActionFailed { slot: "r0c1".into(), error: "cannot advance".into() },
            LifecycleEvent::ActionFailed { slot: String::new(), error: "no such blueprint".into() },
            LifecycleEvent::ReleaseFailed { slot: "r0c1".into(), error: "boom".into() },
            LifecycleEvent::SeedOverdue {
                slot: "r0c1".into(),
                seed_id: "s1".into(),
                blueprint: "cnn:sleepy".into(),
                plugin: "/p/libx.so".into(),
                phase: WatchPhase::Forward,
                seconds: 2.25,
                limit_s: 2.0,
            },
            LifecycleEvent::DecisionRefused {
                controller: "greedy".into(),
                slot: "r0c1".into(),
                decision: r#"{"op":"prune","slot":"r0c1"}"#.into(),
                reason: "no seed to prune (DORMANT)".into(),
            },
            LifecycleEvent::ControllerFailed { controller: "greedy".into(), reason: "panicked: boom".into() },
            LifecycleEvent::Note("r0c1: GERMINATED -> TRAINING".into()),
        ];
        for e in all {
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["text"], e.to_string(), "{json}");
            assert_eq!(json["event"], e.name(), "{json}");
            assert_eq!(serde_json::from_value::<LifecycleEvent>(json).unwrap(), e);
        }
        let pruned = LifecycleEvent::Pruned { slot: "r0c1".into(), reason: "input_written: x".into() };
        let json = serde_json::to_string(&pruned).unwrap();
        assert!(json.contains(r#""event":"pruned""#) && json.contains("pruned (input_written"), "{json}");
        let old: LifecycleEvent = serde_json::from_str(r#""r0c1: TRAINING -> BLENDING""#).unwrap();
        assert_eq!(old, LifecycleEvent::Note("r0c1: TRAINING -> BLENDING".into()));
    }

    #[test]
    fn a_gate_evaluation_reads_as_its_failed_checks_and_stays_out_of_the_table() {
        let e = LifecycleEvent::GateEvaluated {
            slot: "r0c1".into(),
            gate: GateLevel::G2,
            passed: false,
            failed: vec![GateCheck::SeedGradientLow { ratio: 0.05 }],
        };
        assert_eq!(e.to_string(), "r0c1: G2 failed (seed_gradient_low_0.05)");
        assert!(!e.is_headline() && !e.is_warning());
        let fault = LifecycleEvent::SeedFault {
            slot: "r0c1".into(),
            blueprint: "cnn:x".into(),
            code: "input_written".into(),
            detail: "d".into(),
        };
        assert!(fault.is_headline() && fault.is_warning());
        assert_eq!(fault.slot(), Some("r0c1"));
        assert_eq!(LifecycleEvent::ActionFailed { slot: String::new(), error: "e".into() }.slot(), None);
        assert_eq!(LifecycleEvent::ActionFailed { slot: "r1c1".into(), error: "e".into() }.slot(), Some("r1c1"));
    }

    #[test]
    fn a_failed_germination_names_slot_blueprint_plugin_and_cause_and_is_a_headline_warning() {
        let e = LifecycleEvent::GerminationFailed {
            slot: "r0c1".into(),
            blueprint: "cnn:shape-change".into(),
            plugin: Some("/p/libbroken.so".into()),
            cause: GerminationFailure::ProbeRefused,
            reason: "failed the germination probe".into(),
        };
        assert_eq!(
            e.to_string(),
            "r0c1: germination of cnn:shape-change failed, the slot stays DORMANT: failed the germination probe"
        );
        assert!(e.is_warning() && e.is_headline());
        assert_eq!((e.slot(), e.name()), (Some("r0c1"), "germination_failed"));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            (&json["cause"], &json["plugin"], &json["slot"]),
            (&"probe_refused".into(), &"/p/libbroken.so".into(), &"r0c1".into())
        );
        // A failed action of the earlier format (no slot) still reads.
        let old: LifecycleEvent =
            serde_json::from_str(r#"{"event":"action_failed","error":"boom","text":"failed: boom"}"#).unwrap();
        assert_eq!(old, LifecycleEvent::ActionFailed { slot: String::new(), error: "boom".into() });
        assert_eq!(old.to_string(), "failed: boom");
    }
}
