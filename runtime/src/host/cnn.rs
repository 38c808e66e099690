//! The CNN host: blocks of conv3x3 (no bias), BatchNorm and ReLU, max-pool after the
//! first `pool_layers` blocks, global average pool and a linear classifier.
//!
//! The forward is a fixed list of *ops* (block, pool, head). Injection points sit
//! between ops: `r0c{i}` after block `i` (before its pool) and `r1c{i}` after pool `i`.
//! A *segment* is a contiguous range of ops between two points (or from the input, or
//! to the logits); segments are plain index ranges, computed once.

use super::{
    seam::segment_between, BatchNormSync, FeatureLayout, Host, HostError, HostKernels, InjectionPoint, MemoryFormat,
    Segment, Topology,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tch::{nn, nn::ModuleT, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CnnHostConfig {
    pub in_channels: i64,
    pub blocks: usize,
    pub base_channels: i64,
    /// Blocks followed by a 2x2 max-pool, counted from the first (default: all).
    pub pool_layers: Option<usize>,
    pub kernel_size: i64,
    pub num_classes: i64,
    pub memory_format: MemoryFormat,
    /// Which of the runtime's own CUDA kernels the host may use (`[host.kernels]`).
    pub kernels: HostKernels,
    /// Deprecated: `kernels.pool`. Read from an old config or checkpoint, then moved
    /// there by [`CnnHostConfig::migrate_deprecated`]; never written.
    #[serde(default, skip_serializing)]
    pub fused_pool: Option<bool>,
    /// Deprecated: `kernels.batchnorm` (as `fused_pool`).
    #[serde(default, skip_serializing)]
    pub fused_batchnorm: Option<bool>,
    /// Deprecated: `kernels.first_conv` (as `fused_pool`).
    #[serde(default, skip_serializing)]
    pub first_conv_kernel: Option<bool>,
    /// Deprecated: `kernels.wgrad` (as `fused_pool`).
    #[serde(default, skip_serializing)]
    pub wgrad_kernel: Option<bool>,
}

impl Default for CnnHostConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            blocks: 3,
            base_channels: 32,
            pool_layers: None,
            kernel_size: 3,
            num_classes: 10,
            memory_format: MemoryFormat::ChannelsLast,
            kernels: HostKernels::default(),
            fused_pool: None,
            fused_batchnorm: None,
            first_conv_kernel: None,
            wgrad_kernel: None,
        }
    }
}

/// One step of the host's forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Block(usize),
    Pool,
    Head,
}

#[derive(Debug)]
struct ConvBlock {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

/// The classifier. Its weight is kept transposed in memory (still [classes, in] to
/// everyone, the checkpoints included): `linear` then hands cuBLAS a contiguous
/// [in, classes] matrix, for which cuBLAS picks much faster backward kernels than for the
/// row-major weight, at any batch size (measured with scripts/bench/head_linear.py; see
/// docs/src/performance.md).
fn head_layer(path: &nn::Path, in_c: i64, classes: i64) -> nn::Linear {
    let mut head = nn::linear(path, in_c, classes, Default::default());
    tch::no_grad(|| {
        let w = head.ws.shallow_clone();
        head.ws.set_data(&w.tr().contiguous().tr());
    });
    head
}

/// The blocks' BatchNorm settings (libtorch's defaults: eps 1e-5, momentum 0.1).
fn bn_config() -> nn::BatchNormConfig {
    nn::BatchNormConfig::default()
}

#[derive(Debug)]
pub struct CnnHost {
    config: CnnHostConfig,
    blocks: Vec<ConvBlock>,
    head: nn::Linear,
    ops: Vec<Op>,
    points: Vec<InjectionPoint>,
    /// The ranks' shared BatchNorm statistics, where `[distributed] sync_batchnorm`.
    bn_sync: Option<Arc<BatchNormSync>>,
}

impl CnnHost {
    /// Builds the host with its parameters under `path`.
    pub fn new(path: &nn::Path, config: CnnHostConfig) -> Result<Self, HostError> {
        let pool_layers = config.pool_layers.unwrap_or(config.blocks);
        if config.blocks < 2 {
            return Err(HostError::Config(format!("blocks must be at least 2, got {}", config.blocks)));
        }
        if pool_layers > config.blocks {
            return Err(HostError::Config(format!("pool_layers ({pool_layers}) exceeds blocks ({})", config.blocks)));
        }
        if config.base_channels < 1 || config.in_channels < 1 || config.num_classes < 1 {
            return Err(HostError::Config("channels and classes must be positive".into()));
        }
        if config.kernel_size < 1 || config.kernel_size % 2 == 0 {
            return Err(HostError::Config(format!("kernel_size must be odd and positive, got {}", config.kernel_size)));
        }
        let conv_cfg = nn::ConvConfig { padding: config.kernel_size / 2, bias: false, ..Default::default() };
        let (mut blocks, mut ops, mut points) = (Vec::new(), Vec::new(), Vec::new());
        let mut in_c = config.in_channels;
        for i in 0..config.blocks {
            let out_c = config.base_channels << i;
            let p = path / format!("block{i}");
            blocks.push(ConvBlock {
                conv: nn::conv2d(&p / "conv", in_c, out_c, config.kernel_size, conv_cfg),
                bn: nn::batch_norm2d(&p / "bn", out_c, bn_config()),
            });
            ops.push(Op::Block(i));
            points.push(InjectionPoint {
                id: format!("r0c{i}"),
                channels: out_c,
                order: points.len(),
                position: ops.len() - 1,
            });
            if i < pool_layers {
                ops.push(Op::Pool);
                points.push(InjectionPoint {
                    id: format!("r1c{i}"),
                    channels: out_c,
                    order: points.len(),
                    position: ops.len() - 1,
                });
            }
            in_c = out_c;
        }
        ops.push(Op::Head);
        let head = head_layer(&(path / "head"), in_c, config.num_classes);
        if config.memory_format == MemoryFormat::ChannelsLast {
            // Conv weights in channels-last too, once, so convolutions stay in that format.
            tch::no_grad(|| {
                for b in &mut blocks {
                    let w = b.conv.ws.shallow_clone();
                    b.conv.ws.set_data(&super::to_channels_last(&w));
                }
            });
        }
        Ok(Self { config, blocks, head, ops, points, bn_sync: None })
    }

