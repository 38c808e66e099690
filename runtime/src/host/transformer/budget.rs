//! Resource arithmetic for the transformer host, from its config alone: nothing is
//! allocated (as [`crate::host::budget`] does for the CNN host).
//!
//! The parameters are those [`TransformerHost::new`](super::TransformerHost::new) builds:
//! the token embedding `V x C` (also the head's weight, counted once), the position
//! embedding `S x C`, per block two LayerNorms (`2C` each), the attention's `C -> 3C` and
//! `C -> C` projections and the MLP's `C -> 4C -> C`, all with biases (`12C^2 + 13C`), and
//! the final LayerNorm (`2C`): nanoGPT's count with biases, `124,439,808` for GPT-2 small.
//!
//! The activations kept for backward in one step of batch `B` and sequence `T` are
//! estimated on the generous side, in float32 elements: the ids (int64, two each); the
//! embedding's sum, dropout output and mask (`3BTC`); per block 23 tensors of `BTC` or its
//! multiples (LayerNorm outputs, the q/k/v projection, the attention output and its
//! reshaped copy, projections, dropout outputs and masks, residual sums, the MLP's `4C`
//! hidden layer before and after GELU), the LayerNorms' statistics (`4BT`), the attention
//! scores and probabilities `B x H x T^2` as the unfused path keeps them (a third copy
//! for the attention dropout's mask) and the fused path's log-sum-exp (`BHT`); the final
//! LayerNorm (`BTC + 2BT`), the logits and the loss's log-softmax (`2BTV`); and twice the
//! largest of these for the gradients in flight. The host has no buffers.

use super::TransformerHostConfig;
use crate::host::budget::{BudgetError, Checked, StepBytes, StepEstimate};

/// What one training step of a transformer host sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceInput {
    pub batch_size: i64,
    /// Tokens per sequence (at most `block_size`).
    pub seq_len: i64,
    /// Optimizer state tensors per parameter (SGD with momentum 1, without 0, Adam 2).
    pub optimizer_states: u64,
    /// Bytes of data kept resident in the same memory (the data set on the CPU), if any.
    pub resident_data_bytes: u64,
}

/// The transformer host's arithmetic.
const ARITH: Checked = Checked { sizes: "host.n_embd, host.n_layer, host.vocab_size, host.block_size" };

fn mul(a: u64, b: u64, what: &str) -> Result<u64, BudgetError> {
    ARITH.mul(a, b, what)
}

fn add(a: u64, b: u64, what: &str) -> Result<u64, BudgetError> {
    ARITH.add(a, b, what)
}

/// `a x b x ...`, checked.
fn product(factors: &[u64], what: &str) -> Result<u64, BudgetError> {
    factors.iter().try_fold(1, |acc, &f| mul(acc, f, what))
}

/// The config's sizes as unsigned numbers, after the host's own checks.
struct Sizes {
    vocab: u64,
    width: u64,
    heads: u64,
    layers: u64,
    positions: u64,
}

fn sizes(config: &TransformerHostConfig) -> Result<Sizes, BudgetError> {
    config.validate().map_err(|e| BudgetError::Config(e.to_string()))?;
    // Validated: all positive.
    let unsigned = |v: i64| v.unsigned_abs();
    Ok(Sizes {
        vocab: unsigned(config.vocab_size),
        width: unsigned(config.n_embd),
        heads: unsigned(config.n_head),
        layers: config.n_layer as u64,
        positions: unsigned(config.block_size),
    })
}

/// Trainable parameters of the host (see the module docs).
pub fn parameter_count(config: &TransformerHostConfig) -> Result<u64, BudgetError> {
    let s = sizes(config)?;
    let what = "the transformer host's parameter count";
    let c = s.width;
    let per_block = add(product(&[12, c, c], what)?, mul(13, c, what)?, what)?;
    let embeddings = product(&[add(s.vocab, s.positions, what)?, c], what)?;
    add(add(embeddings, mul(s.layers, per_block, what)?, what)?, mul(2, c, what)?, what)
}

/// The host's injection points and their channels, in execution order, as
/// `TransformerHost::injection_points` lists them.
pub fn injection_points(config: &TransformerHostConfig) -> Result<Vec<(String, i64)>, BudgetError> {
    sizes(config)?;
    Ok((0..config.num_segments).map(|i| (format!("r0c{i}"), config.n_embd)).collect())
}

/// Activation elements of one step (see the module docs).
fn activation_elements(config: &TransformerHostConfig, s: &Sizes, input: &SequenceInput) -> Result<u64, BudgetError> {
    let what = "the transformer host's activations";
    let positive = |v: i64, name: &str| {
        u64::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| BudgetError::Config(format!("{name} must be positive, got {v}")))
    };
    let (b, t) = (positive(input.batch_size, "training.batch_size")?, positive(input.seq_len, "the sequence length")?);
    let (btc, bt) = (product(&[b, t, s.width], what)?, mul(b, t, what)?);
    let score_copies = if config.dropout > 0.0 { 3 } else { 2 };
    let scores = product(&[score_copies, b, s.heads, t, t], what)?;
    let per_block = [mul(23, btc, what)?, mul(4, bt, what)?, scores, product(&[b, s.heads, t], what)?];
    let per_block = per_block.iter().try_fold(0, |acc, &x| add(acc, x, what))?;
    let logits = product(&[b, t, s.vocab], what)?;
    let parts = [mul(2, bt, what)?, mul(3, btc, what)?, mul(s.layers, per_block, what)?, btc, mul(2, bt, what)?];
    let mut total = parts.iter().try_fold(0, |acc, &x| add(acc, x, what))?;
    total = add(total, mul(2, logits, what)?, what)?;
    let largest = logits.max(scores / score_copies).max(mul(4, btc, what)?);
    add(total, mul(2, largest, what)?, what)
}

