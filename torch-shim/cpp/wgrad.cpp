// A 3x3 convolution (stride 1, padding 1, no bias) from 32 to 64 channels of a
// channels-last CUDA tensor, bfloat16 under bfloat16 autocast or float32 with TF32
// allowed, whose weight gradient is the runtime's own kernel (rtc.cpp compiles this
// file's source with its own, after conv.cpp's, whose helpers it uses); the forward and
// the input gradient stay cuDNN's.
//
// Why: for the host's second convolution (32 -> 64 channels at 16 x 16) cuDNN's weight
// gradient runs implicit-GEMM kernels on few thread blocks, far from what the arithmetic
// and the operands' size allow; these kernels keep every multiprocessor busy. The float32
// one is bound by its scalar shared-memory loads and conversions. Measurements:
// docs/src/performance.md.
//
// The kernel: dW[o][c][kh][kw] = sum over pixels p of g[p][o] * x[p + (kh - 1, kw - 1)][c],
// a product G^T (Cout x pixels) X9 (pixels x 9 Cin) on the tensor cores, float32 sums. A
// band is TR rows of one image: the output gradient's rows and the input's TR + 2 rows
// around them (zeros outside the image) are copied into shared memory by cp.async, the
// input with a zero column on either side, so every tap of every pixel is a row of that
// buffer and the operands are read straight from it, no im2col: in bfloat16 by ldmatrix
// (transposed) for mma.sync m16n8k16, in float32 by conflict-free scalar loads rounded to
// TF32 for m16n8k8. The 8 warps split the output (2 x 4), so each block holds its sums in
// registers over its bands and writes one partial row; a second kernel adds the blocks'
// rows in a fixed order (deterministic) into the gradient, float32 in the weight's own
// strides.
//
// Numerics: libtorch under autocast computes this gradient in bfloat16 against the
// weight's bfloat16 copy and casts it to float32; here the float32 sums are kept (no
// rounding to bfloat16), so the values are libtorch's to its bfloat16 rounding. In
// float32 both are TF32 products with float32 sums, summed in another order.
// No exception crosses the C boundary.
#include "error.h"
#include "rtc.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/autograd/custom_function.h>

#include <tuple>
#include <limits>

