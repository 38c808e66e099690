//! The runtime's side of portable plugins (`include/esper_plugin.h`): the op table it
//! gives them, and safe wrappers of their libraries, blueprints and seeds. Portable
//! plugins link no libtorch: every tensor they touch is one of the runtime's, reached
//! through a handle, every op runs here.

mod handle;
mod library;
mod ops;
mod params;
mod seed;

pub use library::{PortableLibrary, PortableLoadError};
pub use seed::{PortableBlueprint, PortableSeed};

/// The test helpers of portable plugin crates, shared with the conformance crate.
pub use esper_plugin_portable::testing;
