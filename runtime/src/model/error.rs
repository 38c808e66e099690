use crate::{host::HostError, lifecycle::LifecycleError, plugin::PluginError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("slot `{slot}`: {source}")]
    Lifecycle { slot: String, source: LifecycleError },
    #[error("unknown slot `{name}`; valid slots: {}", .valid.join(", "))]
    UnknownSlot { name: String, valid: Vec<String> },
    #[error("slot `{0}` is listed twice")]
    DuplicateSlot(String),
    #[error("slot `{slot}`: blueprint `{blueprint}` changes the shape {expected:?} to {got:?}; germination refused")]
    ShapeChanged { slot: String, blueprint: String, expected: Vec<i64>, got: Vec<i64> },
}
