//! The run config: a TOML file deserialized with serde. Unknown keys are refused, and
//! every error names the file (and, for syntax and type errors, line and column).
//!
//! ```toml
//! device = "auto"                      # cpu | cuda | auto
//! slots = ["r0c1", "r1c1"]
//!
//! [[plugins]]                         # none: the `esper` CLI uses its shipped plugins
//! path = "plugins/libesper_norm.so"    # file or folder, relative to this file
//! sha256 = "…"                         # optional: the bytes hashed are the bytes loaded
//!
//! [host]      # blocks, base_channels, pool_layers, kernel_size, num_classes, memory_format
//! [host.kernels] # pool, batchnorm, first_conv, wgrad (the runtime's CUDA kernels)
//! [data]      # kind = "synthetic" | "cifar10"
//! [training]  # epochs, batch_size, host_optimizer, seed_optimizer, seed, memory_limit_gb,
//!             # seed_timeout_s (60: the seed watchdog, see [`TrainingConfig::seed_timeout_s`])
//! [slot]      # isolate_gradients, blend, alpha_curve, blend_tempo, alpha_target (every slot's;
//!             # the blend settings are [`crate::blend::BlendSettings`])
//! [lifecycle] # gates, schedule, controller, plugin_param_factor
//! [output]    # dir, checkpoint, jsonl, tensorboard
//! ```
//!
//! Validation also does the arithmetic that keeps a run from failing late: the host's
//! parameter count and the memory of one training step are estimated from the config
//! (nothing is allocated, see [`crate::host::budget`]) and held against
//! `training.memory_limit_gb` (default: the machine's available memory on the CPU, a
//! conservative [`DEFAULT_CUDA_MEMORY_GIB`] on CUDA); and the controller must leave a
//! seed enough epochs in TRAINING to pass G2. Every optimizer hyper-parameter is held to
//! its range (see [`OptimizerConfig::check`]), so a value that can only make the host's
//! loss non-finite is refused here, naming its key, rather than found at epoch 1.

mod controller;
mod optimizer;
mod plugins;
mod preflight;
mod resources;
mod trial;

pub use crate::model::Precision;
pub use controller::{
    default_rotation, ControllerConfig, DEFAULT_MAX_TRAINING_EPOCHS, DEFAULT_ROTATION, DEFAULT_TRANSFORMER_ROTATION,
};
pub use optimizer::{DEFAULT_ADAM_EPS, MAX_LR};
pub use plugins::{sha256_hex, PluginSource};
pub use preflight::{Preflight, PreflightError};
pub use resources::{MemoryLimit, ResourceError, DEFAULT_CUDA_MEMORY_GIB, FALLBACK_CPU_MEMORY_GIB};

use crate::{
    blend::{AlphaTarget, BlendChoice, BlendTempo},
    data::DataConfig,
    device::DeviceChoice,
    distributed::DistributedConfig,
    host::{HostConfig, Topology},
    isolation::BlendAlgorithm,
    lifecycle::{AlphaCurve, QualityGates},
    model::SlotConfig,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("config {path}: plugin {plugin} does not exist")]
    MissingPlugin { path: PathBuf, plugin: PathBuf },
    #[error("config {path}: plugin {plugin}: sha256 mismatch: the config says {expected}, the file has {actual}")]
    Sha256Mismatch { path: PathBuf, plugin: PathBuf, expected: String, actual: String },
    #[error("config {path}")]
    Resources {
        path: PathBuf,
        #[source]
        source: Box<ResourceError>,
    },
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub device: DeviceChoice,
    /// Injection points that get a seed slot (left out: `r0c1` and `r1c1` on the CNN,
    /// every injection point on the transformer).
    #[serde(default = "default_slots")]
    pub slots: Vec<String>,
    #[serde(default)]
    pub plugins: Vec<PluginSource>,
    /// How every slot runs its seed: isolation and blend.
    #[serde(default)]
    pub slot: SlotConfig,
    #[serde(default)]
    pub host: HostConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    #[serde(default)]
    pub output: OutputConfig,
    /// How the ranks of a multi-process run work together (see
    /// [`crate::distributed`]).
    #[serde(default)]
    pub distributed: DistributedConfig,
    /// Deprecated keys met while reading, each with its replacement (for the caller to
    /// show once logging is up).
    #[serde(skip)]
    pub deprecations: Vec<String>,
}

