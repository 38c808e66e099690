//! The host's convolutions where the runtime's own CUDA kernels beat cuDNN's:
//!
//! * the first block's (3 input channels, 3x3, padding 1, no bias), forward and weight
//!   gradient (`esper_torch_shim::rtc::first_conv`): cuDNN has no good kernel for 3 input
//!   channels, least of all for the weight gradient (see `torch-shim/cpp/conv.cpp`);
//! * a 32 -> 64 channel 3x3 convolution's weight gradient, bfloat16 under autocast or
//!   float32 (`esper_torch_shim::rtc::conv3x3`, the default host's second block): cuDNN's
//!   runs on few thread blocks, at a tenth of the memory bandwidth (see
//!   `torch-shim/cpp/wgrad.cpp`).
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
    own_kernel(x, "the first convolution's kernels", || esper_torch_shim::rtc::first_conv(x, weight))
}

/// `conv2d(x, weight, padding 1)` with the runtime's weight gradient, or None where it
/// does not apply (not CUDA, other channel counts, TF32 off for float32: the caller runs
/// libtorch's convolution). A failure of the kernel is logged and answered with None.
pub(crate) fn conv3x3(x: &Tensor, weight: &Tensor) -> Option<Tensor> {
    own_kernel(x, "the convolution's weight-gradient kernel", || esper_torch_shim::rtc::conv3x3(x, weight))
}

/// `run()` on CUDA where the kernels built; its failure logged as `what`'s and answered
/// with None, so the step goes on with libtorch's convolution.
fn own_kernel(
    x: &Tensor,
    what: &str,
    run: impl FnOnce() -> Result<Option<Tensor>, esper_torch_shim::ShimError>,
) -> Option<Tensor> {
    if !x.device().is_cuda() || super::pool::fused_state().is_err() {
        return None;
    }
    run().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "{what} failed; using libtorch's");
        None
    })
}
