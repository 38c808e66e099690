//! # esper-plugin-api
//!
//! The stable ABI between the Esper seed runtime and native blueprint plugins (plugins
//! that use tch on the runtime's own tensors; portable plugins depend on
//! `esper-plugin-portable` instead, and the runtime's side of those lives in
//! `esper-portable-runtime`). A native plugin is a `cdylib` that implements
//! [`Blueprint`] and [`Seed`] for each blueprint and adds two macro lines:
//!
//! ```ignore
//! esper_plugin_api::register_blueprint!(MyBlueprint); // one per blueprint
//! esper_plugin_api::export_plugin!();                 // once per library
//! ```
//!
//! A plugin may also export [`Controller`]s (ABI 1.3): each decides, from an
//! [`Observation`] after every epoch, the lifecycle's next [`Decision`]s, and is
//! registered with `esper_plugin_api::register_controller!(MyController);`.
//!
//! The crate root is the author's prelude: [`Blueprint`], [`Seed`], [`Params`] (with
//! [`Params::sub`] for composite seeds), [`Init`], [`NoOptions`]/[`parse_options`],
//! [`PluginError`] and the two macros. What crosses the boundary lives in [`abi`]
//! (checked by `abi_stable` at load). Parameters and buffers are created by the runtime
//! through [`Params`]; options arrive as a JSON object, unknown keys refused; panics are
//! caught before they cross. Plugin authors write no `unsafe`.

#![allow(non_local_definitions)] // emitted by abi_stable's #[sabi_trait]

mod blueprint;
mod controller;
mod error;
pub mod observation;
mod params;
mod root;
mod seed;
mod tensor;
mod version;

pub mod abi;

// The author's prelude: what a blueprint plugin uses (plus the two macros).
pub use blueprint::{parse_options, Blueprint, NoOptions};
pub use controller::Controller;
pub use error::{panic_message, ErrorKind, PluginError};
pub use observation::{Decision, Observation, OBSERVATION_VERSION};
pub use params::{Init, Params};
pub use seed::Seed;

/// Re-exported so plugins need no direct dependency on them.
pub use {abi_stable, inventory, serde, serde_json, tch};

#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::LibHeader;
}
