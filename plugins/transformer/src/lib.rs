//! The transformer blueprint library: esper-lite's transformer catalogue
//! (`docs/src/plugins/blueprints.md`), one blueprint per type. Input and output are
//! `(B, T, C)` features, identical; none uses the train/eval flag. "Default" init is
//! PyTorch's `nn.Linear` default ([`Init::pytorch_default`]: uniform in ±1/√fan_in for
//! the weight and the bias). Parameter names are esper-lite's with `.` -> `_`, except
//! that esper-lite's fused `qkv` projection is three (`q`, `k`, `v`, each `[C, C]` with
//! its bias): the same function and the same initial distribution, and no slicing op
//! needed in the op table.
//!
//! Declared estimates are counts at 64 channels, as the ABI defines them (esper-lite
//! declares its own at 384: 800, 6000, 25000, 591000, 591000, 1200000, 591000).
//!
//! A portable plugin (`esper-plugin-portable`; ABI 1.2 for `causal_attention` and
//! `window_attention`). The last linear layer of each blueprint is created with
//! `output_param` (the MULTIPLY rule: zeroed under a MULTIPLY blend); each is the
//! identity at birth, as in esper-lite.
//!
//! | blueprint | forward |
//! | --- | --- |
//! | `noop` | `y = x` |
//! | `norm` | `y = x + tanh(scale) * (ln(x) - x)` |
//! | `lora`, `lora_large` | `y = x + up(down(x))` |
//! | `attention`, `flex_attention` | `y = x + proj(causal_attention(q(x), k(x), v(x)))` |
//! | `mlp_small`, `mlp` | `y = x + fc2(gelu(fc1(x)))` |
//!
//! `flex_attention` takes an optional sliding `window` (`window_attention`).

#![forbid(unsafe_code)]

use esper_plugin_portable::{Blueprint, Init, NoOptions, Params, PluginError, Seed, Tensor};
use serde::Deserialize;

/// LayerNorm's epsilon (PyTorch's default, as esper-lite's `nn.LayerNorm`).
const LN_EPS: f64 = 1e-5;

/// `(B, T, C)` of a seed's input with `C` the seed's width, or an error naming the shape.
fn btc(x: &Tensor, channels: i64, blueprint: &str) -> Result<[i64; 3], PluginError> {
    match x.size()[..] {
        [b, t, c] if c == channels => Ok([b, t, c]),
        ref other => Err(PluginError::invalid_argument(format!(
            "{blueprint}: expected (B, T, {channels}) features, got {other:?}"
        ))),
    }
}

/// A positive integer option, its default when absent.
fn positive(name: &str, value: Option<i64>, default: i64) -> Result<i64, PluginError> {
    match value.unwrap_or(default) {
        v if v >= 1 => Ok(v),
        v => Err(PluginError::bad_options(format!("{name} must be at least 1, got {v}"))),
    }
}

/// A linear layer `y = x W^T + b` (`W`: `[out, in]`) with PyTorch's default init, or
/// zero (`output`: the seed's output layer, zero at birth, MULTIPLY-zeroed).
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Inner,
    Output,
}

impl Linear {
    fn new(
        params: &mut Params<'_>,
        prefix: &str,
        (out, inp): (i64, i64),
        bias: bool,
        layer: Layer,
    ) -> Result<Self, PluginError> {
        let shape = [out, inp];
        let init = match layer {
            Layer::Inner => Init::pytorch_default(&shape),
            Layer::Output => Init::Zeros,
        };
        let mut make = |name: String, shape: &[i64]| match layer {
            Layer::Inner => params.param(&name, shape, init),
            Layer::Output => params.output_param(&name, shape, init),
        };
        let weight = make(format!("{prefix}_weight"), &shape)?;
        let bias = if bias { Some(make(format!("{prefix}_bias"), &[out])?) } else { None };
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, PluginError> {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

// ---------------------------------------------------------------- noop

pub struct Noop;
pub struct NoopSeed;

impl Blueprint for Noop {
    const NAME: &'static str = "noop";
    const TOPOLOGY: &'static str = "transformer";
    const DESCRIPTION: &'static str = "identity seed";
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

// ---------------------------------------------------------------- norm

pub struct Norm;
pub struct NormSeed {
    channels: i64,
    weight: Tensor,
    bias: Tensor,
    scale: Tensor,
}

impl Blueprint for Norm {
    const NAME: &'static str = "norm";
    const TOPOLOGY: &'static str = "transformer";
    const DESCRIPTION: &'static str = "LayerNorm, gated (the identity at birth)";
    const PARAM_ESTIMATE: u64 = 130;
    type Options = NoOptions;
    type Seed = NormSeed;

    fn create(params: &mut Params<'_>, channels: i64, _options: NoOptions) -> Result<NormSeed, PluginError> {
        Ok(NormSeed {
            channels,
            weight: params.param("norm_weight", &[channels], Init::Ones)?,
            bias: params.param("norm_bias", &[channels], Init::Zeros)?,
            // tanh(0) = 0: exactly the identity at birth.
            scale: params.param("scale", &[1], Init::Zeros)?,
        })
    }
}

impl Seed for NormSeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        btc(x, self.channels, Norm::NAME)?;
        let normed = x.layer_norm(&[self.channels], Some(&self.weight), Some(&self.bias), LN_EPS)?;
        x.add(&normed.sub(x)?.mul(&self.scale.tanh()?)?)
    }
}

// ---------------------------------------------------------------- lora / lora_large

/// Options of the low-rank adapters.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankOptions {
    /// The adapter's rank (8 for `lora`, 32 for `lora_large`).
    pub rank: Option<i64>,
}

pub struct Lora;
pub struct LoraLarge;
pub struct LoraSeed {
    channels: i64,
    down: Linear,
    up: Linear,
}

impl LoraSeed {
    fn new(params: &mut Params<'_>, channels: i64, rank: i64) -> Result<Self, PluginError> {
        Ok(Self {
            channels,
            down: Linear::new(params, "down", (rank, channels), false, Layer::Inner)?,
            // The way back up starts at 0: the identity at birth.
            up: Linear::new(params, "up", (channels, rank), false, Layer::Output)?,
        })
    }
}

impl Blueprint for Lora {
    const NAME: &'static str = "lora";
    const TOPOLOGY: &'static str = "transformer";
    const DESCRIPTION: &'static str = "low-rank adapter (rank 8)";
    const PARAM_ESTIMATE: u64 = 1000;
    type Options = RankOptions;
    type Seed = LoraSeed;

