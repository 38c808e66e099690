// The host's first convolution (3 input channels, 3x3, padding 1): forward and weight
// gradient on the tensor cores (launched by cpp/conv.cpp, which says how and why).
#include "common.cuh"
#include "mma.cuh"

#define CONV_THREADS 256
#define CONV_MAX_OUT 64
#define CONV_FWD_TILE 64    // pixels per forward block
#define CONV_TILE 64        // most pixels per weight-gradient tile
#define CONV_TILE_G 2048    // output-gradient values per tile (TILE * C at most)
#define CONV_G_STRIDE_MAX 2560  // a stage's output-gradient buffer: TILE rows of C + 8

// The 27 inputs (tap-major: (kh * 3 + kw) * 3 + c) of pixels first .. first + TP - 1 of an
// N x H x W x 3 tensor into xs (row `stride` apart), zero outside the image and past P;
// rounded to TF32 where `round`. One task per pixel and kernel row (3 neighbours x 3
// channels side by side in memory): cp.async where `async` (float32, not rounded), plain
// loads otherwise.
template <typename TI>
__device__ void gather_taps(const TI *__restrict__ x, int first, int TP, int P, int H, int W, float *xs, int stride,
                            bool async, bool round) {
    for (int e = threadIdx.x; e < TP * 3; e += blockDim.x) {
        const int lp = e / 3, kh = e % 3, p = first + lp;
        float *dst = xs + lp * stride + kh * 9;
        const int q = p / W, w = p - q * W, n = q / H, h = q - n * H, hh = h + kh - 1;
        const bool row = p < P && hh >= 0 && hh < H;
        const TI *src = x + ((long long)(n * H + hh) * W + w - 1) * 3;
#pragma unroll
        for (int kw = 0; kw < 3; ++kw) {
            const bool in = row && w + kw - 1 >= 0 && w + kw - 1 < W;
#pragma unroll
            for (int c = 0; c < 3; ++c) {
                if (sizeof(TI) == 4 && async && in) {
                    cp_async4(dst + kw * 3 + c, src + kw * 3 + c);
                } else {
                    const float v = in ? Val<TI>::f(src[kw * 3 + c]) : 0.f;
                    dst[kw * 3 + c] = round ? __uint_as_float(tf32(v)) : v;
                }
            }
        }
    }
}

// y (N x H x W x C, channels-last) = conv3x3(x, w); w's element (o, c, kh, kw) at
// o * s0 + c * s1 + kh * s2 + kw * s3. C 16, 32 or 64. A block takes CONV_FWD_TILE
// pixels: their taps (27, padded to 32 with zeros) times the weights (C x 32) on the
// tensor cores, into a shared tile the block then writes out (the pixels' rows lie side
// by side in y) with consecutive threads on consecutive elements; the weights are read
// once per block, which takes tiles in a grid-stride loop.
template <typename TI, typename TO>
__device__ void conv3_forward(const TI *__restrict__ x, const float *__restrict__ w, int s0, int s1, int s2, int s3,
                              TO *__restrict__ y, int P, int H, int W, int C) {
    __shared__ __align__(16) float ws[CONV_MAX_OUT * 36];      // [o][tap], taps 27..35 zero
    __shared__ __align__(16) float xs[CONV_FWD_TILE * 36];     // [pixel][tap], taps 27..35 zero
    __shared__ __align__(16) float out[CONV_FWD_TILE * (CONV_MAX_OUT + 4)];
    const int S = C + 4;
    for (int e = threadIdx.x; e < C * 36; e += blockDim.x) {
        const int o = e / 36, r = e % 36, t = r / 3, c = r % 3;
        ws[e] = r < 27 ? __uint_as_float(tf32(w[o * s0 + c * s1 + (t / 3) * s2 + (t % 3) * s3])) : 0.f;
    }
    for (int e = threadIdx.x; e < CONV_FWD_TILE * 9; e += blockDim.x) xs[(e / 9) * 36 + 27 + e % 9] = 0.f;
    __syncthreads();
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, gid = lane / 4, tig = lane % 4;
    // The (16-pixel, 8-channel) output tiles are dealt to the warps in turn: a warp's 8
    // channels stay the same (C / 8 divides the 8 warps), so it holds their weights.
    const int ntiles = C / 8, nb = (warp % ntiles) * 8, quad = __popc(C / 4 - 1);
    unsigned b[4][2];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        b[k][0] = __float_as_uint(ws[(nb + gid) * 36 + 8 * k + tig]);
        b[k][1] = __float_as_uint(ws[(nb + gid) * 36 + 8 * k + tig + 4]);
    }
    for (int first = blockIdx.x * CONV_FWD_TILE; first < P; first += gridDim.x * CONV_FWD_TILE) {
        gather_taps(x, first, CONV_FWD_TILE, P, H, W, xs, 36, false, true);
        __syncthreads();
        for (int mb = (warp / ntiles) * 16; mb < CONV_FWD_TILE; mb += (CONV_THREADS / 32 / ntiles) * 16) {
            float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const float *r0 = xs + (mb + gid) * 36 + 8 * k + tig, *r1 = r0 + 8 * 36;
                const unsigned a[4] = {__float_as_uint(r0[0]), __float_as_uint(r1[0]), __float_as_uint(r0[4]),
                                       __float_as_uint(r1[4])};
                mma_tf32(d, a, b[k]);
            }
            *reinterpret_cast<float2 *>(&out[(mb + gid) * S + nb + 2 * tig]) = make_float2(d[0], d[1]);
            *reinterpret_cast<float2 *>(&out[(mb + gid + 8) * S + nb + 2 * tig]) = make_float2(d[2], d[3]);
        }
        __syncthreads();
        // 4 channels per thread and store.
        for (int e = threadIdx.x; e < CONV_FWD_TILE * C / 4; e += blockDim.x) {
            const int lp = e >> quad, o = (e & (C / 4 - 1)) * 4;
            if (first + lp >= P) continue;
            const float4 v = *reinterpret_cast<const float4 *>(&out[lp * S + o]);
            Vec<TO, 4> q;
            q.v[0] = Val<TO>::t(v.x);
            q.v[1] = Val<TO>::t(v.y);
            q.v[2] = Val<TO>::t(v.z);
            q.v[3] = Val<TO>::t(v.w);
            *reinterpret_cast<Vec<TO, 4> *>(y + (long long)(first + lp) * C + o) = q;
        }
        __syncthreads();
    }
}

