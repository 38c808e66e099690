//! The blueprint registry: every blueprint of every loaded plugin, keyed `topology:name`.
//!
//! Descriptors are kept sanitised ([`super::text`]): what the registry lists, keys and
//! shows is safe to print. The name the plugin gave is kept beside, for the calls into
//! the plugin that name the blueprint.

use super::{
    loader::Library,
    params::{SeedCap, StoreSink},
    seed::SeedModule,
    text, LoadError, LoadedPlugin, OptionsSchema, PluginSeed,
};
use crate::host::Topology;
use abi_stable::sabi_trait::TD_Opaque;
use esper_plugin_api::abi::{BlueprintDescriptor, CreateRequest, ParamSink_TO};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};
use tch::{nn, Device};

struct Entry {
    plugin: Arc<LoadedPlugin>,
    /// Sanitised (see the module docs).
    descriptor: BlueprintDescriptor,
    /// The blueprint's name as the plugin gave it, for calls into the plugin.
    name: String,
}

/// Blueprints from any number of plugin libraries.
pub struct BlueprintRegistry {
    plugins: Vec<Arc<LoadedPlugin>>,
    entries: BTreeMap<String, Entry>,
    param_factor: f64,
    /// The run's host topology: a bare name that several topologies provide resolves to
    /// this one's blueprint (see [`BlueprintRegistry::resolve`]).
    topology: Option<Topology>,
}

impl Default for BlueprintRegistry {
    fn default() -> Self {
        Self { plugins: Vec::new(), entries: BTreeMap::new(), param_factor: Self::DEFAULT_PARAM_FACTOR, topology: None }
    }
}

impl BlueprintRegistry {
    /// Default of [`BlueprintRegistry::set_param_factor`].
    pub const DEFAULT_PARAM_FACTOR: f64 = 100.0;
    /// The least a seed may always hold, in elements (parameters and buffers together),
    /// whatever its blueprint declares.
    pub const MIN_SEED_ELEMENT_CAP: u64 = 1 << 20;

    pub fn new() -> Self {
        Self::default()
    }

    /// A seed's parameters and buffers together may hold at most `factor` times its
    /// blueprint's declared `param_estimate` elements (at least
    /// [`Self::MIN_SEED_ELEMENT_CAP`]). Requests are counted before anything is
    /// allocated; one over the cap fails the seed's creation. `factor` must be positive
    /// (anything else keeps the current one).
    pub fn set_param_factor(&mut self, factor: f64) {
        if factor > 0.0 && !factor.is_nan() {
            self.param_factor = factor;
        }
    }

    /// Resolves bare names that several topologies provide (`norm`: `cnn:norm` and
    /// `transformer:norm`) to `topology`'s blueprint: the run's host's.
    pub fn prefer_topology(&mut self, topology: Topology) {
        self.topology = Some(topology);
    }

    /// The element cap of a seed of a blueprint declaring `param_estimate`.
    pub fn seed_element_cap(&self, param_estimate: u64) -> u64 {
        // `as` saturates: an infinite or huge product is u64::MAX.
        let scaled = (param_estimate as f64 * self.param_factor) as u64;
        scaled.max(Self::MIN_SEED_ELEMENT_CAP)
    }

    /// Loads a plugin library, or every library in a folder. All or nothing: on error
    /// the registry is left as it was. Returns the keys of the blueprints added.
    pub fn load(&mut self, path: &Path) -> Result<Vec<String>, LoadError> {
        let libraries = if path.is_dir() { Self::libraries_in(path)? } else { vec![path.to_path_buf()] };
        let mut loaded = Vec::new();
        for lib in &libraries {
            let canonical = lib.canonicalize().unwrap_or_else(|_| lib.clone());
            if self.plugins.iter().chain(loaded.iter()).any(|p: &Arc<LoadedPlugin>| p.path() == canonical) {
                continue; // the same file twice is not a conflict
            }
            loaded.push(Arc::new(LoadedPlugin::load(lib)?));
        }
        self.add(loaded)
    }