fn default_slots() -> Vec<String> {
    vec!["r0c1".into(), "r1c1".into()]
}

/// Whether the config text sets `slots` (the default depends on the host, known only
/// once the whole config is read).
fn names_slots(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("slots"))
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
        /// Added to the denominator's square root (default [`DEFAULT_ADAM_EPS`]).
        #[serde(default = "adam_eps")]
        eps: f64,
    },
}

fn adam_eps() -> f64 {
    DEFAULT_ADAM_EPS
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
    /// Refuse a run whose estimated memory for one training step exceeds this many GiB.
    /// Default: the available memory (`MemAvailable`) on the CPU, a conservative
    /// [`DEFAULT_CUDA_MEMORY_GIB`] on CUDA (the smaller of the two for `device = "auto"`).
    pub memory_limit_gb: Option<f64>,
    /// Whole-step CUDA graphs on a CUDA device (see [`CudaGraphMode`]).
    pub cuda_graph: CudaGraphMode,
    /// `"fp32"`, or `"bf16"` mixed precision (see [`Precision`]).
    pub precision: Precision,
    /// The seed watchdog's limit, in seconds (default [`DEFAULT_SEED_TIMEOUT_S`]): a
    /// seed's forward that runs longer is reported while it still runs (a WARN naming
    /// slot, seed, blueprint and plugin file, and a `seed_overdue` event), and the seed
    /// is pruned (reason `timeout`) when the call returns, the step redone without it.
    /// The first call of each seed in train mode and the first in eval mode (a new
    /// seed's germination probe; a resumed seed's first step and validation) get
    /// [`crate::isolation::FIRST_CALL_FACTOR`] times the limit (lazy initialisation
    /// happens there). The backward pass, while seeds run, is watched as a whole and
    /// reported, never pruned: it runs no plugin code, only libtorch's kernels for the
    /// host and every seed together, so it cannot be pinned on one seed. A call that
    /// never returns cannot be stopped inside the process: the run stays blocked and the
    /// watchdog says so periodically (end the process and resume from the last
    /// checkpoint). See [`crate::isolation::watchdog`].
    pub seed_timeout_s: f64,
}

/// Default of [`TrainingConfig::seed_timeout_s`].
pub const DEFAULT_SEED_TIMEOUT_S: f64 = 60.0;

/// `[training] cuda_graph`: whether a training step on CUDA is captured once as a CUDA
/// graph and replayed for every batch of the same shape (recaptured when the model's
/// topology changes), or run eagerly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CudaGraphMode {
    /// Graphs where they can be used (a CUDA device, a build with CUDA graph support, a
    /// step that captures); eager elsewhere, with the reason logged.
    #[default]
    Auto,
    Off,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            epochs: 20,
            batch_size: 64,
            host_optimizer: OptimizerConfig::Sgd { lr: 0.05, momentum: 0.9, weight_decay: 5e-4 },
            seed_optimizer: OptimizerConfig::Adam {
                lr: 3e-3,
                beta1: 0.9,
                beta2: 0.999,
                weight_decay: 0.0,
                eps: DEFAULT_ADAM_EPS,
            },
            seed: 0,
            gradient_every: 10,
            memory_limit_gb: None,
            cuda_graph: CudaGraphMode::Auto,
            precision: Precision::Fp32,
            seed_timeout_s: DEFAULT_SEED_TIMEOUT_S,
        }
    }
}

