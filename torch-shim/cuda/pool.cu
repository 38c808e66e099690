// The fused ReLU + 2x2 max pool of a channels-last tensor, forward and backward
// (launched by cpp/rtc.cpp, which says why).
#include "common.cuh"

// One thread per VEC pooled elements: x is N x H x W x C, z and idx N x OH x OW x C
// (OH = H / 2, OW = W / 2), all counted here in vectors (total of them, Cv per pixel).
// A later window element wins only if greater, or NaN (as libtorch).
template <typename T, int VEC, bool RELU>
__device__ void forward(const Vec<T, VEC> *__restrict__ x, Vec<T, VEC> *__restrict__ z,
                        Idx<VEC> *__restrict__ idx, int total, int Cv, int OW, int OH, int W) {
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += gridDim.x * blockDim.x) {
        int row;
        const int base = window(o, Cv, OW, OH, W, &row);
        const Vec<T, VEC> v[4] = {x[base], x[base + Cv], x[base + row], x[base + row + Cv]};
        Vec<T, VEC> m = v[0];
        Idx<VEC> k;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
            float mf = Val<T>::f(m.v[j]);
            k.v[j] = 0;
#pragma unroll
            for (int i = 1; i < 4; ++i) {
                const float f = Val<T>::f(v[i].v[j]);
                if (f > mf || f != f) {
                    m.v[j] = v[i].v[j];
                    mf = f;
                    k.v[j] = (unsigned char)i;
                }
            }
            if (RELU && mf < 0.f) m.v[j] = T(0);
        }
        z[o] = m;
        idx[o] = k;
    }
}

// The gradient of `forward`: the pooled gradient (zero where the ReLU clamped, as
// threshold_backward: pooled value <= 0) goes to the window's chosen element, zero to
// the other three; every input element is written.
template <typename T, int VEC, bool RELU>
__device__ void backward(const Vec<T, VEC> *__restrict__ g, const Vec<T, VEC> *__restrict__ z,
                         const Idx<VEC> *__restrict__ idx, Vec<T, VEC> *__restrict__ gx, int total, int Cv,
                         int OW, int OH, int W) {
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += gridDim.x * blockDim.x) {
        int row;
        const int base = window(o, Cv, OW, OH, W, &row);
        Vec<T, VEC> gv = g[o];
        const Idx<VEC> k = idx[o];
        if (RELU) {
            const Vec<T, VEC> zv = z[o];
#pragma unroll
            for (int j = 0; j < VEC; ++j)
                if (Val<T>::f(zv.v[j]) <= 0.f) gv.v[j] = T(0);
        }
        Vec<T, VEC> out[4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < VEC; ++j) out[i].v[j] = k.v[j] == i ? gv.v[j] : T(0);
        gx[base] = out[0];
        gx[base + Cv] = out[1];
        gx[base + row] = out[2];
        gx[base + row + Cv] = out[3];
    }
}

#define ESPER_POOL_KERNELS(NAME, T, VEC, RELU)                                                               \
    extern "C" __global__ void fwd_##NAME(const Vec<T, VEC> *x, Vec<T, VEC> *z, Idx<VEC> *idx, int total,     \
                                          int Cv, int OW, int OH, int W) {                                    \
        forward<T, VEC, RELU>(x, z, idx, total, Cv, OW, OH, W);                                              \
    }                                                                                                        \
    extern "C" __global__ void bwd_##NAME(const Vec<T, VEC> *g, const Vec<T, VEC> *z, const Idx<VEC> *idx,    \
                                          Vec<T, VEC> *gx, int total, int Cv, int OW, int OH, int W) {        \
        backward<T, VEC, RELU>(g, z, idx, gx, total, Cv, OW, OH, W);                                         \
    }
ESPER_POOL_KERNELS(f32_v1, float, 1, false)
ESPER_POOL_KERNELS(f32_v1_relu, float, 1, true)
ESPER_POOL_KERNELS(bf16_v1, unsigned short, 1, false)
ESPER_POOL_KERNELS(bf16_v1_relu, unsigned short, 1, true)
ESPER_POOL_KERNELS(f32_v4, float, 4, false)
ESPER_POOL_KERNELS(f32_v4_relu, float, 4, true)
ESPER_POOL_KERNELS(bf16_v4, unsigned short, 4, false)
ESPER_POOL_KERNELS(bf16_v4_relu, unsigned short, 4, true)
