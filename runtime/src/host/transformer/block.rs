//! One pre-LayerNorm transformer block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`, where
//! `attn` is causal multi-head self-attention and `mlp` a 4x GELU feed-forward, each
//! branch ending in a projection and dropout.
//!
//! Parameters are named as esper-lite's (`ln1`, `attn.c_attn`, `attn.c_proj`, `ln2`,
//! `mlp.c_fc`, `mlp.c_proj`) and initialised as nanoGPT's: weights normal with std 0.02,
//! the two projections back into the residual stream with std `0.02 / sqrt(2 n_layer)`,
//! biases zero, LayerNorms one and zero.

use super::TransformerHostConfig;
use tch::{nn, nn::Module, Tensor};

/// Standard deviation of the weights' normal init (GPT-2's).
pub(super) const INIT_STD: f64 = 0.02;

/// A linear layer with normal(0, `std`) weights and a zero bias.
fn linear(path: nn::Path, in_dim: i64, out_dim: i64, std: f64) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev: std },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(path, in_dim, out_dim, config)
}

pub(super) fn layer_norm(path: nn::Path, width: i64) -> nn::LayerNorm {
    nn::layer_norm(path, vec![width], nn::LayerNormConfig::default())
}

/// Dropout with probability `p` in training; the tensor itself otherwise.
pub(super) fn dropout(x: Tensor, p: f64, train: bool) -> Tensor {
    if train && p > 0.0 {
        x.dropout(p, true)
    } else {
        x
    }
}

#[derive(Debug)]
pub(super) struct Block {
    ln1: nn::LayerNorm,
    c_attn: nn::Linear,
    attn_proj: nn::Linear,
    ln2: nn::LayerNorm,
    c_fc: nn::Linear,
    mlp_proj: nn::Linear,
    n_head: i64,
    head_dim: i64,
    dropout: f64,
}

impl Block {
    pub(super) fn new(path: &nn::Path, config: &TransformerHostConfig) -> Self {
        let c = config.n_embd;
        let proj_std = INIT_STD / (2.0 * config.n_layer as f64).sqrt();
        let (attn, mlp) = (path / "attn", path / "mlp");
        Self {
            ln1: layer_norm(path / "ln1", c),
            c_attn: linear(&attn / "c_attn", c, 3 * c, INIT_STD),
            attn_proj: linear(&attn / "c_proj", c, c, proj_std),
            ln2: layer_norm(path / "ln2", c),
            c_fc: linear(&mlp / "c_fc", c, 4 * c, INIT_STD),
            mlp_proj: linear(&mlp / "c_proj", 4 * c, c, proj_std),
            n_head: config.n_head,
            head_dim: config.head_dim(),
            dropout: config.dropout,
        }
    }

    /// `x` `(B, T, C)` to `(B, T, C)`.
    pub(super) fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let x = x + self.attention(&self.ln1.forward(x), train);
        let mlp = self.c_fc.forward(&self.ln2.forward(&x)).gelu("none");
        &x + dropout(self.mlp_proj.forward(&mlp), self.dropout, train)
    }

    /// Causal self-attention over `(B, T, C)`: the query, key and value of a head are
    /// views into one projection (as `split` then `view` would give them), the attention
    /// itself libtorch's fused `scaled_dot_product_attention` with its causal mask.
    fn attention(&self, x: &Tensor, train: bool) -> Tensor {
        // (B, T, 3, H, D): channel 0..C the queries, C..2C the keys, 2C..3C the values.
        let qkv = self.c_attn.forward(x).unflatten(-1, [3, self.n_head, self.head_dim]);
        let head = |i: i64| qkv.select(2, i).transpose(1, 2); // (B, H, T, D)
        let p = if train { self.dropout } else { 0.0 };
        let y =
            Tensor::scaled_dot_product_attention(&head(0), &head(1), &head(2), None::<Tensor>, p, true, None, false);
        let y = y.transpose(1, 2).flatten(2, 3); // (B, T, C)
        dropout(self.attn_proj.forward(&y), self.dropout, train)
    }
}
