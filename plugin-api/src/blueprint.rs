//! Blueprints: what a plugin exports, described and registered with `inventory`.

use crate::{abi::SeedBox, seed::seed_box, Params, PluginError, Seed};
use abi_stable::{std_types::RString, StableAbi};
use serde::{de::DeserializeOwned, Deserialize};

/// A blueprint: a named recipe for seeds. Implemented by plugin authors and
/// registered with [`register_blueprint!`](crate::register_blueprint).
pub trait Blueprint: 'static {
    /// The blueprint's name, unique within its topology (e.g. `"norm"`).
    const NAME: &'static str;
    /// The host topology it fits (e.g. `"cnn"`).
    const TOPOLOGY: &'static str;
    /// One line saying what it does.
    const DESCRIPTION: &'static str;
    /// Declared parameter estimate (checked by the conformance suite within a factor).
    const PARAM_ESTIMATE: u64;
    /// The blueprint's options, deserialized from a JSON object. Use
    /// `#[serde(deny_unknown_fields)]` so unknown keys are refused by name, or
    /// [`NoOptions`] when there are none.
    type Options: DeserializeOwned;
    /// The seed type this blueprint creates.
    type Seed: Seed;

    /// Creates a seed for `channels` input channels, asking `params` for its parameters.
    fn create(params: &mut Params<'_>, channels: i64, options: Self::Options) -> Result<Self::Seed, PluginError>;

    /// The JSON schema of [`Self::Options`], shown by `esper plugins inspect` (ABI 1.1).
    /// `None` (the default): the blueprint publishes none.
    fn options_schema() -> Option<serde_json::Value> {
        None
    }
}

/// Options of a blueprint that takes none: any key is an error.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

/// What the runtime learns about a blueprint.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct BlueprintDescriptor {
    pub name: RString,
    pub topology: RString,
    pub param_estimate: u64,
    pub description: RString,
}

impl BlueprintDescriptor {
    /// The registry key, `topology:name`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.topology, self.name)
    }
}

/// One blueprint's entry in a plugin's `inventory`.
pub struct Registration {
    pub(crate) name: &'static str,
    pub(crate) descriptor: fn() -> BlueprintDescriptor,
    pub(crate) create: fn(&mut Params<'_>, i64, &str) -> Result<SeedBox, PluginError>,
    pub(crate) options_schema: fn() -> Option<serde_json::Value>,
}

impl Registration {
    /// The registration of blueprint `B` (used by `register_blueprint!`).
    pub const fn of<B: Blueprint>() -> Self {
        Self { name: B::NAME, descriptor: descriptor::<B>, create: create::<B>, options_schema: B::options_schema }
    }
}

inventory::collect!(Registration);

fn descriptor<B: Blueprint>() -> BlueprintDescriptor {
    BlueprintDescriptor {
        name: B::NAME.into(),
        topology: B::TOPOLOGY.into(),
        param_estimate: B::PARAM_ESTIMATE,
        description: B::DESCRIPTION.into(),
    }
}

fn create<B: Blueprint>(params: &mut Params<'_>, channels: i64, options_json: &str) -> Result<SeedBox, PluginError> {
    let options = parse_options::<B::Options>(B::NAME, options_json)?;
    if channels <= 0 {
        return Err(PluginError::invalid_argument(format!(
            "blueprint `{}`: channels must be positive, got {channels}",
            B::NAME
        )));
    }
    B::create(params, channels, options).map(seed_box)
}

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
    fn options_accept_known_and_empty() {
        assert_eq!(parse_options::<Opts>("b", r#"{"width": 3}"#).unwrap(), Opts { width: 3 });
        assert_eq!(parse_options::<Opts>("b", "").unwrap(), Opts { width: 0 });
    }

    #[test]
    fn unknown_option_is_named() {
        let e = parse_options::<Opts>("b", r#"{"wdith": 3}"#).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::BadOptions);
        assert!(e.message.contains("unknown field `wdith`"), "{}", e.message);
        let e = parse_options::<NoOptions>("norm", r#"{"groups": 4}"#).unwrap_err();
        assert!(
            e.message.contains("blueprint `norm`") && e.message.contains("unknown field `groups`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn options_must_be_an_object() {
        let e = parse_options::<Opts>("b", "[3]").unwrap_err();
        assert!(e.message.contains("must be a JSON object"), "{}", e.message);
        let e = parse_options::<Opts>("b", "{").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }
}