// Starts copying tile `t` (pixels t * TP .. + TP) into stage buffers gs (the output
// gradient's rows, C + 8 apart) and xs (the pixels' 27 inputs, 40 apart): cp.async where
// it can, zeros past the end and outside the image.
template <typename TG, typename TI>
__device__ void conv3_wgrad_load(const TG *__restrict__ g, const TI *__restrict__ x, int t, int TP, int P, int H,
                                 int W, int C, TG *gs, float *xs) {
    const int first = t * TP, S = C + 8, per16 = 16 / sizeof(TG), chunks = C / per16;
    if (first + TP <= P) {
        for (int i = threadIdx.x; i < TP * chunks; i += blockDim.x)
            cp_async16(gs + (i / chunks) * S + (i % chunks) * per16, g + (long long)first * C + i * per16);
    } else {
        for (int i = threadIdx.x; i < TP * C; i += blockDim.x)
            gs[(i / C) * S + i % C] = first + i / C < P ? g[(long long)first * C + i] : TG(0);
    }
    gather_taps(x, first, TP, P, H, W, xs, 40, true, false);
}

// Per block, the sums over its tiles' pixels of g[p][o] * taps(p)[r] into
// partial[block][o][r] (C x 27): a product G^T (C x pixels) X (pixels x 32 taps) on the
// tensor cores, 8 pixels per step, the warps taking the steps of a tile in turn. Tiles go
// through shared memory in two stages (the next copying while this one is summed).
template <typename TG, typename TI, int MT>
__device__ void conv3_wgrad(const TG *__restrict__ g, const TI *__restrict__ x, float *__restrict__ partial, int P,
                            int H, int W) {
    const int C = MT * 16;
    __shared__ __align__(16) float gbuf[2][CONV_G_STRIDE_MAX];
    __shared__ __align__(16) float xbuf[2][CONV_TILE * 40];
    const int TP = min(CONV_TILE, CONV_TILE_G / C), tiles = (P + TP - 1) / TP, S = C + 8;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, gid = lane / 4, tig = lane % 4;
    float acc[MT][4][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < 4; ++n)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[m][n][j] = 0.f;
    int stage = 0;
    if (blockIdx.x < tiles)
        conv3_wgrad_load(g, x, blockIdx.x, TP, P, H, W, C, reinterpret_cast<TG *>(gbuf[0]), xbuf[0]);
    cp_async_commit();
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        const int next = t + gridDim.x;
        if (next < tiles)
            conv3_wgrad_load(g, x, next, TP, P, H, W, C, reinterpret_cast<TG *>(gbuf[stage ^ 1]), xbuf[stage ^ 1]);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const TG *gs = reinterpret_cast<const TG *>(gbuf[stage]);
        const float *xs = xbuf[stage];
        for (int kb = warp * 8; kb < TP; kb += blockDim.x / 4) {
            unsigned b[4][2];
#pragma unroll
            for (int n = 0; n < 4; ++n) {
                b[n][0] = tf32(xs[(kb + tig) * 40 + n * 8 + gid]);
                b[n][1] = tf32(xs[(kb + tig + 4) * 40 + n * 8 + gid]);
            }
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                const TG *r0 = gs + (kb + tig) * S + m * 16 + gid, *r1 = r0 + 4 * S;
                const unsigned a[4] = {tf32(Val<TG>::f(r0[0])), tf32(Val<TG>::f(r0[8])), tf32(Val<TG>::f(r1[0])),
                                       tf32(Val<TG>::f(r1[8]))};
#pragma unroll
                for (int n = 0; n < 4; ++n) mma_tf32(acc[m][n], a, b[n]);
            }
        }
        __syncthreads();
        stage ^= 1;
    }
    cp_async_wait<0>();
    __syncthreads();
    // The warps' sums one after the other into red (C x 32, the stage buffers, free now).
    float *red = &xbuf[0][0];
    for (int k = 0; k < blockDim.x / 32; ++k) {
        if (warp == k) {
#pragma unroll
            for (int m = 0; m < MT; ++m)
#pragma unroll
                for (int n = 0; n < 4; ++n)
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        float *d = &red[(m * 16 + gid + (j / 2) * 8) * 32 + n * 8 + 2 * tig + j % 2];
                        *d = k == 0 ? acc[m][n][j] : *d + acc[m][n][j];
                    }
        }
        __syncthreads();
    }
    for (int e = threadIdx.x; e < 27 * C; e += blockDim.x)
        partial[(long long)blockIdx.x * 27 * C + e] = red[(e / 27) * 32 + e % 27];
}

