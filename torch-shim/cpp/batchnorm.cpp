// BatchNorm in training mode + ReLU (+ the 2x2 max pool after it) of a channels-last
// CUDA tensor, as kernels compiled at run time (cuda/batchnorm.cu, in rtc.cpp's
// program).
//
// Why: a host block is conv -> BatchNorm -> ReLU -> pool. libtorch (cuDNN) writes the
// normalized tensor in full and the pool reads it back; backward, the pool writes a
// full-size gradient that cuDNN's BatchNorm backward reads twice. At batch 1024 these
// full-size passes were the largest memory traffic of the step after the convolutions.
// Here:
//
// * forward: one kernel sums each channel (sum and sum of squares, shifted by the running
//   mean, where finite, for precision; the last block to finish combines the blocks' partial sums in
//   double, updates the running statistics and writes the per-channel scale), then one
//   kernel normalizes, applies the ReLU and pools (or writes the ReLU output when no
//   pool follows): the normalized tensor never exists.
// * backward: one kernel sums the gradient and gradient * x-hat per channel from the
//   pooled gradient (only the element each window chose receives one), the last block
//   writing the weight and bias gradients; one kernel writes the input gradient.
//
// The blocks of a reduction meet in one counter per device (zero between launches; the
// last block resets it), so the kernels of one device must run on one stream at a time,
// as the runtime's do. Values agree with libtorch's ops to rounding (the sums run in
// another order); the tests compare them. No exception crosses the C boundary.
#include "esper_shim.h"

#include "error.h"
#include "rtc.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <array>
#include <limits>
#include <mutex>

namespace {

constexpr int kThreads = 512;  // cuda/batchnorm.cu's BN_THREADS, of the reductions

// The reduction counter of the current device: zero between launches (the last block of
// each reduction resets it). Allocated, zeroed, on a device's first use, which must not be
// inside a CUDA graph capture (the runtime's warm-up steps run eagerly first).
unsigned int *counter() {
    static std::mutex mutex;
    static std::array<at::Tensor *, 64> counters{};
    const int device = c10::cuda::current_device();
    TORCH_CHECK(device >= 0 && device < static_cast<int>(counters.size()), "CUDA device ", device, " out of range");
    std::lock_guard<std::mutex> lock(mutex);
    if (!counters[device]) {
        TORCH_CHECK(!esper::rtc::capturing(),
                    "the fused BatchNorm kernels' first use on a device is inside a CUDA graph capture");
        // Never freed: it lives as long as the process (no teardown order to get wrong).
        counters[device] = new at::Tensor(at::zeros({1}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA, device)));
    }
    return reinterpret_cast<unsigned int *>(counters[device]->data_ptr());
}

bool is_f32_cuda(const at::Tensor &t, int64_t C) {
    return t.defined() && t.is_cuda() && t.scalar_type() == at::kFloat && t.dim() == 1 && t.size(0) == C &&
           t.is_contiguous();
}

// Whether x (and the parameters) suit the kernels: CUDA, 4-d channels-last contiguous
// float32 or bfloat16, 4 to 512 channels (a power of two), x aligned for loads of 4
// channels at once, even height and width for the pool, more than one value per channel,
// int-sized; float32 contiguous parameters and running statistics of C elements on x's
// device (the current device: the kernels launch on its stream).
bool fusable(const at::Tensor &x, const at::Tensor &w, const at::Tensor &b, const at::Tensor &rm,
             const at::Tensor &rv, bool pool) {
    if (!x.is_cuda() || x.dim() != 4 || (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16)) return false;
    if (x.get_device() != c10::cuda::current_device()) return false;
    const int64_t C = x.size(1);
    if (C < 4 || C > 512 || (C & (C - 1)) != 0) return false;
    if (!x.is_contiguous(at::MemoryFormat::ChannelsLast) || x.numel() == 0 ||
        x.numel() > std::numeric_limits<int>::max() || x.numel() / C < 2)
        return false;
    if (pool && (x.size(2) % 2 != 0 || x.size(3) % 2 != 0)) return false;
    if (reinterpret_cast<uintptr_t>(x.data_ptr()) % (4 * x.element_size()) != 0) return false;
    for (const at::Tensor *t : {&w, &b, &rm, &rv}) {
        if (!is_f32_cuda(*t, C) || t->device() != x.device()) return false;
    }
    return true;
}

// Blocks of a reduction over `items` vectors (kThreads per block): two per
// multiprocessor, fewer for small tensors, so that each thread reads at least 8 vectors
// (every block's partial sums are read again by the last block, alone).
int reduction_blocks(int64_t items) {
    const int64_t want = (items + 8 * kThreads - 1) / (8 * kThreads);
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(want, 2 * esper::rtc::multiprocessors())));
}

struct Geometry {
    int total, Cv, OW, OH, W;  // total: the output's vectors (pooled when pooling)
    long long rows;            // N * H * W of the input: values per channel
};

Geometry geometry(const at::Tensor &x, bool pool) {
    const int Cv = static_cast<int>(x.size(1) / 4), H = static_cast<int>(x.size(2)), W = static_cast<int>(x.size(3));
    const long long rows = x.size(0) * static_cast<long long>(H) * W;
    const int total = static_cast<int>(pool ? x.size(0) * (H / 2) * (W / 2) * Cv : rows * Cv);
    return {total, Cv, W / 2, H / 2, W, rows};
}