impl TrainingConfig {
    /// [`TrainingConfig::seed_timeout_s`] as a duration (validated positive and finite;
    /// an out-of-range value saturates).
    pub fn seed_timeout(&self) -> std::time::Duration {
        std::time::Duration::try_from_secs_f64(self.seed_timeout_s).unwrap_or(std::time::Duration::MAX)
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
    /// This seed's first alpha target (0.5, 0.7 or 1.0) instead of `[slot]`'s (key
    /// `alpha_target`).
    #[serde(rename = "alpha_target", default, skip_serializing_if = "Option::is_none")]
    pub target: Option<AlphaTarget>,
    /// This seed's blend tempo instead of `[slot]`'s (key `blend_tempo`).
    #[serde(rename = "blend_tempo", default, skip_serializing_if = "Option::is_none")]
    pub tempo: Option<BlendTempo>,
}

impl ScheduledSeed {
    /// This seed's own blend choice, over its slot's settings.
    pub fn blend_choice(&self) -> BlendChoice {
        BlendChoice { target: self.target, tempo: self.tempo }
    }
}

/// Default of [`LifecycleConfig::plugin_param_factor`].
pub const DEFAULT_PLUGIN_PARAM_FACTOR: f64 = 100.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    pub gates: QualityGates,
    pub schedule: Vec<ScheduledSeed>,
    pub controller: ControllerConfig,
    /// A seed's parameters and buffers together may hold at most this many times its
    /// blueprint's declared `param_estimate` elements (and at least
    /// [`crate::plugin::MIN_SEED_ELEMENT_CAP`]); a bigger request is a create error.
    pub plugin_param_factor: f64,
    /// Deprecated aliases of the `[slot]` keys, once written under `[lifecycle]`: read
    /// (from configs and old checkpoints), moved to `slot` with a warning, never written.
    #[serde(default, skip_serializing)]
    isolate_gradients: Option<bool>,
    #[serde(default, skip_serializing)]
    blend: Option<BlendAlgorithm>,
    #[serde(default, skip_serializing)]
    alpha_curve: Option<AlphaCurve>,
    #[serde(default, skip_serializing)]
    blend_tempo: Option<BlendTempo>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            gates: QualityGates::strict(),
            schedule: Vec::new(),
            controller: ControllerConfig::default(),
            plugin_param_factor: DEFAULT_PLUGIN_PARAM_FACTOR,
            isolate_gradients: None,
            blend: None,
            alpha_curve: None,
            blend_tempo: None,
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
    /// Write TensorBoard event files (`tensorboard/`): the epoch's scalars and its
    /// lifecycle events as text.
    pub tensorboard: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("runs/default"), checkpoint: true, jsonl: true, tensorboard: true }
    }
}

