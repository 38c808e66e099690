//! The transformer host's settings (`[host]` of a transformer job) and their checks.

use crate::host::HostError;
use serde::{Deserialize, Serialize};

/// A GPT-style host. The defaults are esper-lite's `TransformerHost` (its TinyStories
/// task): GPT-2's vocabulary, 6 layers of width 384 with 6 heads, 256 positions, three
/// segments of two layers each, dropout 0.1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformerHostConfig {
    /// Token ids run `0..vocab_size`; the logits have this many classes.
    pub vocab_size: i64,
    /// Width of the residual stream: the channels at every injection point.
    pub n_embd: i64,
    /// Attention heads per block (`n_embd` must be a multiple).
    pub n_head: i64,
    /// Transformer blocks.
    pub n_layer: usize,
    /// The longest sequence the host takes (rows of the position embedding).
    pub block_size: i64,
    /// Injection points `r0c0 … r0c{k-1}`, one after each of `k` equal runs of blocks
    /// (`n_layer` must be a multiple).
    pub num_segments: usize,
    /// Dropout after the embeddings, on the attention weights and on each residual
    /// branch, in training only.
    pub dropout: f64,
}

impl Default for TransformerHostConfig {
    fn default() -> Self {
        Self { vocab_size: 50257, n_embd: 384, n_head: 6, n_layer: 6, block_size: 256, num_segments: 3, dropout: 0.1 }
    }
}

impl TransformerHostConfig {
    /// The checks `TransformerHost::new` makes: every size positive, the heads dividing
    /// the width, the segments dividing the layers, the dropout a probability below 1.
    pub fn validate(&self) -> Result<(), HostError> {
        let bad = |msg: String| Err(HostError::Config(msg));
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("n_embd", self.n_embd),
            ("n_head", self.n_head),
            ("block_size", self.block_size),
        ] {
            if value < 1 {
                return bad(format!("host.{name} must be positive, got {value}"));
            }
        }
        for (name, value) in [("n_layer", self.n_layer), ("num_segments", self.num_segments)] {
            if value < 1 {
                return bad(format!("host.{name} must be positive, got {value}"));
            }
        }
        if self.n_embd % self.n_head != 0 {
            return bad(format!(
                "host.n_embd ({}) is not a multiple of host.n_head ({}): each head takes an equal share of the \
                 width",
                self.n_embd, self.n_head
            ));
        }
        if !self.n_layer.is_multiple_of(self.num_segments) {
            return bad(format!(
                "host.n_layer ({}) is not a multiple of host.num_segments ({}): the layers are divided evenly \
                 among the segments",
                self.n_layer, self.num_segments
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("host.dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    /// Blocks per segment (the config validated).
    pub(crate) fn layers_per_segment(&self) -> usize {
        self.n_layer / self.num_segments.max(1)
    }

    /// Width of one attention head (the config validated).
    pub(crate) fn head_dim(&self) -> i64 {
        self.n_embd / self.n_head.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(config: TransformerHostConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_esper_lites_and_valid() {
        let c = TransformerHostConfig::default();
        assert_eq!((c.n_embd, c.n_head, c.n_layer, c.block_size, c.num_segments), (384, 6, 6, 256, 3));
        assert_eq!((c.vocab_size, c.dropout), (50257, 0.1));
        c.validate().unwrap();
        assert_eq!((c.layers_per_segment(), c.head_dim()), (2, 64));
    }

    #[test]
    fn refusals_name_the_numbers() {
        let d = TransformerHostConfig::default;
        assert_eq!(
            refusal(TransformerHostConfig { n_layer: 5, ..d() }),
            "invalid host config: host.n_layer (5) is not a multiple of host.num_segments (3): the layers are \
             divided evenly among the segments"
        );
        let e = refusal(TransformerHostConfig { n_embd: 100, ..d() });
        assert!(e.contains("host.n_embd (100) is not a multiple of host.n_head (6)"), "{e}");
        assert_eq!(
            refusal(TransformerHostConfig { block_size: 0, ..d() }),
            "invalid host config: host.block_size must be positive, got 0"
        );
        assert!(refusal(TransformerHostConfig { n_head: -2, ..d() }).contains("host.n_head must be positive, got -2"));
        assert!(refusal(TransformerHostConfig { num_segments: 0, ..d() }).contains("host.num_segments must be"));
        assert!(
            refusal(TransformerHostConfig { dropout: 1.0, ..d() }).contains("host.dropout must be in [0, 1), got 1")
        );
    }

    #[test]
    fn unknown_keys_are_refused_and_missing_ones_default() {
        let c: TransformerHostConfig = serde_json::from_str(r#"{"n_layer": 4, "num_segments": 2}"#).unwrap();
        assert_eq!(c, TransformerHostConfig { n_layer: 4, num_segments: 2, ..Default::default() });
        let e = serde_json::from_str::<TransformerHostConfig>(r#"{"n_layers": 4}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `n_layers`"), "{e}");
    }
}
