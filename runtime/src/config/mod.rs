//! The run config: a TOML file deserialized with serde. Unknown keys are refused, and
//! every error names the file (and, for syntax and type errors, line and column).
//!
//! ```toml
//! device = "auto"                      # cpu | cuda | auto
//! slots = ["r0c1", "r1c1"]
//!
//! [[plugins]]
//! path = "plugins/libesper_norm.so"    # file or folder, relative to this file
//! sha256 = "…"                         # optional, checked before the library is opened
//!
//! [host]      # blocks, base_channels, pool_layers, kernel_size, num_classes, memory_format
//! [data]      # kind = "synthetic" | "cifar10"
//! [training]  # epochs, batch_size, host_optimizer, seed_optimizer, seed
//! [lifecycle] # gates, blend, blend_tempo, alpha_curve, isolate_gradients, schedule, controller
//! [output]    # dir, checkpoint, jsonl
//! ```

mod plugins;

pub use plugins::{sha256_hex, PluginSource};

use crate::{
    data::DataConfig,
    device::DeviceChoice,
    host::CnnHostConfig,
    isolation::BlendAlgorithm,
    lifecycle::{AlphaCurve, QualityGates},
    model::SlotConfig,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("config {path}: plugin {plugin} does not exist")]
    MissingPlugin { path: PathBuf, plugin: PathBuf },
    #[error("config {path}: plugin {plugin}: sha256 mismatch: the config says {expected}, the file has {actual}")]
    Sha256Mismatch { path: PathBuf, plugin: PathBuf, expected: String, actual: String },
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub device: DeviceChoice,
    /// Injection points that get a seed slot.
    #[serde(default = "default_slots")]
    pub slots: Vec<String>,
    #[serde(default)]
    pub plugins: Vec<PluginSource>,
    #[serde(default)]
    pub host: CnnHostConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    #[serde(default)]
    pub output: OutputConfig,
}

fn default_slots() -> Vec<String> {
    vec!["r0c1".into(), "r1c1".into()]
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    Sgd {
        lr: f64,
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default)]
        weight_decay: f64,
    },
}

fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}

impl OptimizerConfig {
    pub fn lr(&self) -> f64 {
        match *self {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adam { lr, .. } => lr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    pub epochs: u32,
    pub batch_size: i64,
    pub host_optimizer: OptimizerConfig,
    pub seed_optimizer: OptimizerConfig,
    /// Seeds libtorch's generator (re-seeded every epoch, so a resumed run matches).
    pub seed: u64,
    /// Measure gradient health every this many batches (and on the last one).
    pub gradient_every: usize,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            epochs: 20,
            batch_size: 64,
            host_optimizer: OptimizerConfig::Sgd { lr: 0.05, momentum: 0.9, weight_decay: 5e-4 },
            seed_optimizer: OptimizerConfig::Adam { lr: 3e-3, beta1: 0.9, beta2: 0.999, weight_decay: 0.0 },
            seed: 0,
            gradient_every: 10,
        }
    }
}

/// Seeds to germinate at fixed epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledSeed {
    /// Germinate at the start of this epoch (1-based).
    pub epoch: u32,
    pub slot: String,
    pub blueprint: String,
    #[serde(default)]
    pub options: serde_json::Value,
}

/// The automatic controller (esper-lite's heuristic policy in spirit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    pub enabled: bool,
    /// Blueprint to germinate when accuracy plateaus.
    pub blueprint: String,
    #[serde(default)]
    pub options: serde_json::Value,
    /// Epochs of history looked at for a plateau.
    pub plateau_epochs: u32,
    /// A plateau: validation accuracy gained less than this (points) over the window.
    pub plateau_delta: f64,
    /// No germination before this epoch.
    pub min_epoch: u32,
    /// Prune a seed still in TRAINING after this many epochs.
    pub max_training_epochs: u32,
    /// Prune a seed whose counterfactual contribution falls below this (points).
    pub prune_below_contribution: f64,
    /// Prune a seed that has been HOLDING this long without passing G5.
    pub max_holding_epochs: u32,
    /// At most this many seeds in flight at once (germinated to holding).
    pub max_live_seeds: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            blueprint: "norm".into(),
            options: serde_json::Value::Null,
            plateau_epochs: 2,
            plateau_delta: 1.0,
            min_epoch: 3,
            max_training_epochs: 8,
            prune_below_contribution: -0.5,
            max_holding_epochs: 4,
            max_live_seeds: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    pub gates: QualityGates,
    pub blend: BlendAlgorithm,
    pub blend_tempo: u32,
    pub alpha_curve: AlphaCurve,
    pub isolate_gradients: bool,
    pub schedule: Vec<ScheduledSeed>,
    pub controller: ControllerConfig,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        let slot = SlotConfig::default();
        Self {
            gates: QualityGates::strict(),
            blend: slot.blend,
            blend_tempo: slot.blend_tempo,
            alpha_curve: slot.alpha_curve,
            isolate_gradients: slot.isolate_gradients,
            schedule: Vec::new(),
            controller: ControllerConfig::default(),
        }
    }
}

