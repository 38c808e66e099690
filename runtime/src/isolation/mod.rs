//! The isolation layer: what every seed goes through, whatever plugin it comes from.
//!
//! * The seed never sees the host's autograd graph when isolation is on: its input is
//!   made contiguous **before** it is detached (BUG-005: libtorch 2.11 segfaults in
//!   `group_norm` backward on a detached channels-last tensor), while the host stream
//!   keeps its own memory format.
//! * TRAINING (alpha 0): the straight-through estimator `host + (seed - seed.detach())`,
//!   so the forward equals the host and the seed still gets gradients (one autograd
//!   function: the forward is the host tensor itself, so a seed's NaN stays out of it;
//!   the seed's finiteness flag reports it).
//! * BLENDING and later: ADD, MULTIPLY or GATE blends (see [`blend`]).
//! * The [`GradientHealthMonitor`] compares host and seed gradient norms per device.
//! * Every seed forward is held to the output [`contract`] (shape, dtype, device, input
//!   untouched); a breach, an error, or non-finite values become a [`SeedFault`]
//!   attributed to the seed, which the runtime then prunes.
//! * The [`watchdog`] reports a seed call that runs past `[training] seed_timeout_s`
//!   while it still runs; the seed is pruned when the call returns.

mod blend;
pub mod contract;
mod fault;
mod monitor;
pub mod watchdog;

pub use blend::{Blend, BlendAlgorithm, GateNet};
pub use contract::ContractViolation;
pub use fault::{FaultKind, SeedFault};
pub use monitor::{GradientHealthMonitor, GradientSample};
pub use watchdog::{SeedWatch, WatchPhase, Watchdog, WatchedSeed, FIRST_CALL_FACTOR};

use tch::Tensor;

/// The tensor a seed receives: the host features themselves without isolation; with
/// isolation, a contiguous copy (only if needed) that is then detached.
pub fn seed_input(host: &Tensor, isolate: bool) -> Tensor {
    if !isolate {
        return host.shallow_clone();
    }
    if host.is_contiguous() {
        return host.detach();
    }
    // Contiguity before detach (BUG-005): a fresh NCHW copy with no autograd history (a
    // transpose kernel on CUDA). The host stream is left as it is.
    esper_torch_shim::rtc::nchw_copy(host).unwrap_or_else(|_| host.contiguous().detach())
}

/// Straight-through estimator `host + (seed - seed.detach())`: forward equals `host`,
/// backward reaches the seed. One autograd function (`esper_torch_shim::straight_through`):
/// no kernel forward, the gradient handed to the seed in its own layout.
pub fn straight_through(host: &Tensor, seed: &Tensor) -> Result<Tensor, esper_torch_shim::ShimError> {
    esper_torch_shim::straight_through(host, seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{is_channels_last, to_channels_last};
    use tch::{Device, Kind};

    #[test]
    fn isolated_input_is_contiguous_detached_and_host_keeps_its_format() {
        let h = to_channels_last(&Tensor::randn([2, 4, 3, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true));
        let s = seed_input(&h, true);
        assert!(s.is_contiguous() && !s.requires_grad());
        assert!(is_channels_last(&h), "the host stream keeps channels-last");
        assert!(s.equal(&h));
        let n = seed_input(&h, false);
        assert!(n.requires_grad() && is_channels_last(&n));
    }

    #[test]
    fn straight_through_forward_is_host_and_seed_gets_gradient() {
        let host = Tensor::randn([3, 2], (Kind::Float, Device::Cpu));
        let w = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let seed = &host * &w * 3.0;
        let y = straight_through(&host, &seed).unwrap();
        assert!(y.equal(&host));
        y.sum(Kind::Float).backward();
        assert!(w.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}
