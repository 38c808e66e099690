// Fused optimizer steps over a whole parameter group with libtorch's _foreach_* kernels
// (one kernel launch per op for the group on CUDA instead of one per parameter); SGD on
// float32 CUDA tensors runs optim.cpp's single kernel instead where it is built (the same
// arithmetic).
// Tensors arrive as tch's handles (`at::Tensor*`). No exception crosses: each function
// returns 0, or 1 with the message in `err`.
#include "esper_shim.h"

#include <ATen/ATen.h>
#include <ATen/Functions.h>
#include <c10/core/GradMode.h>

#ifdef ESPER_RTC
#include "rtc.h"
#endif

#include <cmath>

#include <cstdio>
#include <cstring>
#include <exception>
#include <vector>

namespace {

std::vector<at::Tensor> list(at::Tensor *const *ts, size_t n) {
    std::vector<at::Tensor> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) out.push_back(*ts[i]);
    return out;
}

int fail(const char *what, char *err, size_t len) {
    if (err && len) {
        std::snprintf(err, len, "%s", what);
    }
    return 1;
}

}  // namespace

extern "C" {

// Zeroes every tensor of the list in place (a group's gradients).
int esper_foreach_zero(at::Tensor *const *ts, size_t n, char *err, size_t err_len) {
    try {
        c10::AutoGradMode no_grad(false);
        auto t = list(ts, n);
        at::_foreach_zero_(t);
        return 0;
    } catch (const std::exception &e) {
        return fail(e.what(), err, err_len);
    }
}

// Drops the gradient of every tensor of the list (`p.grad = None`): the next backward
// hands each its gradient as it is, no kernel (autograd's AccumulateGrad keeps a fresh
// gradient of the parameter's layout instead of adding it into a zeroed one).
int esper_clear_grads(at::Tensor *const *ts, size_t n, char *err, size_t err_len) {
    try {
        for (size_t i = 0; i < n; ++i) ts[i]->mutable_grad().reset();
        return 0;
    } catch (const std::exception &e) {
        return fail(e.what(), err, err_len);
    }
}

// Gives every tensor of the list whose `had[i]` is set and that has no gradient now a
// zero one (what a zeroed gradient that the backward left alone would be).
int esper_zero_missing_grads(at::Tensor *const *ts, const int *had, size_t n, char *err, size_t err_len) {
    try {
        c10::AutoGradMode no_grad(false);
        for (size_t i = 0; i < n; ++i) {
            if (had[i] && !ts[i]->grad().defined()) ts[i]->mutable_grad() = at::zeros_like(*ts[i]);
        }
        return 0;
    } catch (const std::exception &e) {
        return fail(e.what(), err, err_len);
    }
}

// SGD over a group: g = grad (+ weight_decay * p); with momentum, buf = momentum * buf + g
// (buf = g on the first step, `init_bufs` 1) and the update is buf; p -= lr * update.
// `*kernel` 1: optim.cpp's one kernel where it applies (float32 CUDA tensors on the
// current device, kernels built), libtorch's _foreach_* ops otherwise; 0: those ops.
// On return `*kernel` says whether the kernel ran.
int esper_foreach_sgd(at::Tensor *const *params, at::Tensor *const *grads, at::Tensor *const *bufs, size_t n,
                      double lr, double momentum, double weight_decay, int init_bufs, int *kernel, char *err,
                      size_t err_len) {
    try {
        c10::AutoGradMode no_grad(false);
        auto p = list(params, n);
        auto g = list(grads, n);
        const bool try_kernel = *kernel && !init_bufs;
        *kernel = 0;
#ifdef ESPER_RTC
        if (try_kernel) {
            auto b = momentum != 0.0 ? list(bufs, n) : std::vector<at::Tensor>();
            if (esper::rtc::sgd(p, g, b, lr, momentum, weight_decay)) {
                *kernel = 1;
                return 0;
            }
        }
#else
        (void)try_kernel;
#endif
        if (weight_decay != 0.0) g = at::_foreach_add(g, p, weight_decay);
        if (momentum != 0.0) {
            auto b = list(bufs, n);
            if (init_bufs) {
                at::_foreach_copy_(b, g);
            } else {
                at::_foreach_mul_(b, momentum);
                at::_foreach_add_(b, g);
            }
            at::_foreach_add_(p, b, -lr);
        } else {
            at::_foreach_add_(p, g, -lr);
        }
        return 0;
    } catch (const std::exception &e) {
        return fail(e.what(), err, err_len);
    }
}

// Adam over a group (bias-corrected, eps outside the square root, as torch.optim.Adam):
// g = grad (+ weight_decay * p); m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
// p -= lr * (m / c1) / (sqrt(v / c2) + eps), c1 = 1 - beta1^t, c2 = 1 - beta2^t.
// The step count t is a 0-d double tensor on the parameters' device, incremented here:
// the bias corrections are computed on the device (in double, used in float as a host
// scalar would be), so the step has no host-side value that changes from step to step
// and a CUDA graph of it stays right on every replay.
int esper_foreach_adam(at::Tensor *const *params, at::Tensor *const *grads, at::Tensor *const *ms,
                       at::Tensor *const *vs, size_t n, double lr, double beta1, double beta2, double weight_decay,
                       double eps, at::Tensor *step, char *err, size_t err_len) {
    try {
        c10::AutoGradMode no_grad(false);
        auto p = list(params, n);
        auto g = list(grads, n);
        auto m = list(ms, n);
        auto v = list(vs, n);
        step->add_(1);
        if (weight_decay != 0.0) g = at::_foreach_add(g, p, weight_decay);
        at::_foreach_lerp_(m, g, 1.0 - beta1);
        at::_foreach_mul_(v, beta2);
        at::_foreach_addcmul_(v, g, g, 1.0 - beta2);
        auto c1 = at::pow(beta1, *step).neg_().add_(1);
        auto c2_sqrt = at::pow(beta2, *step).neg_().add_(1).sqrt_().to(at::kFloat);
        auto neg_step_size = c1.reciprocal_().mul_(-lr).to(at::kFloat);
        auto denom = at::_foreach_sqrt(v);
        at::_foreach_div_(denom, c2_sqrt);
        at::_foreach_add_(denom, eps);
        at::_foreach_div_(denom, neg_step_size);
        at::_foreach_addcdiv_(p, m, denom);
        return 0;
    } catch (const std::exception &e) {
        return fail(e.what(), err, err_len);
    }
}

}  // extern "C"
