//! The CNN blueprint library: esper-lite's catalogue (`docs/src/plugins/blueprints.md`),
//! one blueprint per type, one registration line each. Input and output are
//! `(B, C, H, W)`, identical; every convolution has stride 1, padding `k / 2` and no
//! bias; none uses the train/eval flag. GN(C) is GroupNorm with the `norm` plugin's
//! group rule, eps 1e-5, affine weight 1 and bias 0. "Default" init is PyTorch's layer
//! default ([`Init::pytorch_default`]). Parameter names are esper-lite's with `.` -> `_`.
//!
//! A portable plugin (`esper-plugin-portable`): no libtorch of its own, every op through
//! the runtime's op table. The last convolution or linear layer of each blueprint is
//! created with `output_param` (the MULTIPLY rule: zeroed under a MULTIPLY blend).
//!
//! | blueprint | forward |
//! | --- | --- |
//! | `noop` | `y = x` |
//! | `attention` | squeeze-excitation: `y = x * sigmoid(fc_2(relu(fc_0(mean_hw(x)))))` |
//! | `depthwise` | `y = x + relu(gn(pointwise(depthwise(x))))` |
//! | `bottleneck` | `y = x + gn(up(relu(mid(relu(down(x))))))` |
//! | `conv_small` | `y = x + relu(gn(conv1x1(x)))` |
//! | `conv_light` | `y = x + relu(gn(conv3x3(x)))` |
//! | `conv_heavy` | `y = x + block_1(block_0(x))`, `block = relu(gn(conv3x3))` |

#![forbid(unsafe_code)]

// The `norm` plugin's group rule, the same file (not its library: that would register
// `norm` a second time inside this one).
#[path = "../../norm/src/groups.rs"]
mod groups;

use esper_plugin_portable::{Blueprint, Init, NoOptions, Params, PluginError, Seed, Tensor};
use groups::{num_groups, EPS};
use serde::Deserialize;

/// Options of the blueprints with a bottleneck width (`attention`, `bottleneck`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReductionOptions {
    /// The bottleneck is `channels / reduction` wide (see each blueprint's minimum).
    #[serde(default = "default_reduction")]
    pub reduction: i64,
}

fn default_reduction() -> i64 {
    4
}

impl Default for ReductionOptions {
    fn default() -> Self {
        Self { reduction: default_reduction() }
    }
}

impl ReductionOptions {
    /// `channels / reduction`, at least `min`; a reduction below 1 is refused.
    fn width(self, channels: i64, min: i64) -> Result<i64, PluginError> {
        if self.reduction < 1 {
            return Err(PluginError::bad_options(format!("reduction must be at least 1, got {}", self.reduction)));
        }
        Ok((channels / self.reduction).max(min))
    }
}

/// Whether a parameter belongs to the seed's output layer (the MULTIPLY rule: zeroed
/// by the runtime when the seed is germinated into a MULTIPLY slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Inner,
    Output,
}

/// A bias-free convolution weight `[out, in / groups, k, k]` with PyTorch's default init.
fn conv_weight(
    params: &mut Params<'_>,
    name: &str,
    (out, inp, k): (i64, i64, i64),
    init: Option<Init>,
    layer: Layer,
) -> Result<Tensor, PluginError> {
    let shape = [out, inp, k, k];
    let init = init.unwrap_or_else(|| Init::pytorch_default(&shape));
    match layer {
        Layer::Inner => params.param(name, &shape, init),
        Layer::Output => params.output_param(name, &shape, init),
    }
}

/// `conv2d(x, w)`, stride 1, padding `k / 2`, no bias.
fn conv(x: &Tensor, w: &Tensor, groups: i64) -> Result<Tensor, PluginError> {
    let pad = w.size()[2] / 2;
    x.conv2d(w, None, [1, 1], [pad, pad], [1, 1], groups)
}

/// GroupNorm over C channels with its affine weight (1) and bias (0).
struct GroupNorm {
    groups: i64,
    weight: Tensor,
    bias: Tensor,
}

