//! Stopping a run early on request (Ctrl-C, a supervisor's SIGTERM, an embedding
//! program's own reason): a shared flag the training loop reads before each step.

use std::{
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

/// A request to stop a run at the next training-step boundary. Clones share one flag;
/// any holder may request the stop, with a nonzero code of its choosing (the `esper`
/// binary's signal handlers store the signal's number), which [`StopSignal::requested`]
/// gives back. Reading it costs one atomic load per step.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicUsize>);

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop, with `code` as the reason.
    pub fn request(&self, code: NonZeroUsize) {
        self.0.store(code.get(), Ordering::Relaxed);
    }

    /// The code of the stop requested, if any.
    pub fn requested(&self) -> Option<NonZeroUsize> {
        NonZeroUsize::new(self.0.load(Ordering::Relaxed))
    }

    /// The flag itself, for a signal handler that can only store into an atomic
    /// (0: run on; anything else: the stop's code).
    pub fn flag(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.0)
    }

    /// `Err(Stopped)` once a stop is requested: what the training loop checks.
    pub(super) fn check(&self) -> Result<(), Stopped> {
        match self.requested() {
            Some(_) => Err(Stopped),
            None => Ok(()),
        }
    }
}

/// The error that ends an epoch a [`StopSignal`] stopped (the run turns it into
/// [`RunEnd::Stopped`], never a failure).
#[derive(Debug, thiserror::Error)]
#[error("the run was asked to stop")]
pub struct Stopped;

/// How [`super::Trainer::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Every epoch up to the configured last one ran.
    Completed,
    /// A stop was requested: epochs up to `epochs_done` ran (recorded and checkpointed);
    /// the one after was abandoned part-way and left no trace.
    Stopped { epochs_done: u32 },
}

/// What one call of [`super::Trainer::step_epoch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochStep {
    /// Epoch `epoch` ran: recorded (the last of [`super::Trainer::history`]) and, when the
    /// run writes checkpoints, checkpointed.
    Ran { epoch: u32 },
    /// A stop was requested: the epoch after `epochs_done` was abandoned part-way and
    /// left no trace.
    Stopped { epochs_done: u32 },
    /// The run's last epoch had run already: nothing was done.
    Over,
}