namespace esper::rtc {

const char *wgrad_source() {
    return R"CUDA(
#define WG_THREADS 256
#define WG_SMEM 36864   // bytes of shared memory: a band's output gradient, then its input rows

// 4 (x4) or 2 (x2) 8 x 8 bfloat16 matrices from shared memory, transposed: lane l gives
// the address of row l % 8 of matrix l / 8 and receives, of each matrix, the elements
// (rows 2 (l % 4), 2 (l % 4) + 1; column l / 4) packed in one register.
__device__ __forceinline__ void ldsm_x4_t(unsigned r[4], const unsigned short *p) {
#if CONV_SM80
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#else
    __trap();
#endif
}
__device__ __forceinline__ void ldsm_x2_t(unsigned r[2], const unsigned short *p) {
#if CONV_SM80
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
#else
    __trap();
#endif
}

// d += a (16 x 16, row) * b (16 x 8, col), bfloat16 operands, float32 sums. Lane l holds
// a at rows l / 4 (+ 8), columns 2 (l % 4) (+ 1) (+ 8); b at rows 2 (l % 4) (+ 1) (+ 8),
// column l / 4; d at rows l / 4 (+ 8), columns 2 (l % 4) (+ 1).
__device__ __forceinline__ void mma_bf16(float d[4], const unsigned a[4], unsigned b0, unsigned b1) {
#if CONV_SM80
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap();
#endif
}

// The warp's products over one band: gs holds the band's TP pixels' output gradient
// (rows GS apart), xs its input rows (W + 2 pixels each, XS apart, zero border). Pixel k
// of the band at tap (kh, kw) is xs's pixel (k / W + kh) (W + 2) + k % W + kw.
//
// bfloat16: 16 pixels a step (m16n8k16), operands gathered by ldmatrix (transposed): for
// a, lane l addresses pixel a_k = l % 8 + 8 (l / 16) at output channel a_m + 8 (l / 8 % 2);
// for b, pixel b_k = l % 8 + 8 (l / 8 % 2) at each column pair's tap and channel b_off.
template <int CIN, int COUT, int MT, int NT>
__device__ __forceinline__ void wgrad_band(const unsigned short *gs, const unsigned short *xs, int TP, int W,
                                           int a_k, int a_m, int b_k, const int *b_off, float (*acc)[NT][4]) {
    constexpr int XS = CIN + 8, GS = COUT + 8;
    const int W2 = W + 2;
    for (int k0 = 0; k0 < TP; k0 += 16) {
        unsigned a[MT][4];
#pragma unroll
        for (int m = 0; m < MT; ++m) ldsm_x4_t(a[m], gs + (k0 + a_k) * GS + a_m + m * 16);
        const int kb = k0 + b_k, hr = kb / W;
        const unsigned short *xb = xs + (hr * W2 + kb - hr * W) * XS;
#pragma unroll
        for (int p = 0; p < NT / 2; ++p) {
            unsigned b[4];
            ldsm_x4_t(b, xb + b_off[p]);
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                mma_bf16(acc[m][2 * p], a[m], b[0], b[1]);
                mma_bf16(acc[m][2 * p + 1], a[m], b[2], b[3]);
            }
        }
        if (NT % 2) {
            unsigned b[2];
            ldsm_x2_t(b, xb + b_off[NT / 2]);
#pragma unroll
            for (int m = 0; m < MT; ++m) mma_bf16(acc[m][NT - 1], a[m], b[0], b[1]);
        }
    }
}

// float32: 8 pixels a step (m16n8k8, TF32 operands rounded to nearest as cuDNN's), each
// operand a scalar load (row strides of 8 mod 32 words: conflict-free): a at pixels
// k0 + l % 4 (+ 4), output channels a_m + l / 4 (+ 8); b at the same pixels, channel
// l / 4 of each column tile (its tap and first channel in n_off).
template <int CIN, int COUT, int MT, int NT>
__device__ __forceinline__ void wgrad_band(const float *gs, const float *xs, int TP, int W, int a_m,
                                           const int *n_off, float (*acc)[NT][4]) {
    constexpr int XS = CIN + 8, GS = COUT + 8;
    const int lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4, W2 = W + 2;
    for (int k0 = 0; k0 < TP; k0 += 8) {
        const int k = k0 + tig, h1 = k / W, h2 = (k + 4) / W;
        const float *x1 = xs + (h1 * W2 + k - h1 * W) * XS + gid, *x2 = xs + (h2 * W2 + k + 4 - h2 * W) * XS + gid;
        unsigned a[MT][4];
#pragma unroll
        for (int m = 0; m < MT; ++m) {
            const float *r = gs + k * GS + a_m + m * 16 + gid;
            a[m][0] = tf32(r[0]);
            a[m][1] = tf32(r[8]);
            a[m][2] = tf32(r[4 * GS]);
            a[m][3] = tf32(r[4 * GS + 8]);
        }
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            const unsigned b[2] = {tf32(x1[n_off[n]]), tf32(x2[n_off[n]])};
#pragma unroll
            for (int m = 0; m < MT; ++m) mma_tf32(acc[m][n], a[m], b);
        }
    }
}