    /// Loads a library as a config entry describes it: with a sha256 pin, only a file
    /// whose bytes match it, and exactly those bytes (see [`LoadedPlugin::load_pinned`]);
    /// without one, like [`BlueprintRegistry::load`] (a file or a folder).
    pub fn load_pinned(&mut self, path: &Path, sha256: Option<&str>) -> Result<Vec<String>, LoadError> {
        let Some(expected) = sha256 else { return self.load(path) };
        if path.is_dir() {
            return Err(LoadError::PinnedFolder { path: path.to_path_buf() });
        }
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if let Some(already) = self.plugins.iter().find(|p| p.path() == canonical) {
            // The same file twice is not a conflict, if what was loaded matches the pin.
            let wanted = expected.trim().to_ascii_lowercase();
            return match already.sha256() {
                Some(sha) if sha == wanted => Ok(Vec::new()),
                Some(sha) => Err(LoadError::PinMismatch { path: canonical, expected: wanted, actual: sha.into() }),
                None => Err(LoadError::LoadedUnpinned { path: canonical }),
            };
        }
        let plugin = LoadedPlugin::load_pinned(path, expected)?;
        tracing::info!(plugin = %plugin.path().display(), sha256 = plugin.sha256().unwrap_or(""), "plugin pinned");
        self.add(vec![Arc::new(plugin)])
    }

