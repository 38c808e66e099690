//! What the trainer tells whoever watches a run: a progress display (the `esper` binary
//! draws bars on a terminal), a test, or no one ([`Silent`]). The trainer only calls
//! these; it has no terminal of its own.

use super::report::EpochRecord;

/// Called by [`Trainer::run`](super::Trainer::run), in this order: `run_started`, then
/// per epoch `epoch_started`, `batch_done` once per training batch, `epoch_done`; then
/// `run_done` once the last epoch is through or a stop was requested (not when the run
/// fails).
pub trait Observer {
    /// The run goes from epoch `first` (1 for a new run, more after a resume) to `last`.
    fn run_started(&mut self, _first: u32, _last: u32) {}
    /// Epoch `epoch` starts with `batches` training batches.
    fn epoch_started(&mut self, _epoch: u32, _batches: usize) {}
    /// One training batch of the current epoch is done.
    fn batch_done(&mut self) {}
    /// Epoch `record.epoch` is done (validation and lifecycle included).
    fn epoch_done(&mut self, _record: &EpochRecord) {}
    /// Every epoch of the run is done, or the run stopped on request.
    fn run_done(&mut self) {}
}

/// Watches nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {}
