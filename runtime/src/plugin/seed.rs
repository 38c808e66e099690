//! A seed instance created from a plugin blueprint: the plugin's module plus the
//! runtime-owned parameters.

use super::{LoadError, LoadedPlugin};
use esper_plugin_api::abi::{SeedBox, TensorRef};
use esper_portable_runtime::PortableSeed;
use std::{path::Path, sync::Arc};
use tch::{nn, Device, Tensor};

/// The plugin's side of a seed, by library kind.
pub(crate) enum SeedModule {
    Native(SeedBox),
    Portable(PortableSeed),
}

pub struct PluginSeed {
    // Field order is drop order: the module (which holds handles to the parameters)
    // goes before the store, and the library handle last.
    module: SeedModule,
    vars: nn::VarStore,
    key: String,
    channels: i64,
    plugin: Arc<LoadedPlugin>,
    /// The parameters the plugin marked as its output layer.
    output_layer: Vec<String>,
}

impl PluginSeed {
    pub(crate) fn new(
        module: SeedModule,
        vars: nn::VarStore,
        key: String,
        channels: i64,
        plugin: Arc<LoadedPlugin>,
    ) -> Self {
        Self { module, vars, key, channels, plugin, output_layer: Vec::new() }
    }

    pub(crate) fn with_output_layer(mut self, names: Vec<String>) -> Self {
        self.output_layer = names;
        self
    }

    /// The names of the parameters the plugin marked as its output layer.
    pub fn output_layer(&self) -> &[String] {
        &self.output_layer
    }

    /// Zeroes the output layer's parameters (the MULTIPLY rule: the seed's last layer
    /// starts at zero, so a multiplicative blend starts neutral).
    pub fn zero_output_layer(&self) {
        let vars = self.vars.variables();
        tch::no_grad(|| {
            for name in &self.output_layer {
                if let Some(t) = vars.get(name) {
                    let _ = t.shallow_clone().zero_();
                }
            }
        });
    }

    /// Runs the plugin's forward. Errors and panics inside the plugin come back as
    /// errors naming the blueprint and the library.
    pub fn forward(&self, input: &Tensor, train: bool) -> Result<Tensor, LoadError> {
        let out = match &self.module {
            SeedModule::Native(m) => m.forward(TensorRef::new(input), train).into_result().map(|out| out.into_tensor()),
            SeedModule::Portable(m) => m.forward(input, train),
        };
        out.map_err(|e| LoadError::from_plugin(&self.key, self.plugin.path(), e))
    }

    /// Drops the plugin's seed now; a panic in its `Drop` comes back as an error (the
    /// ABI contains it either way).
    pub fn release(mut self) -> Result<(), LoadError> {
        let released = match &mut self.module {
            SeedModule::Native(m) => m.release().into_result(),
            SeedModule::Portable(m) => m.release(),
        };
        released.map_err(|e| LoadError::from_plugin(&self.key, self.plugin.path(), e))
    }

    /// `topology:name` of the blueprint.
    pub fn key(&self) -> &str {
        &self.key
    }
    pub fn channels(&self) -> i64 {
        self.channels
    }
    pub fn plugin_path(&self) -> &Path {
        self.plugin.path()
    }
    /// The runtime-owned parameters and buffers.
    pub fn vars(&self) -> &nn::VarStore {
        &self.vars
    }
    pub fn vars_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vars
    }
    pub fn trainable(&self) -> Vec<Tensor> {
        self.vars.trainable_variables()
    }
    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> i64 {
        self.trainable().iter().map(|t| t.numel() as i64).sum()
    }
    pub fn device(&self) -> Device {
        self.vars.device()
    }
    /// Moves every parameter and buffer; the plugin's handles follow (they share the
    /// tensors, whose data is swapped in place).
    pub fn set_device(&mut self, device: Device) {
        self.vars.set_device(device);
    }
}
