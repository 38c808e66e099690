//! Resource arithmetic for the CNN host, from its config alone: nothing is allocated.
//!
//! [`estimate_step`] counts the host's parameters and buffers (the same layers
//! [`CnnHost::new`](super::CnnHost::new) builds: per block a bias-free `k x k`
//! convolution from the previous width to `base_channels * 2^i` and a BatchNorm, then a
//! linear classifier) and estimates the memory of one training step: parameters,
//! gradients, optimizer state, the in-memory rollback copy (parameters, buffers and
//! optimizer state), the activations kept for backward at the configured batch size and
//! input size, and the data set when it lives in the same memory. Every product is
//! checked, so an absurd config (`blocks = 40`) is an error naming the value that
//! overflows, not a wrapped number or a panic.
//!
//! It is an estimate of the host alone (seeds are capped separately, see
//! `BlueprintRegistry::set_param_factor`) and deliberately on the generous side for
//! activations: per block the convolution, BatchNorm and ReLU outputs, plus the pooled
//! output and its int64 indices, plus twice the largest activation for the gradients in
//! flight during backward.

use super::{CnnHostConfig, Topology};
use thiserror::Error;

/// Bytes per element of the host's tensors (float32).
pub const BYTES_PER_ELEMENT: u64 = 4;

#[derive(Debug, Error, PartialEq)]
pub enum BudgetError {
    #[error("{0}")]
    Config(String),
    #[error("{what} overflows 64-bit arithmetic ({detail}); make the host smaller ({sizes})")]
    Overflow { what: String, detail: String, sizes: &'static str },
}

/// The network input one step sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepInput {
    pub batch_size: i64,
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    /// Optimizer state tensors per parameter (SGD with momentum 1, without 0, Adam 2).
    pub optimizer_states: u64,
    /// Bytes of data kept resident in the same memory (the data set on the CPU), if any.
    pub resident_data_bytes: u64,
}

/// Counts and bytes of one training step of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepEstimate {
    /// Trainable parameters (elements).
    pub parameters: u64,
    /// Buffers (BatchNorm running statistics), elements.
    pub buffers: u64,
    /// Activation elements kept or in flight during one step (float32 equivalents).
    pub activation_elements: u64,
    pub parameter_bytes: u64,
    pub gradient_bytes: u64,
    pub optimizer_bytes: u64,
    pub snapshot_bytes: u64,
    pub activation_bytes: u64,
    pub data_bytes: u64,
    pub total_bytes: u64,
}

impl StepEstimate {
    /// A one-line breakdown, e.g. `parameters 1.2 MiB, gradients 1.2 MiB, ...`.
    pub fn breakdown(&self) -> String {
        let mut s = format!(
            "parameters {}, gradients {}, optimizer state {}, rollback copy {}, activations {}",
            human_bytes(self.parameter_bytes),
            human_bytes(self.gradient_bytes),
            human_bytes(self.optimizer_bytes),
            human_bytes(self.snapshot_bytes),
            human_bytes(self.activation_bytes),
        );
        if self.data_bytes > 0 {
            s.push_str(&format!(", data set {}", human_bytes(self.data_bytes)));
        }
        s
    }
}

/// `1536` -> `1.5 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Checked arithmetic for one host's estimate: an overflow is an error naming the host's
/// size settings (`sizes`), the ones to lower.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked {
    pub(crate) sizes: &'static str,
}

impl Checked {
    pub(crate) fn overflow(self, what: &str, detail: impl Into<String>) -> BudgetError {
        BudgetError::Overflow { what: what.to_string(), detail: detail.into(), sizes: self.sizes }
    }

    pub(crate) fn mul(self, a: u64, b: u64, what: &str) -> Result<u64, BudgetError> {
        a.checked_mul(b).ok_or_else(|| self.overflow(what, format!("{a} x {b}")))
    }

    pub(crate) fn add(self, a: u64, b: u64, what: &str) -> Result<u64, BudgetError> {
        a.checked_add(b).ok_or_else(|| self.overflow(what, format!("{a} + {b}")))
    }
}

