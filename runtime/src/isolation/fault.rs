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
    /// Another rank of a data-parallel run found this seed at fault (`code` and `detail`
    /// are its [`FaultKind::code`] and text there): every rank prunes it at the same step.
    #[error("{detail} (on rank {rank})")]
    OnRank { rank: usize, code: &'static str, detail: String },
}

/// Every code [`FaultKind::code`] gives.
pub const FAULT_CODES: [&str; 8] = [
    "input_written",
    "wrong_device",
    "wrong_dtype",
    "wrong_shape",
    "forward_error",
    "backward_error",
    "non_finite",
    "timeout",
];

impl FaultKind {
    /// A short stable code: the prune reason's first word, in events and the report.
    pub fn code(&self) -> &'static str {
        match self {
            FaultKind::Contract(v) => v.code(),
            FaultKind::Forward(_) => "forward_error",
            FaultKind::Backward(_) => "backward_error",
            FaultKind::NonFinite { .. } => "non_finite",
            FaultKind::Timeout { .. } => "timeout",
            FaultKind::OnRank { code, .. } => code,
        }
    }

    /// `code` as one of [`FAULT_CODES`] (another rank's code, read back from its
    /// message); `forward_error` for a code this build does not know.
    pub fn known_code(code: &str) -> &'static str {
        FAULT_CODES.iter().find(|c| **c == code).copied().unwrap_or("forward_error")
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn every_code_is_listed_and_reads_back_from_another_rank() {
        let kinds = [
            FaultKind::Contract(ContractViolation::InputWritten { before: 0, after: 1 }),
            FaultKind::Contract(ContractViolation::Device { expected: "cpu".into(), got: "cuda:0".into() }),
            FaultKind::Contract(ContractViolation::Dtype { expected: Kind::Float, got: Kind::Half }),
            FaultKind::Contract(ContractViolation::Shape { expected: vec![1], got: vec![2] }),
            FaultKind::Forward("x".into()),
            FaultKind::Backward("x".into()),
            FaultKind::NonFinite { what: "outputs" },
            FaultKind::Timeout { seconds: 2.0, limit_s: 1.0 },
        ];
        let codes: Vec<&str> = kinds.iter().map(FaultKind::code).collect();
        assert_eq!(codes, FAULT_CODES);
        for kind in &kinds {
            let remote =
                FaultKind::OnRank { rank: 1, code: FaultKind::known_code(kind.code()), detail: kind.to_string() };
            assert_eq!(remote.code(), kind.code());
            assert_eq!(remote.to_string(), format!("{kind} (on rank 1)"));
        }
        assert_eq!(FaultKind::known_code("from_a_newer_build"), "forward_error");
    }
}
