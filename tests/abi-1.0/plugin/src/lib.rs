//! `cnn:legacy-gain`, built against the plugin API frozen at ABI 1.0: a learned gain,
//! `y = x * (1 + tanh(gain))`, the identity at birth. Options:
//! `{"per_channel": true}` (the default: one gain per channel; `false`: one for all).
//! ABI 1.0 has no `describe_options`, so the runtime sees no options schema here.

#![forbid(unsafe_code)]

use esper_plugin_api::{tch::Tensor, Blueprint, Init, Params, PluginError, Seed};
use serde::Deserialize;

pub struct LegacyGain;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyGainOptions {
    #[serde(default = "per_channel_default")]
    pub per_channel: bool,
}

fn per_channel_default() -> bool {
    true
}

pub struct LegacyGainSeed {
    gain: Tensor,
}

impl Blueprint for LegacyGain {
    const NAME: &'static str = "legacy-gain";
    const TOPOLOGY: &'static str = "cnn";
    const DESCRIPTION: &'static str = "a learned gain, built against ABI 1.0; the identity at birth";
    const PARAM_ESTIMATE: u64 = 64;
    type Options = LegacyGainOptions;
    type Seed = LegacyGainSeed;

    fn create(params: &mut Params<'_>, channels: i64, options: LegacyGainOptions) -> Result<LegacyGainSeed, PluginError> {
        let size = if options.per_channel { channels } else { 1 };
        Ok(LegacyGainSeed { gain: params.param("gain", &[size], Init::Zeros)? })
    }
}

impl Seed for LegacyGainSeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        let gain = self.gain.f_tanh()?.f_view([1, -1, 1, 1])?;
        Ok(x.f_mul(&(gain + 1.0))?)
    }
}

esper_plugin_api::register_blueprint!(LegacyGain);
esper_plugin_api::export_plugin!();
