//! The ABI plumbing: everything that crosses the plugin boundary, for the runtime's
//! loader and for the two macros. A plugin author needs none of it: the crate root is
//! the author's prelude.
//!
//! All of it is `#[repr(C)]` and checked by `abi_stable` at load: the [`PluginRoot`]
//! module (a prefix type, so fields can be appended in later minor versions), the
//! [`Handshake`], [`BlueprintDescriptor`]s, [`SeedBox`] trait objects,
//! [`TensorRef`]/[`TensorOut`] handles and the [`ParamSink`] the runtime implements.

pub use crate::blueprint::{BlueprintDescriptor, Registration};
pub use crate::controller::{
    ControllerBox, ControllerDescriptor, ControllerModule, ControllerModule_TO, ControllerRegistration,
};
pub use crate::params::{ParamSink, ParamSinkRef, ParamSink_TO, ParamSpec};
pub use crate::root::{
    blueprints, controllers, create_controller, create_seed, describe_options, handshake, init_root_module,
    standard_root, CreateRequest, PluginInfo, PluginRoot, PluginRootRef, STANDARD_HEADER,
};
pub use crate::seed::{SeedBox, SeedModule, SeedModule_TO};
pub use crate::tensor::{TensorOut, TensorRef, TensorView};
pub use crate::version::{
    AbiVersion, Handshake, Mismatch, ABI_VERSION, ABI_VERSION_STRINGS, LIBTORCH_VERSION, PLUGIN_API_VERSION,
    TCH_VERSION,
};
