// The host's first convolution (3 input channels, 3x3, stride 1, padding 1, no bias) of a
// channels-last CUDA tensor, as kernels compiled at run time (rtc.cpp compiles this
// file's source with its own).
//
// Why: cuDNN has no good kernel for 3 input channels: its weight gradient runs a generic
// engine (`wgrad_alg0_engine` in float32; under bfloat16 autocast a kernel behind a
// padding copy), and its bfloat16 forward a generic engine too. The arithmetic is small
// (27 products per output channel and pixel); what costs is memory traffic.
// Measurements: docs/src/performance.md.
//
// Both are small matrix products on the tensor cores (mma.sync, TF32 operands rounded to
// nearest, float32 sums: what cuDNN does by default for float32, libtorch allowing TF32
// for convolutions), the pixels' 27 inputs gathered into shared memory (a task per pixel
// and kernel row: 9 values side by side in memory):
//
// * forward: a block takes 64 pixels, their inputs (padded to 32 with zeros) times the
//   weights (C x 32) into a shared tile, which the block writes out with consecutive
//   threads on consecutive elements (the pixels' rows lie side by side in y); bfloat16
//   out under autocast, rounded once.
// * weight gradient: a split-K product G^T (C x pixels) X (pixels x 27). Tiles of pixels
//   (their output-gradient rows by cp.async, their inputs) go through shared memory in
//   two stages, the next copying while this one is summed; the warps take a tile's 8-pixel
//   steps in turn. A block adds its warps in a fixed order into one partial row; a second
//   kernel adds the rows (a warp per weight, a fixed tree) into the gradient, in the
//   weight's own strides, float32. Deterministic.
// * the input gradient (never needed for the network input, which has none) goes to
//   libtorch's convolution backward.
//
// Where the tensors do not suit the kernels (see usable) the caller runs libtorch's
// convolution. Values are libtorch's to TF32 rounding. No exception crosses the C
// boundary.
#include "error.h"
#include "rtc.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <limits>

namespace esper::rtc {

// Appended to rtc.cpp's kernel source (it uses Val from there).
const char *conv_source() {
    return R"CUDA(
#define CONV_THREADS 256
#define CONV_MAX_OUT 64
#define CONV_FWD_TILE 64    // pixels per forward block
#define CONV_TILE 64        // most pixels per weight-gradient tile
#define CONV_TILE_G 2048    // output-gradient values per tile (TILE * C at most)
#define CONV_G_STRIDE_MAX 2560  // a stage's output-gradient buffer: TILE rows of C + 8

// Tensor cores with TF32 and cp.async need sm_80 (Ampere) or later; the host side runs
// these kernels only there (usable), but the program must still compile for older GPUs,
// whose other kernels (pool, BatchNorm, SGD) it carries: there cp.async becomes a plain
// copy and the tensor-core paths trap.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define CONV_SM80 1
#else
#define CONV_SM80 0
#endif

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
#if CONV_SM80
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
#else
    *reinterpret_cast<int4 *>(smem) = *reinterpret_cast<const int4 *>(gmem);
#endif
}
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem) {
#if CONV_SM80
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
#else
    *reinterpret_cast<float *>(smem) = *reinterpret_cast<const float *>(gmem);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if CONV_SM80
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if CONV_SM80
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// float32 -> TF32 (round to nearest, ties away), as a tensor-core operand.
__device__ __forceinline__ unsigned tf32(float v) {
#if CONV_SM80
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
    return r;
#else
    __trap();
    return 0u;
#endif
}

// d += a (16 x 8, row) * b (8 x 8, col) on the tensor cores, TF32 in, float32 sums. Lane
// l holds a at rows l / 4 (+ 8), columns l % 4 (+ 4); b at row l % 4 (+ 4), column l / 4;
// d at row l / 4 (+ 8), columns 2 (l % 4) (+ 1).
__device__ __forceinline__ void mma_tf32(float d[4], const unsigned a[4], const unsigned b[2]) {
#if CONV_SM80
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}

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
)CUDA";
}

}  // namespace esper::rtc

namespace {

constexpr int kThreads = 256;  // CONV_THREADS
constexpr int64_t kMaxOut = 64;  // CONV_MAX_OUT
constexpr int kFwdTile = 64;     // CONV_FWD_TILE
constexpr int kTile = 64;        // CONV_TILE
constexpr int kTileG = 2048;      // CONV_TILE_G

using esper::rtc::dtype_index;

// The dtype the convolution computes in: bfloat16 under CUDA autocast to bfloat16 (what
// libtorch's conv2d would do), else the input's.
at::ScalarType out_dtype(const at::Tensor &x) {
    if (at::autocast::is_autocast_enabled(at::kCUDA)) return at::autocast::get_autocast_dtype(at::kCUDA);
    return x.scalar_type();
}

// 3-channel channels-last float32 / bfloat16 input on the current device, an Ampere or
// later GPU (TF32 tensor cores, cp.async), a dense float32 [C, 3, 3, 3] weight beside it
// with C 16, 32 or 64, an output of float32 or bfloat16, sizes int-sized.
bool usable(const at::Tensor &x, const at::Tensor &w) {
    if (!x.is_cuda() || x.dim() != 4 || x.size(1) != 3 || x.numel() == 0) return false;
    if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16) return false;
    if (x.get_device() != c10::cuda::current_device() || !x.is_contiguous(at::MemoryFormat::ChannelsLast)) return false;
    if (at::cuda::getCurrentDeviceProperties()->major < 8) return false;
    const at::ScalarType out = out_dtype(x);
    if (out != at::kFloat && out != at::kBFloat16) return false;
    if (w.device() != x.device() || w.scalar_type() != at::kFloat || w.dim() != 4 || !w.is_non_overlapping_and_dense())
        return false;
    const int64_t C = w.size(0);
    if (w.size(1) != 3 || w.size(2) != 3 || w.size(3) != 3 || C < 16 || C > kMaxOut || (C & (C - 1)) != 0) return false;
    return x.numel() / 3 * C <= std::numeric_limits<int>::max();
}

