//! The run's resource arithmetic: the host's memory estimate for one training step
//! (from [`crate::host::budget`], nothing allocated) against a limit.

use super::{OptimizerConfig, RunConfig};
use crate::{
    data::{DataConfig, CHANNELS, IMAGE_SIZE},
    device::DeviceChoice,
    host::{
        budget::{self, human_bytes, BudgetError, StepEstimate, StepInput},
        transformer::{self, budget::SequenceInput},
        HostBudget, HostConfig,
    },
};
use tch::Device;
use thiserror::Error;

/// The default limit on CUDA devices, in GiB, where the device's own memory is not
/// queried (a conservative figure; raise `training.memory_limit_gb` on a larger GPU).
pub const DEFAULT_CUDA_MEMORY_GIB: f64 = 16.0;
/// The default limit on the CPU when the available memory cannot be read.
pub const FALLBACK_CPU_MEMORY_GIB: f64 = 8.0;

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Debug, Error)]
pub enum ResourceError {
    /// The host's shape or size arithmetic (shown in this one's message, which callers
    /// read whole).
    #[error("host: {0}")]
    Host(BudgetError),
    #[error(
        "the host needs an estimated {} of memory for one training step ({parameters} parameters; \
         {breakdown}), over the limit of {} ({source_of_limit}); make it smaller ({shrink}) or raise the \
         limit with `[training] memory_limit_gb`",
        human_bytes(*.estimate_bytes),
        human_bytes(*.limit_bytes)
    )]
    OverLimit {
        estimate_bytes: u64,
        limit_bytes: u64,
        parameters: u64,
        breakdown: String,
        source_of_limit: String,
        /// The settings that make this host's step smaller.
        shrink: &'static str,
    },
    #[error("training.memory_limit_gb must be positive, got {0}")]
    BadLimit(f64),
    #[error(
        "host.pool_layers = {pools} halves the {size}x{size} input to nothing (at most {max} pools fit); \
         lower host.pool_layers or host.blocks"
    )]
    TooManyPools { pools: usize, size: i64, max: usize },
}

impl From<BudgetError> for ResourceError {
    fn from(e: BudgetError) -> Self {
        ResourceError::Host(e)
    }
}

/// A memory limit and where it comes from (for messages).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: String,
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn available_memory() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("cannot read /proc/meminfo: {e}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .ok_or_else(|| "/proc/meminfo has no MemAvailable line".to_string())?;
    let kib: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|e| format!("cannot parse `{line}` in /proc/meminfo: {e}"))?;
    Ok(kib.saturating_mul(1024))
}

fn gib_to_bytes(gib: f64) -> u64 {
    // `as` saturates for values beyond u64.
    (gib * GIB) as u64
}

fn cpu_limit() -> MemoryLimit {
    match available_memory() {
        Ok(bytes) => MemoryLimit { bytes, source: "the machine's available memory, MemAvailable".into() },
        Err(why) => MemoryLimit {
            bytes: gib_to_bytes(FALLBACK_CPU_MEMORY_GIB),
            source: format!("a default of {FALLBACK_CPU_MEMORY_GIB} GiB: {why}"),
        },
    }
}

fn cuda_limit() -> MemoryLimit {
    MemoryLimit {
        bytes: gib_to_bytes(DEFAULT_CUDA_MEMORY_GIB),
        source: format!("the default for CUDA devices, {DEFAULT_CUDA_MEMORY_GIB} GiB"),
    }
}

/// Where the step runs: the resolved device if known, else what the config asks for
/// (`None` for `auto`, which may be either).
fn on_cpu(config: &RunConfig, device: Option<Device>) -> Option<bool> {
    match device {
        Some(d) => Some(d == Device::Cpu),
        None => match config.device {
            DeviceChoice::Cpu => Some(true),
            DeviceChoice::Cuda => Some(false),
            DeviceChoice::Auto => None,
        },
    }
}

impl RunConfig {
    /// The memory limit a run is held to on `device` (`None`: not resolved yet; for
    /// `device = "auto"` the smaller of the CPU and CUDA limits).
    pub fn memory_limit(&self, device: Option<Device>) -> Result<MemoryLimit, ResourceError> {
        if let Some(gb) = self.training.memory_limit_gb {
            if !(gb > 0.0 && gb.is_finite()) {
                return Err(ResourceError::BadLimit(gb));
            }
            return Ok(MemoryLimit { bytes: gib_to_bytes(gb), source: format!("training.memory_limit_gb = {gb}") });
        }
        Ok(match on_cpu(self, device) {
            Some(true) => cpu_limit(),
            Some(false) => cuda_limit(),
            None => {
                let (cpu, cuda) = (cpu_limit(), cuda_limit());
                let mut limit = if cpu.bytes <= cuda.bytes { cpu } else { cuda };
                limit.source.push_str(", the smaller of the CPU and CUDA limits for device \"auto\"");
                limit
            }
        })
    }

    /// The host's parameter count and memory estimate for one training step, from the
    /// config alone.
    pub fn step_estimate(&self, device: Option<Device>) -> Result<StepEstimate, ResourceError> {
        let optimizer_states = match self.training.host_optimizer {
            OptimizerConfig::Sgd { momentum: 0.0, .. } => 0,
            OptimizerConfig::Sgd { .. } => 1,
            OptimizerConfig::Adam { .. } => 2,
        };
        // The data set stays on the CPU; it shares the step's memory only there.
        let resident_data_bytes = if on_cpu(self, device) != Some(false) { self.data_bytes() } else { 0 };
        let batch_size = self.training.batch_size;
        Ok(match &self.host {
            HostConfig::Cnn(host) => host.estimate_step(StepInput {
                batch_size,
                channels: CHANNELS,
                height: IMAGE_SIZE,
                width: IMAGE_SIZE,
                optimizer_states,
                resident_data_bytes,
            })?,
            HostConfig::Transformer(host) => {
                let seq_len = match &self.data {
                    DataConfig::Text(text) => i64::try_from(text.block_size).unwrap_or(i64::MAX),
                    _ => host.block_size,
                };
                let input = SequenceInput { batch_size, seq_len, optimizer_states, resident_data_bytes };
                transformer::budget::estimate_step(host, input)?
            }
        })
    }

