//! Errors of the plugin loader and blueprint registry. Each names the file (or the
//! blueprint) and the cause: the system's error as the source; the dynamic loader's
//! text (rewritten to name the file given, not a pinned load's private copy), a
//! portable library's refusal and a plugin's own message (which crossed the ABI as
//! text) as text.

use super::FileProblem;
use esper_plugin_api::abi::Mismatch;
use std::path::PathBuf;
use thiserror::Error;

/// Why a plugin library was not loaded, or a blueprint not resolved or created.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("plugin library {path} does not exist")]
    NotFound { path: PathBuf },

    /// Refused before the dynamic loader saw it (a directory, a symbolic link loop, a
    /// truncated library, one for another architecture, not ELF at all, ...).
    #[error("plugin {path}: cannot open it as a shared library: {problem}; nothing was loaded")]
    BadFile { path: PathBuf, problem: FileProblem },

    #[error("{path} is not an Esper plugin: {cause}")]
    NotAPlugin { path: PathBuf, cause: String },

    #[error("plugin {path} has an incompatible ABI layout (built against a different plugin API?): {cause}")]
    AbiMismatch { path: PathBuf, cause: String },

    #[error("plugin {path} was built with other versions than this runtime: {}", join(.mismatches))]
    VersionMismatch { path: PathBuf, mismatches: Vec<Mismatch> },

    #[error("portable plugin {path} was refused: {cause}")]
    PortableRefused { path: PathBuf, cause: String },

    #[error("blueprint `{key}` is exported by two plugins: {first} and {second}")]
    Duplicate { key: String, first: PathBuf, second: PathBuf },

    #[error("plugin folder {path} has no plugin libraries (*.so)")]
    EmptyFolder { path: PathBuf },

    #[error("cannot read plugin folder {path}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

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

    /// A pinned load could not read the file, or write the private copy it loads
    /// (`step`: "cannot read it", "cannot write a private copy to load").
    #[error("plugin {path}: cannot load it pinned: {step}")]
    PinnedIo {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("controller `{name}` of plugin {path}: {message}")]
    Controller { name: String, path: PathBuf, message: String },

    #[error("plugin {path}: cannot load it pinned: a sha256 pin names one library file, not a folder")]
    PinnedFolder { path: PathBuf },

    #[error("plugin {path}: cannot load it pinned: it is already loaded without a pin; pin every entry that names it")]
    LoadedUnpinned { path: PathBuf },
}

fn join(mismatches: &[Mismatch]) -> String {
    mismatches.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl LoadError {
    /// Maps an error reported by a plugin into a runtime error naming blueprint and file.
    /// A libtorch error inside the message keeps its reason and loses its C++ frame list;
    /// the plugin's text is sanitised ([`super::text::sanitize`]: control characters
    /// escaped, length capped). The full text goes to the debug log.
    pub(crate) fn from_plugin(key: &str, path: &std::path::Path, e: esper_plugin_api::PluginError) -> Self {
        use esper_plugin_api::ErrorKind as K;
        let context = format!("blueprint `{key}` ({})", path.display());
        let message = super::text::sanitize(&crate::torch_error::summarize(&context, e.message.as_str())).into_owned();
        let (key, path) = (key.to_string(), path.to_path_buf());
        match e.kind {
            K::BadOptions => Self::BadOptions { key, path, message },
            K::Panic => Self::Panicked { key, path, message },
            _ => Self::Failed { key, path, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use esper_plugin_api::ErrorKind;

    #[test]
    fn a_libtorch_error_from_a_plugin_reads_as_its_reason() {
        let full = crate::torch_error::matmul_error();
        assert!(full.contains("frame #"), "premise: libtorch's text has frames: {full}");
        for kind in [ErrorKind::Tensor, ErrorKind::Panic, ErrorKind::BadOptions] {
            let e = LoadError::from_plugin(
                "cnn:norm",
                std::path::Path::new("/p/libx.so"),
                esper_plugin_api::PluginError::new(kind, full.clone()),
            );
            let shown = e.to_string();
            assert!(shown.contains("shapes cannot be multiplied") && shown.contains("cnn:norm"), "{shown}");
            assert!(!shown.contains("frame #") && !shown.contains("Exception raised from"), "{shown}");
        }
    }
}
