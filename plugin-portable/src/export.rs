//! The plugin's C face: the entry point's answer (built once from the inventory) and
//! the `create` / `forward` / `destroy` functions of each blueprint. No panic crosses:
//! each is caught and reported through the runtime's `set_error`.

use crate::{
    blueprint::{parse_options, Registration},
    ops, sys, tensor, Blueprint, Params, PluginError, Seed, Tensor,
};
use std::{
    ffi::{c_char, CStr, CString},
    panic::{catch_unwind, AssertUnwindSafe},
    sync::OnceLock,
};

/// The plugin's description and the strings it points into, built once.
struct Exported {
    plugin: sys::EsperPlugin,
    _blueprints: Vec<sys::EsperBlueprint>,
    _strings: Vec<CString>,
}

// SAFETY: never written after it is built; its pointers point into the vectors it owns
// (heap memory that does not move) and into static functions.
unsafe impl Send for Exported {}
// SAFETY: as above: read-only after construction.
unsafe impl Sync for Exported {}

static EXPORTED: OnceLock<Exported> = OnceLock::new();

fn c_string(text: &str, strings: &mut Vec<CString>) -> *const c_char {
    let s = CString::new(text.replace('\0', " ")).expect("NUL bytes were replaced");
    let p = s.as_ptr();
    strings.push(s);
    p
}

fn build(name: &str, version: &str) -> Exported {
    let mut strings = Vec::new();
    let blueprints: Vec<sys::EsperBlueprint> = inventory::iter::<Registration>
        .into_iter()
        .map(|r| sys::EsperBlueprint {
            name: c_string(r.name, &mut strings),
            topology: c_string(r.topology, &mut strings),
            description: c_string(r.description, &mut strings),
            param_estimate: r.param_estimate,
            options_schema: match (r.options_schema)() {
                Some(schema) => c_string(&schema.to_string(), &mut strings),
                None => std::ptr::null(),
            },
            create: Some(r.create),
            forward: Some(r.forward),
            destroy: Some(r.destroy),
        })
        .collect();
    let plugin = sys::EsperPlugin {
        abi_major: sys::ABI_MAJOR,
        abi_minor: sys::ABI_MINOR,
        name: c_string(name, &mut strings),
        version: c_string(version, &mut strings),
        blueprint_count: blueprints.len(),
        blueprints: blueprints.as_ptr(),
    };
    Exported { plugin, _blueprints: blueprints, _strings: strings }
}

/// What the plugin's `esper_portable_plugin` (written by `export_plugin!`) does.
///
/// # Safety
/// `ops` is null or the runtime's op table, valid for the life of the process.
#[doc(hidden)]
pub unsafe fn entry(ops: *const sys::EsperOps, name: &str, version: &str) -> *const sys::EsperPlugin {
    if let Err(message) = tensor::install(ops) {
        // SAFETY: `set_error` is the table's second function in every ABI version; a
        // null table has none to call.
        if let Some(table) = unsafe { ops.as_ref() } {
            let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
            // SAFETY: a nul-terminated message, copied by the runtime.
            unsafe { (table.set_error)(sys::ERR_OTHER, message.as_ptr()) };
        }
        return std::ptr::null();
    }
    match catch_unwind(|| &EXPORTED.get_or_init(|| build(name, version)).plugin as *const sys::EsperPlugin) {
        Ok(plugin) => plugin,
        Err(payload) => {
            report(PluginError::from_panic("the entry point", payload));
            std::ptr::null()
        }
    }
}

/// Reports `e` through the runtime's `set_error` and returns its status code.
fn report(e: PluginError) -> sys::Status {
    let message = CString::new(e.message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: a nul-terminated message, copied by the runtime before this returns.
    unsafe { (ops().set_error)(e.kind.code(), message.as_ptr()) };
    e.kind.code()
}

/// Runs `f`, turning its error or panic into a reported status.
fn guard(context: &str, f: impl FnOnce() -> Result<(), PluginError>) -> sys::Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => sys::OK,
        Ok(Err(e)) => report(e),
        Err(payload) => report(PluginError::from_panic(context, payload)),
    }
}

pub(crate) unsafe extern "C" fn create<B: Blueprint>(
    params: *mut sys::EsperParams,
    channels: i64,
    options_json: *const c_char,
    out: *mut *mut sys::EsperSeed,
) -> sys::Status {
    guard("create", || {
        let options = if options_json.is_null() {
            ""
        } else {
            // SAFETY: the runtime passes a nul-terminated string that outlives the call.
            unsafe { CStr::from_ptr(options_json) }
                .to_str()
                .map_err(|_| PluginError::bad_options(format!("blueprint `{}`: options are not UTF-8", B::NAME)))?
        };
        let options = parse_options::<B::Options>(B::NAME, options)?;
        if channels <= 0 {
            return Err(PluginError::invalid_argument(format!(
                "blueprint `{}`: channels must be positive, got {channels}",
                B::NAME
            )));
        }
        let seed = B::create(&mut Params::new(params), channels, options)?;
        // SAFETY: `out` is the runtime's valid place for the seed pointer.
        unsafe { *out = Box::into_raw(Box::new(seed)).cast() };
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn forward<B: Blueprint>(
    seed: *mut sys::EsperSeed,
    input: *const sys::EsperTensor,
    train: i32,
    out: *mut *mut sys::EsperTensor,
) -> sys::Status {
    guard("forward", || {
        // SAFETY: `seed` is what `create::<B>` returned (the runtime keeps each seed with
        // its blueprint) and is not destroyed yet; the input handle is live for the call.
        let (seed, input) = unsafe { (&*seed.cast::<B::Seed>(), Tensor::borrowed(input)) };
        let input = input.ok_or_else(|| PluginError::invalid_argument("forward without an input"))?;
        let y = Seed::forward(seed, &input, train != 0)?;
        // SAFETY: `out` is the runtime's valid place for the output handle.
        unsafe { *out = y.into_raw() };
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn destroy<B: Blueprint>(seed: *mut sys::EsperSeed) -> sys::Status {
    guard("drop", || {
        if !seed.is_null() {
            // SAFETY: `seed` came from `Box::into_raw` in `create::<B>`; the runtime
            // destroys each seed once.
            drop(unsafe { Box::from_raw(seed.cast::<B::Seed>()) });
        }
        Ok(())
    })
}

/// Registers a blueprint type in this plugin: one line per blueprint.
#[macro_export]
macro_rules! register_blueprint {
    ($blueprint:ty) => {
        $crate::inventory::submit! { $crate::__private::Registration::of::<$blueprint>() }
    };
}

/// Exports the plugin: once per library. Writes the C entry point
/// `esper_portable_plugin`, which the runtime looks for.
#[macro_export]
macro_rules! export_plugin {
    () => {
        /// The portable plugin's entry point (see `esper_plugin.h` in `esper-plugin-sys`).
        ///
        /// # Safety
        /// Called by the runtime with its op table.
        #[no_mangle]
        pub unsafe extern "C" fn esper_portable_plugin(
            ops: *const $crate::sys::EsperOps,
        ) -> *const $crate::sys::EsperPlugin {
            // SAFETY: `ops` is the runtime's table (the caller's contract).
            unsafe { $crate::__private::entry(ops, env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")) }
        }
    };
}
