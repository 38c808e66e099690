//! The training job's errors: each says what failed and where; its cause, when it is an
//! error of its own, is the [`source`](std::error::Error::source).

use crate::{
    data::DataError,
    lifecycle::{LifecycleEvent, SeedStage},
    run_folder::RunFolderError,
    Error,
};
use esper_torch_shim::ShimError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A phase of an epoch failed on the host's side (not a seed's doing, which is
    /// contained): the run ends, its complete checkpoints kept.
    #[error("epoch {epoch}: {phase} failed on the host's side (the complete checkpoints written so far are kept)")]
    Phase {
        epoch: u32,
        phase: &'static str,
        #[source]
        source: Box<Error>,
    },
    /// A panic on the host's side, caught: its message, without libtorch's C++ frames.
    /// (Text: a panic carries no error value.)
    #[error("{message}")]
    Panicked { message: String },
    /// A computation of the training step failed on the host's side (`what`: "the
    /// loss", "backward", "the host optimizer step", ...).
    #[error("{what} failed")]
    Step {
        what: String,
        #[source]
        source: Box<Error>,
    },
    /// The copy of the last good training state could not be taken.
    #[error("the rollback copy failed")]
    RollbackCopy(#[source] tch::TchError),
    #[error("replaying the training step's CUDA graph failed")]
    Replay(#[source] ShimError),
    #[error("entering the run's CUDA stream")]
    Stream(#[source] ShimError),
    #[error("starting the seed watchdog")]
    Watchdog(#[source] std::io::Error),
    #[error("loading the data set")]
    Data(#[source] DataError),
    /// The host's logits cover fewer classes than the data has (image classes, or the
    /// tokenizer's vocabulary, known once the data is loaded).
    #[error("{setting} = {host} is smaller than {what} ({data}); set it to at least {data}")]
    TooFewOutputs { setting: &'static str, host: i64, what: &'static str, data: i64 },
    /// A comparison run could not be set up.
    #[error("comparing {run}")]
    Compare {
        /// The blueprint, or "the baseline".
        run: String,
        #[source]
        source: Box<Error>,
    },
    #[error("writing the report {path}")]
    Report {
        path: PathBuf,
        #[source]
        source: RunFolderError,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding {path} as JSON")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A seed set up for timing did not reach TRAINING.
    #[error("the seed in {slot} did not reach TRAINING ({stage}): {result}")]
    NotTraining { slot: String, stage: SeedStage, result: String },
    /// Timed steps changed the lifecycle (a seed was pruned while timing).
    #[error("the timed steps changed the lifecycle: {events:?}")]
    LifecycleChanged { events: Vec<LifecycleEvent> },
    /// A state the trainer's own logic rules out.
    #[error("internal: {0}")]
    Internal(&'static str),
    /// libtorch failed in the trainer's own code.
    #[error(transparent)]
    Torch(tch::TchError),
    /// The torch shim failed (fused optimizer steps, CUDA graphs).
    #[error(transparent)]
    Shim(ShimError),
}
