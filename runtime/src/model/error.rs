use crate::{host::HostError, isolation::SeedFault, lifecycle::LifecycleError, plugin::LoadError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Plugin(#[from] LoadError),
    #[error("slot `{slot}`: {source}")]
    Lifecycle { slot: String, source: LifecycleError },
    #[error("unknown slot `{name}`; valid slots: {}", .valid.join(", "))]
    UnknownSlot { name: String, valid: Vec<String> },
    #[error("slot `{0}` is listed twice")]
    DuplicateSlot(String),
    /// A seed broke the contract, failed or went non-finite: prune it, go on.
    #[error(transparent)]
    Seed(Box<SeedFault>),
    /// The germination probe refused the seed.
    #[error("slot `{slot}`: blueprint `{blueprint}` failed the germination probe ({mode}, input {input:?}): {cause}; germination refused")]
    ProbeRefused { slot: String, blueprint: String, mode: &'static str, input: Vec<i64>, cause: String },
    /// A seed handed to a slot was created for another channel count.
    #[error("slot `{slot}` has {expected} channels; the `{blueprint}` seed handed to it was created for {got}")]
    SeedMismatch { slot: String, blueprint: String, expected: i64, got: i64 },
    /// A checkpointed lifecycle restored with the wrong seed (or none, or one too many).
    #[error("slot `{slot}`: the checkpointed lifecycle runs {lifecycle}, the seed given to restore it is {seed}")]
    RestoreMismatch { slot: String, lifecycle: String, seed: String },
    /// libtorch failed on the host's own side (not attributable to a seed).
    #[error("host computation failed: {0}")]
    Torch(String),
}

impl From<tch::TchError> for ModelError {
    fn from(e: tch::TchError) -> Self {
        ModelError::Torch(e.to_string())
    }
}
