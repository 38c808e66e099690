//! The transformer host: a GPT-style causal language model as esper-lite's
//! `TransformerHost`. Token and position embeddings (with dropout), `n_layer`
//! pre-LayerNorm blocks of causal self-attention and a 4x GELU MLP, a final LayerNorm
//! and a head whose weight *is* the token embedding (one tensor, not a copy).
//!
//! The forward is a fixed list of steps: step 0 the embeddings, steps `1..=n_layer` the
//! blocks, step `n_layer + 1` the final LayerNorm and head. The blocks are divided
//! evenly into `num_segments` runs; injection point `r0c{i}` sits after the last block
//! of run `i`, so the last point is before the final LayerNorm. Features at every point
//! are `(B, T, C)` with `C = n_embd`; the input is token ids `(B, T)` (int64) and the
//! output logits `(B, T, vocab_size)`.

mod block;
pub mod budget;
mod config;
#[cfg(test)]
mod tests;

pub use config::TransformerHostConfig;

use super::{seam::segment_between, FeatureLayout, Host, HostError, InjectionPoint, Segment, Topology};
use block::{Block, INIT_STD};
use tch::{nn, nn::Module, Kind, Tensor};

#[derive(Debug)]
pub struct TransformerHost {
    config: TransformerHostConfig,
    /// Token embedding `(vocab_size, C)`, also the head's weight.
    wte: Tensor,
    /// Position embedding `(block_size, C)`.
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: nn::LayerNorm,
    points: Vec<InjectionPoint>,
}

impl TransformerHost {
    /// Builds the host with its parameters under `path` (names as esper-lite's:
    /// `tok_emb.weight`, `pos_emb.weight`, `layers.{i}.…`, `ln_f.…`; no head weight).
    pub fn new(path: &nn::Path, config: TransformerHostConfig) -> Result<Self, HostError> {
        config.validate()?;
        let (c, init) = (config.n_embd, nn::Init::Randn { mean: 0.0, stdev: INIT_STD });
        let wte = (path / "tok_emb").var("weight", &[config.vocab_size, c], init);
        let wpe = (path / "pos_emb").var("weight", &[config.block_size, c], init);
        let layers = path / "layers";
        let blocks = (0..config.n_layer).map(|i| Block::new(&(&layers / i), &config)).collect();
        let ln_f = block::layer_norm(path / "ln_f", c);
        let per_segment = config.layers_per_segment();
        let points = (0..config.num_segments)
            .map(|i| InjectionPoint {
                id: format!("r0c{i}"),
                channels: c,
                order: i,
                // The last block of run i is block (i + 1) * per_segment - 1, step (i + 1) * per_segment.
                position: (i + 1) * per_segment,
            })
            .collect();
        Ok(Self { config, wte, wpe, blocks, ln_f, points })
    }

    pub fn config(&self) -> &TransformerHostConfig {
        &self.config
    }

    /// Injection points in execution order: r0c0, r0c1, ..., r0c{num_segments - 1}.
    pub fn injection_points(&self) -> &[InjectionPoint] {
        &self.points
    }

    pub fn point(&self, id: &str) -> Result<&InjectionPoint, HostError> {
        self.points
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| HostError::UnknownPoint { name: id.to_string(), valid: self.point_ids() })
    }

    fn point_ids(&self) -> Vec<String> {
        self.points.iter().map(|p| p.id.clone()).collect()
    }

    /// Number of steps: the embeddings, the blocks, the head.
    fn num_steps(&self) -> usize {
        self.blocks.len() + 2
    }

    /// The segment from `from` (None: the token ids) to `to` (None: the logits).
    pub fn segment(&self, from: Option<&str>, to: Option<&str>) -> Result<Segment, HostError> {
        segment_between(&self.points, self.num_steps(), from, to)
    }

    /// Checks a batch of token ids before it enters the host: int64 of shape `(B, T)`
    /// with `B >= 1` and `1 <= T <= block_size`. The ids' range (`< vocab_size`) is the
    /// data's to check, once, when it is loaded: here it would cost a device sync per step.
    pub fn check_input(&self, x: &Tensor) -> Result<(), HostError> {
        let size = x.size();
        let refuse = |what: String| Err(HostError::Config(format!("the transformer host's input {what}")));
        let &[batch, len] = size.as_slice() else {
            return refuse(format!("must be token ids of shape (batch, sequence), got shape {size:?}"));
        };
        if x.kind() != Kind::Int64 {
            return refuse(format!("must be int64 token ids, got {:?} of shape {size:?}", x.kind()));
        }
        if batch < 1 || len < 1 {
            return refuse(format!("is empty (shape {size:?})"));
        }
        if len > self.config.block_size {
            return refuse(format!(
                "has sequences of {len} tokens, longer than host.block_size ({}): shorten the sequences or raise \
                 host.block_size",
                self.config.block_size
            ));
        }
        Ok(())
    }

    /// The token ids as they enter the host (they need no conversion); check them first
    /// with [`TransformerHost::check_input`].
    pub fn prepare_input(&self, x: &Tensor) -> Tensor {
        x.shallow_clone()
    }

    /// Runs the steps of `segment` on `x`: token ids `(B, T)` if it starts at the input
    /// (checked by [`TransformerHost::check_input`]), else features `(B, T, C)`.
    pub fn run_segment(&self, segment: Segment, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for step in segment.range() {
            h = self.run_step(step, &h, train);
        }
        h
    }

    fn run_step(&self, step: usize, x: &Tensor, train: bool) -> Tensor {
        match step {
            0 => self.embed(x, train),
            s if s <= self.blocks.len() => self.blocks[s - 1].forward(x, train),
            _ => self.ln_f.forward(x).linear(&self.wte, None::<Tensor>),
        }
    }

    /// Token plus position embeddings, then dropout: `(B, T)` ids to `(B, T, C)`. The
    /// positions are the first `T` rows of the table, a view: nothing is built per step.
    fn embed(&self, ids: &Tensor, train: bool) -> Tensor {
        let len = ids.size().last().copied().unwrap_or(0);
        let h = Tensor::embedding(&self.wte, ids, -1, false, false) + self.wpe.narrow(0, 0, len);
        block::dropout(h, self.config.dropout, train)
    }

    /// The whole host, token ids to logits.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.run_segment(Segment::new(0, self.num_steps()), &self.prepare_input(x), train)
    }
}

impl Host for TransformerHost {
    fn topology(&self) -> Topology {
        Topology::Transformer
    }
    fn layout(&self) -> FeatureLayout {
        FeatureLayout::Ntc
    }
    fn injection_points(&self) -> &[InjectionPoint] {
        TransformerHost::injection_points(self)
    }
    fn segment(&self, from: Option<&str>, to: Option<&str>) -> Result<Segment, HostError> {
        TransformerHost::segment(self, from, to)
    }
    fn prepare_input(&self, x: &Tensor) -> Tensor {
        TransformerHost::prepare_input(self, x)
    }
    fn run_segment(&self, segment: Segment, x: &Tensor, train: bool) -> Tensor {
        TransformerHost::run_segment(self, segment, x, train)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