// Per block, the sums over its bands of g[p][o] * x[p + tap][c] into partial[block][o][tap
// * CIN + c]. g and x are N x H x W x COUT and N x H x W x CIN (channels-last, bfloat16 or
// float32); a band is TR rows of an image (TR * W pixels, a multiple of 16; the host
// checks that it fits WG_SMEM). Warp (wm, wn) owns output rows wm * COUT / 2 .. and
// columns wn * 9 CIN / 4 ..; its sums stay in registers until the end.
template <typename T, int CIN, int COUT>
__device__ void wgrad3x3(const T *__restrict__ g, const T *__restrict__ x, float *__restrict__ partial, int N, int H,
                         int W, int TR) {
    constexpr int XS = CIN + 8, GS = COUT + 8, NCOL = 9 * CIN, V = 16 / sizeof(T);
    constexpr int MT = COUT / 32, NT = NCOL / 32;  // the warp's 16-row and 8-column tiles
    __shared__ __align__(16) unsigned char smem[WG_SMEM];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, wm = warp % 2, wn = warp / 2;
    const int W2 = W + 2, TP = TR * W, bands = H / TR, tiles = N * bands;
    T *gs = reinterpret_cast<T *>(smem), *xs = gs + TP * GS;
    // Zeros once: the columns either side of the image are never written after this.
    for (int e = threadIdx.x; e < (TR + 2) * W2 * XS / V; e += blockDim.x)
        reinterpret_cast<int4 *>(xs)[e] = make_int4(0, 0, 0, 0);
    const int li = lane / 8, lr = lane % 8, a_m = wm * (COUT / 2);
    // Each column tile's (bfloat16: each column pair's, per lane) tap and channel, as an
    // offset into xs.
    int off[NT];
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        int t = n;
        if (sizeof(T) == 2) {
            t = 2 * (n / 2) + li / 2 < NT ? 2 * (n / 2) + li / 2 : 2 * (n / 2);  // x2 lanes 16-31: unused
        }
        const int col = (wn * NT + t) * 8, tap = col / CIN;
        off[n] = ((tap / 3) * W2 + tap % 3) * XS + col % CIN;
    }
    float acc[MT][NT][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[m][n][j] = 0.f;
    __syncthreads();
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        const int n = t / bands, h0 = (t - n * bands) * TR;
        const T *gt = g + (long long)(n * H + h0) * W * COUT;
        for (int i = threadIdx.x; i < TP * (COUT / V); i += blockDim.x)
            cp_async16(gs + (i / (COUT / V)) * GS + (i % (COUT / V)) * V, gt + (long long)i * V);
        for (int i = threadIdx.x; i < (TR + 2) * W * (CIN / V); i += blockDim.x) {
            const int part = i % (CIN / V), q = i / (CIN / V), w = q % W, r = q / W, hh = h0 - 1 + r;
            T *dst = xs + (r * W2 + w + 1) * XS + part * V;
            if (hh >= 0 && hh < H)
                cp_async16(dst, x + ((long long)(n * H + hh) * W + w) * CIN + part * V);
            else
                *reinterpret_cast<int4 *>(dst) = make_int4(0, 0, 0, 0);
        }
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        if constexpr (sizeof(T) == 2) {
            int b_off[(NT + 1) / 2];
#pragma unroll
            for (int p = 0; p < (NT + 1) / 2; ++p) b_off[p] = off[2 * p];
            wgrad_band<CIN, COUT, MT, NT>(gs, xs, TP, W, lr + (li / 2) * 8, a_m + (li % 2) * 8, lr + (li % 2) * 8,
                                          b_off, acc);
        } else {
            wgrad_band<CIN, COUT, MT, NT>(gs, xs, TP, W, a_m, off, acc);
        }
        __syncthreads();
    }
    const int gid = lane / 4, tig = lane % 4;
    float *out = partial + (long long)blockIdx.x * COUT * NCOL;
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            const int row = a_m + m * 16 + gid, col = (wn * NT + n) * 8 + 2 * tig;
            *reinterpret_cast<float2 *>(&out[row * NCOL + col]) = make_float2(acc[m][n][0], acc[m][n][1]);
            *reinterpret_cast<float2 *>(&out[(row + 8) * NCOL + col]) = make_float2(acc[m][n][2], acc[m][n][3]);
        }
}

extern "C" __global__ void __launch_bounds__(WG_THREADS, 2)
    wgrad3x3_bf16_c32_64(const unsigned short *g, const unsigned short *x, float *partial, int N, int H, int W,
                         int TR) {
    wgrad3x3<unsigned short, 32, 64>(g, x, partial, N, H, W, TR);
}
extern "C" __global__ void __launch_bounds__(WG_THREADS, 2)
    wgrad3x3_f32_c32_64(const float *g, const float *x, float *partial, int N, int H, int W, int TR) {
    wgrad3x3<float, 32, 64>(g, x, partial, N, H, W, TR);
}

