//! `cnn:channel-scale`: an example blueprint plugin for the Esper seed runtime, built
//! outside the runtime's workspace. Copy this crate to start your own.
//!
//! A squeeze-and-excitation-lite seed: each sample's channels are rescaled by a gate
//! computed from their spatial means,
//!
//! ```text
//! g = sigmoid(fc2(relu(fc1(mean_hw(x)))))          (B, C), in (0, 1)
//! y = x * (1 + tanh(scale) * (2g - 1))
//! ```
//!
//! with a scalar `scale` initialised to 0, so the seed is exactly the identity at birth
//! and learns how much to rescale. `fc1` maps C channels to C / reduction (at least 1).
//!
//! Options (a JSON object; unknown keys are refused by name):
//! `{"reduction": 4}` (the default).

#![forbid(unsafe_code)] // a plugin needs none: the plugin API does the boundary work

use esper_plugin_api::{serde_json, tch::Tensor, Blueprint, Init, Params, PluginError, Seed};
use serde::Deserialize;

/// The blueprint: its name, metadata, options and how to create a seed.
pub struct ChannelScale;

/// The blueprint's options. `deny_unknown_fields` makes an unknown key an error that
/// names it (the conformance suite checks this).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelScaleOptions {
    /// Channel reduction of the bottleneck: `fc1` has `channels / reduction` outputs.
    #[serde(default = "default_reduction")]
    pub reduction: i64,
}

fn default_reduction() -> i64 {
    4
}

/// A seed: handles to its parameters, which the runtime owns.
pub struct ChannelScaleSeed {
    fc1_weight: Tensor,
    fc1_bias: Tensor,
    fc2_weight: Tensor,
    fc2_bias: Tensor,
    scale: Tensor,
}

impl Blueprint for ChannelScale {
    const NAME: &'static str = "channel-scale";
    const TOPOLOGY: &'static str = "cnn";
    const DESCRIPTION: &'static str = "squeeze-and-excitation-lite channel rescaling; the identity at birth";
    /// Parameters of a 64-channel seed with the default reduction:
    /// 16x64 + 16 + 64x16 + 64 + 1.
    const PARAM_ESTIMATE: u64 = 2129;
    type Options = ChannelScaleOptions;
    type Seed = ChannelScaleSeed;

    fn create(
        params: &mut Params<'_>,
        channels: i64,
        options: ChannelScaleOptions,
    ) -> Result<ChannelScaleSeed, PluginError> {
        if options.reduction < 1 {
            return Err(PluginError::bad_options(format!("reduction must be at least 1, got {}", options.reduction)));
        }
        let hidden = (channels / options.reduction).max(1);
        // Every tensor comes from the runtime: it creates them on the seed's device,
        // checkpoints them, moves them and hands them to the optimizer.
        Ok(ChannelScaleSeed {
            fc1_weight: params.param("fc1_weight", &[hidden, channels], Init::KaimingUniform)?,
            fc1_bias: params.param("fc1_bias", &[hidden], Init::Zeros)?,
            fc2_weight: params.param("fc2_weight", &[channels, hidden], Init::KaimingUniform)?,
            fc2_bias: params.param("fc2_bias", &[channels], Init::Zeros)?,
            scale: params.param("scale", &[1], Init::Zeros)?,
        })
    }

    /// The options' JSON schema, shown by `esper plugins inspect` (optional).
    fn options_schema() -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "type": "object",
            "properties": {
                "reduction": {
                    "type": "integer",
                    "minimum": 1,
                    "default": 4,
                    "description": "channel reduction of the bottleneck: fc1 has channels / reduction outputs"
                }
            },
            "additionalProperties": false
        }))
    }
}

impl Seed for ChannelScaleSeed {
    /// `x` is (B, C, H, W); the output has the same shape. The flag is unused: the seed
    /// has no dropout or batch statistics.
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        let size = x.size();
        let [batch, channels, _, _] = size[..] else {
            return Err(PluginError::invalid_argument(format!("expected a (B, C, H, W) input, got {size:?}")));
        };
        // f_* calls return libtorch errors as values (`?` turns them into PluginErrors).
        let pooled = x.f_mean_dim([2i64, 3].as_slice(), false, x.kind())?;
        let hidden = pooled.f_linear(&self.fc1_weight, Some(&self.fc1_bias))?.f_relu()?;
        let gate = hidden.f_linear(&self.fc2_weight, Some(&self.fc2_bias))?.f_sigmoid()?;
        let factor = (gate * 2.0 - 1.0) * self.scale.f_tanh()? + 1.0;
        Ok(x.f_mul(&factor.f_view([batch, channels, 1, 1])?)?)
    }
}

// One line per blueprint, and one line per library.
esper_plugin_api::register_blueprint!(ChannelScale);
esper_plugin_api::export_plugin!();
