// The host's first convolution (3 input channels, 3x3, stride 1, padding 1, no bias) of a
// channels-last CUDA tensor, as kernels compiled at run time (cuda/conv.cu, in rtc.cpp's
// program).
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
#include "esper_shim.h"

#include "error.h"
#include "rtc.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <limits>

namespace {

constexpr int kThreads = 256;  // cuda/conv.cu's CONV_THREADS
constexpr int64_t kMaxOut = 64;  // cuda/conv.cu's CONV_MAX_OUT
constexpr int kFwdTile = 64;     // cuda/conv.cu's CONV_FWD_TILE
constexpr int kTile = 64;        // cuda/conv.cu's CONV_TILE
constexpr int kTileG = 2048;      // cuda/conv.cu's CONV_TILE_G

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