    /// Adds loaded plugins, all or nothing.
    fn add(&mut self, loaded: Vec<Arc<LoadedPlugin>>) -> Result<Vec<String>, LoadError> {
        // Check every new key against the registry and each other before adding any.
        let mut added: BTreeMap<String, &Arc<LoadedPlugin>> = BTreeMap::new();
        for plugin in &loaded {
            for d in plugin.blueprints() {
                let key = text::sanitize_descriptor(d).key();
                let first =
                    self.entries.get(&key).map(|e| e.plugin.path()).or_else(|| added.get(&key).map(|p| p.path()));
                if let Some(first) = first {
                    return Err(LoadError::Duplicate {
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
                let descriptor = text::sanitize_descriptor(d);
                let name = d.name.to_string();
                self.entries.insert(descriptor.key(), Entry { plugin: plugin.clone(), descriptor, name });
            }
            tracing::info!(plugin = %plugin.path().display(), blueprints = plugin.blueprints().len(), "plugin loaded");
            self.plugins.push(plugin);
        }
        Ok(keys)
    }

    fn libraries_in(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
        let folder_err = |source| LoadError::Folder { path: dir.to_path_buf(), source };
        let mut libs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(folder_err)? {
            let p = entry.map_err(folder_err)?.path();
            if p.is_file() && p.extension().is_some_and(|e| e == std::env::consts::DLL_EXTENSION) {
                libs.push(p);
            }
        }
        libs.sort();
        if libs.is_empty() {
            return Err(LoadError::EmptyFolder { path: dir.to_path_buf() });
        }
        Ok(libs)
    }

    /// Loaded plugins, in load order.
    pub fn plugins(&self) -> impl Iterator<Item = &LoadedPlugin> {
        self.plugins.iter().map(|p| p.as_ref())
    }

    /// Creates controller `name` of the loaded library at `path` (as loaded: the same
    /// file), with `options`.
    pub fn create_controller(
        &self,
        path: &Path,
        name: &str,
        options: &serde_json::Value,
    ) -> Result<super::PluginController, LoadError> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let plugin = self.plugins.iter().find(|p| p.path() == canonical || p.path() == path).ok_or_else(|| {
            LoadError::Controller {
                name: name.to_string(),
                path: path.to_path_buf(),
                message: "the library is not loaded".into(),
            }
        })?;
        super::PluginController::create(plugin.clone(), name, options)
    }

    /// Every blueprint: key, descriptor and the library it comes from, sorted by key.
    pub fn list(&self) -> impl Iterator<Item = (&str, &BlueprintDescriptor, &Path)> {
        self.entries.iter().map(|(k, e)| (k.as_str(), &e.descriptor, e.plugin.path()))
    }

    /// Finds a blueprint by `topology:name`, or by bare name when that is unambiguous.
    pub fn resolve(&self, name: &str) -> Result<(&str, &BlueprintDescriptor), LoadError> {
        if let Some((k, e)) = self.entries.get_key_value(name) {
            return Ok((k.as_str(), &e.descriptor));
        }
        let mut matches: Vec<(&String, &Entry)> =
            self.entries.iter().filter(|(_, e)| e.descriptor.name.as_str() == name).collect();
        if let (Some(topology), true) = (self.topology, matches.len() > 1) {
            let preferred = |e: &Entry| e.descriptor.topology.as_str() == topology.as_str();
            if matches.iter().any(|(_, e)| preferred(e)) {
                matches.retain(|(_, e)| preferred(e));
            }
        }
        match matches.as_slice() {
            [(k, e)] => Ok((k.as_str(), &e.descriptor)),
            [] => Err(LoadError::UnknownBlueprint {
                name: name.to_string(),
                available: self.entries.keys().cloned().collect(),
            }),
            many => Err(LoadError::Ambiguous {
                name: name.to_string(),
                candidates: many.iter().map(|(k, _)| k.to_string()).collect(),
            }),
        }
    }

    /// The options schema of blueprint `name` (see [`LoadedPlugin::options_schema`]).
    pub fn options_schema(&self, name: &str) -> Result<OptionsSchema, LoadError> {
        let (key, _) = self.resolve(name)?;
        let entry = &self.entries[key];
        entry.plugin.options_schema(key, &entry.name)
    }

    /// The library that provides blueprint `name`, if it is loaded (and unambiguous).
    pub fn plugin_of(&self, name: &str) -> Option<&Path> {
        let (key, _) = self.resolve(name).ok()?;
        self.entries.get(key).map(|e| e.plugin.path())
    }

    /// Creates a seed of blueprint `name` with `options` for `channels` channels on the
    /// CPU and drops it at once: a germination's create without a model, to find bad
    /// options and failing blueprints before a run starts. A failure to drop it is
    /// logged, not returned (a run contains it too).
    pub fn try_create(&self, name: &str, channels: i64, options: &serde_json::Value) -> Result<(), LoadError> {
        let seed = self.create_seed(name, channels, options, Device::Cpu)?;
        if let Err(e) = seed.release() {
            tracing::warn!(blueprint = name, error = %e, "dropping a trial seed failed (contained)");
        }
        Ok(())
    }

    /// Creates a seed of blueprint `name` for `channels` channels, its parameters on `device`.
    /// `options` must be a JSON object (or null for none).
    pub fn create_seed(
        &self,
        name: &str,
        channels: i64,
        options: &serde_json::Value,
        device: Device,
    ) -> Result<PluginSeed, LoadError> {
        let (key, _) = self.resolve(name)?;
        let entry = &self.entries[key];
        let path = entry.plugin.path();
        let options_json = options_text(key, path, options)?;
        let vars = nn::VarStore::new(device);
        let cap = SeedCap {
            elements: self.seed_element_cap(entry.descriptor.param_estimate),
            rule: format!(
                "{}x the declared estimate of {} elements, at least {}; raise `[lifecycle] plugin_param_factor` \
                 if the blueprint really needs more",
                self.param_factor,
                entry.descriptor.param_estimate,
                Self::MIN_SEED_ELEMENT_CAP
            ),
        };
        let mut sink = StoreSink::new(vars.root(), cap);
        let blueprint = entry.name.as_str();
        let params = ParamSink_TO::from_ptr(&mut sink, TD_Opaque);
        let created = match entry.plugin.library() {
            Library::Native { root, .. } => {
                let request =
                    CreateRequest { blueprint: blueprint.into(), channels, options_json: options_json.as_str().into() };
                (root.create_seed())(request, params).into_result().map(SeedModule::Native)
            }
            Library::Portable(_) => {
                let portable = entry.plugin.portable_blueprint(blueprint).ok_or_else(|| LoadError::Failed {
                    key: key.into(),
                    path: path.into(),
                    message: "the portable library no longer lists this blueprint".into(),
                })?;
                portable.create(params, channels, &options_json).map(SeedModule::Portable)
            }
        };
        if let Some(message) = sink.refused.take() {
            // It quotes the parameter name the plugin gave.
            let message = text::sanitize(&message).into_owned();
            return Err(LoadError::BadParameter { key: key.into(), path: path.into(), message });
        }
        let module = created.map_err(|e| LoadError::from_plugin(key, path, e))?;
        tracing::debug!(blueprint = key, channels, "seed created");
        let output_layer = std::mem::take(&mut sink.output_layer);
        Ok(PluginSeed::new(module, vars, key.to_string(), channels, entry.plugin.clone())
            .with_output_layer(output_layer))
    }
}

/// Blueprint options as the JSON text the plugin parses: an object, or none (`null`).
fn options_text(key: &str, path: &Path, options: &serde_json::Value) -> Result<String, LoadError> {
    match options {
        serde_json::Value::Null => Ok(String::new()),
        serde_json::Value::Object(_) => Ok(options.to_string()),
        other => Err(LoadError::BadOptions {
            key: key.into(),
            path: path.into(),
            message: format!("options must be a JSON object, got {other}"),
        }),
    }
}