int blocks_for(int64_t items, int per_block, int cap) {
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((items + per_block - 1) / per_block, cap)));
}

struct FirstConv : torch::autograd::Function<FirstConv> {
    static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x, const at::Tensor &w) {
        const auto &k = esper::rtc::conv_kernels();
        const at::ScalarType out = out_dtype(x);
        int P = static_cast<int>(x.size(0) * x.size(2) * x.size(3)), H = static_cast<int>(x.size(2)),
            W = static_cast<int>(x.size(3)), C = static_cast<int>(w.size(0));
        at::Tensor y = at::empty({x.size(0), C, H, W},
                                 x.options().dtype(out).memory_format(at::MemoryFormat::ChannelsLast));
        int s0 = static_cast<int>(w.stride(0)), s1 = static_cast<int>(w.stride(1)), s2 = static_cast<int>(w.stride(2)),
            s3 = static_cast<int>(w.stride(3));
        const void *xp = x.data_ptr(), *wp = w.data_ptr();
        void *yp = y.data_ptr();
        void *args[] = {&xp, &wp, &s0, &s1, &s2, &s3, &yp, &P, &H, &W, &C};
        const int blocks = blocks_for(P, kFwdTile, 6 * esper::rtc::multiprocessors());
        esper::rtc::launch(k.forward[dtype_index(x)][out == at::kBFloat16], dim3(static_cast<unsigned>(blocks)),
                           dim3(kThreads), args);
        ctx->save_for_backward({x, w});
        return y;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                   torch::autograd::variable_list grads) {
        const auto &k = esper::rtc::conv_kernels();
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &x = saved[0], &w = saved[1];
        at::Tensor g = grads[0];
        if (g.scalar_type() != at::kFloat && g.scalar_type() != at::kBFloat16) g = g.to(at::kFloat);
        g = g.contiguous(at::MemoryFormat::ChannelsLast);
        if (reinterpret_cast<uintptr_t>(g.data_ptr()) % 16 != 0) {
            g = g.clone(at::MemoryFormat::ChannelsLast);  // a view at an offset: copied 16 bytes at a time
        }
        int P = static_cast<int>(x.size(0) * x.size(2) * x.size(3)), H = static_cast<int>(x.size(2)),
            W = static_cast<int>(x.size(3)), C = static_cast<int>(w.size(0));
        const int tile = std::min<int>(kTile, kTileG / C);  // as the kernel's TP
        const int mt = C / 16;  // the kernel for 16, 32 or 64 channels, and its blocks per multiprocessor
        int blocks = blocks_for(P, tile, (mt == 4 ? 2 : 4) * esper::rtc::multiprocessors());
        at::Tensor partial = at::empty({blocks, 27 * C}, w.options());
        at::Tensor dw = at::empty_strided(w.sizes(), w.strides(), w.options());
        {
            const void *gp = g.data_ptr(), *xp = x.data_ptr();
            void *pp = partial.data_ptr();
            void *args[] = {&gp, &xp, &pp, &P, &H, &W};
            esper::rtc::launch(k.wgrad[dtype_index(x)][dtype_index(g)][mt == 4 ? 2 : mt - 1],
                               dim3(static_cast<unsigned>(blocks)), dim3(kThreads), args);
        }
        {
            int s0 = static_cast<int>(w.stride(0)), s1 = static_cast<int>(w.stride(1)),
                s2 = static_cast<int>(w.stride(2)), s3 = static_cast<int>(w.stride(3));
            const void *pp = partial.data_ptr();
            void *dp = dw.data_ptr();
            void *args[] = {&pp, &blocks, &C, &dp, &s0, &s1, &s2, &s3};
            esper::rtc::launch_per_item(k.wgrad_sum, 27 * C * 32, args);  // a warp per element
        }
        at::Tensor gx;
        if (ctx->needs_input_grad(0)) {
            const at::ScalarType t = x.scalar_type();
            gx = std::get<0>(at::convolution_backward(g.to(t), x, w.to(t), c10::nullopt, {1, 1}, {1, 1}, {1, 1},
                                                      false, {0, 0}, 1, {true, false, false}));
        }
        return {gx, dw};
    }
};

}  // namespace

extern "C" {

// conv2d(x, w, padding 1) for a 3-channel channels-last input (see usable), with
// autograd, into `*out` (a new tensor the caller owns); bfloat16 under CUDA autocast to
// bfloat16. Where x or w do not suit the kernels, `*out` is left null: the caller runs
// libtorch's convolution. 0, or 1 with the message in `err`.
int esper_first_conv(const at::Tensor *x, const at::Tensor *w, at::Tensor **out, char *err, size_t len) {
    return esper::rtc::new_tensor_if(
        out, err, len, [&] { return usable(*x, *w); }, [&] { return FirstConv::apply(*x, *w); });
}

}  // extern "C"
