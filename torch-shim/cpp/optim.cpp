// SGD over a whole parameter group of float32 CUDA tensors as one kernel compiled at run
// time (cuda/optim.cu, in rtc.cpp's program).
//
// Why: libtorch's `_foreach_*` SGD is three kernels (momentum scale, add, update), and
// multi_tensor_apply gives each block a 64K-element chunk of one tensor: for the host's
// ~95K parameters that is a dozen blocks, each looping over its chunk, whatever the
// batch. Here one thread per element, every block busy, one kernel for the group.
// Measurements: docs/src/performance.md.
//
// The arithmetic is the `_foreach_*` ops', rounding for rounding (foreach.cpp:
// g + weight_decay * p as one fused multiply-add, as libtorch's alpha ops compile;
// momentum * buf rounded, then + g; p + (-lr) * buf fused), so a step here equals a step
// there bit for bit (a GPU test checks it). The tensors' pointers travel in the kernel's
// arguments (as multi_tensor_apply's do), so a CUDA graph of the step replays with the
// same tensors and nothing is copied to the device per step. No exception crosses the C
// boundary.
#include "rtc.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace esper::rtc {

namespace {

constexpr int kSgdTensors = 24;  // per launch (cuda/optim.cu's SGD_TENSORS); a larger group takes several

struct SgdList {
    float *param[kSgdTensors];
    const float *grad[kSgdTensors];
    float *buf[kSgdTensors];
    int end[kSgdTensors];
    int count;
};

bool fits(const at::Tensor &t, int device) {
    return t.is_cuda() && t.get_device() == device && t.scalar_type() == at::kFloat && t.is_non_overlapping_and_dense();
}

}  // namespace

bool sgd(const std::vector<at::Tensor> &params, const std::vector<at::Tensor> &grads,
         const std::vector<at::Tensor> &bufs, double lr, double momentum, double weight_decay) {
    const bool with_momentum = momentum != 0.0;
    if (params.empty() || grads.size() != params.size() || (with_momentum && bufs.size() != params.size())) {
        return false;
    }
    // CUDA tensors first: asking for the current device needs a CUDA driver.
    if (!params[0].is_cuda()) return false;
    const int device = c10::cuda::current_device();
    int64_t total = 0;
    for (size_t i = 0; i < params.size(); ++i) {
        const at::Tensor &p = params[i];
        // Same sizes and the same strides, so element j is the same element in each.
        auto same = [&](const at::Tensor &t) {
            return fits(t, device) && t.sizes() == p.sizes() && t.strides() == p.strides();
        };
        if (!fits(p, device) || !same(grads[i]) || (with_momentum && !same(bufs[i]))) return false;
        total += p.numel();
    }
    if (total > std::numeric_limits<int>::max()) return false;
    const OptimKernels *k = optim_kernels();
    if (!k) return false;
    float neg_lr = static_cast<float>(-lr), m = static_cast<float>(momentum), wd = static_cast<float>(weight_decay);
    int mode = with_momentum ? 1 : 0;
    for (size_t first = 0; first < params.size(); first += kSgdTensors) {
        SgdList list{};
        int count = 0, end = 0;
        const size_t last = std::min(params.size(), first + kSgdTensors);
        for (size_t i = first; i < last; ++i) {
            if (params[i].numel() == 0) continue;
            end += static_cast<int>(params[i].numel());
            list.param[count] = params[i].data_ptr<float>();
            list.grad[count] = grads[i].data_ptr<float>();
            list.buf[count] = with_momentum ? bufs[i].data_ptr<float>() : nullptr;
            list.end[count] = end;
            ++count;
        }
        if (count == 0) continue;
        list.count = count;
        void *args[] = {&list, &neg_lr, &m, &wd, &mode};
        launch_per_item(k->sgd, end, args);
    }
    return true;
}

}  // namespace esper::rtc
