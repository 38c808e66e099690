//! The author's side of a portable blueprint: the same shape as a native one.

use crate::{sys, Params, PluginError, Tensor};
use serde::{de::DeserializeOwned, Deserialize};

/// A blueprint: its name, metadata, options and how to create a seed.
pub trait Blueprint: 'static {
    /// The blueprint's name, unique within its topology.
    const NAME: &'static str;
    /// The host topology it fits (`cnn`).
    const TOPOLOGY: &'static str;
    const DESCRIPTION: &'static str;
    /// Roughly how many elements a seed holds at 64 channels (the runtime caps a seed at
    /// a multiple of this).
    const PARAM_ESTIMATE: u64;
    /// The blueprint's options (a JSON object; refuse unknown keys with
    /// `#[serde(deny_unknown_fields)]`).
    type Options: DeserializeOwned;
    type Seed: Seed;

    /// Creates a seed for `channels` input channels, asking `params` for its parameters.
    fn create(params: &mut Params<'_>, channels: i64, options: Self::Options) -> Result<Self::Seed, PluginError>;

    /// The JSON schema of [`Self::Options`], shown by `esper plugins inspect`.
    fn options_schema() -> Option<serde_json::Value> {
        None
    }
}

/// A seed: the module a blueprint creates.
///
/// The runtime checks every forward: the output has the input's shape, dtype and device
/// (returning the input itself is fine). Errors and panics reach the runtime as errors.
pub trait Seed: Send + 'static {
    fn forward(&self, input: &Tensor, train: bool) -> Result<Tensor, PluginError>;
}

/// Options of a blueprint that takes none: any key is an error.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

/// Parses blueprint options: a JSON object (empty text means `{}`), unknown keys refused.
pub fn parse_options<T: DeserializeOwned>(blueprint: &str, json: &str) -> Result<T, PluginError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| PluginError::bad_options(format!("blueprint `{blueprint}`: options are not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(PluginError::bad_options(format!(
            "blueprint `{blueprint}`: options must be a JSON object, got {value}"
        )));
    }
    serde_json::from_value(value).map_err(|e| PluginError::bad_options(format!("blueprint `{blueprint}`: {e}")))
}

/// One blueprint in a plugin's inventory (what `register_blueprint!` submits).
pub struct Registration {
    pub(crate) name: &'static str,
    pub(crate) topology: &'static str,
    pub(crate) description: &'static str,
    pub(crate) param_estimate: u64,
    pub(crate) options_schema: fn() -> Option<serde_json::Value>,
    pub(crate) create: sys::CreateFn,
    pub(crate) forward: sys::ForwardFn,
    pub(crate) destroy: sys::DestroyFn,
}

impl Registration {
    /// The registration of blueprint `B`.
    pub const fn of<B: Blueprint>() -> Self {
        Self {
            name: B::NAME,
            topology: B::TOPOLOGY,
            description: B::DESCRIPTION,
            param_estimate: B::PARAM_ESTIMATE,
            options_schema: B::options_schema,
            create: crate::export::create::<B>,
            forward: crate::export::forward::<B>,
            destroy: crate::export::destroy::<B>,
        }
    }
}

inventory::collect!(Registration);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        #[serde(default)]
        width: u32,
    }

    #[test]
    fn options_parse_like_a_native_plugins() {
        assert_eq!(parse_options::<Opts>("b", r#"{"width": 3}"#).unwrap(), Opts { width: 3 });
        assert_eq!(parse_options::<Opts>("b", " ").unwrap(), Opts { width: 0 });
        let e = parse_options::<Opts>("b", r#"{"wdith": 3}"#).unwrap_err();
        assert!(e.message.contains("unknown field `wdith`"), "{}", e.message);
        assert!(parse_options::<NoOptions>("n", "[1]").unwrap_err().message.contains("must be a JSON object"));
    }
}
