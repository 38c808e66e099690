//! Who is at fault for non-finite values: a seed, or the host itself.
//!
//! Non-finite values are found where the loop already reads from the device: at the
//! gradient capture (every `gradient_every` steps and the epoch's last) while seeds run
//! (their output flags and the host's loss, one transfer), at the epoch's end (the
//! epoch's loss sum, the only read of a step without seeds), and at validation. Then:
//!
//! * **A seed** is blamed only when the host alone is finite: its output flag (or its
//!   gradient) is non-finite while the host's loss and gradient are finite (every blend
//!   of a non-finite host stream is non-finite, so a finite loss means a finite host),
//!   or, when the host's are not finite either and a flagged seed blends into the host's
//!   stream, the same batch through the host alone (seeds bypassed, forward and
//!   backward) gives a finite loss and finite host gradients.
//! * **The host** is at fault when its loss (or its gradient) is not finite and no seed's
//!   flag is set, or every running seed is in TRAINING (there the forward is the host's
//!   own and the host trains exactly as without the seed, so no seed can have made it),
//!   or the host alone is not finite on the same batch either; and when no seed runs.
//!   Being judged from the last good state, a seed that made the host's weights
//!   non-finite after it (through the blend's gradients) is still the one blamed.
//!
//! **What a host fault does.** At a step read the training state goes back to the last
//! good state (as for a seed), the seeds' flags are cleared (the host's values reached
//! their inputs) and the batch is retried. The run ends (exit 1 from `esper run`, the
//! complete checkpoints kept, no seed pruned) at the second host fault of an epoch, or
//! at the first when the state rolled back to has non-finite host weights itself
//! (nothing earlier is kept in memory to go back to). At the epoch's end and at
//! validation the run ends at once: a seedless epoch is read only at its end, and
//! replaying it from its start would replay the same batches from the same state.
//! The message names the likely cause: non-finite host weights (naming the tensor),
//! non-finite data, or a divergence (the learning rate).
//!
//! **Limit.** While a seed blends into the host's stream, a non-finite batch other than
//! the one read (steps between two reads are not kept) is seen through that seed's
//! flag, and the host alone on the batch read is finite: that seed is blamed.
//! `gradient_every = 1` reads every batch.

use super::{step::cross_entropy, step::Totals, Trainer};
use crate::{config::OptimizerConfig, isolation::SeedFault, lifecycle::LifecycleEvent, Result};
use std::fmt;
use tch::Tensor;
use thiserror::Error;

/// What a read of the device found.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// Seeds whose outputs (or gradients) were not finite.
    pub seeds: Vec<SeedFault>,
    /// Whether the host's loss (and gradient) were finite.
    pub host_finite: bool,
}

impl Health {
    pub fn clean() -> Self {
        Self { seeds: Vec::new(), host_finite: true }
    }

    pub fn is_clean(&self) -> bool {
        self.seeds.is_empty() && self.host_finite
    }
}

/// Where a host fault was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFaultSite {
    /// At a training step's read (seeds running).
    Step,
    /// In the epoch's loss sum, read at its end.
    EpochEnd,
    /// In the validation loss.
    Validation,
}

/// Why the host, not a seed, is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    NoSeedRuns,
    NoSeedFlagged,
    SeedsOnlyTraining,
    HostAloneNonFinite,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Evidence::NoSeedRuns => "no seed ran in those steps",
            Evidence::NoSeedFlagged => "no seed's output was non-finite",
            Evidence::SeedsOnlyTraining => {
                "the seeds running are in TRAINING, where the forward is the host's own and the host trains \
                 exactly as without them"
            }
            Evidence::HostAloneNonFinite => "the host alone, seeds bypassed, is not finite on the same batch",
        })
    }
}

/// The likely cause, from a look at the state rolled back to and the batch.
#[derive(Debug, Clone, PartialEq)]
pub enum HostCause {
    /// Host parameters or buffers are not finite in the state rolled back to: the first
    /// by name, how many, of how many.
    Weights { tensor: String, count: usize, total: usize },
    /// The batch itself holds non-finite values.
    Data,
    /// Weights and batch finite: the loss diverged.
    Diverged { lr: f64 },
}

