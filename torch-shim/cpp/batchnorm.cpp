// BatchNorm in training mode + ReLU (+ the 2x2 max pool after it) of a channels-last
// CUDA tensor, as kernels compiled at run time (rtc.cpp compiles this file's source
// with its own).
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
#include "error.h"
#include "rtc.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <array>
#include <limits>
#include <mutex>

namespace esper::rtc {

// Appended to rtc.cpp's kernel source (it uses Val, Vec, Idx and window from there).
const char *batchnorm_source() {
    return R"CUDA(
// Each thread owns one vector of 4 channels; a block is (blockDim.x / Cv) rows of Cv
// vectors, Cv a power of two dividing blockDim.x, so a thread's channels stay fixed
// through its grid-stride loop.
#define BN_THREADS 512

// The block's per-channel sums (a and b, 4 channels per thread) into partial[block][C][2]:
// a tree over the rows in shared memory, the same order every run.
__device__ void block_sums(float *red, const float *a, const float *b, float *partial, int Cv) {
    const int t = threadIdx.x, C = Cv * 4, n = blockDim.x * 4;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        red[4 * t + j] = a[j];
        red[n + 4 * t + j] = b[j];
    }
    __syncthreads();
    for (int rows = blockDim.x / Cv; rows > 1; rows >>= 1) {
        const int half = rows / 2 * C;
        for (int e = t; e < half; e += blockDim.x) {
            red[e] += red[e + half];
            red[n + e] += red[n + e + half];
        }
        __syncthreads();
    }
    for (int c = t; c < C; c += blockDim.x) {
        partial[(blockIdx.x * C + c) * 2] = red[c];
        partial[(blockIdx.x * C + c) * 2 + 1] = red[n + c];
    }
}

// Whether this block is the last of the grid to finish (every block's partial sums are
// visible to it then). The last block resets the counter when done.
__device__ bool last_block(unsigned int *counter) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == gridDim.x - 1;
    __syncthreads();
    return last;
}

// In the last block: the totals over all blocks' partials, per channel, in double and in
// a fixed order, into tot[c] and tot[blockDim.x + c].
__device__ void grid_totals(const float *partial, double *tot, int C) {
    const int t = threadIdx.x, P = blockDim.x / C, c = t % C;
    const float2 *sums = reinterpret_cast<const float2 *>(partial);
    double s = 0.0, q = 0.0;
    // 8 loads in flight per thread (from L2: written by the other blocks), then added in
    // order: one block does this alone, so its latency is the kernel's tail.
    for (int g0 = t / C; g0 < gridDim.x; g0 += 8 * P) {
        float2 v[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const int g = g0 + k * P;
            v[k] = g < gridDim.x ? __ldcg(sums + g * C + c) : make_float2(0.f, 0.f);
        }
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            s += v[k].x;
            q += v[k].y;
        }
    }
    tot[t] = s;
    tot[blockDim.x + t] = q;
    __syncthreads();
    if (t < C) {
        for (int p = 1; p < P; ++p) {
            s += tot[p * C + t];
            q += tot[blockDim.x + p * C + t];
        }
        tot[t] = s;
        tot[blockDim.x + t] = q;
    }
    __syncthreads();
}

// The sums' shift for a channel: its running mean, which is near the batch mean once
// training runs (so the sum of squares loses nothing to cancellation), or 0 where it is
// not finite (a non-finite running mean must not poison the batch statistics, which
// libtorch computes without it).
__device__ __forceinline__ float shift_of(float running_mean) { return isfinite(running_mean) ? running_mean : 0.f; }

// Forward statistics of x (rows x C, channels-last) into stats = [scale, mean, bias,
// invstd] (each C floats), and the running statistics updated as libtorch does
// (momentum, unbiased variance).
template <typename T>
__device__ void bn_stats(const Vec<T, 4> *__restrict__ x, long long rows, int Cv, float *partial,
                         unsigned int *counter, const float *weight, const float *bias, float *running_mean,
                         float *running_var, float momentum, float eps, float *stats) {
    __shared__ float red[2 * BN_THREADS * 4];
    __shared__ double tot[2 * BN_THREADS];
    const int C = Cv * 4, t = threadIdx.x, cv = t % Cv, R = blockDim.x / Cv;
    float shift[4], a[4] = {0.f, 0.f, 0.f, 0.f}, b[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int j = 0; j < 4; ++j) shift[j] = shift_of(running_mean[4 * cv + j]);
#pragma unroll 4
    for (long long m = (long long)blockIdx.x * R + t / Cv; m < rows; m += (long long)gridDim.x * R) {
        const Vec<T, 4> v = x[m * Cv + cv];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float d = Val<T>::f(v.v[j]) - shift[j];
            a[j] += d;
            b[j] += d * d;
        }
    }
    block_sums(red, a, b, partial, Cv);
    if (!last_block(counter)) return;
    grid_totals(partial, tot, C);
    for (int c = t; c < C; c += blockDim.x) {
        const double n = (double)rows;
        const double m1 = tot[c] / n;
        double var = tot[blockDim.x + c] / n - m1 * m1;
        if (var < 0.0) var = 0.0;
        const double mean = m1 + (double)shift_of(running_mean[c]);
        const float invstd = (float)(1.0 / sqrt(var + (double)eps));
        running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * (float)mean;
        running_var[c] = (1.f - momentum) * running_var[c] + momentum * (float)(var * n / (n - 1.0));
        stats[c] = weight[c] * invstd;
        stats[C + c] = (float)mean;
        stats[2 * C + c] = bias[c];
        stats[3 * C + c] = invstd;
    }
    if (t == 0) *counter = 0u;
}