/// The CNN host's arithmetic.
const CNN: Checked = Checked { sizes: "host.blocks, host.base_channels" };

fn mul(a: u64, b: u64, what: &str) -> Result<u64, BudgetError> {
    CNN.mul(a, b, what)
}

fn add(a: u64, b: u64, what: &str) -> Result<u64, BudgetError> {
    CNN.add(a, b, what)
}

fn overflow(what: &str, detail: impl Into<String>) -> BudgetError {
    CNN.overflow(what, detail)
}

fn positive(value: i64, name: &str) -> Result<u64, BudgetError> {
    u64::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| BudgetError::Config(format!("{name} must be positive, got {value}")))
}

/// The same structural checks as `CnnHost::new`, without building it.
fn check_structure(config: &CnnHostConfig) -> Result<usize, BudgetError> {
    let pool_layers = config.pool_layers.unwrap_or(config.blocks);
    if config.blocks < 2 {
        return Err(BudgetError::Config(format!("host.blocks must be at least 2, got {}", config.blocks)));
    }
    if pool_layers > config.blocks {
        return Err(BudgetError::Config(format!(
            "host.pool_layers ({pool_layers}) exceeds host.blocks ({})",
            config.blocks
        )));
    }
    positive(config.base_channels, "host.base_channels")?;
    positive(config.in_channels, "host.in_channels")?;
    positive(config.num_classes, "host.num_classes")?;
    if config.kernel_size < 1 || config.kernel_size % 2 == 0 {
        return Err(BudgetError::Config(format!(
            "host.kernel_size must be odd and positive, got {}",
            config.kernel_size
        )));
    }
    Ok(pool_layers)
}

/// Output channels of block `i`: `base_channels * 2^i`, checked (the host's tensors
/// take i64 sizes).
pub fn block_channels(config: &CnnHostConfig, block: usize) -> Result<i64, BudgetError> {
    let what = format!("host channels of block {block} (host.base_channels * 2^{block})");
    let shift = u32::try_from(block).map_err(|_| overflow(&what, format!("2^{block}")))?;
    let factor = 1i64.checked_shl(shift).filter(|f| *f > 0).ok_or_else(|| overflow(&what, format!("2^{block}")))?;
    config
        .base_channels
        .checked_mul(factor)
        .ok_or_else(|| overflow(&what, format!("{} x 2^{block}", config.base_channels)))
}

/// The host's injection points (`r0c{i}` after block `i`, `r1c{i}` after its pool) and
/// their channel counts, in execution order, as `CnnHost::injection_points` lists them.
pub fn injection_points(config: &CnnHostConfig) -> Result<Vec<(String, i64)>, BudgetError> {
    let pool_layers = check_structure(config)?;
    let mut points = Vec::new();
    for i in 0..config.blocks {
        let c = block_channels(config, i)?;
        points.push((format!("r0c{i}"), c));
        if i < pool_layers {
            points.push((format!("r1c{i}"), c));
        }
    }
    Ok(points)
}

