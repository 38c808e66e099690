//! Blend operators for BLENDING and later stages (esper-lite's contracts):
//!
//! * ADD: `lerp(host, seed, alpha)`.
//! * MULTIPLY: `host * (1 + alpha * tanh(seed - seed_input))`, a bounded valve that is
//!   the identity at alpha 0 or when the seed is the identity.
//! * GATE: `lerp(host, seed, clamp(alpha * gate(x), 0, 1))` with a learned per-sample
//!   gate: mean-pool over H, W, Linear(C, max(8, C/4)), ReLU, Linear(., 1), sigmoid.
//!   The gate network is made when the seed enters BLENDING (it has nothing to do
//!   before), and its parameters are not the seed's: the gradient monitor leaves them out.
//!
//! Alpha is a 0-d tensor on the device (the slot's, filled when the lifecycle moves it):
//! nothing syncs, and a CUDA graph of the step reads the current value on every replay.
//!
//! [`BlendAlgorithm`] is the configured choice; [`Blend`] is the slot's live blend, made
//! from it when the seed enters BLENDING (GATE owns its network and its variables).

use crate::host::FeatureLayout;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, TchError, Tensor};

/// The blend a slot is configured with (`[slot] blend`; its default is
/// [`crate::blend::BlendSettings`]'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlendAlgorithm {
    Add,
    Multiply,
    Gate,
}

/// The learned per-sample gate of the GATE blend, with its own variables.
#[derive(Debug)]
pub struct GateNet {
    vars: nn::VarStore,
    layout: FeatureLayout,
    hidden: nn::Linear,
    out: nn::Linear,
}

impl GateNet {
    pub fn new(channels: i64, layout: FeatureLayout, device: Device) -> Self {
        let vars = nn::VarStore::new(device);
        let hidden = Self::hidden_width(channels);
        let root = vars.root();
        let (hidden, out) = (
            nn::linear(&root / "gate_hidden", channels, hidden, Default::default()),
            nn::linear(&root / "gate_out", hidden, 1, Default::default()),
        );
        Self { vars, layout, hidden, out }
    }

    /// The hidden layer's width for `channels` channels: max(8, C/4), as esper-lite.
    pub fn hidden_width(channels: i64) -> i64 {
        (channels / 4).max(8)
    }

    /// The gate in [0, 1]: per sample on images, `(B, 1, 1, 1)` from the channels'
    /// spatial means (as esper-lite); per token on sequences, `(B, T, 1)` from that
    /// token's features alone. (esper-lite averages over the tokens, which lets a
    /// causal model's early tokens see later ones through the gate.)
    pub fn gate(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let mlp = |x: &Tensor| -> Result<Tensor, TchError> {
            let h = x.f_linear(&self.hidden.ws, self.hidden.bs.as_ref())?.f_relu()?;
            h.f_linear(&self.out.ws, self.out.bs.as_ref())?.f_sigmoid()
        };
        match self.layout {
            FeatureLayout::Nchw => mlp(&x.f_mean_dim([2i64, 3].as_slice(), false, x.kind())?)?.f_view([-1, 1, 1, 1]),
            FeatureLayout::Ntc => mlp(x),
        }
    }
}

/// A slot's live blend.
#[derive(Debug)]
pub enum Blend {
    Add,
    Multiply,
    Gate(GateNet),
}

impl Blend {
    /// The blend of `algorithm` for `channels` channels laid out as `layout` (GATE
    /// creates its network on `device`).
    pub fn new(algorithm: BlendAlgorithm, channels: i64, layout: FeatureLayout, device: Device) -> Self {
        match algorithm {
            BlendAlgorithm::Add => Blend::Add,
            BlendAlgorithm::Multiply => Blend::Multiply,
            BlendAlgorithm::Gate => Blend::Gate(GateNet::new(channels, layout, device)),
        }
    }

    pub fn algorithm(&self) -> BlendAlgorithm {
        match self {
            Blend::Add => BlendAlgorithm::Add,
            Blend::Multiply => BlendAlgorithm::Multiply,
            Blend::Gate(_) => BlendAlgorithm::Gate,
        }
    }

    /// The blend's own variables (GATE's network), if it has any.
    pub fn vars(&self) -> Option<&nn::VarStore> {
        match self {
            Blend::Gate(g) => Some(&g.vars),
            _ => None,
        }
    }

    pub fn vars_mut(&mut self) -> Option<&mut nn::VarStore> {
        match self {
            Blend::Gate(g) => Some(&mut g.vars),
            _ => None,
        }
    }

