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

mod groups;
pub use groups::{num_groups, EPS};

/// The norm math on plain tensors (shared by the plugin and in-process comparisons).
pub fn norm_forward(x: &Tensor, groups: i64, weight: &Tensor, bias: &Tensor, scale: &Tensor) -> Tensor {
    let normed = x.group_norm(groups, Some(weight), Some(bias), EPS, true);
    x + scale.tanh() * (normed - x)
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
    use super::num_groups;

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