    pub fn config(&self) -> &CnnHostConfig {
        &self.config
    }

    /// Injection points in execution order: r0c0, r1c0, r0c1, r1c1, ...
    pub fn injection_points(&self) -> &[InjectionPoint] {
        &self.points
    }

    pub fn point(&self, id: &str) -> Result<&InjectionPoint, HostError> {
        Host::point(self, id)
    }

    /// The segment from `from` (None: the input) to `to` (None: the logits).
    pub fn segment(&self, from: Option<&str>, to: Option<&str>) -> Result<Segment, HostError> {
        segment_between(&self.points, self.ops.len(), from, to)
    }

    /// Puts the network input in the host's memory format: once, at the entry.
    pub fn prepare_input(&self, x: &Tensor) -> Tensor {
        self.config.memory_format.apply(x)
    }

    /// Runs the ops of `segment` on `x`. Input must already be prepared if the segment
    /// starts at the network entry.
    ///
    /// A block followed by its pool in the same segment (no slot between them) runs with
    /// it: the ReLU is applied after pooling (same result; see `host::pool`), or the
    /// BatchNorm, ReLU and pool are one fused op (see `host::batchnorm`).
    pub fn run_segment(&self, segment: Segment, x: &Tensor, train: bool) -> Tensor {
        let ops = &self.ops[segment.range()];
        let mut h = x.shallow_clone();
        let mut i = 0;
        while i < ops.len() {
            if let (Op::Block(b), Some(Op::Pool)) = (ops[i], ops.get(i + 1)) {
                h = self.block(b, &h, train, true);
                i += 2;
            } else {
                h = self.run_op(ops[i], &h, train);
                i += 1;
            }
        }
        h
    }

    /// Block `i` (conv, BatchNorm, ReLU), then the 2x2 max pool when `pool`. The fused
    /// BatchNorm takes the pool in only where `kernels.pool` allows the runtime's pool;
    /// the first block's convolution is the runtime's where `kernels.first_conv` allows, a
    /// later one's weight gradient where `kernels.wgrad` does.
    fn block(&self, i: usize, x: &Tensor, train: bool, pool: bool) -> Tensor {
        let block = &self.blocks[i];
        let y = self.own_conv(i, x, &block.conv.ws).unwrap_or_else(|| x.apply(&block.conv));
        let synced = self.bn_sync.as_ref().filter(|_| train).and_then(|s| s.apply(&y, &block.bn, &bn_config()));
        if let Some(y) = synced {
            return if pool { super::pool::max_pool2x2(&y, true, self.config.kernels.pool) } else { y.relu() };
        }
        if train && self.config.kernels.batchnorm {
            let with_pool = pool && self.config.kernels.pool;
            if let Some(z) = super::batchnorm::bn_relu(&y, &block.bn, &bn_config(), with_pool) {
                return if pool && !with_pool { super::pool::max_pool2x2(&z, false, false) } else { z };
            }
        }
        let y = block.bn.forward_t(&y, train);
        if pool {
            super::pool::max_pool2x2(&y, true, self.config.kernels.pool)
        } else {
            y.relu()
        }
    }