impl RunConfig {
    /// Reads, parses and validates a config file. Relative paths in it (plugins, data,
    /// output) are taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::read(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Reads and parses a config file and resolves its relative paths, without
    /// [`RunConfig::validate`] (for callers that fill in more first, such as the CLI's
    /// default plugins, and validate after).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses TOML text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.migrate_deprecated();
        if config.host.topology() == Topology::Transformer && !names_slots(text) {
            if let Ok(points) = config.host.injection_points() {
                config.slots = points.into_iter().map(|(id, _)| id).collect();
            }
        }
        Ok(config)
    }

    /// Moves the deprecated `[lifecycle]` slot keys into `[slot]` (they win over the
    /// defaults there), and the flat `[host]` kernel switches into `[host.kernels]`, and
    /// records a note for each in `deprecations`.
    pub fn migrate_deprecated(&mut self) {
        self.host.migrate_deprecated(&mut self.deprecations);
        let (l, slot, notes) = (&mut self.lifecycle, &mut self.slot, &mut self.deprecations);
        let mut note = |key: &str| {
            notes.push(format!("`lifecycle.{key}` is deprecated: write it as `{key}` under `[slot]`"));
        };
        if let Some(v) = l.isolate_gradients.take() {
            slot.isolate_gradients = v;
            note("isolate_gradients");
        }
        if let Some(v) = l.blend.take() {
            slot.blend.algorithm = v;
            note("blend");
        }
        if let Some(v) = l.alpha_curve.take() {
            slot.blend.ramp.curve = v;
            note("alpha_curve");
        }
        if let Some(v) = l.blend_tempo.take() {
            slot.blend.ramp.tempo = v;
            note("blend_tempo");
        }
    }

    /// The built-in default job with `plugins` (the shipped ones: `norm` and the CNN
    /// library), the synthetic data set, the automatic controller's rotation.
    pub fn default_job(plugins: Vec<PathBuf>) -> Self {
        let mut config: RunConfig = toml::from_str(DEFAULT_JOB).expect("the built-in default job parses");
        config.plugins = plugins.into_iter().map(|path| PluginSource { path, sha256: None }).collect();
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
        if let Some(p) = &mut self.lifecycle.controller.plugin {
            join(p);
        }
        join(&mut self.output.dir);
        match &mut self.data {
            DataConfig::Cifar10 { path, .. } => join(path),
            DataConfig::Text(text) => {
                use crate::data::text::{TextSource, TokenizerConfig};
                if let TextSource::File { path } | TextSource::Bin { path } = &mut text.source {
                    join(path);
                }
                if let TokenizerConfig::File { path } = &mut text.tokenizer {
                    join(path);
                }
            }
            DataConfig::Synthetic { .. } => {}
        }
    }

    /// Checks what a parse cannot: values in range, slots and schedule consistent,
    /// controller and gates compatible, the host within the memory limit (arithmetic
    /// only, nothing is allocated), plugins present and matching their sha256 (an early
    /// answer: loading checks the pin again on the bytes it loads).
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.to_path_buf(), message };
        self.check_training().map_err(invalid)?;
        self.check_host().map_err(invalid)?;
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
        if self.lifecycle.controller.plugin.is_some() && !self.lifecycle.schedule.is_empty() {
            return Err(invalid(
                "lifecycle.schedule is the built-in controller's; with a controller plugin (lifecycle.controller.plugin) \
                 let the plugin germinate"
                    .into(),
            ));
        }
        let topology = self.host.topology();
        self.lifecycle
            .controller
            .validate(topology)
            .and_then(|()| self.distributed.validate(topology))
            .map_err(invalid)?;
        self.check_controller_and_gates().map_err(invalid)?;
        let factor = self.lifecycle.plugin_param_factor;
        if !(factor > 0.0 && factor.is_finite()) {
            return Err(invalid(format!("lifecycle.plugin_param_factor must be positive, got {factor}")));
        }
        self.check_resources(None)
            .map_err(|e| ConfigError::Resources { path: path.to_path_buf(), source: Box::new(e) })?;
        if self.plugins.is_empty() {
            return Err(invalid(
                "no plugins: add at least one [[plugins]] entry (the `esper` command uses its shipped plugins \
                 when a config has none)"
                    .into(),
            ));
        }
        for p in &self.plugins {
            p.check(path)?;
        }
        Ok(())
    }

    /// `[training]`'s own values in range.
    fn check_training(&self) -> Result<(), String> {
        let t = &self.training;
        if t.epochs == 0 {
            return Err("training.epochs must be at least 1".into());
        }
        if t.batch_size < 1 {
            return Err(format!("training.batch_size must be at least 1, got {}", t.batch_size));
        }
        for (key, opt) in
            [("training.host_optimizer", &t.host_optimizer), ("training.seed_optimizer", &t.seed_optimizer)]
        {
            opt.check(key)?;
        }
        if t.gradient_every == 0 {
            return Err("training.gradient_every must be at least 1".into());
        }
        let timeout = t.seed_timeout_s;
        if !(timeout > 0.0 && timeout.is_finite()) {
            return Err(format!("[training] seed_timeout_s = {timeout:?} must be > 0 and finite (seconds)"));
        }
        Ok(())
    }

    /// The host fits the data: a CNN classifier has at least two classes and one for
    /// each of the image set's (a label past the last logit fails the loss at the first
    /// step); a transformer reads text, with sequences no longer than its positions and a
    /// vocabulary that covers the tokenizer's where that is known before loading.
    fn check_host(&self) -> Result<(), String> {
        let data_kind = self.data.kind_name();
        match (&self.host, &self.data) {
            (HostConfig::Cnn(host), DataConfig::Synthetic { .. } | DataConfig::Cifar10 { .. }) => {
                let classes = host.num_classes;
                if classes < 2 {
                    return Err(format!(
                        "[host] num_classes = {classes} must be at least 2 (a classifier needs two classes)"
                    ));
                }
                let needed = self.data.num_classes().unwrap_or(0);
                if classes < needed {
                    return Err(format!(
                        "[host] num_classes = {classes} is fewer than the {needed} classes of the data set ([data] \
                         kind = \"{data_kind}\"); set it to at least {needed}"
                    ));
                }
                Ok(())
            }
            (HostConfig::Transformer(host), DataConfig::Text(text)) => {
                host.validate().map_err(|e| format!("[host] kind = \"transformer\": {e}"))?;
                text.validate().map_err(|e| format!("[data] kind = \"text\": {e}"))?;
                if text.block_size as i64 > host.block_size {
                    return Err(format!(
                        "[data] block_size = {} is longer than the host's positions ([host] block_size = {}); \
                         lower the first or raise the second",
                        text.block_size, host.block_size
                    ));
                }
                match text.known_vocab_size() {
                    Some(vocab) if (vocab as i64) > host.vocab_size => Err(format!(
                        "[host] vocab_size = {} is smaller than the tokenizer's vocabulary ({vocab}, {}); set it to \
                         at least {vocab}",
                        host.vocab_size,
                        text.tokenizer.describe()
                    )),
                    _ => Ok(()),
                }
            }
            (host, _) => Err(format!(
                "[host] kind = \"{}\" cannot train on [data] kind = \"{data_kind}\": {}",
                host.topology(),
                match host.topology() {
                    Topology::Cnn => "the CNN host classifies images (kind = \"synthetic\" or \"cifar10\")",
                    Topology::Transformer => "the transformer host reads token sequences (kind = \"text\")",
                }
            )),
        }
    }

    /// A seed can pass G2 before the controller prunes it, and G5 before it gives up
    /// on HOLDING. The controller walks every seed, scheduled ones too, so this holds
    /// whenever seeds can be germinated.
    fn check_controller_and_gates(&self) -> Result<(), String> {
        let ctl = &self.lifecycle.controller;
        if !ctl.enabled && self.lifecycle.schedule.is_empty() {
            return Ok(());
        }
        let gates = &self.lifecycle.gates;
        // At each epoch's end the controller prunes a seed with `max_training_epochs`
        // epochs in TRAINING, and only otherwise tries G2, which needs
        // `min_blending_epochs` of them.
        if ctl.max_training_epochs <= gates.min_blending_epochs {
            return Err(format!(
                "lifecycle.controller.max_training_epochs = {} prunes every seed before G2 can pass: G2 needs \
                 lifecycle.gates.min_blending_epochs = {} epochs in TRAINING ({} gates), and the controller prunes \
                 a seed once it has max_training_epochs of them; set lifecycle.controller.max_training_epochs to \
                 at least {} or lower lifecycle.gates.min_blending_epochs",
                ctl.max_training_epochs,
                gates.min_blending_epochs,
                match gates.mode {
                    crate::lifecycle::GateMode::Strict => "strict",
                    crate::lifecycle::GateMode::Permissive => "permissive",
                },
                gates.min_blending_epochs.saturating_add(1)
            ));
        }
        // G5 has no minimum epochs, but the HOLDING limit is checked first, one epoch
        // after the seed entered HOLDING.
        if ctl.max_holding_epochs < 2 {
            return Err(format!(
                "lifecycle.controller.max_holding_epochs = {} prunes every seed in HOLDING before G5 is tried \
                 (the limit is checked first, one epoch after a seed enters HOLDING); set it to at least 2",
                ctl.max_holding_epochs
            ));
        }
        Ok(())
    }
}