impl fmt::Display for HostCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostCause::Weights { tensor, count, total } => write!(
                f,
                "non-finite host weights (`{tensor}`, {count} of the host's {total} tensors, holds NaN or infinite \
                 values in the last good state: a damaged checkpoint, or a divergence that reached the weights)"
            ),
            HostCause::Data => f.write_str("bad data (the batch holds NaN or infinite values)"),
            HostCause::Diverged { lr } => write!(
                f,
                "the loss diverged: a learning rate too high ([training.host_optimizer] lr = {lr:?}), or bad data"
            ),
        }
    }
}

/// The host's own values were not finite: the run ends with this (see the module docs).
#[derive(Debug, Clone, PartialEq, Error)]
#[error(
    "host fault: the host's own {} is not finite (NaN or infinite){}: {evidence}; likely cause: {cause}; no seed \
     was pruned for it",
    if *.site == HostFaultSite::Validation { "validation loss" } else { "training loss" },
    if *.recurred { ", again after a rollback to the last good state" } else { "" }
)]
pub struct HostFault {
    pub site: HostFaultSite,
    pub evidence: Evidence,
    pub cause: HostCause,
    /// A second host fault in the epoch.
    pub recurred: bool,
}

/// Whether every value of `t` is finite (one read).
fn all_finite(t: &Tensor) -> Result<bool, tch::TchError> {
    let finite = t.f_isfinite()?.f_all()?;
    Ok(bool::try_from(&finite).unwrap_or(false))
}

impl Trainer {
    /// After a read found non-finite values: back to the last good state, then the
    /// seeds at fault are contained, or the host's fault is handled (see the module docs).
    pub(super) fn recover(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        health: Health,
        totals: &mut Totals,
        events: &mut Vec<LifecycleEvent>,
    ) -> Result<()> {
        self.roll_back(totals)?;
        match self.attribute(x, y, &health)? {
            None => self.contain(health.seeds, events),
            Some(evidence) => self.host_fault_at_step(x, evidence),
        }
    }

    /// None when the seeds `health` names are at fault, else the evidence against the
    /// host. The state is the last good one.
    fn attribute(&mut self, x: &Tensor, y: &Tensor, health: &Health) -> Result<Option<Evidence>> {
        if health.host_finite {
            return Ok(None);
        }
        if health.seeds.is_empty() {
            return Ok(Some(Evidence::NoSeedFlagged));
        }
        if !self.model.slots().iter().any(|s| s.blends_into_host()) {
            return Ok(Some(Evidence::SeedsOnlyTraining));
        }
        Ok((!self.host_alone_finite(x, y)?).then_some(Evidence::HostAloneNonFinite))
    }

    /// The batch through the host alone (train mode, seeds bypassed, forward and
    /// backward): are its loss and the host's gradients finite? The BatchNorm statistics
    /// it moves are put back; the gradients it leaves are zeroed by the retried step.
    /// In a multi-process run, finite only where it is on every rank (each tries its own
    /// batch), so every rank blames alike.
    fn host_alone_finite(&mut self, x: &Tensor, y: &Tensor) -> Result<bool> {
        let finite = self.host_alone_step(x, y);
        self.guard.good.restore()?;
        match &self.ranks {
            Some(ranks) => Ok(ranks.on_all(finite?)?),
            None => finite,
        }
    }