    /// Bytes of the data set in memory: float32 images (CIFAR-10 without a limit counted
    /// at its full 50,000 + 10,000 images); for text, int64 tokens (at most one per byte
    /// of a text source, exactly one per u16 of a `.bin`), plus the text of a source read
    /// from a file or generated (held while it is tokenized).
    fn data_bytes(&self) -> u64 {
        let images = match &self.data {
            DataConfig::Synthetic { train_size, val_size, .. } => train_size.saturating_add(*val_size),
            DataConfig::Cifar10 { limit, .. } => {
                let l = limit.unwrap_or(usize::MAX);
                l.min(50_000).saturating_add(l.min(10_000))
            }
            DataConfig::Text(text) => return text.resident_bytes(),
        };
        let per_image = (CHANNELS * IMAGE_SIZE * IMAGE_SIZE) as u64 * budget::BYTES_PER_ELEMENT;
        (images as u64).saturating_mul(per_image)
    }

    /// The estimate within the limit, and the pools within the input size; returns the
    /// estimate. Arithmetic only: nothing is allocated.
    pub fn check_resources(&self, device: Option<Device>) -> Result<StepEstimate, ResourceError> {
        let estimate = self.step_estimate(device)?;
        let limit = self.memory_limit(device)?;
        if estimate.total_bytes > limit.bytes {
            return Err(ResourceError::OverLimit {
                estimate_bytes: estimate.total_bytes,
                limit_bytes: limit.bytes,
                parameters: estimate.parameters,
                breakdown: estimate.breakdown(),
                source_of_limit: limit.source,
                shrink: match self.host {
                    HostConfig::Cnn(_) => "[host] blocks or base_channels, [training] batch_size",
                    HostConfig::Transformer(_) => {
                        "[host] n_embd, n_layer or vocab_size, [training] batch_size, [data] block_size"
                    }
                },
            });
        }
        if let HostConfig::Cnn(host) = &self.host {
            let pools = host.pool_layers.unwrap_or(host.blocks);
            let max = IMAGE_SIZE.ilog2() as usize;
            if pools > max {
                return Err(ResourceError::TooManyPools { pools, size: IMAGE_SIZE, max });
            }
        }
        Ok(estimate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> RunConfig {
        RunConfig::parse(text, Path::new("run.toml")).unwrap()
    }

    #[test]
    fn a_huge_host_is_refused_by_arithmetic_naming_estimate_limit_and_setting() {
        let c = parse("device = \"cpu\"\n[host]\nblocks = 12\nbase_channels = 16\npool_layers = 5\n");
        let e = c.check_resources(None).unwrap_err().to_string();
        assert!(e.starts_with("the host needs an estimated "), "{e}");
        assert!(e.contains("GiB of memory for one training step") && e.contains("over the limit of"), "{e}");
        assert!(e.contains("[training] memory_limit_gb") && e.contains("MemAvailable"), "{e}");
        let e = parse("[host]\nblocks = 40\n").check_resources(None).unwrap_err().to_string();
        assert!(e.starts_with("host: ") && e.contains("overflows"), "{e}");
    }

    #[test]
    fn the_limit_comes_from_the_setting_or_the_device() {
        let c = parse("[training]\nmemory_limit_gb = 0.001\n");
        let l = c.memory_limit(None).unwrap();
        assert_eq!(l.bytes, 1_073_741);
        assert_eq!(l.source, "training.memory_limit_gb = 0.001");
        let e = c.check_resources(None).unwrap_err().to_string();
        assert!(e.contains("over the limit of 1.0 MiB (training.memory_limit_gb = 0.001)"), "{e}");
        let cuda = parse("device = \"cuda\"\n").memory_limit(None).unwrap();
        assert_eq!(cuda.bytes, 16 << 30);
        assert!(parse("device = \"cpu\"\n").memory_limit(None).unwrap().source.contains("MemAvailable"));
        let auto = parse("").memory_limit(None).unwrap();
        assert!(auto.bytes <= cuda.bytes && auto.source.contains("auto"), "{auto:?}");
        let e = parse("[training]\nmemory_limit_gb = -1.0\n").check_resources(None).unwrap_err().to_string();
        assert_eq!(e, "training.memory_limit_gb must be positive, got -1");
    }

    #[test]
    fn the_default_host_fits_and_the_data_counts_on_the_cpu_only() {
        let c = parse("device = \"cpu\"\n");
        let e = c.check_resources(None).unwrap();
        assert!(e.parameters > 0 && e.data_bytes == 6000 * 3 * 32 * 32 * 4, "{e:?}");
        assert_eq!(c.step_estimate(Some(Device::Cuda(0))).unwrap().data_bytes, 0);
    }

    #[test]
    fn pools_must_fit_the_input() {
        let e = parse("[host]\nblocks = 6\nbase_channels = 4\n").check_resources(None).unwrap_err().to_string();
        assert!(e.contains("host.pool_layers = 6 halves the 32x32 input to nothing (at most 5 pools fit)"), "{e}");
        parse("[host]\nblocks = 6\nbase_channels = 4\npool_layers = 5\n").check_resources(None).unwrap();
    }
}