    fn create(params: &mut Params<'_>, channels: i64, options: RankOptions) -> Result<LoraSeed, PluginError> {
        LoraSeed::new(params, channels, positive("rank", options.rank, 8)?)
    }
}

impl Blueprint for LoraLarge {
    const NAME: &'static str = "lora_large";
    const TOPOLOGY: &'static str = "transformer";
    const DESCRIPTION: &'static str = "large low-rank adapter (rank 32)";
    const PARAM_ESTIMATE: u64 = 4100;
    type Options = RankOptions;
    type Seed = LoraSeed;

    fn create(params: &mut Params<'_>, channels: i64, options: RankOptions) -> Result<LoraSeed, PluginError> {
        LoraSeed::new(params, channels, positive("rank", options.rank, 32)?)
    }
}

impl Seed for LoraSeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        btc(x, self.channels, "lora")?;
        x.add(&self.up.forward(&self.down.forward(x)?)?)
    }
}

// ---------------------------------------------------------------- attention / flex_attention

/// Options of the attention blueprints.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadOptions {
    /// Attention heads (4); they must divide the width.
    pub n_head: Option<i64>,
}

/// Options of `flex_attention`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlexOptions {
    /// Attention heads (4); they must divide the width.
    pub n_head: Option<i64>,
    /// A sliding window: query `i` sees keys `i - window + 1 ..= i`. Absent: the whole
    /// past (esper-lite's causal block mask).
    pub window: Option<i64>,
}

pub struct Attention;
pub struct FlexAttention;
pub struct AttentionSeed {
    channels: i64,
    n_head: i64,
    /// `None`: every earlier position; `Some(w)`: the last `w` positions.
    window: Option<i64>,
    q: Linear,
    k: Linear,
    v: Linear,
    proj: Linear,
}

impl AttentionSeed {
    fn new(
        params: &mut Params<'_>,
        channels: i64,
        n_head: Option<i64>,
        window: Option<i64>,
    ) -> Result<Self, PluginError> {
        let n_head = positive("n_head", n_head, 4)?;
        let window = window.map(|w| positive("window", Some(w), 1)).transpose()?;
        if channels % n_head != 0 {
            return Err(PluginError::invalid_argument(format!(
                "attention needs the width divisible by n_head, got {channels} channels and n_head {n_head}"
            )));
        }
        let square = (channels, channels);
        Ok(Self {
            channels,
            n_head,
            window,
            q: Linear::new(params, "q", square, true, Layer::Inner)?,
            k: Linear::new(params, "k", square, true, Layer::Inner)?,
            v: Linear::new(params, "v", square, true, Layer::Inner)?,
            // The output projection starts at 0: the identity at birth.
            proj: Linear::new(params, "proj", square, true, Layer::Output)?,
        })
    }
}

impl Blueprint for Attention {
    const NAME: &'static str = "attention";
    const TOPOLOGY: &'static str = "transformer";
    const DESCRIPTION: &'static str = "an extra causal self-attention";
    const PARAM_ESTIMATE: u64 = 16_600;
    type Options = HeadOptions;
    type Seed = AttentionSeed;

    fn create(params: &mut Params<'_>, channels: i64, options: HeadOptions) -> Result<AttentionSeed, PluginError> {
        AttentionSeed::new(params, channels, options.n_head, None)
    }
}

