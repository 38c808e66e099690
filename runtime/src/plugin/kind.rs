//! What kind of library a plugin is, and what it says about a blueprint's options.

use esper_plugin_api::abi::AbiVersion;
use std::fmt;

/// How a plugin library reaches libtorch. Shown by `esper plugins list` and `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// Built against `esper-plugin-api` with tch: it shares the runtime's libtorch
    /// tensors, so its libtorch and tch versions must equal the runtime's.
    Native,
    /// Built against `esper-plugin-portable`: no libtorch of its own, every tensor op
    /// through the runtime's op table (`plugin-sys/include/esper_plugin.h`), so it loads
    /// in any runtime of its ABI major whatever libtorch that runtime has.
    Portable,
}

impl PluginKind {
    /// The kind's name as the command line shows it (`native`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Portable => "portable",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a plugin says about a blueprint's options (`describe_options`, ABI 1.1).
#[derive(Debug, Clone, PartialEq)]
pub enum OptionsSchema {
    /// The options' JSON schema.
    Schema(serde_json::Value),
    /// The blueprint publishes no schema.
    NotPublished,
    /// The plugin was built against an ABI without `describe_options` (1.0).
    NotInAbi(AbiVersion),
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_read_as_the_command_line_shows_them() {
        assert_eq!(super::PluginKind::Native.to_string(), "native");
        assert_eq!(super::PluginKind::Portable.to_string(), "portable");
    }
}
