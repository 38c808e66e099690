//! Plugin entries of the run config, with their optional sha256.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSource {
    /// A plugin library or a folder of them.
    pub path: PathBuf,
    /// Hex sha256 of the library file. Enforced where the library is loaded
    /// (`BlueprintRegistry::load_pinned`: the bytes hashed are the bytes loaded);
    /// [`PluginSource::check`] also compares it early, for a quick answer.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Hex sha256 of a file.
pub fn sha256_hex(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl PluginSource {
    /// The file exists and, when a sha256 is given, matches it now (an early answer
    /// only: the load checks the pin again on the bytes it loads).
    pub fn check(&self, config: &Path) -> Result<(), ConfigError> {
        // Only when nothing is there: anything else (a symbolic link loop, say) is named
        // by the loader.
        if std::fs::symlink_metadata(&self.path).is_err() {
            return Err(ConfigError::MissingPlugin { path: config.to_path_buf(), plugin: self.path.clone() });
        }
        let Some(expected) = &self.sha256 else { return Ok(()) };
        let invalid = |message: String| ConfigError::Invalid { path: config.to_path_buf(), message };
        if self.path.is_dir() {
            return Err(invalid(format!(
                "plugin {}: a sha256 can only be given for a file, not a folder",
                self.path.display()
            )));
        }
        let actual = sha256_hex(&self.path)
            .map_err(|e| invalid(format!("plugin {}: cannot read it: {e}", self.path.display())))?;
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            return Err(ConfigError::Sha256Mismatch {
                path: config.to_path_buf(),
                plugin: self.path.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}
