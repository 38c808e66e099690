// A 3x3 convolution (stride 1, padding 1, no bias) from 32 to 64 channels of a
// channels-last CUDA tensor, bfloat16 under bfloat16 autocast or float32 with TF32
// allowed, whose weight gradient is the runtime's own kernel (cuda/wgrad.cu, in rtc.cpp's
// program); the forward and the input gradient stay cuDNN's.
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
#include "esper_shim.h"

#include "error.h"
#include "rtc.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/autograd/custom_function.h>

#include <tuple>
#include <limits>

namespace {

constexpr int kThreads = 256;          // cuda/wgrad.cu's WG_THREADS
constexpr int64_t kSmem = 36864;         // cuda/wgrad.cu's WG_SMEM
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
