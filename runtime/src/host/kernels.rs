//! The switches of the runtime's own CUDA kernels for the host (`[host.kernels]`), and
//! the flat `[host]` keys they had before, still read with a deprecation note.

use super::CnnHostConfig;
use serde::{Deserialize, Serialize};

/// Which of the runtime's CUDA kernels (compiled at run time with NVRTC, see
/// `torch-shim/README.md`) the host may use; each on by default. `false` keeps
/// libtorch's op. Where a kernel does not suit a tensor it falls back by itself; the
/// switches are for measuring against libtorch and for ruling a kernel out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostKernels {
    /// Each block's ReLU and the max pool after it as one fused kernel each way. Same
    /// values and gradients either way (see `host::pool`).
    pub pool: bool,
    /// In training, each block's BatchNorm and ReLU (and the pool after it, where `pool`
    /// allows). Values agree to rounding (see `host::batchnorm`).
    pub batchnorm: bool,
    /// The first block's convolution (3 input channels, kernel size 3, 16, 32 or 64
    /// output channels), forward and weight gradient. Values agree to TF32 rounding, as
    /// cuDNN's own (see `host::conv`).
    pub first_conv: bool,
    /// The weight gradient of a later block's 3x3 convolution from 32 to 64 channels (the
    /// default host's second), in float32 (TF32 products, as cuDNN's by default) and
    /// under bfloat16 autocast. Values agree to TF32 rounding, and in bfloat16 to the
    /// rounding of libtorch's gradient to bfloat16, which this one skips.
    pub wgrad: bool,
}

impl Default for HostKernels {
    fn default() -> Self {
        Self { pool: true, batchnorm: true, first_conv: true, wgrad: true }
    }
}

impl CnnHostConfig {
    /// Moves the deprecated flat `[host]` kernel switches into `kernels` (they win over
    /// what is there, as the old `[lifecycle]` keys do in `[slot]`) and records a note
    /// for each in `notes`.
    pub fn migrate_deprecated(&mut self, notes: &mut Vec<String>) {
        let k = &mut self.kernels;
        let moves = [
            (self.fused_pool.take(), "fused_pool", "pool", &mut k.pool),
            (self.fused_batchnorm.take(), "fused_batchnorm", "batchnorm", &mut k.batchnorm),
            (self.first_conv_kernel.take(), "first_conv_kernel", "first_conv", &mut k.first_conv),
            (self.wgrad_kernel.take(), "wgrad_kernel", "wgrad", &mut k.wgrad),
        ];
        for (value, old, new, switch) in moves {
            if let Some(v) = value {
                *switch = v;
                notes.push(format!("`host.{old}` is deprecated: write it as `{new}` under `[host.kernels]`"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RunConfig;
    use std::path::Path;

    fn parse(text: &str) -> RunConfig {
        RunConfig::parse(text, Path::new("run.toml")).unwrap()
    }

    #[test]
    fn the_old_flat_keys_give_the_same_host_with_a_warning_each() {
        let new = parse("[host]\nbase_channels = 16\n\n[host.kernels]\npool = false\nwgrad = false\n");
        assert!(new.deprecations.is_empty(), "{:?}", new.deprecations);
        assert!(
            !new.host.cnn().unwrap().kernels.pool
                && new.host.cnn().unwrap().kernels.batchnorm
                && new.host.cnn().unwrap().kernels.first_conv
        );
        let old = parse("[host]\nbase_channels = 16\nfused_pool = false\nwgrad_kernel = false\n");
        assert_eq!(old.host, new.host, "the deprecated keys mean the same");
        assert_eq!(
            old.deprecations,
            [
                "`host.fused_pool` is deprecated: write it as `pool` under `[host.kernels]`",
                "`host.wgrad_kernel` is deprecated: write it as `wgrad` under `[host.kernels]`",
            ]
        );
        let all = parse(
            "[host]\nfused_pool = false\nfused_batchnorm = false\nfirst_conv_kernel = false\nwgrad_kernel = false\n",
        );
        assert_eq!(all.deprecations.len(), 4, "{:?}", all.deprecations);
        assert_eq!(
            all.host.cnn().unwrap().kernels,
            super::HostKernels { pool: false, batchnorm: false, first_conv: false, wgrad: false }
        );
        let e = RunConfig::parse("[host.kernels]\nfused_pool = false\n", Path::new("run.toml")).unwrap_err();
        assert!(e.to_string().contains("fused_pool"), "unknown keys refused: {e}");
    }

    #[test]
    fn a_checkpoints_config_with_the_flat_keys_reads_the_same_and_is_written_back_new() {
        // A checkpoint stores the config as JSON; one written before `[host.kernels]` has
        // the flat keys, and resuming migrates it (`SavedState`'s `pinned_config`).
        let mut json = serde_json::to_value(RunConfig::default_job(vec![])).unwrap();
        let host = json["host"].as_object_mut().unwrap();
        host.remove("kernels");
        host.insert("fused_batchnorm".into(), false.into());
        host.insert("first_conv_kernel".into(), false.into());
        let mut old: RunConfig = serde_json::from_value(json).unwrap();
        old.migrate_deprecated();
        assert!(
            !old.host.cnn().unwrap().kernels.batchnorm
                && !old.host.cnn().unwrap().kernels.first_conv
                && old.host.cnn().unwrap().kernels.pool
        );
        assert_eq!(old.deprecations.len(), 2, "{:?}", old.deprecations);
        let written = serde_json::to_value(&old).unwrap();
        assert!(written["host"].get("fused_batchnorm").is_none(), "{}", written["host"]);
        assert_eq!(written["host"]["kernels"]["batchnorm"], false);
        let again: RunConfig = serde_json::from_value(written).unwrap();
        assert_eq!(again.host, old.host);
    }
}
