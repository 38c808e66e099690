//! The plugin's root module: the versioned entry point the runtime loads.
//!
//! It is an `abi_stable` prefix type, so later minor versions can append fields and
//! plugins built against older versions still load. Every function in it catches
//! panics, so none crosses the boundary.

use crate::{
    abi::{BlueprintDescriptor, Handshake, ParamSinkRef, Registration, SeedBox, ABI_VERSION_STRINGS},
    ErrorKind, Params, PluginError,
};
use abi_stable::{
    declare_root_module_statics,
    library::{CheckTypeLayout, LibHeader, RootModule, RootModuleResult},
    sabi_types::VersionStrings,
    std_types::{RResult, RStr, RVec},
    StableAbi,
};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The arguments of `create_seed`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct CreateRequest<'a> {
    /// Blueprint name (without topology).
    pub blueprint: RStr<'a>,
    /// Channel count of the slot the seed goes into.
    pub channels: i64,
    /// The options as JSON text (an object; empty means none).
    pub options_json: RStr<'a>,
}

/// The root module every plugin exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRootRef)))]
#[sabi(missing_field(panic))]
pub struct PluginRoot {
    /// What the plugin was built with.
    pub handshake: extern "C" fn() -> Handshake,
    /// The blueprints the plugin exports.
    pub blueprints: extern "C" fn() -> RResult<RVec<BlueprintDescriptor>, PluginError>,
    /// Creates a seed of a blueprint, its parameters requested from `params`.
    #[sabi(last_prefix_field)]
    pub create_seed:
        extern "C" fn(request: CreateRequest<'_>, params: ParamSinkRef<'_>) -> RResult<SeedBox, PluginError>,
}

impl RootModule for PluginRootRef {
    declare_root_module_statics! {PluginRootRef}
    const BASE_NAME: &'static str = "esper_plugin";
    const NAME: &'static str = "esper_plugin";
    /// The ABI version (not the crate's): abi_stable refuses another major at open.
    const VERSION_STRINGS: VersionStrings = ABI_VERSION_STRINGS;
}

/// The plugin's own name and version, submitted by [`export_plugin!`](crate::export_plugin).
pub struct PluginInfo {
    pub name: &'static str,
    pub version: &'static str,
}

inventory::collect!(PluginInfo);

/// The standard `handshake`: the versions compiled into this plugin. A panic in it is
/// caught here and answered with [`Handshake::panicked`], which the runtime refuses.
pub extern "C" fn handshake() -> Handshake {
    guard_handshake(|| {
        let info = inventory::iter::<PluginInfo>.into_iter().next();
        Handshake::current(info.map_or("unknown", |i| i.name), info.map_or("unknown", |i| i.version))
    })
}

fn guard_handshake(f: impl FnOnce() -> Handshake) -> Handshake {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Handshake::panicked(&crate::error::panic_message(payload.as_ref())))
}

/// The standard `blueprints`: every blueprint registered in this plugin's inventory.
pub extern "C" fn blueprints() -> RResult<RVec<BlueprintDescriptor>, PluginError> {
    guard("blueprints", || Ok(inventory::iter::<Registration>.into_iter().map(|r| (r.descriptor)()).collect()))
}

/// The standard `create_seed`: finds the blueprint in this plugin's inventory and creates it.
pub extern "C" fn create_seed(request: CreateRequest<'_>, params: ParamSinkRef<'_>) -> RResult<SeedBox, PluginError> {
    guard("create", || {
        let name = request.blueprint.as_str();
        let registration = inventory::iter::<Registration>.into_iter().find(|r| r.name == name).ok_or_else(|| {
            let known: Vec<&str> = inventory::iter::<Registration>.into_iter().map(|r| r.name).collect();
            PluginError::new(
                ErrorKind::UnknownBlueprint,
                format!("no blueprint `{name}` in this plugin (it has: {})", known.join(", ")),
            )
        })?;
        (registration.create)(&mut Params::new(params), request.channels, request.options_json.as_str())
    })
}

fn guard<T>(context: &str, f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.into(),
        Err(payload) => RResult::RErr(PluginError::from_panic(context, payload)),
    }
}

/// The standard root module, made of the functions above.
pub fn standard_root() -> PluginRootRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginRoot { handshake, blueprints, create_seed }.leak_into_prefix()
}

extern "C" fn standard_root_erased() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(standard_root)
}

/// The library header [`export_plugin!`](crate::export_plugin) exports (what abi_stable's
/// `#[export_root_module]` would generate for [`standard_root`]).
// SAFETY: `standard_root_erased` returns the `PluginRootRef` made by `standard_root`,
// erased by abi_stable's own `__call_root_module_loader`, which is exactly the
// requirement of `from_constructor::<PluginRootRef>`; the layout is still checked.
// A `const`, not a `static`, on purpose: each plugin's `export_plugin!` copies it into its
// own exported static, so every library has its own (lazily filled) header.
#[allow(clippy::declare_interior_mutable_const)]
pub const STANDARD_HEADER: LibHeader =
    unsafe { LibHeader::from_constructor::<PluginRootRef>(standard_root_erased, CheckTypeLayout::Yes) };

/// Exports this library as an Esper plugin: once per plugin crate, beside one
/// [`register_blueprint!`](crate::register_blueprint) line per blueprint.
#[macro_export]
macro_rules! export_plugin {
    () => {
        $crate::inventory::submit! {
            $crate::abi::PluginInfo { name: env!("CARGO_PKG_NAME"), version: env!("CARGO_PKG_VERSION") }
        }
        /// The abi_stable root-module header of this plugin.
        #[no_mangle]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader = $crate::abi::STANDARD_HEADER;
    };
}

/// Registers a blueprint type in this plugin: one line per blueprint.
#[macro_export]
macro_rules! register_blueprint {
    ($blueprint:ty) => {
        $crate::inventory::submit! { $crate::abi::Registration::of::<$blueprint>() }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_in_handshake_is_caught_and_refused() {
        let h = super::guard_handshake(|| panic!("handshake exploded"));
        assert_eq!(h.panic_message(), Some("handshake exploded"));
        let m = h.mismatches();
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("panicked") && m[0].contains("handshake exploded"), "{m:?}");
        let ok = super::guard_handshake(|| crate::abi::Handshake::current("p", "1"));
        assert!(ok.mismatches().is_empty());
    }

    #[test]
    fn exported_symbol_is_abi_stables_loader_name() {
        assert_eq!(abi_stable::library::ROOT_MODULE_LOADER_NAME, "_1as_0lib_1header_0root_bmodule_bloader");
    }
}
