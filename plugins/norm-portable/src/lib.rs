//! The `norm` blueprint (CNN topology) as a portable plugin: the same math, parameters
//! and names as the native `esper-norm`, with no libtorch of its own:
//!
//! ```text
//! y = x + tanh(scale) * (groupnorm(x) - x)
//! ```
//!
//! (from `FOLD_FROM` input elements as `groupnorm(x; gate * weight, gate * bias) +
//! (1 - gate) * x`, `gate = tanh(scale)`, as the native plugin). The runtime's op table
//! runs each op in its libtorch, in the native plugin's order, so the two agree bit for
//! bit (tests/all/portable.rs).

#![forbid(unsafe_code)]

use esper_plugin_portable::{Blueprint, Init, NoOptions, Params, PluginError, Seed, Tensor};

#[path = "../../norm/src/fold.rs"]
mod fold;
#[path = "../../norm/src/groups.rs"]
mod groups;
pub use fold::{fold, FOLD_FROM};
pub use groups::{num_groups, EPS};

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
    const DESCRIPTION: &'static str = "GroupNorm with a learned tanh-gated blend; the identity at birth (portable)";
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
        let gate = self.scale.tanh()?;
        if !fold(&x.size()) {
            let normed = x.group_norm(self.groups, Some(&self.weight), Some(&self.bias), EPS)?;
            return x.add(&gate.mul(&normed.sub(x)?)?);
        }
        let (weight, bias) = (self.weight.mul(&gate)?, self.bias.mul(&gate)?);
        let normed = x.group_norm(self.groups, Some(&weight), Some(&bias), EPS)?;
        let keep = gate.neg()?.add_scalar(1.0)?;
        normed.add(&x.mul(&keep)?)
    }
}

esper_plugin_portable::register_blueprint!(NormBlueprint);
esper_plugin_portable::export_plugin!();
