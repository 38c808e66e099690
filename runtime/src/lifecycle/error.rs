//! The one error type of the lifecycle module.

use super::alpha::AlphaMode;
use super::check::{join_checks, GateCheck};
use super::gates::GateLevel;
use super::stage::SeedStage;

/// Everything the lifecycle refuses, with the stages, modes or checks involved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LifecycleError {
    /// A stage number that names no stage (5 and anything above 10).
    #[error("invalid seed stage number {0} (valid: 0-4 and 6-10)")]
    InvalidStageNumber(u8),

    /// A transition that the stage table does not contain.
    #[error("invalid seed stage transition {from} -> {to}")]
    InvalidTransition { from: SeedStage, to: SeedStage },

    /// An alpha schedule change while the controller is still moving.
    #[error("alpha can only be retargeted from HOLD (the controller is in {mode})")]
    AlphaNotHolding { mode: AlphaMode },

    /// Continuing to full amplitude a seed that is not resting at a partial target.
    #[error("only a BLENDING seed at a partial alpha target can be continued to full amplitude (this one is {stage}, target {target})")]
    NotPartial { stage: SeedStage, target: f64 },

    /// An alpha target that is not a finite number.
    #[error("alpha target must be a finite number, got {0}")]
    InvalidAlphaTarget(f64),

    /// A curve name that is none of linear, cosine, sigmoid.
    #[error("unknown alpha curve {0:?} (expected linear, cosine or sigmoid)")]
    UnknownCurve(String),

    /// Germination into a slot that still holds a seed (alive or cooling down).
    #[error("slot {slot_id:?} is unavailable for germination (stage {stage})")]
    SlotOccupied { slot_id: String, stage: SeedStage },

    /// An operation that needs a seed on an empty slot.
    #[error("slot {slot_id:?} holds no seed")]
    NoSeed { slot_id: String },

    /// Fossilized seeds are permanent.
    #[error("seed {seed_id:?} is FOSSILIZED and cannot be pruned")]
    CannotPruneFossilized { seed_id: String },

    /// A gate check that did not pass where passing is required (germination).
    #[error("{gate} gate failed: {}", join_checks(checks_failed))]
    GateFailed { gate: GateLevel, checks_failed: Vec<GateCheck> },

    /// A target stage that no quality gate leads to.
    #[error("no quality gate leads to stage {0}")]
    NoGate(SeedStage),

    /// `advance` from a stage without a natural (non-failure) successor.
    #[error("stage {0} has no next stage to advance to")]
    NoNextStage(SeedStage),
}
