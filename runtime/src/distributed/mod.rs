//! Several processes, one run: where a rank learns who it is (torchrun's environment,
//! also what `esper run --nproc N` sets for its children) and what `[distributed]` says.

mod env;
mod ranks;

pub use env::{RankEnv, RankEnvError};
pub use ranks::{DistError, Ranks};

use crate::host::Topology;
use serde::{Deserialize, Serialize};

/// Which c10d backend the ranks talk through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// NCCL on CUDA, Gloo on the CPU.
    #[default]
    Auto,
    Gloo,
    Nccl,
}

/// `[distributed]`: how the ranks of a multi-process run work together. A run of one
/// process ignores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedConfig {
    pub backend: Backend,
    /// How long a rank waits for the others (rendezvous, a collective) before it ends the
    /// run naming the rank it waited for.
    pub timeout_s: f64,
    /// Normalise the host's BatchNorms in training with the statistics of every rank's
    /// batch together (PyTorch's SyncBatchNorm), not each rank's own (DDP's default).
    pub sync_batchnorm: bool,
}

/// The default of [`DistributedConfig::timeout_s`], PyTorch's.
pub const DEFAULT_TIMEOUT_S: f64 = 300.0;

impl Default for DistributedConfig {
    fn default() -> Self {
        Self { backend: Backend::Auto, timeout_s: DEFAULT_TIMEOUT_S, sync_batchnorm: false }
    }
}

impl DistributedConfig {
    /// The settings' own checks, for a run whose host has `topology`.
    pub fn validate(&self, topology: Topology) -> Result<(), String> {
        let t = self.timeout_s;
        if !(t > 0.0 && t.is_finite()) {
            return Err(format!("[distributed] timeout_s = {t:?} must be > 0 and finite (seconds)"));
        }
        if self.sync_batchnorm && topology == Topology::Transformer {
            return Err("[distributed] sync_batchnorm = true, but the transformer host has no BatchNorm (its \
                        LayerNorms use no batch statistics): leave it out"
                .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let c: DistributedConfig = toml::from_str("").unwrap();
        assert_eq!(c, DistributedConfig::default());
        assert_eq!((c.backend, c.timeout_s, c.sync_batchnorm), (Backend::Auto, 300.0, false));
        let c: DistributedConfig = toml::from_str("backend = \"gloo\"\ntimeout_s = 5.0\n").unwrap();
        assert_eq!((c.backend, c.timeout_s), (Backend::Gloo, 5.0));
        assert!(toml::from_str::<DistributedConfig>("backend = \"mpi\"\n").unwrap_err().to_string().contains("mpi"));
        let bad = DistributedConfig { timeout_s: 0.0, ..Default::default() };
        assert!(bad.validate(Topology::Cnn).unwrap_err().contains("timeout_s = 0.0 must be > 0"));
        let sync = DistributedConfig { sync_batchnorm: true, ..Default::default() };
        assert_eq!(sync.validate(Topology::Cnn), Ok(()));
        let e = sync.validate(Topology::Transformer).unwrap_err();
        assert!(e.contains("the transformer host has no BatchNorm"), "{e}");
    }
}
