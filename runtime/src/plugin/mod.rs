//! The plugin loader and blueprint registry.
//!
//! Plugins are `cdylib`s built against `esper-plugin-api`. Loading checks, in order:
//! the file exists and is a regular file ([`FileProblem`]); its ELF headers describe a
//! shared library of this machine whose segments fit in the file ([`ElfProblem`]: read
//! before the dynamic loader sees the file, which a truncated library would crash); it
//! exports an abi_stable root module of our ABI major version; the module's layout
//! matches ours (abi_stable: an older minor's shorter root module is accepted); the
//! handshake's ABI version is one we accept (same major, minor not newer) and its
//! libtorch and tch versions equal ours; no blueprint key is already taken. Every
//! failure is a [`LoadError`] naming the file and the cause.

mod controller;
mod elf;
mod error;
mod kind;
mod library_file;
mod loader;
mod params;
mod registry;
mod seed;
pub mod text;

pub use controller::{controllers_of, PluginController};
pub use elf::{ElfProblem, Segment};
pub use error::LoadError;
pub use kind::{OptionsSchema, PluginKind};
pub use library_file::FileProblem;
pub use loader::LoadedPlugin;
pub use registry::BlueprintRegistry;
pub use seed::PluginSeed;

/// The file name cargo gives the `cdylib` of package `package` on this platform
/// (`esper-norm` -> `libesper_norm.so` on Linux).
pub fn library_file_name(package: &str) -> String {
    use std::env::consts::{DLL_EXTENSION, DLL_PREFIX};
    format!("{DLL_PREFIX}{}.{DLL_EXTENSION}", package.replace('-', "_"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn library_file_name_follows_cargo() {
        assert_eq!(super::library_file_name("esper-norm"), "libesper_norm.so");
    }
}
