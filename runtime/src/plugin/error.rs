//! Errors of the plugin loader and blueprint registry. Each names the file (or the
//! blueprint) and the cause.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PluginError {
    #[error("plugin library {path} does not exist")]
    NotFound { path: PathBuf },

    #[error("{path} is not an Esper plugin: {cause}")]
    NotAPlugin { path: PathBuf, cause: String },

    #[error("plugin {path} has an incompatible ABI layout (built against a different plugin API?): {cause}")]
    AbiMismatch { path: PathBuf, cause: String },

    #[error("plugin {path} was built with other versions than this runtime: {}", .mismatches.join("; "))]
    VersionMismatch { path: PathBuf, mismatches: Vec<String> },

    #[error("blueprint `{key}` is exported by two plugins: {first} and {second}")]
    Duplicate { key: String, first: PathBuf, second: PathBuf },

    #[error("plugin folder {path} has no plugin libraries (*.so)")]
    EmptyFolder { path: PathBuf },

    #[error("cannot read plugin folder {path}: {cause}")]
    Folder { path: PathBuf, cause: String },

    #[error("unknown blueprint `{name}`; available: {}", if .available.is_empty() { "none (no plugin loaded)".to_string() } else { .available.join(", ") })]
    UnknownBlueprint { name: String, available: Vec<String> },

    #[error("blueprint `{name}` is ambiguous; say which: {}", .candidates.join(", "))]
    Ambiguous { name: String, candidates: Vec<String> },

    #[error("bad options for blueprint `{key}` (plugin {path}): {message}")]
    BadOptions { key: String, path: PathBuf, message: String },

    #[error("plugin {path} panicked in blueprint `{key}` (contained; the runtime is unaffected): {message}")]
    Panicked { key: String, path: PathBuf, message: String },

    #[error("blueprint `{key}` (plugin {path}) failed: {message}")]
    Failed { key: String, path: PathBuf, message: String },

    #[error("blueprint `{key}` (plugin {path}) asked for an invalid parameter: {message}")]
    BadParameter { key: String, path: PathBuf, message: String },

    #[error("plugin {path}: sha256 mismatch: the pin says {expected}, the file has {actual}; nothing was loaded")]
    PinMismatch { path: PathBuf, expected: String, actual: String },

    #[error("plugin {path}: cannot load it pinned: {cause}")]
    Pinned { path: PathBuf, cause: String },
}

impl PluginError {
    /// Maps an error reported by a plugin into a runtime error naming blueprint and file.
    pub(crate) fn from_plugin(key: &str, path: &std::path::Path, e: esper_plugin_api::PluginError) -> Self {
        use esper_plugin_api::ErrorKind as K;
        let (key, path, message) = (key.to_string(), path.to_path_buf(), e.message.into_string());
        match e.kind {
            K::BadOptions => Self::BadOptions { key, path, message },
            K::Panic => Self::Panicked { key, path, message },
            _ => Self::Failed { key, path, message },
        }
    }
}
