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

use esper_torch_shim::rtc::{self, BatchNormParams};
use tch::{nn, Tensor};

/// `relu(bn(x))`, pooled 2x2 when `pool`, through the fused kernels, or None where they
/// do not apply (the caller runs libtorch's ops). A failure of the kernels themselves is
/// logged and answered with None too, so the step goes on with libtorch's ops.
pub(crate) fn bn_relu(x: &Tensor, bn: &nn::BatchNorm, config: &nn::BatchNormConfig, pool: bool) -> Option<Tensor> {
    if !x.device().is_cuda() || super::pool::fused_state().is_err() {
        return None;
    }
    let (Some(weight), Some(bias)) = (&bn.ws, &bn.bs) else {
        return None;
    };
    let params = BatchNormParams {
        weight,
        bias,
        running_mean: &bn.running_mean,
        running_var: &bn.running_var,
        momentum: config.momentum,
        eps: config.eps,
    };
    rtc::bn_relu(x, &params, pool).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "fused BatchNorm failed; using libtorch's");
        None
    })
}