/// esper-lite's `flex_attention`: FlexAttention with a causal block mask, which computes
/// what causal scaled dot-product attention does (esper-lite itself falls back to it on
/// CPU): by default the same seed as `attention`, kept under its catalogue name; the
/// `window` option narrows the mask to a sliding window of the last `window` positions.
impl Blueprint for FlexAttention {
    const NAME: &'static str = "flex_attention";
    const TOPOLOGY: &'static str = "transformer";
    const DESCRIPTION: &'static str = "causal attention with a causal or sliding-window mask";
    const PARAM_ESTIMATE: u64 = 16_600;
    type Options = FlexOptions;
    type Seed = AttentionSeed;

    fn create(params: &mut Params<'_>, channels: i64, options: FlexOptions) -> Result<AttentionSeed, PluginError> {
        AttentionSeed::new(params, channels, options.n_head, options.window)
    }
}

impl Seed for AttentionSeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        let [b, t, c] = btc(x, self.channels, "attention")?;
        let heads = |layer: &Linear| -> Result<Tensor, PluginError> {
            // (B, T, C) -> (B, H, T, C / H)
            layer.forward(x)?.reshape(&[b, t, self.n_head, c / self.n_head])?.transpose(1, 2)
        };
        let (q, k, v) = (heads(&self.q)?, heads(&self.k)?, heads(&self.v)?);
        let out = match self.window {
            None => Tensor::causal_attention(&q, &k, &v)?,
            Some(window) => Tensor::window_attention(&q, &k, &v, window)?,
        };
        let out = out.transpose(1, 2)?.reshape(&[b, t, c])?;
        x.add(&self.proj.forward(&out)?)
    }
}

// ---------------------------------------------------------------- mlp_small / mlp

/// Options of the MLP blueprints.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpansionOptions {
    /// The hidden width is `expansion * C` (2 for `mlp_small`, 4 for `mlp`).
    pub expansion: Option<i64>,
}

pub struct MlpSmall;
pub struct Mlp;
pub struct MlpSeed {
    channels: i64,
    fc1: Linear,
    fc2: Linear,
}

impl MlpSeed {
    fn new(params: &mut Params<'_>, channels: i64, expansion: i64) -> Result<Self, PluginError> {
        let hidden = channels * expansion;
        Ok(Self {
            channels,
            fc1: Linear::new(params, "fc1", (hidden, channels), true, Layer::Inner)?,
            // The way back starts at 0: the identity at birth.
            fc2: Linear::new(params, "fc2", (channels, hidden), true, Layer::Output)?,
        })
    }
}

impl Blueprint for MlpSmall {
    const NAME: &'static str = "mlp_small";
    const TOPOLOGY: &'static str = "transformer";
    const DESCRIPTION: &'static str = "small MLP (2x expansion)";
    const PARAM_ESTIMATE: u64 = 16_600;
    type Options = ExpansionOptions;
    type Seed = MlpSeed;

    fn create(params: &mut Params<'_>, channels: i64, options: ExpansionOptions) -> Result<MlpSeed, PluginError> {
        MlpSeed::new(params, channels, positive("expansion", options.expansion, 2)?)
    }
}

impl Blueprint for Mlp {
    const NAME: &'static str = "mlp";
    const TOPOLOGY: &'static str = "transformer";
    const DESCRIPTION: &'static str = "MLP (4x expansion)";
    const PARAM_ESTIMATE: u64 = 33_000;
    type Options = ExpansionOptions;
    type Seed = MlpSeed;

    fn create(params: &mut Params<'_>, channels: i64, options: ExpansionOptions) -> Result<MlpSeed, PluginError> {
        MlpSeed::new(params, channels, positive("expansion", options.expansion, 4)?)
    }
}

impl Seed for MlpSeed {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, PluginError> {
        btc(x, self.channels, "mlp")?;
        x.add(&self.fc2.forward(&self.fc1.forward(x)?.gelu()?)?)
    }
}

esper_plugin_portable::register_blueprint!(Noop);
esper_plugin_portable::register_blueprint!(Norm);
esper_plugin_portable::register_blueprint!(Lora);
esper_plugin_portable::register_blueprint!(LoraLarge);
esper_plugin_portable::register_blueprint!(Attention);
esper_plugin_portable::register_blueprint!(MlpSmall);
esper_plugin_portable::register_blueprint!(Mlp);
esper_plugin_portable::register_blueprint!(FlexAttention);
esper_plugin_portable::export_plugin!();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_positive_and_default_when_absent() {
        assert_eq!(positive("rank", None, 8).unwrap(), 8);
        assert_eq!(positive("rank", Some(3), 8).unwrap(), 3);
        let e = positive("n_head", Some(0), 4).unwrap_err();
        assert!(e.message.contains("n_head must be at least 1, got 0"), "{e}");
    }
}
