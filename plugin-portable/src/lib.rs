//! # esper-plugin-portable
//!
//! Portable blueprint plugins for the Esper seed runtime. A portable plugin links no
//! libtorch and no tch: every tensor op goes through the op table the runtime passes in
//! (`esper_plugin.h`, declared with its Rust mirror in `esper-plugin-sys`), so the ops
//! run in the runtime's libtorch (autograd, devices, channels-last and the isolation
//! layer as for native plugins), the crate builds in seconds on a machine without
//! libtorch, and the library keeps loading in every runtime of the same ABI major,
//! whatever libtorch that runtime uses.
//!
//! The author's side has the shape of a native plugin: [`Blueprint`], [`Seed`],
//! [`Params`] (with [`Params::sub`]), [`Init`], [`NoOptions`], [`PluginError`], and a
//! [`Tensor`] whose ops return `Result`s naming the op and the shapes:
//!
//! ```ignore
//! esper_plugin_portable::register_blueprint!(MyBlueprint); // one per blueprint
//! esper_plugin_portable::export_plugin!();                 // once per library
//! ```
//!
//! [`testing`] checks a built plugin with the installed `esper` binary's conformance suite.

mod blueprint;
mod error;
mod export;
mod params;
mod tensor;

pub mod testing;

/// The portable ABI as C sees it (the header's Rust mirror), for what the safe types
/// do not cover.
pub use esper_plugin_sys as sys;

pub use blueprint::{parse_options, Blueprint, NoOptions, Seed};
pub use error::{ErrorKind, PluginError};
pub use params::{Init, Params};
pub use tensor::{Device, Kind, Tensor};

pub(crate) use tensor::ops;

/// Re-exported so plugins need no direct dependency on them.
pub use {inventory, serde, serde_json};

#[doc(hidden)]
pub mod __private {
    pub use crate::{blueprint::Registration, export::entry};
}