// relu(bn(x)), pooled 2x2 when POOL (z and idx as the pool kernels write them), else in
// full. total counts the output's vectors.
template <typename T, bool POOL>
__device__ void bn_apply(const Vec<T, 4> *__restrict__ x, const float *__restrict__ stats, Vec<T, 4> *__restrict__ z,
                         Idx<4> *__restrict__ idx, int total, int Cv, int OW, int OH, int W) {
    const int C = Cv * 4;
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += gridDim.x * blockDim.x) {
        const int c0 = (o % Cv) * 4;
        float sc[4], mu[4], be[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            sc[j] = stats[c0 + j];
            mu[j] = stats[C + c0 + j];
            be[j] = stats[2 * C + c0 + j];
        }
        Vec<T, 4> out;
        if (POOL) {
            int row;
            const int base = window(o, Cv, OW, OH, W, &row);
            const Vec<T, 4> v[4] = {x[base], x[base + Cv], x[base + row], x[base + row + Cv]};
            Idx<4> k;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                float m = (Val<T>::f(v[0].v[j]) - mu[j]) * sc[j] + be[j];
                k.v[j] = 0;
#pragma unroll
                for (int i = 1; i < 4; ++i) {
                    const float f = (Val<T>::f(v[i].v[j]) - mu[j]) * sc[j] + be[j];
                    if (f > m || f != f) {
                        m = f;
                        k.v[j] = (unsigned char)i;
                    }
                }
                out.v[j] = Val<T>::t(m < 0.f ? 0.f : m);
            }
            idx[o] = k;
        } else {
            const Vec<T, 4> v = x[o];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float y = (Val<T>::f(v.v[j]) - mu[j]) * sc[j] + be[j];
                out.v[j] = Val<T>::t(y < 0.f ? 0.f : y);
            }
        }
        z[o] = out;
    }
}

// The window slot k's offset from the window's first element, in vectors.
__device__ __forceinline__ int slot(int k, int Cv, int row) { return (k & 1) * Cv + (k >> 1) * row; }

// Backward sums: the gradient reaching relu(bn(x)) (g masked where z <= 0; pooled: only
// the chosen element of each window has one) and that gradient * x-hat, per channel.
// The last block writes the bias and weight gradients and coef = [A, mean(dy), Bk, mean]
// so that dx = A * (dy - mean(dy)) - Bk * (x - mean).
template <typename T, bool POOL>
__device__ void bn_grad_stats(const Vec<T, 4> *__restrict__ g, const Vec<T, 4> *__restrict__ z,
                              const Idx<4> *__restrict__ idx, const Vec<T, 4> *__restrict__ x,
                              const float *__restrict__ stats, int total, int Cv, int OW, int OH, int W,
                              long long rows, float *partial, unsigned int *counter, float *grad_weight,
                              float *grad_bias, float *coef) {
    __shared__ float red[2 * BN_THREADS * 4];
    __shared__ double tot[2 * BN_THREADS];
    const int C = Cv * 4, t = threadIdx.x, c0 = (t % Cv) * 4;
    const T *xs = reinterpret_cast<const T *>(x);
    float mu[4], is[4], a[4] = {0.f, 0.f, 0.f, 0.f}, b[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        mu[j] = stats[C + c0 + j];
        is[j] = stats[3 * C + c0 + j];
    }
#pragma unroll 2
    for (int o = blockIdx.x * blockDim.x + t; o < total; o += gridDim.x * blockDim.x) {
        const Vec<T, 4> gv = g[o], zv = z[o];
        Vec<T, 4> xv;
        if (POOL) {
            int row;
            const int base = window(o, Cv, OW, OH, W, &row);
            const Idx<4> k = idx[o];
#pragma unroll
            for (int j = 0; j < 4; ++j) xv.v[j] = xs[(base + slot(k.v[j], Cv, row)) * 4 + j];
        } else {
            xv = x[o];
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float d = Val<T>::f(zv.v[j]) > 0.f ? Val<T>::f(gv.v[j]) : 0.f;
            a[j] += d;
            b[j] += d * ((Val<T>::f(xv.v[j]) - mu[j]) * is[j]);
        }
    }
    block_sums(red, a, b, partial, Cv);
    if (!last_block(counter)) return;
    grid_totals(partial, tot, C);
    for (int c = t; c < C; c += blockDim.x) {
        const double n = (double)rows, sum_g = tot[c], sum_gx = tot[blockDim.x + c];
        grad_bias[c] = (float)sum_g;
        grad_weight[c] = (float)sum_gx;
        const float A = stats[c];
        coef[c] = A;
        coef[C + c] = (float)(sum_g / n);
        coef[2 * C + c] = A * (float)(sum_gx / n) * stats[3 * C + c];
        coef[3 * C + c] = stats[C + c];
    }
    if (t == 0) *counter = 0u;
}