struct BnRelu : torch::autograd::Function<BnRelu> {
    static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x, const at::Tensor &weight,
                              const at::Tensor &bias, const at::Tensor &running_mean, const at::Tensor &running_var,
                              double momentum, double eps, bool pool) {
        const auto &k = esper::rtc::batchnorm_kernels();
        const int d = esper::rtc::dtype_index(x);
        const int64_t C = x.size(1);
        Geometry s = geometry(x, pool);
        // Everything allocated before the first launch: once the statistics kernel has
        // updated the running statistics, nothing but a failed launch can throw.
        const at::TensorOptions f32 = x.options().dtype(at::kFloat);
        at::Tensor stats = at::empty({4 * C}, f32);
        const int blocks = reduction_blocks(s.rows * s.Cv);
        at::Tensor partial = at::empty({blocks, C, 2}, f32);
        const auto cl = x.options().memory_format(at::MemoryFormat::ChannelsLast);
        at::Tensor z = pool ? at::empty({x.size(0), C, x.size(2) / 2, x.size(3) / 2}, cl) : at::empty(x.sizes(), cl);
        at::Tensor idx = pool ? at::empty(z.sizes(), cl.dtype(at::kByte)) : at::empty({0}, x.options().dtype(at::kByte));
        unsigned int *count = counter();
        {
            const void *xp = x.data_ptr(), *wp = weight.data_ptr(), *bp = bias.data_ptr();
            void *pp = partial.data_ptr(), *cp = count, *mp = running_mean.data_ptr(), *vp = running_var.data_ptr(),
                 *sp = stats.data_ptr();
            float m = static_cast<float>(momentum), e = static_cast<float>(eps);
            void *args[] = {&xp, &s.rows, &s.Cv, &pp, &cp, &wp, &bp, &mp, &vp, &m, &e, &sp};
            esper::rtc::launch(k.stats[d], dim3(static_cast<unsigned>(blocks)), dim3(kThreads), args);
        }
        {
            const void *xp = x.data_ptr(), *sp = stats.data_ptr();
            void *zp = z.data_ptr(), *ip = pool ? idx.data_ptr() : nullptr;
            void *args[] = {&xp, &sp, &zp, &ip, &s.total, &s.Cv, &s.OW, &s.OH, &s.W};
            esper::rtc::launch_per_item(k.apply[d][pool], s.total, args);
        }
        ctx->save_for_backward({x, z, idx, stats});
        ctx->saved_data["pool"] = pool;
        return z;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                   torch::autograd::variable_list grads) {
        const auto &k = esper::rtc::batchnorm_kernels();
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &x = saved[0], &z = saved[1], &idx = saved[2], &stats = saved[3];
        const bool pool = ctx->saved_data["pool"].toBool();
        const int d = esper::rtc::dtype_index(x);
        const int64_t C = x.size(1);
        Geometry s = geometry(x, pool);
        at::Tensor g = grads[0].to(z.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
        if (reinterpret_cast<uintptr_t>(g.data_ptr()) % (4 * g.element_size()) != 0) {
            g = g.clone(at::MemoryFormat::ChannelsLast);  // a view at an offset: the kernels load 4 channels at once
        }
        const at::TensorOptions f32 = x.options().dtype(at::kFloat);
        at::Tensor grad_weight = at::empty({C}, f32), grad_bias = at::empty({C}, f32), coef = at::empty({4 * C}, f32);
        const int blocks = reduction_blocks(s.total);
        at::Tensor partial = at::empty({blocks, C, 2}, f32);
        const void *gp = g.data_ptr(), *zp = z.data_ptr(), *ip = pool ? idx.data_ptr() : nullptr, *xp = x.data_ptr();
        {
            const void *sp = stats.data_ptr();
            void *pp = partial.data_ptr(), *cp = counter(), *wp = grad_weight.data_ptr(), *bp = grad_bias.data_ptr(),
                 *kp = coef.data_ptr();
            void *args[] = {&gp, &zp, &ip, &xp, &sp, &s.total, &s.Cv, &s.OW, &s.OH, &s.W, &s.rows, &pp, &cp, &wp, &bp, &kp};
            esper::rtc::launch(k.grad_stats[d][pool], dim3(static_cast<unsigned>(blocks)), dim3(kThreads), args);
        }
        at::Tensor gx = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
        {
            const void *kp = coef.data_ptr();
            void *op = gx.data_ptr();
            void *args[] = {&gp, &zp, &ip, &xp, &kp, &op, &s.total, &s.Cv, &s.OW, &s.OH, &s.W};
            esper::rtc::launch_per_item(k.backward[d][pool], s.total, args);
        }
        return {gx, grad_weight, grad_bias, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
};

}  // namespace

extern "C" {

// relu(batch_norm(x)) in training mode (batch statistics; the running statistics updated
// in place with `momentum`), then a 2x2 max pool when `pool`, with autograd, into `*out`
// (a new tensor the caller owns). Where x or the parameters do not suit the kernels (see
// fusable), `*out` is left null: the caller runs libtorch's ops. 0, or 1 with the
// message in `err`.
int esper_bn_relu(const at::Tensor *x, const at::Tensor *weight, const at::Tensor *bias,
                  const at::Tensor *running_mean, const at::Tensor *running_var, double momentum, double eps,
                  int pool, at::Tensor **out, char *err, size_t len) {
    try {
        *out = nullptr;
        if (!fusable(*x, *weight, *bias, *running_mean, *running_var, pool != 0)) return 0;
        at::Tensor z;
        {
            // The running statistics are updated by the kernel, not recorded by autograd.
            at::Tensor rm = running_mean->detach(), rv = running_var->detach();
            z = BnRelu::apply(*x, *weight, *bias, rm, rv, momentum, eps, pool != 0);
        }
        *out = new at::Tensor(std::move(z));
        return 0;
    } catch (const std::exception &e) {
        return esper::fail(e, err, len);
    }
}

}  // extern "C"
