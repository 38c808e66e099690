//! A controller plugin's controller (ABI 1.3) as a [`DecisionMaker`]: the observation
//! goes to it as JSON, its answer comes back as a JSON array of decisions. An error or
//! a panic (caught in the plugin, and again here) is the decision maker's error, which
//! the trainer contains (the run waits that epoch).

use super::{loader::Library, LoadError, LoadedPlugin};
use crate::control::{DecisionContext, DecisionMaker, Proposal};
use esper_plugin_api::abi::{ControllerBox, ControllerDescriptor};
use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
    sync::Arc,
};

pub struct PluginController {
    name: String,
    module: ControllerBox,
    /// Keeps the library's record alive beside its controller (libraries are never unloaded).
    _plugin: Arc<LoadedPlugin>,
}

impl PluginController {
    /// Creates controller `name` of `plugin` with `options` (a JSON object, or null).
    pub(crate) fn create(
        plugin: Arc<LoadedPlugin>,
        name: &str,
        options: &serde_json::Value,
    ) -> Result<Self, LoadError> {
        let fail = |message: String| LoadError::Controller {
            name: name.to_string(),
            path: plugin.path().to_path_buf(),
            message,
        };
        let Library::Native { root, .. } = plugin.library() else {
            return Err(fail("a portable plugin exports no controllers".into()));
        };
        let Some(create) = root.create_controller() else {
            return Err(fail(format!(
                "the plugin is built against ABI {}, before controllers (1.3)",
                plugin.abi_version()
            )));
        };
        let options = if options.is_null() { String::new() } else { options.to_string() };
        let created = catch_unwind(AssertUnwindSafe(|| create(name.into(), options.as_str().into())))
            .map_err(|p| fail(format!("panicked: {}", esper_plugin_api::panic_message(p.as_ref()))))?;
        let module = created.into_result().map_err(|e| fail(e.to_string()))?;
        Ok(Self { name: name.to_string(), module, _plugin: plugin })
    }
}

/// The controllers a loaded plugin exports (none before ABI 1.3, or for a portable one).
pub fn controllers_of(plugin: &LoadedPlugin) -> Result<Vec<ControllerDescriptor>, LoadError> {
    let Library::Native { root, .. } = plugin.library() else { return Ok(Vec::new()) };
    let Some(list) = root.controllers() else { return Ok(Vec::new()) };
    let path: PathBuf = plugin.path().to_path_buf();
    let answer = catch_unwind(|| list()).map_err(|p| LoadError::Controller {
        name: "<list>".into(),
        path: path.clone(),
        message: format!("panicked: {}", esper_plugin_api::panic_message(p.as_ref())),
    })?;
    let list = answer.into_result().map_err(|e| LoadError::Controller {
        name: "<list>".into(),
        path,
        message: e.to_string(),
    })?;
    Ok(list.into_iter().map(|d| super::text::sanitize_controller(&d)).collect())
}

impl DecisionMaker for PluginController {
    fn name(&self) -> &str {
        &self.name
    }

    fn decide(&mut self, context: &DecisionContext<'_>) -> Result<Vec<Proposal>, String> {
        self.decide_on(context.observation)
    }
}

impl PluginController {
    /// The controller's decisions for `observation` alone (what [`DecisionMaker::decide`]
    /// asks it; the conformance suite asks it this way, with no model).
    pub fn decide_on(&mut self, observation: &crate::control::Observation) -> Result<Vec<Proposal>, String> {
        let observation = serde_json::to_string(observation).map_err(|e| e.to_string())?;
        let module = &mut self.module;
        let answer = catch_unwind(AssertUnwindSafe(|| module.decide(observation.as_str().into())))
            .map_err(|p| format!("panicked: {}", esper_plugin_api::panic_message(p.as_ref())))?;
        let text = answer.into_result().map_err(|e| e.to_string())?;
        Proposal::list_from_json(text.as_str())
    }
}
