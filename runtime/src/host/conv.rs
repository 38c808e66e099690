//! The first block's convolution (3 input channels, 3x3, padding 1, no bias) as the
//! runtime's own CUDA kernels (`esper_torch_shim::rtc::first_conv`): cuDNN has no good
//! kernel for 3 input channels, least of all for the weight gradient (see
//! `torch-shim/cpp/conv.cpp`).
//!
//! CUDA only, and only where the kernels suit the tensors; everywhere else the caller
//! runs libtorch's convolution. Under bfloat16 autocast the output is bfloat16, as
//! libtorch's would be. The products are TF32 on the tensor cores, float32 sums, as
//! cuDNN's by default: the values are libtorch's to that rounding.

use tch::Tensor;

/// `conv2d(x, weight, padding 1)` through the kernels, or None where they do not apply
/// (the caller runs libtorch's convolution). A failure of the kernels themselves is
/// logged and answered with None too, so the step goes on with libtorch's.
pub(crate) fn first_conv(x: &Tensor, weight: &Tensor) -> Option<Tensor> {
    if !x.device().is_cuda() || super::pool::fused_state().is_err() {
        return None;
    }
    esper_torch_shim::rtc::first_conv(x, weight).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the first convolution's kernels failed; using libtorch's");
        None
    })
}
