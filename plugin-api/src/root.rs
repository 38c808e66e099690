//! The plugin's root module: the versioned entry point the runtime loads.
//!
//! It is an `abi_stable` prefix type, so later minor versions can append fields and
//! plugins built against older versions still load. Every function in it catches
//! panics, so none crosses the boundary.

use crate::{
    abi::{
        BlueprintDescriptor, ControllerBox, ControllerDescriptor, ControllerRegistration, Handshake, ParamSinkRef,
        Registration, SeedBox, ABI_VERSION, ABI_VERSION_STRINGS,
    },
    ErrorKind, Params, PluginError,
};
use abi_stable::{
    abi_stability::abi_checking::check_layout_compatibility,
    declare_root_module_statics,
    library::{CheckTypeLayout, LibHeader, LibraryError, RootModule, RootModuleResult},
    sabi_types::VersionStrings,
    std_types::{RBoxError, ROption, RResult, RStr, RString, RVec},
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
    ///
    /// The last field of ABI 1.0. `last_prefix_field` stays here for every 1.x: moving
    /// it changes the prefix length, which abi_stable refuses (`MismatchedPrefixSize`).
    #[sabi(last_prefix_field)]
    pub create_seed:
        extern "C" fn(request: CreateRequest<'_>, params: ParamSinkRef<'_>) -> RResult<SeedBox, PluginError>,
    /// ABI 1.1: the JSON schema of a blueprint's options as JSON text, `RNone` when the
    /// blueprint publishes none. Absent in ABI 1.0 plugins: its accessor returns `None`.
    #[sabi(missing_field(option))]
    pub describe_options: extern "C" fn(blueprint: RStr<'_>) -> RResult<ROption<RString>, PluginError>,
    /// ABI 1.3: the controllers the plugin exports. Absent before: its accessor returns `None`.
    #[sabi(missing_field(option))]
    pub controllers: extern "C" fn() -> RResult<RVec<ControllerDescriptor>, PluginError>,
    /// ABI 1.3: creates controller `name` with its options (JSON text; empty means none).
    #[sabi(missing_field(option))]
    pub create_controller: extern "C" fn(name: RStr<'_>, options_json: RStr<'_>) -> RResult<ControllerBox, PluginError>,
}

impl RootModule for PluginRootRef {
    declare_root_module_statics! {PluginRootRef}
    const BASE_NAME: &'static str = "esper_plugin";
    const NAME: &'static str = "esper_plugin";
    /// The ABI version (not the crate's): abi_stable refuses another major at open.
    const VERSION_STRINGS: VersionStrings = ABI_VERSION_STRINGS;
}

/// Opens a plugin library's root module under the compatibility rule: abi_stable's
/// version check (the library's version strings are its ABI version: another major is
/// refused) and its layout check, in the direction the rule needs.
///
/// abi_stable accepts a library whose prefix types have *more* fields than the loader's
/// (a newer library) but refuses one with fewer (`too many fields`), the other way round
/// from a runtime loading plugins: a plugin of an older minor has fewer root fields.
/// For those, the layouts are checked with the plugin's as the interface and ours as the
/// implementation: every field the plugin has must be ours, in order and with the same
/// types, and the prefix (up to `last_prefix_field`) must be the same length; our
/// fields past its end are read through accessors that see them as absent (the prefix
/// type's field accessibility is stored with the plugin's module). A newer minor or the
/// same one is checked the usual way; the handshake then refuses a newer minor.
pub fn init_root_module(header: &LibHeader) -> Result<PluginRootRef, LibraryError> {
    let found = header.version_strings().parsed().map_err(LibraryError::ParseVersionError)?;
    let older_minor = found.major == ABI_VERSION.major && found.minor < ABI_VERSION.minor;
    let Some(layout) = header.layout().filter(|_| older_minor) else {
        return header.init_root_module::<PluginRootRef>();
    };
    check_layout_compatibility(layout, <PluginRootRef as StableAbi>::LAYOUT)
        .map_err(|e| LibraryError::AbiInstability(RBoxError::from_fmt(&e)))?;
    // SAFETY: the version is our major (checked above) and the layouts were checked just
    // now: the plugin's root module type is a prefix of ours (same prefix length, the
    // same fields in the same order with compatible types). Reading it as our type is
    // what prefix types are for: the accessors of fields past the plugin's last one
    // consult the field accessibility stored with its module and return `None`.
    unsafe { header.init_root_module_with_unchecked_layout::<PluginRootRef>() }
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
        let registration = registration(request.blueprint.as_str())?;
        (registration.create)(&mut Params::new(params), request.channels, request.options_json.as_str())
    })
}

/// The standard `describe_options` (ABI 1.1): the blueprint's
/// [`Blueprint::options_schema`](crate::Blueprint::options_schema) as JSON text.
pub extern "C" fn describe_options(blueprint: RStr<'_>) -> RResult<ROption<RString>, PluginError> {
    guard("describe_options", || {
        let schema = (registration(blueprint.as_str())?.options_schema)();
        Ok(schema.map(|s| RString::from(s.to_string())).into())
    })
}

/// The standard `controllers` (ABI 1.3): every controller registered in this plugin.
pub extern "C" fn controllers() -> RResult<RVec<ControllerDescriptor>, PluginError> {
    guard("controllers", || {
        Ok(inventory::iter::<ControllerRegistration>.into_iter().map(ControllerRegistration::descriptor).collect())
    })
}

/// The standard `create_controller` (ABI 1.3): finds the controller in this plugin's
/// inventory and creates it with its options.
pub extern "C" fn create_controller(name: RStr<'_>, options_json: RStr<'_>) -> RResult<ControllerBox, PluginError> {
    guard("create_controller", || (crate::controller::registration(name.as_str())?.create)(options_json.as_str()))
}

/// The blueprint `name` of this plugin's inventory.
fn registration(name: &str) -> Result<&'static Registration, PluginError> {
    inventory::iter::<Registration>.into_iter().find(|r| r.name == name).ok_or_else(|| {
        let known: Vec<&str> = inventory::iter::<Registration>.into_iter().map(|r| r.name).collect();
        PluginError::new(
            ErrorKind::UnknownBlueprint,
            format!("no blueprint `{name}` in this plugin (it has: {})", known.join(", ")),
        )
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
    PluginRoot { handshake, blueprints, create_seed, describe_options, controllers, create_controller }
        .leak_into_prefix()
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
        assert_eq!(m[0], crate::abi::Mismatch::Panicked { message: "handshake exploded".into() });
        assert!(m[0].to_string().contains("panicked"), "{m:?}");
        let ok = super::guard_handshake(|| crate::abi::Handshake::current("p", "1"));
        assert!(ok.mismatches().is_empty());
    }

    #[test]
    fn exported_symbol_is_abi_stables_loader_name() {
        assert_eq!(abi_stable::library::ROOT_MODULE_LOADER_NAME, "_1as_0lib_1header_0root_bmodule_bloader");
    }
}
