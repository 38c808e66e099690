//! `[host]` of a run config: which built-in host the run builds, and its settings.
//!
//! ```toml
//! [host]                  # kind = "cnn" is the default: every older config loads
//! blocks = 3
//!
//! [host]
//! kind = "transformer"
//! n_embd = 128
//! ```

use super::{
    budget::{BudgetError, HostBudget},
    transformer, CnnHost, CnnHostConfig, Host, HostError, HostKernels, MemoryFormat, Topology, TransformerHost,
    TransformerHostConfig,
};
use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};
use tch::nn;

/// A built-in host and its settings, tagged by `kind` (`cnn` when absent).
#[derive(Debug, Clone, PartialEq)]
pub enum HostConfig {
    Cnn(CnnHostConfig),
    Transformer(TransformerHostConfig),
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig::Cnn(CnnHostConfig::default())
    }
}

impl From<CnnHostConfig> for HostConfig {
    fn from(c: CnnHostConfig) -> Self {
        HostConfig::Cnn(c)
    }
}

impl From<TransformerHostConfig> for HostConfig {
    fn from(c: TransformerHostConfig) -> Self {
        HostConfig::Transformer(c)
    }
}

/// The serde form, for writing: the settings' table with `kind` beside them.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Tagged<'a> {
    Cnn(&'a CnnHostConfig),
    Transformer(&'a TransformerHostConfig),
}

impl Serialize for HostConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HostConfig::Cnn(c) => Tagged::Cnn(c),
            HostConfig::Transformer(t) => Tagged::Transformer(t),
        }
        .serialize(s)
    }
}

/// Reading `[host]` as one plain table of every host's keys, each optional, so that the
/// TOML reader reports a misspelt key or a wrong type at its own line (a tagged enum
/// would buffer the table and lose the position); [`RawHost::into_config`] then takes
/// the keys of the host `kind` names (defaults for the rest) and refuses the other
/// host's. `cnn_optional` keys are `Option`s in the CNN host's settings.
macro_rules! raw_host {
    (
        cnn { $($c:ident: $ct:ty),* $(,)? }
        cnn_optional { $($co:ident: $cot:ty),* $(,)? }
        transformer { $($t:ident: $tt:ty),* $(,)? }
    ) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawHost {
            #[serde(default)]
            kind: Option<Topology>,
            $(#[serde(default)] $c: Option<$ct>,)*
            $(#[serde(default)] $co: Option<$cot>,)*
            $(#[serde(default)] $t: Option<$tt>,)*
        }

        impl RawHost {
            fn into_config(self) -> Result<HostConfig, String> {
                let kind = self.kind.unwrap_or(Topology::Cnn);
                let cnn_keys = [$((stringify!($c), self.$c.is_some()),)* $((stringify!($co), self.$co.is_some()),)*];
                let transformer_keys = [$((stringify!($t), self.$t.is_some()),)*];
                let stray = match kind {
                    Topology::Cnn => transformer_keys.iter().find(|(_, set)| *set),
                    Topology::Transformer => cnn_keys.iter().find(|(_, set)| *set),
                };
                if let Some((key, _)) = stray {
                    let owner = match kind {
                        Topology::Cnn => Topology::Transformer,
                        Topology::Transformer => Topology::Cnn,
                    };
                    return Err(format!(
                        "[host] `{key}` is a setting of the {owner} host, and this host is kind = \"{kind}\" \
                         (the default is \"cnn\")"
                    ));
                }
                Ok(match kind {
                    Topology::Cnn => {
                        let mut c = CnnHostConfig::default();
                        $(if let Some(v) = self.$c { c.$c = v; })*
                        $(if self.$co.is_some() { c.$co = self.$co; })*
                        HostConfig::Cnn(c)
                    }
                    Topology::Transformer => {
                        let mut t = TransformerHostConfig::default();
                        $(if let Some(v) = self.$t { t.$t = v; })*
                        HostConfig::Transformer(t)
                    }
                })
            }
        }
    };
}

raw_host! {
    cnn {
        in_channels: i64, blocks: usize, base_channels: i64, kernel_size: i64, num_classes: i64,
        memory_format: MemoryFormat, kernels: HostKernels,
    }
    cnn_optional { pool_layers: usize, fused_pool: bool, fused_batchnorm: bool, first_conv_kernel: bool, wgrad_kernel: bool }
    transformer {
        vocab_size: i64, n_embd: i64, n_head: i64, n_layer: usize, block_size: i64, num_segments: usize, dropout: f64,
    }
}

impl<'de> Deserialize<'de> for HostConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawHost::deserialize(d)?.into_config().map_err(D::Error::custom)
    }
}

impl HostConfig {
    pub fn topology(&self) -> Topology {
        match self {
            HostConfig::Cnn(_) => Topology::Cnn,
            HostConfig::Transformer(_) => Topology::Transformer,
        }
    }

    /// The CNN host's settings, if this is one.
    pub fn cnn(&self) -> Option<&CnnHostConfig> {
        match self {
            HostConfig::Cnn(c) => Some(c),
            HostConfig::Transformer(_) => None,
        }
    }