// dx = A * (dy - mean(dy)) - Bk * (x - mean), every input element written once.
template <typename T, bool POOL>
__device__ void bn_backward(const Vec<T, 4> *__restrict__ g, const Vec<T, 4> *__restrict__ z,
                            const Idx<4> *__restrict__ idx, const Vec<T, 4> *__restrict__ x,
                            const float *__restrict__ coef, Vec<T, 4> *__restrict__ gx, int total, int Cv, int OW,
                            int OH, int W) {
    const int C = Cv * 4;
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += gridDim.x * blockDim.x) {
        const int c0 = (o % Cv) * 4;
        float A[4], mg[4], Bk[4], mu[4], d[4];
        const Vec<T, 4> gv = g[o], zv = z[o];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            A[j] = coef[c0 + j];
            mg[j] = coef[C + c0 + j];
            Bk[j] = coef[2 * C + c0 + j];
            mu[j] = coef[3 * C + c0 + j];
            d[j] = Val<T>::f(zv.v[j]) > 0.f ? Val<T>::f(gv.v[j]) : 0.f;
        }
        if (POOL) {
            int row;
            const int base = window(o, Cv, OW, OH, W, &row);
            const Idx<4> k = idx[o];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int at = base + slot(i, Cv, row);
                const Vec<T, 4> xv = x[at];
                Vec<T, 4> out;
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const float dy = k.v[j] == i ? d[j] : 0.f;
                    out.v[j] = Val<T>::t(A[j] * (dy - mg[j]) - Bk[j] * (Val<T>::f(xv.v[j]) - mu[j]));
                }
                gx[at] = out;
            }
        } else {
            const Vec<T, 4> xv = x[o];
            Vec<T, 4> out;
#pragma unroll
            for (int j = 0; j < 4; ++j)
                out.v[j] = Val<T>::t(A[j] * (d[j] - mg[j]) - Bk[j] * (Val<T>::f(xv.v[j]) - mu[j]));
            gx[o] = out;
        }
    }
}

#define ESPER_BN_KERNELS(NAME, T)                                                                                 \
    extern "C" __global__ void __launch_bounds__(BN_THREADS)                                                      \
        bn_stats_##NAME(const Vec<T, 4> *x, long long rows, int Cv, float *partial, unsigned int *counter,         \
                        const float *weight, const float *bias, float *running_mean, float *running_var,          \
                        float momentum, float eps, float *stats) {                                                \
        bn_stats<T>(x, rows, Cv, partial, counter, weight, bias, running_mean, running_var, momentum, eps, stats); \
    }                                                                                                             \
    ESPER_BN_POOL_KERNELS(NAME, T, false, )                                                                       \
    ESPER_BN_POOL_KERNELS(NAME, T, true, _pool)
#define ESPER_BN_POOL_KERNELS(NAME, T, POOL, SUFFIX)                                                               \
    extern "C" __global__ void bn_apply_##NAME##SUFFIX(const Vec<T, 4> *x, const float *stats, Vec<T, 4> *z,        \
                                                       Idx<4> *idx, int total, int Cv, int OW, int OH, int W) {    \
        bn_apply<T, POOL>(x, stats, z, idx, total, Cv, OW, OH, W);                                                \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(BN_THREADS) bn_grad_stats_##NAME##SUFFIX(                         \
        const Vec<T, 4> *g, const Vec<T, 4> *z, const Idx<4> *idx, const Vec<T, 4> *x, const float *stats,         \
        int total, int Cv, int OW, int OH, int W, long long rows, float *partial, unsigned int *counter,           \
        float *grad_weight, float *grad_bias, float *coef) {                                                      \
        bn_grad_stats<T, POOL>(g, z, idx, x, stats, total, Cv, OW, OH, W, rows, partial, counter, grad_weight,   \
                               grad_bias, coef);                                                                  \
    }                                                                                                             \
    extern "C" __global__ void bn_backward_##NAME##SUFFIX(const Vec<T, 4> *g, const Vec<T, 4> *z,                  \
                                                          const Idx<4> *idx, const Vec<T, 4> *x,                  \
                                                          const float *coef, Vec<T, 4> *gx, int total, int Cv,    \
                                                          int OW, int OH, int W) {                                \
        bn_backward<T, POOL>(g, z, idx, x, coef, gx, total, Cv, OW, OH, W);                                       \
    }
ESPER_BN_KERNELS(f32, float)
ESPER_BN_KERNELS(bf16, unsigned short)
)CUDA";
}

}  // namespace esper::rtc

namespace {

constexpr int kThreads = 512;  // BN_THREADS of the reductions

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
