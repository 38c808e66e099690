//! The `norm` blueprint (CNN topology) as a portable plugin: the same math, parameters
//! and names as the native `esper-norm`, with no libtorch of its own:
//!
//! ```text
//! y = x + tanh(scale) * (groupnorm(x) - x)
//! ```
//!
//! The runtime's op table runs each op in its libtorch, in the native plugin's order,
//! so the two agree bit for bit (tests/portable.rs).

#![forbid(unsafe_code)]

use esper_plugin_portable::{Blueprint, Init, NoOptions, Params, PluginError, Seed, Tensor};

#[path = "../../norm/src/groups.rs"]
mod groups;
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
        let normed = x.group_norm(self.groups, Some(&self.weight), Some(&self.bias), EPS)?;
        let gate = self.scale.tanh()?;
        x.add(&gate.mul(&normed.sub(x)?)?)
    }
}

esper_plugin_portable::register_blueprint!(NormBlueprint);
esper_plugin_portable::export_plugin!();
