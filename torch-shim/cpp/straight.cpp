// The isolation layer's straight-through estimator as one autograd function: forward is
// the host tensor itself (no kernel: `host + (seed - seed.detach())` costs two full-size
// passes, the second one mixing the host's channels-last layout with the seed's NCHW),
// backward hands the incoming gradient to the host unchanged and to the seed in the
// seed's own dtype and memory format (one conversion here instead of one inside each op
// of the seed's backward). No exception crosses the C boundary.
#include "esper_shim.h"

#include "error.h"

#include <torch/csrc/autograd/custom_function.h>

#ifdef ESPER_RTC
#include "rtc.h"
#endif


namespace {

struct StraightThrough : torch::autograd::Function<StraightThrough> {
    static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &host, const at::Tensor &seed) {
        ctx->saved_data["dtype"] = static_cast<int64_t>(seed.scalar_type());
        ctx->saved_data["format"] = static_cast<int64_t>(seed.suggest_memory_format());
        return host;  // returned as a view of itself, with this function as its history
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                   torch::autograd::variable_list grads) {
        const at::Tensor &g = grads[0];
        at::Tensor to_seed;
        if (ctx->needs_input_grad(1)) {
            const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
            const auto format = static_cast<at::MemoryFormat>(ctx->saved_data["format"].toInt());
#ifdef ESPER_RTC
            if (format == at::MemoryFormat::Contiguous) {
                to_seed = esper::rtc::nchw_contiguous(g, dtype);  // layout and dtype in one pass
            } else {
                to_seed = g.to(dtype).contiguous(format);
            }
#else
            to_seed = g.to(dtype).contiguous(format);
#endif
        }
        return {g, to_seed};
    }
};

}  // namespace

extern "C" {

// `host + (seed - seed.detach())` in value and gradients, into `*out` (a new tensor the
// caller owns): 0, or 1 with the message in `err`.
int esper_straight_through(const at::Tensor *host, const at::Tensor *seed, at::Tensor **out, char *err, size_t len) {
    try {
        TORCH_CHECK(host->sizes() == seed->sizes(), "straight-through: host ", host->sizes(), " vs seed ",
                    seed->sizes());
        *out = new at::Tensor(StraightThrough::apply(*host, *seed));
        return 0;
    } catch (const std::exception &e) {
        return esper::fail(e, err, len);
    }
}

}  // extern "C"
