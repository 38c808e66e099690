//! Blend operators for BLENDING and later stages (esper-lite's contracts):
//!
//! * ADD: `lerp(host, seed, alpha)`.
//! * MULTIPLY: `host * (1 + alpha * tanh(seed - seed_input))`, a bounded valve that is
//!   the identity at alpha 0 or when the seed is the identity.
//! * GATE: `lerp(host, seed, clamp(alpha * gate(x), 0, 1))` with a learned per-sample
//!   gate: mean-pool over H, W, Linear(C, C/4), ReLU, Linear(., 1), sigmoid.
//!
//! Alpha is a host-side scalar: no tensor is allocated for it and nothing syncs.

use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlendAlgorithm {
    #[default]
    Add,
    Multiply,
    Gate,
}

/// The learned per-sample gate of the GATE blend.
#[derive(Debug)]
pub struct GateNet {
    hidden: nn::Linear,
    out: nn::Linear,
}

impl GateNet {
    pub fn new(path: &nn::Path, channels: i64) -> Self {
        let hidden = (channels / 4).max(1);
        Self {
            hidden: nn::linear(path / "gate_hidden", channels, hidden, Default::default()),
            out: nn::linear(path / "gate_out", hidden, 1, Default::default()),
        }
    }

    /// Per-sample gate in [0, 1], shaped (B, 1, 1, 1).
    pub fn gate(&self, x: &Tensor) -> Tensor {
        let pooled = x.mean_dim([2i64, 3].as_slice(), false, x.kind());
        self.out.forward(&self.hidden.forward(&pooled).relu()).sigmoid().view([-1, 1, 1, 1])
    }
}

impl BlendAlgorithm {
    /// Blends `seed` into `host` with amplitude `alpha` in [0, 1]. `seed_input` is what
    /// the seed received (the MULTIPLY reference); `gate` is required for GATE.
    pub fn blend(
        self,
        host: &Tensor,
        seed: &Tensor,
        seed_input: &Tensor,
        alpha: f64,
        gate: Option<&GateNet>,
    ) -> Tensor {
        let alpha = alpha.clamp(0.0, 1.0);
        match self {
            BlendAlgorithm::Add => host.lerp(seed, alpha),
            BlendAlgorithm::Multiply => host * ((seed - seed_input).tanh() * alpha + 1.0),
            BlendAlgorithm::Gate => {
                let gate = gate.expect("GATE blend needs its gate network (created with the slot)");
                let effective = (gate.gate(seed_input) * alpha).clamp(0.0, 1.0);
                host.lerp_tensor(seed, &effective)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn t(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn every_blend_is_the_identity_at_alpha_zero() {
        let vs = nn::VarStore::new(Device::Cpu);
        let gate = GateNet::new(&vs.root(), 8);
        let (h, s) = (t(&[2, 8, 3, 3]), t(&[2, 8, 3, 3]));
        for algo in [BlendAlgorithm::Add, BlendAlgorithm::Multiply, BlendAlgorithm::Gate] {
            let y = algo.blend(&h, &s, &h, 0.0, Some(&gate));
            assert!((y - &h).abs().max().double_value(&[]) < 1e-7, "{algo:?}");
        }
    }

    #[test]
    fn add_at_one_is_the_seed_and_multiply_is_bounded() {
        let (h, s) = (t(&[2, 4, 2, 2]), t(&[2, 4, 2, 2]));
        let y = BlendAlgorithm::Add.blend(&h, &s, &h, 1.0, None);
        assert!((y - &s).abs().max().double_value(&[]) < 1e-6);
        let y = BlendAlgorithm::Multiply.blend(&h, &(&h + 100.0), &h, 0.5, None);
        // tanh(100) ~ 1: y = 1.5 h
        assert!((y - &h * 1.5).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn gate_is_per_sample_and_convex() {
        let vs = nn::VarStore::new(Device::Cpu);
        let gate = GateNet::new(&vs.root(), 4);
        let (h, s) = (t(&[3, 4, 2, 2]), t(&[3, 4, 2, 2]));
        let g = gate.gate(&h);
        assert_eq!(g.size(), vec![3, 1, 1, 1]);
        let y = BlendAlgorithm::Gate.blend(&h, &s, &h, 1.0, Some(&gate));
        let expected = &h + (&s - &h) * &g;
        assert!((y - expected).abs().max().double_value(&[]) < 1e-6);
    }
}