// dw (C x 3 x 3 x 3 in its strides) = the blocks' partial rows added up, one warp per
// element: lane l adds rows l, l + 32, ... in order, then a fixed shuffle tree.
extern "C" __global__ void conv3_wgrad_sum(const float *__restrict__ partial, int blocks, int C, float *dw, int s0,
                                           int s1, int s2, int s3) {
    const int e = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (e >= 27 * C) return;
    float s = 0.f;
    for (int b = lane; b < blocks; b += 32) s += partial[(long long)b * 27 * C + e];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) {
        const int o = e / 27, r = e % 27, t = r / 3, c = r % 3;
        dw[o * s0 + c * s1 + (t / 3) * s2 + (t % 3) * s3] = s;
    }
}

#define ESPER_CONV3_WGRAD(NAME, TI, TO, MT, BLOCKS)                                                            \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS, BLOCKS)                                           \
        conv3_wgrad_##NAME##_c##MT(const TO *g, const TI *x, float *partial, int P, int H, int W) {              \
        conv3_wgrad<TO, TI, MT>(g, x, partial, P, H, W);                                                          \
    }
#define ESPER_CONV3_KERNELS(NAME, TI, TO)                                                                       \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS)                                                   \
        conv3_forward_##NAME(const TI *x, const float *w, int s0, int s1, int s2, int s3, TO *y, int P, int H,  \
                             int W, int C) {                                                                     \
        conv3_forward<TI, TO>(x, w, s0, s1, s2, s3, y, P, H, W, C);                                              \
    }                                                                                                            \
    ESPER_CONV3_WGRAD(NAME, TI, TO, 1, 4)                                                                        \
    ESPER_CONV3_WGRAD(NAME, TI, TO, 2, 4)                                                                        \
    ESPER_CONV3_WGRAD(NAME, TI, TO, 4, 2)
// NAME: input dtype, then output (and output gradient) dtype; the weight gradient's
// _cM for C = 16 M output channels.
ESPER_CONV3_KERNELS(f32_f32, float, float)
ESPER_CONV3_KERNELS(f32_bf16, float, unsigned short)
ESPER_CONV3_KERNELS(bf16_f32, unsigned short, float)
ESPER_CONV3_KERNELS(bf16_bf16, unsigned short, unsigned short)
