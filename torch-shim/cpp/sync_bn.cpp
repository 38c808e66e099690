// Synchronised BatchNorm (training mode) over a c10d process group: every rank
// normalises with the statistics of the whole global batch, as PyTorch's SyncBatchNorm
// does, on Gloo (CPU tensors) as on NCCL (CUDA tensors).
//
// Forward: each rank's per-channel mean and biased variance and its count (in float64)
// are all-gathered, combined (the parallel variance: the ranks' variances plus the spread
// of their means), x is normalised with them and the running statistics are updated
// with the unbiased global variance, so they stay the same on every rank. Backward: the
// per-channel sums of dy and dy * x-hat are all-reduced, and the input gradient is
// BatchNorm's with those global sums. The weight and bias gradients are this rank's own,
// as PyTorch's: the trainer's gradient averaging turns them into the global batch's.
//
// Every rank must run the same forwards and backwards through it, in the same order: the
// collectives are matched by order. The group's backend is kept alive by the autograd
// graph (a capsule in the saved data), so a backward after the caller dropped its
// handle still finds it. Each forward adds the exchange its backward owes to the group's
// list, and the backward takes it back: after a backward that failed on this rank alone,
// `esper_sync_batch_norm_release` makes the exchanges still owed, with zeros, so that the
// other ranks' backwards complete (their step is then discarded by the ranks' agreement);
// `esper_sync_batch_norm_forget` clears the list where no backward follows on any rank. Statistics are float32 whatever x's dtype (bfloat16 under
// autocast); the output has x's dtype. No exception crosses the C boundary.
#include "dist.h"
#include "esper_shim.h"

#include "error.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <utility>
#include <vector>

namespace {

// The dimensions a channel's statistics run over: all but dimension 1.
std::vector<int64_t> reduced_dims(const at::Tensor &x) {
    std::vector<int64_t> dims{0};
    for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
    return dims;
}

// Shape [1, C, 1, ...] of x's rank: a per-channel vector broadcast over x.
std::vector<int64_t> channel_shape(const at::Tensor &x) {
    std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
    shape[1] = x.size(1);
    return shape;
}

c10::intrusive_ptr<esper::dist::Owed> owed_of(torch::autograd::AutogradContext *ctx) {
    return c10::static_intrusive_pointer_cast<esper::dist::Owed>(ctx->saved_data["owed"].toCapsule());
}

struct SyncBatchNorm : torch::autograd::Function<SyncBatchNorm> {
    static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x, const at::Tensor &weight,
                              const at::Tensor &bias, const EsperGroup *g, const at::Tensor &running_mean,
                              const at::Tensor &running_var, double momentum, double eps) {
        const int64_t C = x.size(1);
        // float32 statistics whatever x's dtype (libtorch's would be bfloat16's).
        const at::Tensor xf = x.to(at::kFloat);
        // This rank's mean and biased variance, in two passes: exact to float32's rounding
        // (libtorch's BatchNorm statistics kernel, batch_norm_update_stats, accumulates
        // errors of 1e-5 of the variance on the CPU; at::var_mean's Welford reduction over
        // the channels-last dimensions is 8 times slower than these two passes).
        const auto dims = reduced_dims(x);
        const at::Tensor mean = xf.mean(dims);
        at::Tensor centred = xf - mean.view(channel_shape(x));
        const at::Tensor var = centred.mul_(centred).mean(dims);
        const double count = static_cast<double>(x.numel() / C);
        // [mean (C), var (C), count] of this rank, then of every rank: [size, 2C + 1].
        at::Tensor local = at::cat({mean.to(at::kDouble), var.to(at::kDouble),
                                    at::full({1}, count, mean.options().dtype(at::kDouble))});
        std::vector<at::Tensor> input{local};
        std::vector<std::vector<at::Tensor>> gathered(1);
        for (int r = 0; r < g->size; ++r) gathered[0].push_back(at::empty_like(local));
        esper::dist::start(!g->device, [&] { return g->backend->allgather(gathered, input); })->wait();
        const at::Tensor all = at::stack(gathered[0]);
        const at::Tensor means = all.narrow(1, 0, C), vars = all.narrow(1, C, C), counts = all.narrow(1, 2 * C, 1);
        const at::Tensor total = counts.sum();  // a tensor: no wait for the device here
        const at::Tensor global_mean = (means * counts).sum(0) / total;
        const at::Tensor global_var = ((vars + (means - global_mean).square()) * counts).sum(0) / total;
        {
            at::NoGradGuard no_grad;
            const at::Tensor unbiased = global_var * (total / (total - 1).clamp_min(1));
            at::Tensor rm = running_mean, rv = running_var;
            rm.mul_(1 - momentum).add_(global_mean.to(rm.scalar_type()), momentum);
            rv.mul_(1 - momentum).add_(unbiased.to(rv.scalar_type()), momentum);
        }
        const at::Tensor m = global_mean.to(at::kFloat), v = global_var.to(at::kFloat);
        const at::Tensor invstd = (global_var + eps).rsqrt().to(at::kFloat);
        // Normalised with the global statistics in one pass: BatchNorm in evaluation mode
        // with them as its statistics.
        const at::Tensor y = at::batch_norm(xf, weight.to(at::kFloat), bias.to(at::kFloat), m, v, /*training=*/false,
                                            0.0, eps, /*cudnn_enabled=*/true);
        ctx->save_for_backward({x, weight, m, invstd, total.to(at::kFloat)});
        ctx->saved_data["owed"] = c10::IValue::make_capsule(g->owed);
        g->owed->add(2 * C, xf.options());
        return y.to(x.scalar_type());
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &x = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3], &total = saved[4];
        const int64_t C = x.size(1);
        const auto shape = channel_shape(x);
        const at::Tensor xf = x.to(at::kFloat), dy = grads[0].to(at::kFloat), w = weight.to(at::kFloat);
        // This rank's sums of dy and dy * x-hat, in BatchNorm's own backward reduction
        // (its weight and bias gradients with the global statistics): this rank's weight
        // and bias gradients, and its share of the global sums.
        const auto reduced = at::native_batch_norm_backward(dy, xf, w, std::nullopt, std::nullopt, mean, invstd,
                                                            /*train=*/true, 0.0, {false, true, true});
        const at::Tensor &sum_dy_xhat = std::get<1>(reduced), &sum_dy = std::get<2>(reduced);
        std::vector<at::Tensor> sums{at::cat({sum_dy, sum_dy_xhat})};
        const auto owed = owed_of(ctx);
        owed->take();
        owed->allreduce_sum(sums);
        const at::Tensor mean_dy = sums[0].narrow(0, 0, C) / total, mean_dy_xhat = sums[0].narrow(0, C, C) / total;
        // dx = (dy - mean_dy - x-hat * mean_dy_xhat) * invstd * w, as
        // dy * a + (x - mean) * b + c with per-channel a, b, c: three passes over x.
        const at::Tensor a = invstd * w, b = -a * invstd * mean_dy_xhat, c = -a * mean_dy;
        at::Tensor dx = at::addcmul(c.view(shape), dy, a.view(shape));
        dx.addcmul_(xf - mean.view(shape), b.view(shape));
        return {dx.to(x.scalar_type()),
                sum_dy_xhat.to(weight.scalar_type()),
                sum_dy.to(weight.scalar_type()),
                at::Tensor(),
                at::Tensor(),
                at::Tensor(),
                at::Tensor(),
                at::Tensor()};
    }
};

}  // namespace