    /// The transformer host's settings, if this is one.
    pub fn transformer(&self) -> Option<&TransformerHostConfig> {
        match self {
            HostConfig::Transformer(t) => Some(t),
            HostConfig::Cnn(_) => None,
        }
    }

    /// The host, its parameters under `path` (the one place a config becomes a host).
    pub fn build(&self, path: &nn::Path) -> Result<Box<dyn Host>, HostError> {
        Ok(match self {
            HostConfig::Cnn(c) => Box::new(CnnHost::new(path, c.clone())?),
            HostConfig::Transformer(t) => Box::new(TransformerHost::new(path, t.clone())?),
        })
    }

    /// Injection points (id, channels) in execution order, from the settings alone.
    pub fn injection_points(&self) -> Result<Vec<(String, i64)>, BudgetError> {
        match self {
            HostConfig::Cnn(c) => c.injection_points(),
            HostConfig::Transformer(t) => transformer::budget::injection_points(t),
        }
    }

    /// The classes of the host's logits: the CNN's `num_classes`, the transformer's
    /// `vocab_size`.
    pub fn num_outputs(&self) -> i64 {
        match self {
            HostConfig::Cnn(c) => c.num_classes,
            HostConfig::Transformer(t) => t.vocab_size,
        }
    }

    /// Moves the CNN host's deprecated flat kernel switches into `[host.kernels]`.
    pub fn migrate_deprecated(&mut self, notes: &mut Vec<String>) {
        if let HostConfig::Cnn(c) = self {
            c.migrate_deprecated(notes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(text: &str) -> Result<HostConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn kind_is_cnn_when_absent_and_round_trips_through_json() {
        let absent = toml("blocks = 2\n").unwrap();
        assert_eq!(absent, HostConfig::Cnn(CnnHostConfig { blocks: 2, ..Default::default() }));
        assert_eq!(toml("kind = \"cnn\"\nblocks = 2\n").unwrap(), absent);
        let json = serde_json::to_value(&absent).unwrap();
        assert_eq!(json["kind"], "cnn");
        assert_eq!(serde_json::from_value::<HostConfig>(json).unwrap(), absent);
        let t = toml("kind = \"transformer\"\nn_embd = 64\nn_head = 4\n").unwrap();
        let want = TransformerHostConfig { n_embd: 64, n_head: 4, ..Default::default() };
        assert_eq!(t, HostConfig::Transformer(want));
        assert_eq!((t.topology(), t.num_outputs()), (Topology::Transformer, 50257));
        assert_eq!(serde_json::from_value::<HostConfig>(serde_json::to_value(&t).unwrap()).unwrap(), t);
    }

    #[test]
    fn unknown_kinds_and_keys_of_the_other_host_are_refused() {
        let e = toml("kind = \"rnn\"\n").unwrap_err().to_string();
        assert!(e.contains("rnn") && e.contains("`cnn`") && e.contains("`transformer`"), "{e}");
        let e = toml("kind = \"transformer\"\nblocks = 3\n").unwrap_err().to_string();
        assert!(
            e.contains("[host] `blocks` is a setting of the cnn host, and this host is kind = \"transformer\""),
            "{e}"
        );
        let e = toml("n_embd = 64\n").unwrap_err().to_string();
        assert!(e.contains("`n_embd` is a setting of the transformer host") && e.contains("the default is"), "{e}");
        // A misspelt key is reported at its own line.
        let e = toml("kind = \"transformer\"\n\nn_embed = 64\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("unknown field `n_embed`"), "{e}");
    }

    #[test]
    fn every_key_of_both_hosts_reads_back() {
        // A key added to a host's settings but not to `raw_host!` fails here.
        let cnn = CnnHostConfig {
            pool_layers: Some(2),
            memory_format: MemoryFormat::Contiguous,
            kernels: HostKernels { pool: false, ..Default::default() },
            ..Default::default()
        };
        let transformer = TransformerHostConfig { n_layer: 4, num_segments: 2, dropout: 0.25, ..Default::default() };
        for config in [HostConfig::Cnn(cnn), HostConfig::Transformer(transformer)] {
            let json = serde_json::to_value(&config).unwrap();
            assert_eq!(serde_json::from_value::<HostConfig>(json).unwrap(), config);
        }
    }

    #[test]
    fn the_points_from_the_settings_are_the_built_hosts() {
        for config in [
            HostConfig::Cnn(CnnHostConfig { base_channels: 4, ..Default::default() }),
            HostConfig::Transformer(TransformerHostConfig {
                vocab_size: 40,
                n_embd: 16,
                n_head: 2,
                n_layer: 4,
                block_size: 8,
                num_segments: 2,
                dropout: 0.0,
            }),
        ] {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let host = config.build(&vs.root()).unwrap();
            let built: Vec<(String, i64)> =
                host.injection_points().iter().map(|p| (p.id.clone(), p.channels)).collect();
            assert_eq!(config.injection_points().unwrap(), built);
            assert_eq!(host.topology(), config.topology());
        }
    }
}
