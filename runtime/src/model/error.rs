use crate::{
    host::{HostError, Topology},
    isolation::{FaultKind, SeedFault},
    lifecycle::LifecycleError,
    plugin::LoadError,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Plugin(#[from] LoadError),
    /// A lifecycle transition the slot's seed cannot make (the lifecycle's message,
    /// prefixed with the slot).
    #[error("slot `{slot}`: {error}")]
    Lifecycle { slot: String, error: LifecycleError },
    #[error("unknown slot `{name}`; valid slots: {}", .valid.join(", "))]
    UnknownSlot { name: String, valid: Vec<String> },
    #[error("slot `{0}` is listed twice")]
    DuplicateSlot(String),
    /// A seed broke the contract, failed or went non-finite: prune it, go on.
    #[error(transparent)]
    Seed(Box<SeedFault>),
    /// The germination probe refused the seed: `cause` is what the seed did (shown in
    /// the sentence, which goes on after it).
    #[error("slot `{slot}`: blueprint `{blueprint}` failed the germination probe ({mode}, input {input:?}): {cause}; germination refused")]
    ProbeRefused { slot: String, blueprint: String, mode: &'static str, input: Vec<i64>, cause: Box<FaultKind> },
    /// A seed handed to a slot was created for another channel count.
    #[error("slot `{slot}` has {expected} channels; the `{blueprint}` seed handed to it was created for {got}")]
    SeedMismatch { slot: String, blueprint: String, expected: i64, got: i64 },
    /// A blueprint of another topology than the host's (a `transformer` blueprint in a
    /// `cnn` host's slot, or the other way round).
    #[error("slot `{slot}`: blueprint `{blueprint}` is for `{blueprint_topology}` hosts and this host is `{host_topology}`; germinate a `{host_topology}` blueprint here")]
    TopologyMismatch { slot: String, blueprint: String, blueprint_topology: String, host_topology: Topology },
    /// A checkpointed lifecycle restored with the wrong seed (or none, or one too many).
    #[error("slot `{slot}`: the checkpointed lifecycle runs {lifecycle}, the seed given to restore it is {seed}")]
    RestoreMismatch { slot: String, lifecycle: String, seed: String },
    /// libtorch failed on the host's own side (not attributable to a seed).
    #[error("host computation failed")]
    Torch(#[from] tch::TchError),
    /// The torch shim failed on the host's own side (bfloat16 autocast).
    #[error("host computation failed")]
    Shim(#[from] esper_torch_shim::ShimError),
}
