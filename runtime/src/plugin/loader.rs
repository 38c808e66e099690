//! Loading one plugin library: open it, check its ABI layout (abi_stable), check the
//! handshake (plugin-API, libtorch and tch versions), list its blueprints.

use super::PluginError;
use abi_stable::library::{lib_header_from_path, LibraryError};
use esper_plugin_api::{BlueprintDescriptor, Handshake, PluginRootRef};
use std::path::{Path, PathBuf};

/// A loaded, checked plugin library. Libraries are never unloaded (seeds created from
/// them may live as long as the process).
pub struct LoadedPlugin {
    path: PathBuf,
    handshake: Handshake,
    blueprints: Vec<BlueprintDescriptor>,
    root: PluginRootRef,
}

impl LoadedPlugin {
    /// Opens and checks the plugin library at `path`.
    pub fn load(path: &Path) -> Result<Self, PluginError> {
        if !path.is_file() {
            return Err(PluginError::NotFound { path: path.to_path_buf() });
        }
        let path = path.canonicalize().map_err(|_| PluginError::NotFound { path: path.to_path_buf() })?;
        let root = lib_header_from_path(&path)
            .and_then(|header| header.init_root_module::<PluginRootRef>())
            .map_err(|e| classify(&path, e))?;
        let handshake = (root.handshake())();
        let mismatches = handshake.mismatches();
        if !mismatches.is_empty() {
            return Err(PluginError::VersionMismatch { path, mismatches });
        }
        let blueprints = (root.blueprints())()
            .into_result()
            .map_err(|e| PluginError::Failed { key: "<list>".into(), path: path.clone(), message: e.to_string() })?
            .into_vec();
        Ok(Self { path, handshake, blueprints, root })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }
    pub fn blueprints(&self) -> &[BlueprintDescriptor] {
        &self.blueprints
    }
    pub(crate) fn root(&self) -> PluginRootRef {
        self.root
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("handshake", &self.handshake)
            .field("blueprints", &self.blueprints)
            .finish_non_exhaustive()
    }
}

fn classify(path: &Path, e: LibraryError) -> PluginError {
    let path = path.to_path_buf();
    match e {
        LibraryError::OpenError { err, .. } => {
            PluginError::NotAPlugin { path, cause: format!("cannot open it as a shared library: {err}") }
        }
        LibraryError::GetSymbolError { .. } => PluginError::NotAPlugin {
            path,
            cause: "it exports no abi_stable root module (was it built with `export_plugin!`?)".into(),
        },
        LibraryError::RootModule { err, .. } => {
            PluginError::NotAPlugin { path, cause: format!("its root module failed to initialise: {err}") }
        }
        // AbiInstability, InvalidAbiHeader, InvalidCAbi, IncompatibleVersionNumber, ...
        other => PluginError::AbiMismatch { path, cause: other.to_string() },
    }
}
