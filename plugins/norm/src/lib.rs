//! The `norm` blueprint (CNN topology).
//!
//! GroupNorm over the C channels (affine), plus a scalar `scale` initialised to 0:
//!
//! ```text
//! y = x + tanh(scale) * (groupnorm(x) - x)
//! ```
//!
//! so the seed is exactly the identity at birth and learns how much normalisation to
//! apply. Groups: the first of 32, 16, 8, 4, 2, 1 that divides C with at least 16
//! channels per group, else the first that divides C.

#![forbid(unsafe_code)]

use esper_plugin_api::{tch::Tensor, Blueprint, Init, NoOptions, Params, PluginError, Seed};

mod fold;
mod groups;
pub use fold::{fold, FOLD_FROM};
pub use groups::{num_groups, EPS};

/// The norm math on plain tensors (shared by the plugin and in-process comparisons):
/// [`norm_folded`] from [`FOLD_FROM`] input elements, else [`norm_plain`].
pub fn norm_forward(x: &Tensor, groups: i64, weight: &Tensor, bias: &Tensor, scale: &Tensor) -> Tensor {
    if fold(&x.size()) {
        norm_folded(x, groups, weight, bias, scale)
    } else {
        norm_plain(x, groups, weight, bias, scale)
    }
}

/// `x + tanh(scale) * (groupnorm(x) - x)`, as written.
pub fn norm_plain(x: &Tensor, groups: i64, weight: &Tensor, bias: &Tensor, scale: &Tensor) -> Tensor {
    let gate = scale.tanh();
    let normed = x.group_norm(groups, Some(weight), Some(bias), EPS, true);
    x + gate * (normed - x)
}

/// The same with the gate folded into GroupNorm's affine parameters:
/// `groupnorm(x; gate * weight, gate * bias) + (1 - gate) * x`, `gate = tanh(scale)`.
/// Still exactly `x` at birth (`scale = 0`).
pub fn norm_folded(x: &Tensor, groups: i64, weight: &Tensor, bias: &Tensor, scale: &Tensor) -> Tensor {
    let gate = scale.tanh();
    let normed = x.group_norm(groups, Some(weight * &gate), Some(bias * &gate), EPS, true);
    let keep = gate.neg() + 1.0;
    normed + x * keep
}

pub struct NormBlueprint;

pub struct NormSeed {
    groups: i64,
    weight: Tensor,
    bias: Tensor,
    scale: Tensor,
}

impl Blueprint for NormBlueprint {
    const NAME: &'static str = "norm";
    const TOPOLOGY: &'static str = "cnn";
    const DESCRIPTION: &'static str = "GroupNorm with a learned tanh-gated blend; the identity at birth";
    const PARAM_ESTIMATE: u64 = 130;
    type Options = NoOptions;
    type Seed = NormSeed;

    fn create(params: &mut Params<'_>, channels: i64, _options: NoOptions) -> Result<NormSeed, PluginError> {
        Ok(NormSeed {
            groups: num_groups(channels),
            weight: params.param("weight", &[channels], Init::Ones)?,
            bias: params.param("bias", &[channels], Init::Zeros)?,
            scale: params.param("scale", &[1], Init::Zeros)?,
        })
    }
}

impl Seed for NormSeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        Ok(norm_forward(x, self.groups, &self.weight, &self.bias, &self.scale))
    }
}

esper_plugin_api::register_blueprint!(NormBlueprint);
esper_plugin_api::export_plugin!();

#[cfg(test)]
mod tests {
    use super::{norm_folded, norm_plain, num_groups};
    use esper_plugin_api::tch::{Device, Kind, Tensor};

    /// Output and the gradients of `sum(y * g)` for weight, bias and scale.
    fn run(form: fn(&Tensor, i64, &Tensor, &Tensor, &Tensor) -> Tensor, x: &Tensor, p: &[Tensor; 3]) -> [Tensor; 4] {
        let p = p.each_ref().map(|t| t.detach().set_requires_grad(true));
        let y = form(x, 2, &p[0], &p[1], &p[2]);
        let g = Tensor::linspace(-1.0, 1.0, y.numel() as i64, (Kind::Float, Device::Cpu)).view_as(&y);
        (&y * g).sum(Kind::Float).backward();
        [y.detach(), p[0].grad(), p[1].grad(), p[2].grad()]
    }

    #[test]
    fn the_folded_form_is_the_identity_at_birth_and_agrees_with_the_formula_as_written() {
        let x = Tensor::randn([4, 32, 6, 5], (Kind::Float, Device::Cpu));
        let birth = [
            Tensor::ones([32], (Kind::Float, Device::Cpu)),
            Tensor::zeros([32], (Kind::Float, Device::Cpu)),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)),
        ];
        assert!(run(norm_folded, &x, &birth)[0].equal(&x), "exactly the identity at birth");
        let trained = [
            Tensor::randn([32], (Kind::Float, Device::Cpu)),
            Tensor::randn([32], (Kind::Float, Device::Cpu)),
            Tensor::from_slice(&[0.7f32]),
        ];
        for p in [birth, trained] {
            let (plain, folded) = (run(norm_plain, &x, &p), run(norm_folded, &x, &p));
            for (i, (a, b)) in plain.iter().zip(&folded).enumerate() {
                let scale = a.abs().max().double_value(&[]).max(1.0);
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(diff <= 1e-5 * scale, "output/gradient {i}: {diff} apart");
            }
        }
    }

    #[test]
    fn group_rule() {
        // (channels, groups): 16 channels per group where possible, else the first divisor.
        for (c, g) in [
            (16, 1),
            (32, 2),
            (48, 2),
            (64, 4),
            (80, 4),
            (112, 4),
            (128, 8),
            (256, 16),
            (512, 32),
            (3, 1),
            (10, 2),
            (24, 1),
        ] {
            assert_eq!(num_groups(c), g, "channels {c}");
        }
    }
}
