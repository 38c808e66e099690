//! # esper-plugin-api
//!
//! The stable ABI between the Esper seed runtime and blueprint plugins, and the only
//! crate a plugin author depends on. A plugin is a `cdylib` that implements
//! [`Blueprint`] and [`Seed`] for each blueprint and adds two macro lines:
//!
//! ```ignore
//! esper_plugin_api::register_blueprint!(MyBlueprint); // one per blueprint
//! esper_plugin_api::export_plugin!();                 // once per library
//! ```
//!
//! What crosses the boundary (all `#[repr(C)]` and checked by `abi_stable` at load):
//! the [`PluginRoot`] module (a prefix type, so fields can be appended in later minor
//! versions), the [`Handshake`] (plugin-API, libtorch and tch versions),
//! [`BlueprintDescriptor`]s, [`SeedBox`] trait objects, [`TensorRef`]/[`TensorOut`]
//! handles and [`PluginError`]s. Parameters and buffers are created by the runtime
//! through [`Params`]; options arrive as a JSON object, unknown keys refused; panics are
//! caught before they cross. Plugin authors write no `unsafe`.

#![allow(non_local_definitions)] // emitted by abi_stable's #[sabi_trait]

pub mod blueprint;
pub mod error;
pub mod params;
pub mod root;
pub mod seed;
pub mod tensor;
pub mod version;

pub use blueprint::{parse_options, Blueprint, BlueprintDescriptor, NoOptions, Registration};
pub use error::{ErrorKind, PluginError};
pub use params::{Init, ParamSink, ParamSinkRef, ParamSink_TO, ParamSpec, Params};
pub use root::{CreateRequest, PluginInfo, PluginRoot, PluginRootRef};
pub use seed::{Seed, SeedBox, SeedModule, SeedModule_TO};
pub use tensor::{TensorOut, TensorRef, TensorView};
pub use version::{Handshake, LIBTORCH_VERSION, PLUGIN_API_VERSION, TCH_VERSION};

/// Re-exported so plugins need no direct dependency on them.
pub use {abi_stable, inventory, serde, serde_json, tch};

#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::LibHeader;
}