impl GroupNorm {
    fn new(params: &mut Params<'_>, prefix: &str, channels: i64) -> Result<Self, PluginError> {
        Ok(Self {
            groups: num_groups(channels),
            weight: params.param(&format!("{prefix}_weight"), &[channels], Init::Ones)?,
            bias: params.param(&format!("{prefix}_bias"), &[channels], Init::Zeros)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, PluginError> {
        x.group_norm(self.groups, Some(&self.weight), Some(&self.bias), EPS)
    }
}

/// `relu(gn(conv(x)))`: the block of `conv_light` and `conv_heavy` (3x3) and
/// `conv_small` (1x1).
struct ConvBlock {
    conv: Tensor,
    gn: GroupNorm,
}

impl ConvBlock {
    fn new(
        params: &mut Params<'_>,
        prefix: &str,
        channels: i64,
        k: i64,
        init: Option<Init>,
        layer: Layer,
    ) -> Result<Self, PluginError> {
        Ok(Self {
            conv: conv_weight(params, &format!("{prefix}conv_weight"), (channels, channels, k), init, layer)?,
            gn: GroupNorm::new(params, &format!("{prefix}gn"), channels)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, PluginError> {
        self.gn.forward(&conv(x, &self.conv, 1)?)?.relu()
    }
}

// ---------------------------------------------------------------- noop

pub struct Noop;
pub struct NoopSeed;

impl Blueprint for Noop {
    const NAME: &'static str = "noop";
    const TOPOLOGY: &'static str = "cnn";
    const DESCRIPTION: &'static str = "identity seed, a placeholder";
    const PARAM_ESTIMATE: u64 = 0;
    type Options = NoOptions;
    type Seed = NoopSeed;

    fn create(_params: &mut Params<'_>, _channels: i64, _options: NoOptions) -> Result<NoopSeed, PluginError> {
        Ok(NoopSeed)
    }
}

impl Seed for NoopSeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        Ok(x.shallow_clone())
    }
}

// ---------------------------------------------------------------- attention

pub struct Attention;
pub struct AttentionSeed {
    fc_0: Tensor,
    fc_2: Tensor,
    fc_2_bias: Tensor,
}

impl Blueprint for Attention {
    const NAME: &'static str = "attention";
    const TOPOLOGY: &'static str = "cnn";
    const DESCRIPTION: &'static str = "squeeze-excitation channel attention";
    const PARAM_ESTIMATE: u64 = 2000;
    type Options = ReductionOptions;
    type Seed = AttentionSeed;

    fn create(params: &mut Params<'_>, channels: i64, options: ReductionOptions) -> Result<AttentionSeed, PluginError> {
        let reduced = options.width(channels, 1)?;
        let fc_0_shape = [reduced, channels];
        Ok(AttentionSeed {
            fc_0: params.param("fc_0_weight", &fc_0_shape, Init::pytorch_default(&fc_0_shape))?,
            // The gate starts at sigmoid(3) ~ 0.953 for every channel.
            fc_2: params.output_param("fc_2_weight", &[channels, reduced], Init::Zeros)?,
            fc_2_bias: params.output_param("fc_2_bias", &[channels], Init::Constant { value: 3.0 })?,
        })
    }
}

impl Seed for AttentionSeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        let squeezed = x.mean(&[2, 3], false)?;
        let hidden = squeezed.linear(&self.fc_0, None)?.relu()?;
        let gate = hidden.linear(&self.fc_2, Some(&self.fc_2_bias))?.sigmoid()?;
        let size = gate.size();
        x.mul(&gate.view(&[size[0], size[1], 1, 1])?)
    }
}

// ---------------------------------------------------------------- depthwise

pub struct Depthwise;
pub struct DepthwiseSeed {
    depthwise: Tensor,
    pointwise: Tensor,
    gn: GroupNorm,
}

impl Blueprint for Depthwise {
    const NAME: &'static str = "depthwise";
    const TOPOLOGY: &'static str = "cnn";
    const DESCRIPTION: &'static str = "depthwise-separable conv";
    const PARAM_ESTIMATE: u64 = 4800;
    type Options = NoOptions;
    type Seed = DepthwiseSeed;

    fn create(params: &mut Params<'_>, channels: i64, _options: NoOptions) -> Result<DepthwiseSeed, PluginError> {
        Ok(DepthwiseSeed {
            depthwise: conv_weight(params, "depthwise_weight", (channels, 1, 3), None, Layer::Inner)?,
            pointwise: conv_weight(params, "pointwise_weight", (channels, channels, 1), None, Layer::Output)?,
            gn: GroupNorm::new(params, "gn", channels)?,
        })
    }
}

impl Seed for DepthwiseSeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        let channels = x.size()[1];
        let y = conv(&conv(x, &self.depthwise, channels)?, &self.pointwise, 1)?;
        x.add(&self.gn.forward(&y)?.relu()?)
    }
}

// ---------------------------------------------------------------- bottleneck

pub struct Bottleneck;
pub struct BottleneckSeed {
    down: Tensor,
    mid: Tensor,
    up: Tensor,
    gn: GroupNorm,
}

impl Blueprint for Bottleneck {
    const NAME: &'static str = "bottleneck";
    const TOPOLOGY: &'static str = "cnn";
    const DESCRIPTION: &'static str = "1x1-3x3-1x1 bottleneck";
    const PARAM_ESTIMATE: u64 = 4500;
    type Options = ReductionOptions;
    type Seed = BottleneckSeed;