// dw (COUT x CIN x 3 x 3 in its strides) = the blocks' partial rows (E = COUT 9 CIN each)
// added up: a block takes 32 consecutive elements, its warp k the rows k, k + 8, ... in
// order, then the 8 warps' sums in order.
extern "C" __global__ void __launch_bounds__(256)
    wgrad3x3_sum(const float *__restrict__ partial, int blocks, int E, int CIN, float *dw, int s0, int s1, int s2,
                 int s3) {
    __shared__ float part[8][32];
    const int lane = threadIdx.x % 32, k = threadIdx.x / 32, e = blockIdx.x * 32 + lane;
    float s = 0.f;
    if (e < E)
        for (int b = k; b < blocks; b += 8) s += partial[(long long)b * E + e];
    part[k][lane] = s;
    __syncthreads();
    if (k == 0 && e < E) {
        for (int j = 1; j < 8; ++j) s += part[j][lane];
        const int o = e / (9 * CIN), r = e % (9 * CIN), tap = r / CIN, c = r % CIN;
        dw[o * s0 + c * s1 + (tap / 3) * s2 + (tap % 3) * s3] = s;
    }
}
)CUDA";
}

}  // namespace esper::rtc

namespace {

constexpr int kThreads = 256;          // WG_THREADS
constexpr int64_t kSmem = 36864;         // WG_SMEM
constexpr int64_t kIn = 32, kOut = 64;  // the one instantiation

// Rows per band for an H x W image of `elem`-byte elements: the most that divide H, keep
// TR * W a multiple of 16 and fit the band's output gradient and input rows into shared
// memory; 0 where none does.
int band_rows(int64_t H, int64_t W, int64_t elem) {
    for (int64_t tr = H; tr >= 1; --tr) {
        const int64_t bytes = (tr * W * (kOut + 8) + (tr + 2) * (W + 2) * (kIn + 8)) * elem;
        if (H % tr == 0 && (tr * W) % 16 == 0 && bytes <= kSmem) return static_cast<int>(tr);
    }
    return 0;
}

bool aligned16(const at::Tensor &t) {
    return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

// The dtype the kernel computes in, or Undefined where it does not apply: bfloat16 for a
// bfloat16 input under CUDA autocast to bfloat16 (what autocast's conv2d would run),
// float32 for a float32 input without autocast where cuDNN may use TF32 (the default,
// `torch.backends.cudnn.allow_tf32`: with it off cuDNN multiplies in full float32, and so
// keeps the convolution).
at::ScalarType compute_dtype(const at::Tensor &x) {
    if (at::autocast::is_autocast_enabled(at::kCUDA)) {
        const bool bf16 = at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16;
        return bf16 && x.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::ScalarType::Undefined;
    }
    return x.scalar_type() == at::kFloat && at::globalContext().allowTF32CuDNN() ? at::kFloat
                                                                                 : at::ScalarType::Undefined;
}

// A bfloat16 or float32 channels-last input with 32 channels on the current device
// (Ampere or later: tensor cores, cp.async, ldmatrix), 16-byte aligned, images that tile
// (band_rows), a float32 [64, 32, 3, 3] weight beside it, sizes int-sized; the dtype as
// compute_dtype.
bool usable(const at::Tensor &x, const at::Tensor &w) {
    if (!x.is_cuda() || x.dim() != 4 || x.size(1) != kIn || x.numel() == 0) return false;
    if (compute_dtype(x) == at::ScalarType::Undefined) return false;
    if (x.get_device() != c10::cuda::current_device() || !x.is_contiguous(at::MemoryFormat::ChannelsLast) ||
        !aligned16(x))
        return false;
    if (at::cuda::getCurrentDeviceProperties()->major < 8) return false;
    if (w.device() != x.device() || w.scalar_type() != at::kFloat || w.dim() != 4 || w.size(0) != kOut ||
        w.size(1) != kIn || w.size(2) != 3 || w.size(3) != 3 || !w.is_non_overlapping_and_dense())
        return false;
    if (band_rows(x.size(2), x.size(3), x.element_size()) == 0) return false;
    return x.numel() / kIn * kOut <= std::numeric_limits<int>::max();
}

struct Conv3x3 : torch::autograd::Function<Conv3x3> {
    static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x, const at::Tensor &w) {
        // What conv2d runs: cuDNN's convolution, under autocast on the weight's bfloat16 copy.
        const at::Tensor wc = w.to(x.scalar_type());
        at::Tensor y = at::convolution(x, wc, c10::nullopt, {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1);
        ctx->save_for_backward({x, w});
        ctx->saved_data["wc"] = wc;
        return y;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &x = saved[0], &w = saved[1];
        const at::Tensor wc = ctx->saved_data["wc"].toTensor();
        at::Tensor g = grads[0].to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
        if (!aligned16(g)) g = g.clone(at::MemoryFormat::ChannelsLast);  // a view at an offset
        at::Tensor gx;
        if (ctx->needs_input_grad(0)) {
            gx = std::get<0>(at::convolution_backward(g, x, wc, c10::nullopt, {1, 1}, {1, 1}, {1, 1}, false, {0, 0},
                                                      1, {true, false, false}));
        }
        at::Tensor dw;
        if (ctx->needs_input_grad(1)) dw = weight_grad(g, x, w);
        return {gx, dw};
    }

    static at::Tensor weight_grad(const at::Tensor &g, const at::Tensor &x, const at::Tensor &w) {
        const auto &k = esper::rtc::wgrad_kernels();
        int N = static_cast<int>(x.size(0)), H = static_cast<int>(x.size(2)), W = static_cast<int>(x.size(3));
        int TR = band_rows(H, W, x.element_size());
        const int64_t tiles = int64_t{N} * (H / TR);
        // Two blocks per multiprocessor, each with as many bands as any other.
        const int64_t slots = 2 * int64_t{esper::rtc::multiprocessors()}, per = (tiles + slots - 1) / slots;
        int blocks = static_cast<int>((tiles + per - 1) / per);
        at::Tensor partial = at::empty({blocks, kOut * 9 * kIn}, w.options());
        at::Tensor dw = at::empty_strided(w.sizes(), w.strides(), w.options());
        {
            const void *gp = g.data_ptr(), *xp = x.data_ptr();
            void *pp = partial.data_ptr();
            void *args[] = {&gp, &xp, &pp, &N, &H, &W, &TR};
            esper::rtc::launch(k.c32_64[esper::rtc::dtype_index(x)], dim3(static_cast<unsigned>(blocks)),
                               dim3(kThreads), args);
        }
        {
            int E = static_cast<int>(kOut * 9 * kIn), C = static_cast<int>(kIn);
            int s0 = static_cast<int>(w.stride(0)), s1 = static_cast<int>(w.stride(1)),
                s2 = static_cast<int>(w.stride(2)), s3 = static_cast<int>(w.stride(3));
            const void *pp = partial.data_ptr();
            void *dp = dw.data_ptr();
            void *args[] = {&pp, &blocks, &E, &C, &dp, &s0, &s1, &s2, &s3};
            esper::rtc::launch(k.sum, dim3(static_cast<unsigned>((E + 31) / 32)), dim3(kThreads), args);
        }
        return dw;
    }
};

}  // namespace

extern "C" {

// conv2d(x, w, padding 1) of a 32-channel input to 64 channels (see usable), with
// autograd, into `*out` (a new tensor the caller owns): cuDNN's forward and input
// gradient, the runtime's weight gradient. Where x or w do not suit the kernel, `*out` is
// left null: the caller runs libtorch's convolution. 0, or 1 with the message in `err`.
int esper_conv3x3(const at::Tensor *x, const at::Tensor *w, at::Tensor **out, char *err, size_t len) {
    return esper::rtc::new_tensor_if(
        out, err, len, [&] { return usable(*x, *w); }, [&] { return Conv3x3::apply(*x, *w); });
}

}  // extern "C"
