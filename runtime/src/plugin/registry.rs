//! The blueprint registry: every blueprint of every loaded plugin, keyed `topology:name`.

use super::{params::StoreSink, LoadedPlugin, PluginError, PluginSeed};
use abi_stable::sabi_trait::TD_Opaque;
use esper_plugin_api::{BlueprintDescriptor, CreateRequest, ParamSink_TO};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};
use tch::{nn, Device};

struct Entry {
    plugin: Arc<LoadedPlugin>,
    descriptor: BlueprintDescriptor,
}

/// Blueprints from any number of plugin libraries.
#[derive(Default)]
pub struct BlueprintRegistry {
    plugins: Vec<Arc<LoadedPlugin>>,
    entries: BTreeMap<String, Entry>,
}

impl BlueprintRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads a plugin library, or every library in a folder. All or nothing: on error
    /// the registry is left as it was. Returns the keys of the blueprints added.
    pub fn load(&mut self, path: &Path) -> Result<Vec<String>, PluginError> {
        let libraries = if path.is_dir() { Self::libraries_in(path)? } else { vec![path.to_path_buf()] };
        let mut loaded = Vec::new();
        for lib in &libraries {
            let canonical = lib.canonicalize().unwrap_or_else(|_| lib.clone());
            if self.plugins.iter().chain(loaded.iter()).any(|p: &Arc<LoadedPlugin>| p.path() == canonical) {
                continue; // the same file twice is not a conflict
            }
            loaded.push(Arc::new(LoadedPlugin::load(lib)?));
        }
        // Check every new key against the registry and each other before adding any.
        let mut added: BTreeMap<String, &Arc<LoadedPlugin>> = BTreeMap::new();
        for plugin in &loaded {
            for d in plugin.blueprints() {
                let key = d.key();
                let first =
                    self.entries.get(&key).map(|e| e.plugin.path()).or_else(|| added.get(&key).map(|p| p.path()));
                if let Some(first) = first {
                    return Err(PluginError::Duplicate {
                        key,
                        first: first.to_path_buf(),
                        second: plugin.path().to_path_buf(),
                    });
                }
                added.insert(key, plugin);
            }
        }
        let keys: Vec<String> = added.keys().cloned().collect();
        for plugin in loaded {
            for d in plugin.blueprints() {
                self.entries.insert(d.key(), Entry { plugin: plugin.clone(), descriptor: d.clone() });
            }
            tracing::info!(plugin = %plugin.path().display(), blueprints = plugin.blueprints().len(), "plugin loaded");
            self.plugins.push(plugin);
        }
        Ok(keys)
    }

    fn libraries_in(dir: &Path) -> Result<Vec<PathBuf>, PluginError> {
        let folder_err = |e: std::io::Error| PluginError::Folder { path: dir.to_path_buf(), cause: e.to_string() };
        let mut libs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(folder_err)? {
            let p = entry.map_err(folder_err)?.path();
            if p.is_file() && p.extension().is_some_and(|e| e == std::env::consts::DLL_EXTENSION) {
                libs.push(p);
            }
        }
        libs.sort();
        if libs.is_empty() {
            return Err(PluginError::EmptyFolder { path: dir.to_path_buf() });
        }
        Ok(libs)
    }

    /// Loaded plugins, in load order.
    pub fn plugins(&self) -> impl Iterator<Item = &LoadedPlugin> {
        self.plugins.iter().map(|p| p.as_ref())
    }

    /// Every blueprint: key, descriptor and the library it comes from, sorted by key.
    pub fn list(&self) -> impl Iterator<Item = (&str, &BlueprintDescriptor, &Path)> {
        self.entries.iter().map(|(k, e)| (k.as_str(), &e.descriptor, e.plugin.path()))
    }

    /// Finds a blueprint by `topology:name`, or by bare name when that is unambiguous.
    pub fn resolve(&self, name: &str) -> Result<(&str, &BlueprintDescriptor), PluginError> {
        if let Some((k, e)) = self.entries.get_key_value(name) {
            return Ok((k.as_str(), &e.descriptor));
        }
        let matches: Vec<(&String, &Entry)> =
            self.entries.iter().filter(|(_, e)| e.descriptor.name.as_str() == name).collect();
        match matches.as_slice() {
            [(k, e)] => Ok((k.as_str(), &e.descriptor)),
            [] => Err(PluginError::UnknownBlueprint {
                name: name.to_string(),
                available: self.entries.keys().cloned().collect(),
            }),
            many => Err(PluginError::Ambiguous {
                name: name.to_string(),
                candidates: many.iter().map(|(k, _)| k.to_string()).collect(),
            }),
        }
    }

    /// Creates a seed of blueprint `name` for `channels` channels, its parameters on `device`.
    /// `options` must be a JSON object (or null for none).
    pub fn create_seed(
        &self,
        name: &str,
        channels: i64,
        options: &serde_json::Value,
        device: Device,
    ) -> Result<PluginSeed, PluginError> {
        let (key, _) = self.resolve(name)?;
        let entry = &self.entries[key];
        let path = entry.plugin.path();
        let options_json = match options {
            serde_json::Value::Null => String::new(),
            serde_json::Value::Object(_) => options.to_string(),
            other => {
                return Err(PluginError::BadOptions {
                    key: key.into(),
                    path: path.into(),
                    message: format!("options must be a JSON object, got {other}"),
                })
            }
        };
        let vars = nn::VarStore::new(device);
        let mut sink = StoreSink::new(vars.root());
        let request = CreateRequest {
            blueprint: entry.descriptor.name.as_rstr(),
            channels,
            options_json: options_json.as_str().into(),
        };
        let created =
            (entry.plugin.root().create_seed())(request, ParamSink_TO::from_ptr(&mut sink, TD_Opaque)).into_result();
        if let Some(message) = sink.refused.take() {
            return Err(PluginError::BadParameter { key: key.into(), path: path.into(), message });
        }
        let module = created.map_err(|e| PluginError::from_plugin(key, path, e))?;
        tracing::debug!(blueprint = key, channels, "seed created");
        Ok(PluginSeed::new(module, vars, key.to_string(), channels, entry.plugin.clone()))
    }
}
