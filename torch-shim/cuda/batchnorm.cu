// BatchNorm in training mode + ReLU (+ the 2x2 max pool after it), forward and
// backward (launched by cpp/batchnorm.cpp, which says how and why).
#include "common.cuh"

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