    fn host_alone_step(&mut self, x: &Tensor, y: &Tensor) -> Result<bool> {
        self.host_opt.zero_grad()?;
        let loss = cross_entropy(&self.model.forward_host_only(x, true)?, y)?;
        if !all_finite(&loss)? {
            return Ok(false);
        }
        loss.f_backward()?;
        for p in self.model.host_parameters() {
            let g = p.grad();
            if g.defined() && !all_finite(&g)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A host fault at a step read: the run ends when it recurred in this epoch or the
    /// state rolled back to has non-finite weights; else the seeds' flags are cleared
    /// and the batch is retried.
    fn host_fault_at_step(&mut self, x: &Tensor, evidence: Evidence) -> Result<()> {
        self.guard.host_faults += 1;
        let cause = self.diagnose(Some(x))?;
        let recurred = self.guard.host_faults > 1;
        let fault = HostFault { site: HostFaultSite::Step, evidence, cause, recurred };
        if recurred || matches!(fault.cause, HostCause::Weights { .. }) {
            return Err(fault.into());
        }
        for slot in self.model.slots() {
            slot.clear_finite_flag()?;
        }
        tracing::warn!(
            event = "host_fault",
            "{fault}; rolled back to the last good state and retrying the batch (a second host fault in this \
             epoch ends the run)"
        );
        Ok(())
    }

    /// The host fault of a non-finite epoch loss sum (the steps without seeds are read
    /// only there), judged in the state the epoch started from.
    pub(super) fn host_fault_at_epoch_end(&mut self, totals: &mut Totals) -> Result<HostFault> {
        self.roll_back(totals)?;
        let cause = self.diagnose(None)?;
        Ok(HostFault { site: HostFaultSite::EpochEnd, evidence: Evidence::NoSeedRuns, cause, recurred: false })
    }

    /// A non-finite validation loss: `Ok` when the seeds flagged are at fault (the host
    /// alone is finite on the validation set), else the host fault.
    pub(super) fn judge_validation(&self, flagged: &[SeedFault]) -> Result<()> {
        let evidence = if flagged.is_empty() {
            Evidence::NoSeedFlagged
        } else if !self.model.slots().iter().any(|s| s.blends_into_host()) {
            Evidence::SeedsOnlyTraining
        } else if self.evaluate(super::epoch::Eval::HostOnly)?.0.is_finite() {
            return Ok(());
        } else {
            Evidence::HostAloneNonFinite
        };
        let cause = self.diagnose(None)?;
        Err(HostFault { site: HostFaultSite::Validation, evidence, cause, recurred: false }.into())
    }

    /// The likely cause of a host fault: the first non-finite host tensor, else a
    /// non-finite batch, else a divergence.
    fn diagnose(&self, batch: Option<&Tensor>) -> Result<HostCause> {
        let mut vars: Vec<(String, Tensor)> = self.model.host_vars().variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut bad = Vec::new();
        for (name, t) in &vars {
            if !all_finite(t)? {
                bad.push(name);
            }
        }
        if let Some(first) = bad.first() {
            return Ok(HostCause::Weights { tensor: format!("host.{first}"), count: bad.len(), total: vars.len() });
        }
        if let Some(x) = batch {
            if !all_finite(x)? {
                return Ok(HostCause::Data);
            }
        }
        let lr = match self.config.training.host_optimizer {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adam { lr, .. } => lr,
        };
        Ok(HostCause::Diverged { lr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_fault_names_the_host_what_shows_it_and_the_likely_cause() {
        let fault = HostFault {
            site: HostFaultSite::Step,
            evidence: Evidence::SeedsOnlyTraining,
            cause: HostCause::Weights { tensor: "host.block0.conv.weight".into(), count: 1, total: 18 },
            recurred: false,
        };
        let text = fault.to_string();
        assert!(
            text.starts_with("host fault: the host's own training loss is not finite (NaN or infinite): "),
            "{text}"
        );
        assert!(text.contains("seeds running are in TRAINING"), "{text}");
        assert!(text.contains("(`host.block0.conv.weight`, 1 of the host's 18 tensors, holds NaN"), "{text}");
        assert!(text.ends_with("no seed was pruned for it"), "{text}");
        let again = HostFault { recurred: true, cause: HostCause::Diverged { lr: 5.0 }, ..fault };
        let text = again.to_string();
        assert!(text.contains("again after a rollback") && text.contains("lr = 5.0"), "{text}");
    }
}
