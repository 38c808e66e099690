//! A block's BatchNorm (training mode) + ReLU, and the 2x2 max pool after it where no slot
//! sits between them, as the runtime's own CUDA kernels (`esper_torch_shim::rtc::bn_relu`):
//! two launches forward and two backward, and the normalized tensor is never written
//! (libtorch writes it in full, the pool reads it back, and backward both again).
//!
//! CUDA only, training only (evaluation uses the running statistics through libtorch),
//! and only where the kernels suit the tensor (see `bn_relu`'s conditions); everywhere
//! else the caller runs libtorch's BatchNorm. The values are libtorch's to rounding (the
//! per-channel sums run in another order), the running statistics are updated as
//! libtorch does (momentum, unbiased variance).

use super::HostError;
use esper_torch_shim::{
    dist::ProcessGroup,
    rtc::{self, BatchNormParams},
    ShimError,
};
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex,
};
use tch::{nn, Tensor};

/// `relu(bn(x))`, pooled 2x2 when `pool`, through the fused kernels, or None where they
/// do not apply (the caller runs libtorch's ops). A failure of the kernels themselves is
/// logged and answered with None too, so the step goes on with libtorch's ops.
pub(crate) fn bn_relu(x: &Tensor, bn: &nn::BatchNorm, config: &nn::BatchNormConfig, pool: bool) -> Option<Tensor> {
    if !x.device().is_cuda() || super::pool::fused_state().is_err() {
        return None;
    }
    rtc::bn_relu(x, &params(bn, config)?, pool).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "fused BatchNorm failed; using libtorch's");
        None
    })
}

/// `bn`'s tensors and `config`'s settings as the shim takes them (None for a BatchNorm
/// without weight and bias: the caller runs libtorch's).
fn params<'a>(bn: &'a nn::BatchNorm, config: &nn::BatchNormConfig) -> Option<BatchNormParams<'a>> {
    let (Some(weight), Some(bias)) = (&bn.ws, &bn.bs) else {
        return None;
    };
    Some(BatchNormParams {
        weight,
        bias,
        running_mean: &bn.running_mean,
        running_var: &bn.running_var,
        momentum: config.momentum,
        eps: config.eps,
    })
}

/// The host's BatchNorm statistics synchronised across the ranks of a multi-process run
/// (`[distributed] sync_batchnorm = true`): while armed (the training step's forward, see
/// [`crate::model::MorphogeneticModel::forward_step`]), each BatchNorm normalises with the
/// statistics of every rank's batch together, over its own process group, as PyTorch's
/// SyncBatchNorm (see `esper_torch_shim::dist::ProcessGroup::sync_batch_norm`). Every other
/// forward (evaluation, the attribution's host-alone pass, finding a failing seed) keeps
/// its own batch's statistics: only the step's forward runs on every rank at once.
///
/// A failed exchange (a rank gone, a timeout) is kept for the model to report after the
/// forward (the host's steps cannot fail); that forward goes on with this rank's own
/// statistics and no further exchange.
pub struct BatchNormSync {
    group: Mutex<ProcessGroup>,
    /// `[distributed] timeout_s`, for the failure's message.
    timeout_s: f64,
    armed: AtomicBool,
    failure: Mutex<Option<ShimError>>,
}

impl BatchNormSync {
    /// BatchNorm synchronised over `group`: a process group of its own (its collectives
    /// are ordered with nothing else's), made with `[distributed] timeout_s`.
    pub fn new(group: ProcessGroup, timeout_s: f64) -> Self {
        Self { group: Mutex::new(group), timeout_s, armed: AtomicBool::new(false), failure: Mutex::new(None) }
    }

    /// Synchronises the training-mode BatchNorms run until the guard drops. The backward
    /// exchanges an earlier forward still owed are forgotten: that step's backward was
    /// skipped on every rank (the ranks agreed on a fault in its forward).
    pub fn arm(&self) -> Armed<'_> {
        if let Ok(group) = self.group.lock() {
            group.forget_batch_norm_exchanges();
        }
        self.armed.store(true, Ordering::Relaxed);
        Armed(self)
    }

    /// After this rank's backward failed part way: the exchanges its BatchNorms' backwards
    /// still owe are made with zeros, so that the other ranks' backwards complete (the
    /// ranks then discard the step). Returns how many were made.
    pub fn release(&self) -> Result<usize, HostError> {
        let failed = |cause: String| HostError::BatchNormSync { timeout_s: self.timeout_s, cause };
        let group = self.group.lock().map_err(|e| failed(e.to_string()))?;
        group.release_batch_norm_exchanges().map_err(|e| {
            esper_torch_shim::dist::abort_groups_on_drop();
            failed(e.to_string())
        })
    }

    /// The failure of an exchange since the last call, if any, as the host's error.
    pub fn take_failure(&self) -> Option<HostError> {
        let cause = self.failure.lock().ok().and_then(|mut f| f.take())?;
        Some(HostError::BatchNormSync { timeout_s: self.timeout_s, cause: cause.to_string() })
    }

    /// `bn(x)` with the statistics of every rank, when armed and no exchange failed; None
    /// otherwise (the caller runs its own).
    pub(crate) fn apply(&self, x: &Tensor, bn: &nn::BatchNorm, config: &nn::BatchNormConfig) -> Option<Tensor> {
        if !self.armed.load(Ordering::Relaxed) {
            return None;
        }
        let params = params(bn, config)?;
        let mut failure = self.failure.lock().ok()?;
        if failure.is_some() {
            return None;
        }
        let result = self.group.lock().ok()?.sync_batch_norm(x, &params);
        result
            .map_err(|e| {
                // The run ends: the groups are aborted, not drained (see `abort_groups_on_drop`).
                esper_torch_shim::dist::abort_groups_on_drop();
                *failure = Some(e)
            })
            .ok()
    }
}

impl std::fmt::Debug for BatchNormSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchNormSync")
    }
}

/// While it lives, [`BatchNormSync`] synchronises.
pub struct Armed<'a>(&'a BatchNormSync);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.armed.store(false, Ordering::Relaxed);
    }
}