    /// Blends `seed` into `host` with amplitude `alpha` (a 0-d tensor in [0, 1]).
    /// `seed_input` is what the seed received (the MULTIPLY reference and the gate's input).
    /// Fallible as every op here: an error comes back (the caller blames the seed whose
    /// output it is), never a panic.
    pub fn apply(&self, host: &Tensor, seed: &Tensor, seed_input: &Tensor, alpha: &Tensor) -> Result<Tensor, TchError> {
        // lerp wants its weight in the stream's dtype (bfloat16 under autocast).
        let cast;
        let alpha = if alpha.kind() == host.kind() {
            alpha
        } else {
            cast = alpha.f_to_kind(host.kind())?;
            &cast
        };
        match self {
            Blend::Add => host.f_lerp_tensor(seed, alpha),
            Blend::Multiply => host.f_mul(&seed.f_sub(seed_input)?.f_tanh()?.f_mul(alpha)?.f_add_scalar(1.0)?),
            Blend::Gate(gate) => {
                // Under autocast the gate network answers in bfloat16, while a stream
                // kept in float32 (the transformer's residual) wants float32.
                let g = gate.gate(seed_input)?;
                let g = if g.kind() == host.kind() { g } else { g.f_to_kind(host.kind())? };
                host.f_lerp_tensor(seed, &g.f_mul(alpha)?.f_clamp(0.0, 1.0)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn t(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    fn a(alpha: f64) -> Tensor {
        Tensor::from(alpha as f32)
    }

    #[test]
    fn every_blend_is_the_identity_at_alpha_zero() {
        let (h, s) = (t(&[2, 8, 3, 3]), t(&[2, 8, 3, 3]));
        for algo in [BlendAlgorithm::Add, BlendAlgorithm::Multiply, BlendAlgorithm::Gate] {
            let blend = Blend::new(algo, 8, FeatureLayout::Nchw, Device::Cpu);
            assert_eq!(blend.algorithm(), algo);
            assert_eq!(blend.vars().is_some(), algo == BlendAlgorithm::Gate, "only GATE has variables");
            let y = blend.apply(&h, &s, &h, &a(0.0)).unwrap();
            assert!((y - &h).abs().max().double_value(&[]) < 1e-7, "{algo:?}");
        }
    }

    #[test]
    fn add_at_one_is_the_seed_and_multiply_is_bounded() {
        let (h, s) = (t(&[2, 4, 2, 2]), t(&[2, 4, 2, 2]));
        let y = Blend::Add.apply(&h, &s, &h, &a(1.0)).unwrap();
        assert!((y - &s).abs().max().double_value(&[]) < 1e-6);
        let y = Blend::Multiply.apply(&h, &(&h + 100.0), &h, &a(0.5)).unwrap();
        // tanh(100) ~ 1: y = 1.5 h
        assert!((y - &h * 1.5).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn the_gate_is_at_least_8_wide() {
        assert_eq!([4, 16, 32, 64, 112].map(GateNet::hidden_width), [8, 8, 8, 16, 28]);
        let Blend::Gate(gate) = Blend::new(BlendAlgorithm::Gate, 4, FeatureLayout::Nchw, Device::Cpu) else {
            unreachable!()
        };
        assert_eq!(gate.vars.trainable_variables().iter().map(|t| t.numel()).sum::<usize>(), 4 * 8 + 8 + 8 + 1);
    }

    #[test]
    fn gate_is_per_sample_and_convex() {
        let blend = Blend::new(BlendAlgorithm::Gate, 4, FeatureLayout::Nchw, Device::Cpu);
        let Blend::Gate(gate) = &blend else { unreachable!("GATE makes a gate network") };
        let (h, s) = (t(&[3, 4, 2, 2]), t(&[3, 4, 2, 2]));
        let g = gate.gate(&h).unwrap();
        assert_eq!(g.size(), vec![3, 1, 1, 1]);
        let y = blend.apply(&h, &s, &h, &a(1.0)).unwrap();
        let expected = &h + (&s - &h) * &g;
        assert!((y - expected).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn on_sequences_the_gate_is_per_token_so_no_token_sees_a_later_one() {
        let blend = Blend::new(BlendAlgorithm::Gate, 4, FeatureLayout::Ntc, Device::Cpu);
        let Blend::Gate(gate) = &blend else { unreachable!("GATE makes a gate network") };
        let (h, s) = (t(&[2, 5, 4]), t(&[2, 5, 4]));
        assert_eq!(gate.gate(&h).unwrap().size(), vec![2, 5, 1]);
        let y = blend.apply(&h, &s, &h, &a(1.0)).unwrap();
        // Changing the last token changes no earlier token's output.
        let h2 = h.copy();
        let _ = h2.narrow(1, 4, 1).fill_(3.0);
        let y2 = blend.apply(&h2, &s, &h2, &a(1.0)).unwrap();
        let diff = (y2 - &y).abs().sum_dim_intlist([0i64, 2].as_slice(), false, Kind::Float);
        let per_token = Vec::<f32>::try_from(diff).unwrap();
        assert!(per_token[..4].iter().all(|d| *d == 0.0) && per_token[4] > 0.0, "{per_token:?}");
    }

    #[test]
    fn a_blend_that_cannot_be_made_is_an_error_not_a_panic() {
        let (h, s) = (t(&[2, 4, 2, 2]), t(&[2, 4, 2, 2]));
        let wrong = t(&[3, 5]);
        for algo in [BlendAlgorithm::Add, BlendAlgorithm::Multiply, BlendAlgorithm::Gate] {
            let blend = Blend::new(algo, 4, FeatureLayout::Nchw, Device::Cpu);
            assert!(blend.apply(&h, &wrong, &wrong, &a(0.5)).is_err(), "{algo:?}");
        }
        let gate = Blend::new(BlendAlgorithm::Gate, 4, FeatureLayout::Nchw, Device::Cpu);
        assert!(gate.apply(&h, &s, &t(&[2, 7, 2, 2]), &a(0.5)).is_err(), "the gate network's input");
    }
}
