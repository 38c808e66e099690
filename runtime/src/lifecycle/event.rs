//! What happened to a slot in an epoch, as the run's record keeps it: one typed event
//! per germination, stage change, prune, failed action or failed release. `Display`
//! gives the line the report shows (e.g. `r0c1: pruned (input_written ...)`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::stage::SeedStage;

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
    StageChanged {
        slot: String,
        from: SeedStage,
        to: SeedStage,
    },
    Pruned {
        slot: String,
        reason: String,
    },
    /// A controller action the lifecycle or the plugin refused.
    ActionFailed {
        error: String,
    },
    /// The plugin failed to release a dropped seed (contained).
    ReleaseFailed {
        slot: String,
        error: String,
    },
    /// An event recorded as text only (the first format).
    Note(String),
}

impl fmt::Display for LifecycleEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifecycleEvent::Germinated { slot, blueprint } => write!(f, "{slot}: germinated {blueprint}"),
            LifecycleEvent::StageChanged { slot, from, to } => write!(f, "{slot}: {from} -> {to}"),
            LifecycleEvent::Pruned { slot, reason } => write!(f, "{slot}: pruned ({reason})"),
            LifecycleEvent::ActionFailed { error } => write!(f, "failed: {error}"),
            LifecycleEvent::ReleaseFailed { slot, error } => {
                write!(f, "{slot}: dropping seed failed (contained): {error}")
            }
            LifecycleEvent::Note(text) => f.write_str(text),
        }
    }
}

/// The JSON form: tagged, with the fields and the text.
#[derive(Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Tagged {
    Germinated { slot: String, blueprint: String },
    StageChanged { slot: String, from: SeedStage, to: SeedStage },
    Pruned { slot: String, reason: String },
    ActionFailed { error: String },
    ReleaseFailed { slot: String, error: String },
    Note { text: String },
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
            LifecycleEvent::StageChanged { slot, from, to } => Tagged::StageChanged { slot, from, to },
            LifecycleEvent::Pruned { slot, reason } => Tagged::Pruned { slot, reason },
            LifecycleEvent::ActionFailed { error } => Tagged::ActionFailed { error },
            LifecycleEvent::ReleaseFailed { slot, error } => Tagged::ReleaseFailed { slot, error },
            LifecycleEvent::Note(text) => Tagged::Note { text },
        }
    }
}

impl From<Tagged> for LifecycleEvent {
    fn from(e: Tagged) -> Self {
        match e {
            Tagged::Germinated { slot, blueprint } => LifecycleEvent::Germinated { slot, blueprint },
            Tagged::StageChanged { slot, from, to } => LifecycleEvent::StageChanged { slot, from, to },
            Tagged::Pruned { slot, reason } => LifecycleEvent::Pruned { slot, reason },
            Tagged::ActionFailed { error } => LifecycleEvent::ActionFailed { error },
            Tagged::ReleaseFailed { slot, error } => LifecycleEvent::ReleaseFailed { slot, error },
            Tagged::Note { text } => LifecycleEvent::Note(text),
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
            LifecycleEvent::StageChanged { slot: "r0c1".into(), from: SeedStage::Training, to: SeedStage::Blending },
            LifecycleEvent::Pruned { slot: "r0c1".into(), reason: "input_written: x".into() },
            LifecycleEvent::ActionFailed { error: "no such blueprint".into() },
            LifecycleEvent::ReleaseFailed { slot: "r0c1".into(), error: "boom".into() },
            LifecycleEvent::Note("r0c1: GERMINATED -> TRAINING".into()),
        ];
        for e in all {
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["text"], e.to_string(), "{json}");
            assert_eq!(serde_json::from_value::<LifecycleEvent>(json).unwrap(), e);
        }
        let pruned = LifecycleEvent::Pruned { slot: "r0c1".into(), reason: "input_written: x".into() };
        let json = serde_json::to_string(&pruned).unwrap();
        assert!(json.contains(r#""event":"pruned""#) && json.contains("pruned (input_written"), "{json}");
        let old: LifecycleEvent = serde_json::from_str(r#""r0c1: TRAINING -> BLENDING""#).unwrap();
        assert_eq!(old, LifecycleEvent::Note("r0c1: TRAINING -> BLENDING".into()));
    }
}
