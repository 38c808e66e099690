// The runtime-compiled CUDA kernels (rtc.cpp) other shim files call. Built only where the
// CUDA headers are (build.rs defines ESPER_RTC then).
#pragma once
#include <ATen/core/Tensor.h>

namespace esper::rtc {

// `x.contiguous()` (NCHW): a tiled transpose kernel for a 4-d channels-last float32 or
// bfloat16 CUDA tensor (no autograd history), libtorch's copy otherwise.
at::Tensor nchw_contiguous(const at::Tensor &x);

}  // namespace esper::rtc
