// The runtime-compiled CUDA kernels (rtc.cpp; their source: cuda/) other shim files call.
// Built only where the CUDA headers are (build.rs defines ESPER_RTC then).
#pragma once
#include "error.h"

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#include <exception>
#include <vector>

namespace esper::rtc {

// batchnorm.cpp's kernels: [dtype: f32, bf16] and [pool: no, yes].
struct BatchNormKernels {
    cudaKernel_t stats[2] = {};
    cudaKernel_t apply[2][2] = {};
    cudaKernel_t grad_stats[2][2] = {};
    cudaKernel_t backward[2][2] = {};
};

// The BatchNorm kernels for the current device; throws why they cannot be built.
const BatchNormKernels &batchnorm_kernels();

// conv.cpp's kernels: forward and weight gradient [input dtype][output dtype] (0
// float32, 1 bfloat16) (the weight gradient's [output channels: 16, 32, 64]), and the sum
// of the weight gradient's per-block rows.
struct ConvKernels {
    cudaKernel_t forward[2][2] = {};
    cudaKernel_t wgrad[2][2][3] = {};
    cudaKernel_t wgrad_sum = nullptr;
};

// The convolution kernels for the current device; throws why they cannot be built.
const ConvKernels &conv_kernels();

// wgrad.cpp's kernels: the 3x3 weight gradient for 32 -> 64 channels [dtype: f32, bf16]
// and the sum of its per-block rows.
struct WgradKernels {
    cudaKernel_t c32_64[2] = {};
    cudaKernel_t sum = nullptr;
};

// The weight-gradient kernels for the current device; throws why they cannot be built.
const WgradKernels &wgrad_kernels();

// optim.cpp's kernels.
struct OptimKernels {
    cudaKernel_t sgd = nullptr;
};

// The optimizer kernels for the current device, or null where they cannot be built
// (rtc.cpp logs nothing: the caller falls back to libtorch's ops).
const OptimKernels *optim_kernels();

// SGD over a group in one kernel launch (per 24 tensors), libtorch's `_foreach_*`
// arithmetic (optim.cpp): false, with nothing done, unless every tensor is a dense
// float32 CUDA tensor on the current device and the kernels are built.
bool sgd(const std::vector<at::Tensor> &params, const std::vector<at::Tensor> &grads,
         const std::vector<at::Tensor> &bufs, double lr, double momentum, double weight_decay);

// Launches `kernel` on libtorch's current stream (no dynamic shared memory).
void launch(cudaKernel_t kernel, dim3 grid, dim3 block, void **args);

// Launches `kernel` with one thread per item (256 per block, a grid-stride loop past
// 2^20 blocks) on libtorch's current stream.
void launch_per_item(cudaKernel_t kernel, int total, void **args);

// The kernels' dtype index: 0 float32, 1 bfloat16.
int dtype_index(const at::Tensor &x);

// Whether libtorch's current stream is capturing a CUDA graph.
bool capturing();

// The current device's multiprocessor count.
int multiprocessors();

// `x.contiguous()` (NCHW): a tiled transpose kernel for a 4-d channels-last float32 or
// bfloat16 CUDA tensor (no autograd history), libtorch's copy otherwise.
at::Tensor nchw_contiguous(const at::Tensor &x);

// The same converted to `dtype` in the same pass (one kernel for bfloat16 -> float32;
// other conversions through libtorch's copy).
at::Tensor nchw_contiguous(const at::Tensor &x, at::ScalarType dtype);

// The shim's C face of an op that may not apply: `*out` is a new tensor the caller owns,
// `make()`, where `applies()`, else null (the caller runs libtorch's op). 0, or 1 with the
// message in `err`; no exception escapes.
template <typename Applies, typename Make>
int new_tensor_if(at::Tensor **out, char *err, size_t len, Applies applies, Make make) {
    try {
        *out = nullptr;
        if (applies()) *out = new at::Tensor(make());
        return 0;
    } catch (const std::exception &e) {
        return esper::fail(e, err, len);
    }
}

}  // namespace esper::rtc