/// Parameter count and memory estimate of one training step (see the module docs).
pub fn estimate_step(config: &CnnHostConfig, input: StepInput) -> Result<StepEstimate, BudgetError> {
    let pool_layers = check_structure(config)?;
    let batch = positive(input.batch_size, "training.batch_size")?;
    let k = positive(config.kernel_size, "host.kernel_size")?;
    let kk = mul(k, k, "host.kernel_size squared")?;
    let (mut height, mut width) = (positive(input.height, "input height")?, positive(input.width, "input width")?);
    let mut in_c = positive(config.in_channels, "host.in_channels")?;
    let (mut parameters, mut buffers) = (0u64, 0u64);
    // The input batch itself.
    let pixels = mul(height, width, "input size")?;
    let mut activations =
        mul(mul(batch, positive(input.channels, "input channels")?, "input batch")?, pixels, "input batch")?;
    let mut largest = activations;
    for i in 0..config.blocks {
        let out_c = block_channels(config, i)? as u64; // positive: base_channels > 0
        let what = format!("parameters of block {i}");
        let conv = mul(mul(in_c, out_c, &what)?, kk, &what)?;
        parameters = add(parameters, add(conv, mul(2, out_c, &what)?, &what)?, &what)?;
        buffers = add(buffers, add(mul(2, out_c, &what)?, 1, &what)?, &what)?;
        let what = format!("activations of block {i}");
        let act = mul(mul(batch, out_c, &what)?, mul(height, width, &what)?, &what)?;
        // Convolution, BatchNorm and ReLU outputs.
        activations = add(activations, mul(3, act, &what)?, &what)?;
        largest = largest.max(act);
        if i < pool_layers {
            (height, width) = (height / 2, width / 2);
            let pooled = mul(mul(batch, out_c, &what)?, mul(height, width, &what)?, &what)?;
            // Pooled values (float32) and their indices (int64: two float32s each).
            activations = add(activations, mul(3, pooled, &what)?, &what)?;
        }
        in_c = out_c;
    }
    let classes = positive(config.num_classes, "host.num_classes")?;
    parameters = add(parameters, add(mul(in_c, classes, "classifier")?, classes, "classifier")?, "parameters")?;
    // Gradients of the largest activations in flight during backward.
    activations = add(activations, mul(2, largest, "activations")?, "activations")?;
    let step = StepBytes { optimizer_states: input.optimizer_states, resident_data_bytes: input.resident_data_bytes };
    StepEstimate::from_elements((parameters, buffers, activations), step, CNN)
}

/// A built-in host's arithmetic from its config alone, for the preflight: its topology,
/// its injection points and its memory for one step, before anything is allocated. (A
/// host an embedding program builds itself has no preflight: it exists before the model.)
pub trait HostBudget {
    fn topology(&self) -> Topology;
    /// Injection points (id, channels) in execution order, as the built host lists them.
    fn injection_points(&self) -> Result<Vec<(String, i64)>, BudgetError>;
    /// Parameter count and memory estimate of one training step.
    fn estimate_step(&self, input: StepInput) -> Result<StepEstimate, BudgetError>;
}

impl HostBudget for CnnHostConfig {
    fn topology(&self) -> Topology {
        Topology::Cnn
    }
    fn injection_points(&self) -> Result<Vec<(String, i64)>, BudgetError> {
        injection_points(self)
    }
    fn estimate_step(&self, input: StepInput) -> Result<StepEstimate, BudgetError> {
        estimate_step(self, input)
    }
}

/// What a step's bytes depend on beyond its element counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepBytes {
    /// Optimizer state tensors per parameter.
    pub(crate) optimizer_states: u64,
    /// Bytes of data resident in the same memory.
    pub(crate) resident_data_bytes: u64,
}

