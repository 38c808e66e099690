//! # esper-portable-runtime
//!
//! The runtime's side of portable plugins (`esper_plugin.h`, declared with its Rust
//! mirror in `esper-plugin-sys`): the op table it gives them, and safe wrappers of their
//! libraries, blueprints and seeds. Portable plugins link no libtorch: every tensor they
//! touch is one of the runtime's, reached through a handle, every op runs here.
//!
//! Its own crate so that the `unsafe` of the C ABI stays out of the runtime library
//! (which forbids it) and out of `esper-plugin-api`, which native plugin authors build.

mod handle;
mod library;
mod ops;
mod params;
mod seed;

pub use library::{PortableLibrary, PortableLoadError};
pub use seed::{PortableBlueprint, PortableSeed};

#[cfg(test)]
mod tests {
    use esper_plugin_api::abi::{AbiVersion, ABI_VERSION};
    use esper_plugin_sys as sys;

    /// The op table states the C header's version and loading checks plugins against
    /// the plugin API's: one ABI version, so the two must be the same.
    #[test]
    fn the_header_and_the_plugin_api_state_one_abi_version() {
        assert_eq!(AbiVersion::new(sys::ABI_MAJOR, sys::ABI_MINOR), ABI_VERSION);
    }
}
