//! The runtime's side of parameter creation: every tensor a plugin asks for is created
//! here, on the seed's device, and kept in the seed's `VarStore`.

use abi_stable::std_types::RResult;
use esper_plugin_api::{ErrorKind, Init, ParamSink, ParamSpec, PluginError as ApiError, TensorOut};
use std::{
    collections::HashSet,
    panic::{catch_unwind, AssertUnwindSafe},
};
use tch::{nn, Kind, Tensor};

/// Creates named tensors in a `VarStore` path on behalf of a plugin.
pub(crate) struct StoreSink<'a> {
    path: nn::Path<'a>,
    names: HashSet<String>,
    /// The first refused request, kept to report it even if the plugin swallows it.
    pub(crate) refused: Option<String>,
}

impl<'a> StoreSink<'a> {
    pub(crate) fn new(path: nn::Path<'a>) -> Self {
        Self { path, names: HashSet::new(), refused: None }
    }

    fn make(&mut self, spec: &ParamSpec<'_>) -> Result<Tensor, String> {
        let name = spec.name.as_str();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("parameter name `{name}` must be non-empty ASCII letters, digits or `_`"));
        }
        let shape = spec.shape.as_slice();
        if shape.iter().any(|&d| d < 0) {
            return Err(format!("parameter `{name}` has a negative dimension in {shape:?}"));
        }
        if !self.names.insert(name.to_string()) {
            return Err(format!("parameter `{name}` requested twice"));
        }
        let init = match spec.init {
            Init::Zeros => nn::Init::Const(0.0),
            Init::Ones => nn::Init::Const(1.0),
            Init::Constant { value } => nn::Init::Const(value),
            Init::Uniform { lo, hi } => nn::Init::Uniform { lo, up: hi },
            Init::Normal { mean, std } => nn::Init::Randn { mean, stdev: std },
            Init::KaimingUniform => {
                if shape.len() < 2 {
                    return Err(format!("parameter `{name}`: Kaiming init needs at least 2 dimensions, got {shape:?}"));
                }
                nn::init::DEFAULT_KAIMING_UNIFORM
            }
        };
        let tensor = nn::init::f_init(init, shape, self.path.device(), Kind::Float)
            .map_err(|e| format!("parameter `{name}`: {e}"))?;
        Ok(self.path.add(name, tensor, spec.trainable))
    }
}

impl ParamSink for StoreSink<'_> {
    fn create(&mut self, spec: ParamSpec<'_>) -> RResult<TensorOut, ApiError> {
        // This runs inside a call from the plugin: nothing may unwind out of it.
        let made = catch_unwind(AssertUnwindSafe(|| self.make(&spec)))
            .unwrap_or_else(|_| Err("parameter creation panicked".into()));
        match made {
            Ok(t) => RResult::ROk(TensorOut::new(t)),
            Err(message) => {
                self.refused.get_or_insert_with(|| message.clone());
                RResult::RErr(ApiError::new(ErrorKind::InvalidArgument, message))
            }
        }
    }
}