    fn create(
        params: &mut Params<'_>,
        channels: i64,
        options: ReductionOptions,
    ) -> Result<BottleneckSeed, PluginError> {
        let width = options.width(channels, 8)?;
        Ok(BottleneckSeed {
            down: conv_weight(params, "down_weight", (width, channels, 1), None, Layer::Inner)?,
            mid: conv_weight(params, "mid_weight", (width, width, 3), None, Layer::Inner)?,
            // The identity at birth: the way back up starts at 0.
            up: conv_weight(params, "up_weight", (channels, width, 1), Some(Init::Zeros), Layer::Output)?,
            gn: GroupNorm::new(params, "gn", channels)?,
        })
    }
}

impl Seed for BottleneckSeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        let y = conv(x, &self.down, 1)?.relu()?;
        let y = conv(&y, &self.mid, 1)?.relu()?;
        x.add(&self.gn.forward(&conv(&y, &self.up, 1)?)?)
    }
}

// ---------------------------------------------------------------- conv_small / conv_light

pub struct ConvSmall;
pub struct ConvLight;

/// `y = x + block(x)`: conv_small (1x1 block, conv 0 at birth) and conv_light (3x3).
pub struct ResidualBlockSeed {
    block: ConvBlock,
}

impl Blueprint for ConvSmall {
    const NAME: &'static str = "conv_small";
    const TOPOLOGY: &'static str = "cnn";
    const DESCRIPTION: &'static str = "1x1 conv";
    const PARAM_ESTIMATE: u64 = 4200;
    type Options = NoOptions;
    type Seed = ResidualBlockSeed;

    fn create(params: &mut Params<'_>, channels: i64, _options: NoOptions) -> Result<ResidualBlockSeed, PluginError> {
        Ok(ResidualBlockSeed { block: ConvBlock::new(params, "", channels, 1, Some(Init::Zeros), Layer::Output)? })
    }
}

impl Blueprint for ConvLight {
    const NAME: &'static str = "conv_light";
    const TOPOLOGY: &'static str = "cnn";
    const DESCRIPTION: &'static str = "light 3x3 conv block";
    const PARAM_ESTIMATE: u64 = 37000;
    type Options = NoOptions;
    type Seed = ResidualBlockSeed;

    fn create(params: &mut Params<'_>, channels: i64, _options: NoOptions) -> Result<ResidualBlockSeed, PluginError> {
        Ok(ResidualBlockSeed { block: ConvBlock::new(params, "enhance_", channels, 3, None, Layer::Output)? })
    }
}

impl Seed for ResidualBlockSeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        x.add(&self.block.forward(x)?)
    }
}

// ---------------------------------------------------------------- conv_heavy

pub struct ConvHeavy;
pub struct ConvHeavySeed {
    blocks: [ConvBlock; 2],
}

impl Blueprint for ConvHeavy {
    const NAME: &'static str = "conv_heavy";
    const TOPOLOGY: &'static str = "cnn";
    const DESCRIPTION: &'static str = "heavy double 3x3 conv block";
    const PARAM_ESTIMATE: u64 = 74000;
    type Options = NoOptions;
    type Seed = ConvHeavySeed;

    fn create(params: &mut Params<'_>, channels: i64, _options: NoOptions) -> Result<ConvHeavySeed, PluginError> {
        Ok(ConvHeavySeed {
            blocks: [
                ConvBlock::new(params, "enhance_0_", channels, 3, None, Layer::Inner)?,
                ConvBlock::new(params, "enhance_1_", channels, 3, None, Layer::Output)?,
            ],
        })
    }
}

impl Seed for ConvHeavySeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        let y = self.blocks[1].forward(&self.blocks[0].forward(x)?)?;
        x.add(&y)
    }
}

esper_plugin_portable::register_blueprint!(Noop);
esper_plugin_portable::register_blueprint!(Attention);
esper_plugin_portable::register_blueprint!(Depthwise);
esper_plugin_portable::register_blueprint!(Bottleneck);
esper_plugin_portable::register_blueprint!(ConvSmall);
esper_plugin_portable::register_blueprint!(ConvLight);
esper_plugin_portable::register_blueprint!(ConvHeavy);
esper_plugin_portable::export_plugin!();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduction_is_validated_and_widths_have_their_minimum() {
        let r = |reduction| ReductionOptions { reduction };
        assert_eq!(r(4).width(64, 1).unwrap(), 16);
        assert_eq!(r(4).width(16, 8).unwrap(), 8, "bottleneck: at least 8");
        assert_eq!(r(100).width(16, 1).unwrap(), 1, "attention: at least 1");
        let e = r(0).width(64, 1).unwrap_err();
        assert!(e.message.contains("reduction must be at least 1, got 0"), "{e}");
    }
}