impl LifecycleConfig {
    pub fn slot_config(&self) -> SlotConfig {
        SlotConfig {
            isolate_gradients: self.isolate_gradients,
            blend: self.blend,
            alpha_curve: self.alpha_curve,
            blend_tempo: self.blend_tempo,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Where telemetry, checkpoints and the report go.
    pub dir: PathBuf,
    /// Write a checkpoint every epoch.
    pub checkpoint: bool,
    /// Write telemetry events as JSON lines (`events.jsonl`).
    pub jsonl: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("runs/default"), checkpoint: true, jsonl: true }
    }
}

impl RunConfig {
    /// Reads, parses and validates a config file. Relative paths in it (plugins, data,
    /// output) are taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_path_buf(), cause: e.to_string() })?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate(path)?;
        Ok(config)
    }

    /// Parses TOML text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// The built-in default job: the `norm` plugin built beside this binary, the
    /// synthetic data set, the automatic controller.
    pub fn default_job(norm_plugin: PathBuf) -> Self {
        let mut config: RunConfig = toml::from_str(DEFAULT_JOB).expect("the built-in default job parses");
        config.plugins = vec![PluginSource { path: norm_plugin, sha256: None }];
        config
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for p in &mut self.plugins {
            join(&mut p.path);
        }
        join(&mut self.output.dir);
        if let DataConfig::Cifar10 { path, .. } = &mut self.data {
            join(path);
        }
    }

    /// Checks what a parse cannot: values in range, slots and schedule consistent,
    /// plugins present and matching their sha256.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.to_path_buf(), message };
        if self.training.epochs == 0 {
            return Err(invalid("training.epochs must be at least 1".into()));
        }
        if self.training.batch_size < 1 {
            return Err(invalid(format!("training.batch_size must be at least 1, got {}", self.training.batch_size)));
        }
        for (name, opt) in
            [("host_optimizer", &self.training.host_optimizer), ("seed_optimizer", &self.training.seed_optimizer)]
        {
            if !(opt.lr() > 0.0 && opt.lr().is_finite()) {
                return Err(invalid(format!("training.{name}.lr must be positive, got {}", opt.lr())));
            }
        }
        if self.training.gradient_every == 0 {
            return Err(invalid("training.gradient_every must be at least 1".into()));
        }
        if self.slots.is_empty() && (!self.lifecycle.schedule.is_empty() || self.lifecycle.controller.enabled) {
            return Err(invalid("no slots: add `slots = [...]` or disable the controller and schedule".into()));
        }
        for s in &self.lifecycle.schedule {
            if !self.slots.contains(&s.slot) {
                return Err(invalid(format!(
                    "lifecycle.schedule: slot `{}` is not one of the configured slots ({})",
                    s.slot,
                    self.slots.join(", ")
                )));
            }
            if s.epoch == 0 || s.epoch > self.training.epochs {
                return Err(invalid(format!(
                    "lifecycle.schedule: epoch {} is outside 1..={}",
                    s.epoch, self.training.epochs
                )));
            }
        }
        if self.plugins.is_empty() {
            return Err(invalid("no plugins: add at least one [[plugins]] entry".into()));
        }
        for p in &self.plugins {
            p.check(path)?;
        }
        Ok(())
    }
}

/// The built-in default job (plugins are filled in by [`RunConfig::default_job`]).
pub const DEFAULT_JOB: &str = include_str!("default_job.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunConfig, ConfigError> {
        RunConfig::parse(text, Path::new("run.toml"))
    }

    #[test]
    fn empty_config_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.training, TrainingConfig::default());
        assert_eq!(c.slots, vec!["r0c1", "r1c1"]);
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let e = parse("[training]\nepochs = 3\nepoch = 4\n").unwrap_err().to_string();
        assert!(e.starts_with("config run.toml: TOML parse error at line 3, column 1"), "{e}");
        assert!(e.contains("unknown field `epoch`"), "{e}");
    }

    #[test]
    fn bad_value_is_an_error() {
        let e = parse("[training]\nepochs = \"many\"\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("invalid type"), "{e}");
        let e = parse("device = \"tpu\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown variant `tpu`"), "{e}");
        let c = parse("[training]\nepochs = 0\n").unwrap();
        let e = c.validate(Path::new("run.toml")).unwrap_err().to_string();
        assert_eq!(e, "config run.toml: training.epochs must be at least 1");
    }

    #[test]
    fn schedule_must_use_configured_slots() {
        let c = parse("slots = [\"r0c1\"]\n[[plugins]]\npath = \"x.so\"\n[[lifecycle.schedule]]\nepoch = 1\nslot = \"r1c1\"\nblueprint = \"norm\"\n").unwrap();
        let e = c.validate(Path::new("run.toml")).unwrap_err().to_string();
        assert!(e.contains("slot `r1c1` is not one of the configured slots (r0c1)"), "{e}");
    }

    #[test]
    fn default_job_parses() {
        let c = RunConfig::default_job(PathBuf::from("libesper_norm.so"));
        assert!(c.lifecycle.controller.enabled);
        assert_eq!(c.plugins.len(), 1);
    }
}