/// The built-in default job (plugins are filled in by [`RunConfig::default_job`]).
pub const DEFAULT_JOB: &str = include_str!("default_job.toml");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blend::{AlphaRamp, BlendSettings};

    fn parse(text: &str) -> Result<RunConfig, ConfigError> {
        RunConfig::parse(text, Path::new("run.toml"))
    }

    #[test]
    fn slot_settings_live_in_slot_and_the_old_lifecycle_keys_still_work_with_a_warning() {
        let keys = "blend = \"multiply\"\nalpha_curve = \"cosine\"\nblend_tempo = 7\nisolate_gradients = false\n";
        let new = parse(&format!("[slot]\n{keys}")).unwrap();
        let ramp =
            AlphaRamp { curve: AlphaCurve::Cosine, tempo: BlendTempo::from_epochs(7), target: AlphaTarget::Full };
        assert_eq!(new.slot.blend, BlendSettings { algorithm: BlendAlgorithm::Multiply, ramp });
        assert!(!new.slot.isolate_gradients);
        assert!(new.deprecations.is_empty());
        let old = parse(&format!("[lifecycle]\n{keys}")).unwrap();
        assert_eq!(old.slot, new.slot, "the deprecated keys mean the same");
        assert_eq!(old.deprecations.len(), 4, "{:?}", old.deprecations);
        assert!(old.deprecations[0].contains("`lifecycle.isolate_gradients` is deprecated"), "{:?}", old.deprecations);
        assert!(old.deprecations[2].contains("`lifecycle.alpha_curve` is deprecated"), "{:?}", old.deprecations);
        // Written back (as in a checkpoint), only `[slot]` remains, and it reads the same.
        let json = serde_json::to_value(&old).unwrap();
        assert!(json["lifecycle"].get("blend").is_none() && json["slot"]["blend"] == "multiply", "{json}");
        assert!(json["lifecycle"].get("blend_tempo").is_none() && json["slot"]["blend_tempo"] == 7, "{json}");
        let again: RunConfig = serde_json::from_value(json).unwrap();
        assert_eq!(again.slot, new.slot);
        assert!(
            parse(
                "[slot]
blnd = \"add\"
"
            )
            .unwrap_err()
            .to_string()
            .contains("blnd"),
            "unknown keys refused"
        );
    }

    #[test]
    fn the_host_kind_is_cnn_by_default_and_each_host_needs_its_kind_of_data() {
        let path = Path::new("run.toml");
        let absent = parse("[host]\nblocks = 2\n").unwrap();
        assert_eq!(absent.host.topology(), Topology::Cnn);
        assert_eq!(parse("[host]\nkind = \"cnn\"\nblocks = 2\n").unwrap().host, absent.host);
        // An old checkpoint's config (no `kind`) reads as the CNN.
        let mut json = serde_json::to_value(&absent.host).unwrap();
        assert_eq!(json.as_object_mut().unwrap().remove("kind"), Some("cnn".into()));
        assert_eq!(serde_json::from_value::<HostConfig>(json).unwrap(), absent.host);
        let invalid = |text: &str| parse(text).unwrap().validate(path).unwrap_err().to_string();
        assert_eq!(
            invalid("[host]\nkind = \"transformer\"\n"),
            "config run.toml: [host] kind = \"transformer\" cannot train on [data] kind = \"synthetic\": the \
             transformer host reads token sequences (kind = \"text\")"
        );
        assert!(invalid("[data]\nkind = \"text\"\n").contains("the CNN host classifies images"));
        let text = "[host]\nkind = \"transformer\"\nblock_size = 32\n[data]\nkind = \"text\"\nblock_size = 64\n";
        assert!(invalid(text)
            .contains("[data] block_size = 64 is longer than the host's positions ([host] block_size = 32)"));
        let text = "[host]\nkind = \"transformer\"\nvocab_size = 100\n[data]\nkind = \"text\"\n";
        assert!(invalid(text).contains("[host] vocab_size = 100 is smaller than the tokenizer's vocabulary (256"));
        let text = "[host]\nkind = \"transformer\"\n[data]\nkind = \"text\"\n";
        assert_eq!(parse(text).unwrap().slots, ["r0c0", "r0c1", "r0c2"], "every point by default");
        assert_eq!(parse(&format!("slots = [\"r0c1\"]\n{text}")).unwrap().slots, ["r0c1"]);
        let text = "[host]\nkind = \"transformer\"\nn_layer = 4\n[data]\nkind = \"text\"\n";
        assert!(invalid(text).contains("host.n_layer (4) is not a multiple of host.num_segments (3)"));
        let e = parse("[host]\nkind = \"rnn\"\n").unwrap_err().to_string();
        assert!(e.contains("rnn") && e.contains("`cnn`") && e.contains("`transformer`"), "{e}");
    }

    #[test]
    fn every_default_blend_setting_is_the_one_of_blend_settings() {
        let defaults = BlendSettings::default();
        let empty = parse("").unwrap();
        assert_eq!(empty.slot, SlotConfig::default());
        assert_eq!(empty.slot.blend, defaults, "no [slot]");
        assert_eq!(parse("[slot]\nisolate_gradients = false\n").unwrap().slot.blend, defaults, "no blend key");
        // Written out (a checkpoint's config), the defaults are the documented keys.
        let json = serde_json::to_value(&empty.slot).unwrap();
        let documented = serde_json::json!({"isolate_gradients": true, "blend": "add", "alpha_curve": "sigmoid",
            "blend_tempo": 5, "alpha_target": 1.0});
        assert_eq!(json, documented);
        // Keys from before `alpha_target` (tests/data/checkpoint-v1) read with its default.
        let v1 = serde_json::json!({"isolate_gradients": true, "blend": "add", "alpha_curve": "sigmoid",
            "blend_tempo": 2});
        let v1: SlotConfig = serde_json::from_value(v1).unwrap();
        assert_eq!(v1.blend.ramp.target, defaults.ramp.target);
        // A schedule entry without a choice of its own blends as its slot.
        let c = parse("[[lifecycle.schedule]]\nepoch = 1\nslot = \"r0c1\"\nblueprint = \"norm\"\n").unwrap();
        assert_eq!(c.lifecycle.schedule[0].blend_choice(), BlendChoice::default());
    }

    #[test]
    fn a_schedule_entry_chooses_its_own_tempo_and_target() {
        let entry = "[[lifecycle.schedule]]\nepoch = 1\nslot = \"r0c1\"\nblueprint = \"norm\"\n";
        let c = parse(&format!("{entry}alpha_target = 0.7\nblend_tempo = 3\n")).unwrap();
        let s = &c.lifecycle.schedule[0];
        let choice = BlendChoice { target: Some(AlphaTarget::SevenTenths), tempo: Some(BlendTempo::from_epochs(3)) };
        assert_eq!(s.blend_choice(), choice);
        let json = serde_json::to_value(s).unwrap();
        assert_eq!((&json["alpha_target"], &json["blend_tempo"]), (&serde_json::json!(0.7), &serde_json::json!(3)));
        let e = parse(&format!("{entry}alpha_target = 0.6\n")).unwrap_err().to_string();
        assert!(e.contains("must be 0.5, 0.7 or 1.0"), "{e}");
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
        let c = RunConfig::default_job(vec![PathBuf::from("libesper_norm.so"), PathBuf::from("libesper_cnn.so")]);
        assert!(c.lifecycle.controller.enabled);
        assert_eq!(c.plugins.len(), 2);
        assert_eq!(c.lifecycle.controller.rotation(Topology::Cnn).len(), 5, "esper-lite's rotation");
        c.check_controller_and_gates().unwrap();
        c.check_resources(None).unwrap();
    }

    #[test]
    fn controller_defaults_leave_room_for_every_gate() {
        use crate::lifecycle::gates::DEFAULT_MIN_BLENDING_EPOCHS;
        let ctl = ControllerConfig::default();
        assert!(ctl.max_training_epochs > DEFAULT_MIN_BLENDING_EPOCHS);
        assert!(ctl.max_holding_epochs >= 2);
        // The defaults (strict gates, controller on) and the default job's permissive gates.
        parse("").unwrap().check_controller_and_gates().unwrap();
        parse("[lifecycle.gates]\nmode = \"permissive\"\n").unwrap().check_controller_and_gates().unwrap();
    }

    #[test]
    fn a_controller_that_prunes_before_g2_is_refused_naming_both_settings() {
        let c = parse("[lifecycle.controller]\nmax_training_epochs = 8\n").unwrap();
        let e = c.validate(Path::new("run.toml")).unwrap_err().to_string();
        assert!(e.starts_with("config run.toml: lifecycle.controller.max_training_epochs = 8 prunes"), "{e}");
        assert!(e.contains("lifecycle.gates.min_blending_epochs = 10") && e.contains("strict"), "{e}");
        assert!(e.contains("at least 11"), "{e}");
        // Equal is not enough: the limit is checked before G2 is tried.
        let c = parse("[lifecycle.gates]\nmode = \"permissive\"\nmin_blending_epochs = 4\n[lifecycle.controller]\nmax_training_epochs = 4\n").unwrap();
        let e = c.check_controller_and_gates().unwrap_err();
        assert!(
            e.contains("max_training_epochs = 4")
                && e.contains("min_blending_epochs = 4 epochs in TRAINING (permissive"),
            "{e}"
        );
        let c = parse("[lifecycle.gates]\nmin_blending_epochs = 4\n[lifecycle.controller]\nmax_training_epochs = 5\n")
            .unwrap();
        c.check_controller_and_gates().unwrap();
        // A schedule alone is walked by the same controller.
        let c = parse("[lifecycle.controller]\nenabled = false\nmax_training_epochs = 3\n").unwrap();
        c.check_controller_and_gates().unwrap();
        let c = parse("[lifecycle.controller]\nenabled = false\nmax_training_epochs = 3\n[[lifecycle.schedule]]\nepoch = 1\nslot = \"r0c1\"\nblueprint = \"norm\"\n").unwrap();
        assert!(c.check_controller_and_gates().is_err());
        let c = parse("[lifecycle.controller]\nmax_holding_epochs = 1\n").unwrap();
        let e = c.check_controller_and_gates().unwrap_err();
        assert!(e.contains("lifecycle.controller.max_holding_epochs = 1") && e.contains("G5"), "{e}");
    }

    #[test]
    fn a_config_without_plugins_says_what_to_do() {
        let e = parse("").unwrap().validate(Path::new("run.toml")).unwrap_err().to_string();
        assert!(e.contains("no plugins") && e.contains("shipped plugins"), "{e}");
    }
}