extern "C" {

int esper_sync_batch_norm(EsperGroup *g, const EsperTensor *x, const EsperTensor *weight, const EsperTensor *bias,
                          const EsperTensor *running_mean, const EsperTensor *running_var, double momentum, double eps,
                          EsperTensor **out, char *err, size_t len) {
    try {
        *out = nullptr;
        TORCH_CHECK(x->dim() >= 2, "a BatchNorm input needs a channel dimension, got size ", x->sizes());
        const int64_t C = x->size(1);
        // One value per channel is enough where another rank adds more; none never is.
        TORCH_CHECK(x->numel() > 0 && (x->numel() > C || g->size > 1),
                    "expected more than 1 value per channel when training, got input of size ", x->sizes());
        for (const at::Tensor *t : {weight, bias, running_mean, running_var}) {
            TORCH_CHECK(t->defined() && t->dim() == 1 && t->size(0) == C, "a BatchNorm of ", C,
                        " channels needs weight, bias and running statistics of ", C, " values");
        }
        const at::Device expected = g->device.value_or(at::Device(at::kCPU));
        TORCH_CHECK(x->device() == expected, "the ", g->device ? "NCCL" : "Gloo", " group's tensors live on ",
                    expected, ", not on ", x->device());
        at::Tensor y;
        {
            // The running statistics are updated in place (through the caller's handles, as
            // libtorch's BatchNorm updates its buffers), not recorded by autograd.
            at::Tensor rm = running_mean->detach(), rv = running_var->detach();
            y = SyncBatchNorm::apply(*x, *weight, *bias, g, rm, rv, momentum, eps);
        }
        *out = new at::Tensor(std::move(y));
        return 0;
    } catch (const std::exception &e) {
        return esper::dist::fail(g, "synchronised BatchNorm", e, err, len);
    }
}

int esper_sync_batch_norm_release(EsperGroup *g, size_t *exchanges, char *err, size_t len) {
    *exchanges = 0;
    try {
        while (auto owed = g->owed->take()) {
            std::vector<at::Tensor> zeros{at::zeros({owed->numel}, owed->options)};
            g->owed->allreduce_sum(zeros);
            ++*exchanges;
        }
        return 0;
    } catch (const std::exception &e) {
        return esper::dist::fail(g, "releasing the BatchNorm exchanges", e, err, len);
    }
}

void esper_sync_batch_norm_forget(EsperGroup *g) {
    try {
        g->owed->clear();
    } catch (const std::exception &) {
        // The lock failed (std::system_error): nothing was owed that can be cleared.
    }
}

}  // extern "C"