impl StepEstimate {
    /// The bytes of a step from its element counts (parameters, buffers, activations):
    /// parameters, their gradients, the optimizer state, the rollback copy (parameters,
    /// buffers, optimizer state), the activations and the resident data; every product
    /// and sum checked with `arith`.
    pub(crate) fn from_elements(
        (parameters, buffers, activations): (u64, u64, u64),
        step: StepBytes,
        arith: Checked,
    ) -> Result<Self, BudgetError> {
        let bytes = |elements: u64, what: &str| arith.mul(elements, BYTES_PER_ELEMENT, what);
        let parameter_bytes = bytes(parameters, "parameter bytes")?;
        let gradient_bytes = parameter_bytes;
        let optimizer_bytes = arith.mul(parameter_bytes, step.optimizer_states, "optimizer state bytes")?;
        let snapshot_bytes = arith.add(
            arith.add(parameter_bytes, bytes(buffers, "buffer bytes")?, "rollback copy")?,
            optimizer_bytes,
            "rollback copy",
        )?;
        let activation_bytes = bytes(activations, "activation bytes")?;
        let mut total = arith.add(parameter_bytes, bytes(buffers, "buffer bytes")?, "total")?;
        for part in [gradient_bytes, optimizer_bytes, snapshot_bytes, activation_bytes, step.resident_data_bytes] {
            total = arith.add(total, part, "the step's memory estimate")?;
        }
        Ok(StepEstimate {
            parameters,
            buffers,
            activation_elements: activations,
            parameter_bytes,
            gradient_bytes,
            optimizer_bytes,
            snapshot_bytes,
            activation_bytes,
            data_bytes: step.resident_data_bytes,
            total_bytes: total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    fn input(batch: i64) -> StepInput {
        StepInput { batch_size: batch, channels: 3, height: 32, width: 32, optimizer_states: 1, resident_data_bytes: 0 }
    }

    /// The arithmetic agrees with the host actually built, for a few shapes.
    #[test]
    fn parameter_count_matches_the_built_host() {
        for config in [
            CnnHostConfig::default(),
            CnnHostConfig { base_channels: 8, blocks: 4, pool_layers: Some(2), ..Default::default() },
            CnnHostConfig { base_channels: 5, kernel_size: 5, num_classes: 7, in_channels: 1, ..Default::default() },
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let host = super::super::CnnHost::new(&vs.root(), config.clone()).unwrap();
            let (mut trainable, mut other) = (0u64, 0u64);
            for (_, t) in vs.variables() {
                if t.requires_grad() {
                    trainable += t.numel() as u64;
                } else {
                    other += t.numel() as u64;
                }
            }
            let e = estimate_step(&config, input(8)).unwrap();
            assert_eq!(e.parameters, trainable, "{config:?}");
            assert!(e.buffers >= other, "{config:?}: {} buffers counted, {other} in the store", e.buffers);
            let points: Vec<(String, i64)> =
                host.injection_points().iter().map(|p| (p.id.clone(), p.channels)).collect();
            assert_eq!(HostBudget::injection_points(&config).unwrap(), points);
            assert_eq!(HostBudget::topology(&config), crate::host::Host::topology(&host));
        }
    }

    #[test]
    fn memory_grows_with_the_batch_and_counts_every_part() {
        let config = CnnHostConfig::default();
        let small = estimate_step(&config, input(8)).unwrap();
        let large = estimate_step(&config, input(128)).unwrap();
        assert_eq!(small.parameters, large.parameters);
        assert!(large.activation_bytes > 10 * small.activation_bytes);
        assert_eq!(small.gradient_bytes, small.parameter_bytes);
        assert_eq!(small.optimizer_bytes, small.parameter_bytes, "one momentum buffer per parameter");
        let parts = small.parameter_bytes
            + small.buffers * BYTES_PER_ELEMENT
            + small.gradient_bytes
            + small.optimizer_bytes
            + small.snapshot_bytes
            + small.activation_bytes;
        assert_eq!(small.total_bytes, parts);
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
    }

    #[test]
    fn huge_hosts_are_counted_not_built() {
        // The 12 blocks of base 16: a 19 GB convolution weight in the last block.
        let twelve = CnnHostConfig { blocks: 12, base_channels: 16, ..Default::default() };
        let e = estimate_step(&twelve, input(64)).unwrap();
        assert!(e.parameter_bytes > 19_000_000_000, "{}", human_bytes(e.parameter_bytes));
        // 40 blocks: the channel count itself overflows.
        let forty = CnnHostConfig { blocks: 40, base_channels: 32, ..Default::default() };
        let err = estimate_step(&forty, input(64)).unwrap_err().to_string();
        assert!(err.contains("overflows") && err.contains("block"), "{err}");
        let err = injection_points(&CnnHostConfig { blocks: 70, ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("host channels of block"), "{err}");
    }

    #[test]
    fn structural_errors_match_the_host() {
        let e = estimate_step(&CnnHostConfig { blocks: 1, ..Default::default() }, input(8)).unwrap_err();
        assert_eq!(e.to_string(), "host.blocks must be at least 2, got 1");
        let e = estimate_step(&CnnHostConfig { kernel_size: 4, ..Default::default() }, input(8)).unwrap_err();
        assert!(e.to_string().contains("kernel_size must be odd"), "{e}");
        let e = estimate_step(&CnnHostConfig::default(), input(0)).unwrap_err();
        assert!(e.to_string().contains("training.batch_size must be positive"), "{e}");
    }
}
