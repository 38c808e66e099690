//! The host's 2x2 max pool, with the ReLU of the block before it folded in where no
//! slot sits between them.
//!
//! ReLU and max commute (`max(relu(v)) == relu(max(v))`) and the gradient reaches the
//! same element, so `relu -> pool` is computed as `pool -> relu`: exactly the same
//! values and gradients, with the ReLU on a quarter of the elements. On CUDA both run
//! as one fused kernel each way (`esper_torch_shim::rtc`, compiled at run time with
//! NVRTC), replacing libtorch's channels-last max-pool backward, the costliest kernel
//! of a large-batch step. Where those kernels cannot be built, libtorch's ops run, and
//! the reason is logged once.

use std::sync::OnceLock;
use tch::Tensor;

/// Whether the fused CUDA kernels are usable in this process (compiled on the current
/// CUDA device on first ask; the reason is logged once); Err says why not.
pub fn fused_pool_available() -> Result<(), String> {
    fused_state().clone()
}

/// The answer of [`fused_pool_available`], worked out once (the BatchNorm kernels are
/// compiled with the pool's, so it answers for them too).
pub(super) fn fused_state() -> &'static Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY.get_or_init(|| {
        esper_torch_shim::rtc::available().map_err(|e| {
            tracing::warn!(reason = %e, "runtime-compiled CUDA kernels unavailable; using libtorch's ReLU, max pool and BatchNorm");
            e.to_string()
        })
    })
}

/// `max_pool2d(relu ? relu(x) : x, 2)`; `fused` lets CUDA tensors use the fused kernels.
pub(crate) fn max_pool2x2(x: &Tensor, relu: bool, fused: bool) -> Tensor {
    if fused && x.device().is_cuda() && fused_state().is_ok() {
        match esper_torch_shim::rtc::relu_max_pool2x2(x, relu) {
            Ok(z) => return z,
            Err(e) => tracing::warn!(error = %e, "fused max pool failed; using libtorch's"),
        }
    }
    let pooled = x.max_pool2d_default(2);
    if relu {
        pooled.relu()
    } else {
        pooled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Values and input gradients of `f` on `x`.
    fn run(x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
        let leaf = x.detach().set_requires_grad(true);
        let y = f(&leaf);
        // Distinct upstream gradients, so a gradient routed to the wrong element shows.
        let g = (Tensor::arange(y.numel() as i64, (Kind::Float, y.device())) + 1.0).reshape(y.size()).to_kind(y.kind());
        (&y * &g).sum(y.kind()).backward();
        (y.detach(), leaf.grad())
    }

    #[test]
    fn pool_then_relu_is_relu_then_pool_exactly() {
        tch::manual_seed(3);
        // Ties (rounded values), negatives and all-negative windows.
        let x = (Tensor::randn([2, 4, 6, 8], (Kind::Float, Device::Cpu)) * 2.0).round();
        for relu in [true, false] {
            let (y0, g0) = run(&x, |t| {
                let t = if relu { t.relu() } else { t.shallow_clone() };
                t.max_pool2d_default(2)
            });
            let (y1, g1) = run(&x, |t| max_pool2x2(t, relu, true));
            assert!(y0.equal(&y1), "values, relu={relu}");
            assert!(g0.equal(&g1), "gradients, relu={relu}");
        }
    }
}
