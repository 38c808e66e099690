//! Opening a portable plugin: find its entry point, give it the op table, read and
//! check what it describes (ABI version, names, blueprints) before anything is used.

use super::{handle::take_error, ops::OPS, PortableBlueprint};
use esper_plugin_api::abi::{AbiVersion, BlueprintDescriptor, Mismatch, ABI_VERSION};
use esper_plugin_sys::{self as sys, EntryFn, EsperPlugin};
use std::{
    ffi::{c_char, CStr},
    path::Path,
};

/// Why a portable library was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum PortableLoadError {
    /// Built against an ABI this runtime does not accept.
    Version(Mismatch),
    /// Its entry point failed, or what it describes is malformed.
    Invalid(String),
}

/// A portable plugin library, opened and checked. Never unloaded (seeds and handles
/// point into it).
pub struct PortableLibrary {
    name: String,
    version: String,
    abi: AbiVersion,
    blueprints: Vec<PortableBlueprint>,
}

/// More blueprints than this in one library is taken for garbage.
const MAX_BLUEPRINTS: usize = 4096;

impl PortableLibrary {
    /// Opens `file` as a portable plugin: `None` when it is no loadable library or does
    /// not export `esper_portable_plugin` (then it may be a native plugin).
    ///
    /// `file` goes straight to the dynamic loader, which trusts its headers: a library
    /// cut short crashes the process (SIGBUS). Give only a file whose ELF headers were
    /// checked, as the runtime's loader does (`esper_runtime::plugin`, the only caller).
    pub fn open(file: &Path) -> Option<Result<PortableLibrary, PortableLoadError>> {
        // SAFETY: loading a plugin runs its initialisers; that is what loading a plugin
        // means (the native path does the same through abi_stable).
        let library = unsafe { libloading::Library::new(file) }.ok()?;
        // SAFETY: the symbol, when present, is the portable entry point (ABI); its type
        // is the header's `esper_portable_entry_fn`.
        let entry = unsafe { library.get::<EntryFn>(sys::ENTRY_SYMBOL.as_bytes()) }.ok().map(|s| *s);
        // Never unloaded: a native plugin is opened again by abi_stable, which keeps it;
        // a portable one's code and strings are used for the life of the process.
        std::mem::forget(library);
        entry.map(Self::read)
    }

    fn read(entry: EntryFn) -> Result<PortableLibrary, PortableLoadError> {
        let _ = take_error();
        // SAFETY: the plugin's entry point, given the runtime's op table, which lives for
        // the process.
        let plugin: *const EsperPlugin = unsafe { entry(&OPS) };
        // SAFETY: null or the plugin's description, valid for the process (ABI).
        let Some(plugin) = (unsafe { plugin.as_ref() }) else {
            let why = take_error().map_or("it returned nothing and no message".into(), |(_, m)| m);
            return Err(PortableLoadError::Invalid(format!("its entry point refused this runtime: {why}")));
        };
        let abi = AbiVersion::new(plugin.abi_major, plugin.abi_minor);
        ABI_VERSION.accepts(abi).map_err(PortableLoadError::Version)?;
        let invalid = PortableLoadError::Invalid;
        let name = text(plugin.name, "its name").map_err(invalid)?;
        let version = text(plugin.version, "its version").map_err(invalid)?;
        let count = plugin.blueprint_count;
        if count > MAX_BLUEPRINTS || (count > 0 && plugin.blueprints.is_null()) {
            return Err(invalid(format!("it describes {count} blueprints at {:p}", plugin.blueprints)));
        }
        // SAFETY: `count` blueprints at a non-null pointer (checked), valid for the
        // process (ABI).
        let raw = if count == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(plugin.blueprints, count) } };
        let blueprints = raw.iter().map(blueprint).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
        Ok(PortableLibrary { name, version, abi, blueprints })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn version(&self) -> &str {
        &self.version
    }
    /// The ABI version the plugin was built against.
    pub fn abi(&self) -> AbiVersion {
        self.abi
    }
    pub fn blueprints(&self) -> &[PortableBlueprint] {
        &self.blueprints
    }
}

/// The UTF-8 text at `p`, named `what` in errors.
fn text(p: *const c_char, what: &str) -> Result<String, String> {
    if p.is_null() {
        return Err(format!("{what} is null"));
    }
    // SAFETY: a nul-terminated string valid for the process (ABI).
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map(str::to_string).map_err(|_| format!("{what} is not UTF-8"))
}

fn blueprint(b: &sys::EsperBlueprint) -> Result<PortableBlueprint, String> {
    let name = text(b.name, "a blueprint's name")?;
    let what = |field: &str| format!("blueprint `{name}`: {field}");
    let descriptor = BlueprintDescriptor {
        topology: text(b.topology, &what("its topology"))?.into(),
        description: text(b.description, &what("its description"))?.into(),
        param_estimate: b.param_estimate,
        name: name.as_str().into(),
    };
    let options_schema =
        if b.options_schema.is_null() { None } else { Some(text(b.options_schema, &what("its options schema"))?) };
    let (Some(create), Some(forward), Some(destroy)) = (b.create, b.forward, b.destroy) else {
        return Err(what("a null create, forward or destroy function"));
    };
    Ok(PortableBlueprint::new(descriptor, options_schema, create, forward, destroy))
}