/// Parameter count and memory estimate of one training step (see the module docs).
pub fn estimate_step(config: &TransformerHostConfig, input: SequenceInput) -> Result<StepEstimate, BudgetError> {
    let s = sizes(config)?;
    if input.seq_len > config.block_size {
        return Err(BudgetError::Config(format!(
            "the sequence length ({}) exceeds host.block_size ({})",
            input.seq_len, config.block_size
        )));
    }
    let parameters = parameter_count(config)?;
    let activations = activation_elements(config, &s, &input)?;
    let step = StepBytes { optimizer_states: input.optimizer_states, resident_data_bytes: input.resident_data_bytes };
    StepEstimate::from_elements((parameters, 0, activations), step, ARITH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::TransformerHost;
    use tch::{nn, Device};

    fn input(batch: i64, seq_len: i64) -> SequenceInput {
        SequenceInput { batch_size: batch, seq_len, optimizer_states: 1, resident_data_bytes: 0 }
    }

    fn tiny(n_embd: i64, n_layer: usize, num_segments: usize) -> TransformerHostConfig {
        TransformerHostConfig { vocab_size: 37, n_embd, n_head: 4, n_layer, block_size: 16, num_segments, dropout: 0.0 }
    }

    /// nanoGPT's closed form with biases: `(V + S) C + L (12 C^2 + 13 C) + 2 C`.
    fn closed_form(c: &TransformerHostConfig) -> u64 {
        let (v, s, l, e) = (c.vocab_size as u64, c.block_size as u64, c.n_layer as u64, c.n_embd as u64);
        (v + s) * e + l * (12 * e * e + 13 * e) + 2 * e
    }

    #[test]
    fn parameter_count_matches_the_built_host_and_the_closed_form() {
        for config in [tiny(32, 4, 2), tiny(48, 3, 3), tiny(8, 1, 1)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let host = TransformerHost::new(&vs.root(), config.clone()).unwrap();
            let trainable: u64 = vs.trainable_variables().iter().map(|t| t.numel() as u64).sum();
            let all: u64 = vs.variables().values().map(|t| t.numel() as u64).sum();
            assert_eq!(parameter_count(&config).unwrap(), trainable, "{config:?}");
            assert_eq!(trainable, all, "no buffers");
            assert_eq!(trainable, closed_form(&config), "{config:?}");
            let points: Vec<(String, i64)> =
                host.injection_points().iter().map(|p| (p.id.clone(), p.channels)).collect();
            assert_eq!(injection_points(&config).unwrap(), points);
        }
        // GPT-2 small (12 layers of 768, 1024 positions): its well-known count.
        let gpt2 =
            TransformerHostConfig { n_embd: 768, n_head: 12, n_layer: 12, block_size: 1024, ..Default::default() };
        assert_eq!(parameter_count(&gpt2).unwrap(), 124_439_808);
    }

    #[test]
    fn memory_grows_with_batch_and_sequence_and_counts_every_part() {
        let config = TransformerHostConfig::default();
        let small = estimate_step(&config, input(4, 64)).unwrap();
        let batch = estimate_step(&config, input(32, 64)).unwrap();
        let long = estimate_step(&config, input(4, 256)).unwrap();
        assert_eq!(small.parameters, batch.parameters);
        assert_eq!(batch.activation_elements, 8 * small.activation_elements, "linear in the batch");
        assert!(long.activation_elements > 4 * small.activation_elements, "at least linear in the sequence");
        assert_eq!(small.gradient_bytes, small.parameter_bytes);
        assert_eq!(small.optimizer_bytes, small.parameter_bytes, "one momentum buffer per parameter");
        let parts = small.parameter_bytes * 2 + small.optimizer_bytes + small.snapshot_bytes + small.activation_bytes;
        assert_eq!(small.total_bytes, parts);
        assert!(small.activation_bytes > 4 * 64 * 50257 * 4 * 2, "the logits and their log-softmax at least");
        let no_dropout = TransformerHostConfig { dropout: 0.0, ..config };
        assert!(estimate_step(&no_dropout, input(4, 64)).unwrap().activation_elements < small.activation_elements);
    }

    #[test]
    fn refusals_and_overflow_are_errors_not_panics() {
        let e = estimate_step(&TransformerHostConfig { n_layer: 4, ..Default::default() }, input(4, 8)).unwrap_err();
        assert!(e.to_string().contains("host.n_layer (4) is not a multiple of host.num_segments (3)"), "{e}");
        let e = estimate_step(&TransformerHostConfig::default(), input(4, 257)).unwrap_err();
        assert_eq!(e.to_string(), "the sequence length (257) exceeds host.block_size (256)");
        let e = estimate_step(&TransformerHostConfig::default(), input(0, 8)).unwrap_err();
        assert_eq!(e.to_string(), "training.batch_size must be positive, got 0");
        let huge = TransformerHostConfig { n_embd: 1 << 40, n_head: 1, ..Default::default() };
        let e = parameter_count(&huge).unwrap_err().to_string();
        assert!(e.contains("overflows 64-bit arithmetic") && e.contains("host.n_embd"), "{e}");
    }
}