    /// Block `i`'s convolution through the runtime's kernels, where they apply.
    fn own_conv(&self, i: usize, x: &Tensor, weight: &Tensor) -> Option<Tensor> {
        if self.config.kernel_size != 3 {
            return None;
        }
        match i {
            0 if self.config.kernels.first_conv => super::conv::first_conv(x, weight),
            1.. if self.config.kernels.wgrad && weight.requires_grad() => super::conv::conv3x3(x, weight),
            _ => None,
        }
    }

    fn run_op(&self, op: Op, x: &Tensor, train: bool) -> Tensor {
        match op {
            Op::Block(i) => self.block(i, x, train, false),
            Op::Pool => super::pool::max_pool2x2(x, false, self.config.kernels.pool),
            Op::Head => x.mean_dim([2i64, 3].as_slice(), false, x.kind()).apply(&self.head),
        }
    }

    /// Number of ops (for callers that run op by op, like the memory-format benchmark).
    pub fn num_ops(&self) -> usize {
        self.ops.len()
    }

    /// The segment made of op `i` alone.
    pub fn op_segment(&self, i: usize) -> Segment {
        Segment::new(i, i + 1)
    }

    /// The whole host, input to logits.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.run_segment(Segment::new(0, self.ops.len()), &self.prepare_input(x), train)
    }
}

/// The CNN host through the seam: its inherent methods, features `(B, C, H, W)`.
impl Host for CnnHost {
    fn topology(&self) -> Topology {
        Topology::Cnn
    }
    fn injection_points(&self) -> &[InjectionPoint] {
        &self.points
    }
    fn layout(&self) -> FeatureLayout {
        FeatureLayout::Nchw
    }
    fn segment(&self, from: Option<&str>, to: Option<&str>) -> Result<Segment, HostError> {
        CnnHost::segment(self, from, to)
    }
    fn prepare_input(&self, x: &Tensor) -> Tensor {
        CnnHost::prepare_input(self, x)
    }
    fn run_segment(&self, segment: Segment, x: &Tensor, train: bool) -> Tensor {
        CnnHost::run_segment(self, segment, x, train)
    }
    fn synchronise_batch_norm(&mut self, sync: Arc<BatchNormSync>) -> Result<(), HostError> {
        self.bn_sync = Some(sync);
        Ok(())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::is_channels_last;
    use tch::{Device, Kind};

    fn host(config: CnnHostConfig) -> (nn::VarStore, CnnHost) {
        let vs = nn::VarStore::new(Device::Cpu);
        let h = CnnHost::new(&vs.root(), config).unwrap();
        (vs, h)
    }

    #[test]
    fn points_channels_and_order() {
        let (_vs, h) = host(CnnHostConfig { pool_layers: Some(2), ..Default::default() });
        let ids: Vec<_> = h.injection_points().iter().map(|p| (p.id.as_str(), p.channels)).collect();
        assert_eq!(ids, vec![("r0c0", 32), ("r1c0", 32), ("r0c1", 64), ("r1c1", 64), ("r0c2", 128)]);
    }

    #[test]
    fn forward_shapes_and_segments_compose() {
        let (_vs, h) = host(CnnHostConfig::default());
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let logits = h.forward(&x, false);
        assert_eq!(logits.size(), vec![2, 10]);
        assert_eq!(
            (h.head.ws.size(), h.head.ws.stride()),
            (vec![10, 128], vec![1, 10]),
            "the head's weight, transposed"
        );
        let xin = h.prepare_input(&x);
        assert!(is_channels_last(&xin));
        let a = h.run_segment(h.segment(None, Some("r0c1")).unwrap(), &xin, false);
        assert_eq!(a.size(), vec![2, 64, 16, 16]);
        assert!(is_channels_last(&a), "the format set at entry survives the blocks");
        let b = h.run_segment(h.segment(Some("r0c1"), Some("r1c2")).unwrap(), &a, false);
        assert_eq!(b.size(), vec![2, 128, 4, 4]);
        let out = h.run_segment(h.segment(Some("r1c2"), None).unwrap(), &b, false);
        assert!((out - &logits).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn bad_segments_and_configs_are_errors() {
        let (_vs, h) = host(CnnHostConfig::default());
        let e = h.segment(Some("r1c1"), Some("r0c1")).unwrap_err();
        assert!(e.to_string().starts_with("segment from `r1c1` to `r0c1` runs backwards"), "{e}");
        let e = h.segment(None, Some("r9c9")).unwrap_err();
        assert_eq!(e.to_string(), "unknown injection point `r9c9`; valid: r0c0, r1c0, r0c1, r1c1, r0c2, r1c2");
        let vs = nn::VarStore::new(Device::Cpu);
        assert!(CnnHost::new(&vs.root(), CnnHostConfig { blocks: 1, ..Default::default() }).is_err());
        assert!(CnnHost::new(&vs.root(), CnnHostConfig { kernel_size: 4, ..Default::default() }).is_err());
    }
}
