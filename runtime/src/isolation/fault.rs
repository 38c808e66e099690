//! A seed's fault: what went wrong, attributed to the slot, seed, blueprint and plugin
//! file it came from. The runtime's answer is always the same: the seed is removed from
//! the run (pruned) and the run goes on.

use super::ContractViolation;
use std::path::PathBuf;
use thiserror::Error;

/// What a seed did wrong.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FaultKind {
    /// Its forward broke the output contract.
    #[error(transparent)]
    Contract(#[from] ContractViolation),
    /// Its forward returned an error or panicked (contained by the ABI).
    #[error("forward failed: {0}")]
    Forward(String),
    /// Backward through it failed.
    #[error("backward failed: {0}")]
    Backward(String),
    /// It produced NaN or infinite values (in `what`: outputs or gradients).
    #[error("non-finite {what}")]
    NonFinite { what: &'static str },
    /// Its forward ran longer than its allowance (the seed watchdog's limit, see
    /// [`super::watchdog`]), in seconds.
    #[error("forward took {seconds:.1} s, over its limit of {limit_s} s ([training] seed_timeout_s)")]
    Timeout { seconds: f64, limit_s: f64 },
}

impl FaultKind {
    /// A short stable code: the prune reason's first word, in events and the report.
    pub fn code(&self) -> &'static str {
        match self {
            FaultKind::Contract(v) => v.code(),
            FaultKind::Forward(_) => "forward_error",
            FaultKind::Backward(_) => "backward_error",
            FaultKind::NonFinite { .. } => "non_finite",
            FaultKind::Timeout { .. } => "timeout",
        }
    }
}

/// A fault attributed to one seed.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("slot `{slot}`, seed `{seed_id}` (blueprint `{blueprint}`, plugin {}): {kind}", .plugin.display())]
pub struct SeedFault {
    pub slot: String,
    pub seed_id: String,
    pub blueprint: String,
    pub plugin: PathBuf,
    pub kind: FaultKind,
}

impl SeedFault {
    /// The prune reason recorded in the lifecycle, events and report: `code: detail`.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.kind.code(), self.kind)
    }
}
