//! A portable blueprint and the seeds it creates, as the runtime calls them.

use super::{
    handle::{take_error, Handle},
    params::{kind_of, with_sink},
};
use esper_plugin_api::{
    abi::{BlueprintDescriptor, ParamSinkRef},
    ErrorKind, PluginError,
};
use esper_plugin_sys::{self as sys, CreateFn, DestroyFn, EsperSeed, ForwardFn};
use std::{ffi::CString, ptr::NonNull};
use tch::Tensor;

/// The error the plugin reported for a failed call of `what`.
fn reported(status: sys::Status, what: &str) -> PluginError {
    match take_error() {
        Some((code, message)) => PluginError::new(kind_of(code), message),
        None => PluginError::new(kind_of(status), format!("{what} failed with status {status} and no message")),
    }
}

/// One blueprint of a portable library.
pub struct PortableBlueprint {
    descriptor: BlueprintDescriptor,
    options_schema: Option<String>,
    create: CreateFn,
    forward: ForwardFn,
    destroy: DestroyFn,
}

impl PortableBlueprint {
    pub(crate) fn new(
        descriptor: BlueprintDescriptor,
        options_schema: Option<String>,
        create: CreateFn,
        forward: ForwardFn,
        destroy: DestroyFn,
    ) -> Self {
        Self { descriptor, options_schema, create, forward, destroy }
    }

    pub fn descriptor(&self) -> &BlueprintDescriptor {
        &self.descriptor
    }
    /// The options' JSON schema as the plugin wrote it, if it publishes one.
    pub fn options_schema(&self) -> Option<&str> {
        self.options_schema.as_deref()
    }

    /// Creates a seed for `channels` channels; its parameters come from `sink`.
    pub fn create(
        &self,
        mut sink: ParamSinkRef<'_>,
        channels: i64,
        options_json: &str,
    ) -> Result<PortableSeed, PluginError> {
        let options = CString::new(options_json)
            .map_err(|_| PluginError::new(ErrorKind::BadOptions, "the options contain a NUL byte"))?;
        let mut out: *mut EsperSeed = std::ptr::null_mut();
        let _ = take_error();
        // SAFETY: the plugin's create (checked non-null at load) with a live sink handle,
        // a nul-terminated options text and a valid place for the seed.
        let status =
            with_sink(&mut sink, |params| unsafe { (self.create)(params, channels, options.as_ptr(), &mut out) });
        if status != sys::OK {
            return Err(reported(status, "create"));
        }
        let raw = NonNull::new(out)
            .ok_or_else(|| PluginError::new(ErrorKind::Other, "create succeeded without returning a seed"))?;
        Ok(PortableSeed { raw, forward: self.forward, destroy: self.destroy, released: false })
    }
}

/// A seed of a portable plugin.
pub struct PortableSeed {
    raw: NonNull<EsperSeed>,
    forward: ForwardFn,
    destroy: DestroyFn,
    released: bool,
}

// SAFETY: the portable ABI requires a seed to be usable from any thread, one call at a
// time; `&mut self` / the runtime's slot ownership give the one-at-a-time.
unsafe impl Send for PortableSeed {}

impl PortableSeed {
    /// Runs the plugin's forward on `input` (borrowed for the call).
    pub fn forward(&self, input: &Tensor, train: bool) -> Result<Tensor, PluginError> {
        if self.released {
            return Err(PluginError::new(ErrorKind::InvalidArgument, "forward on a released seed"));
        }
        let borrowed = Handle::borrowed(input.shallow_clone());
        let mut out = std::ptr::null_mut();
        // SAFETY: the plugin's forward with the seed its create returned (not destroyed:
        // `released` is false), a borrowed handle that outlives the call and a valid place.
        let status = unsafe { (self.forward)(self.raw.as_ptr(), borrowed.as_raw(), train as i32, &mut out) };
        if status != sys::OK {
            return Err(reported(status, "forward"));
        }
        if out.is_null() {
            return Err(PluginError::new(ErrorKind::Other, "forward succeeded without returning a tensor"));
        }
        // SAFETY: `out` is a handle the plugin hands over (the borrowed one included).
        unsafe { Handle::take(out) }
            .map_err(|e| PluginError::new(ErrorKind::InvalidArgument, format!("forward returned {e}")))
    }

    /// Destroys the plugin's seed now, reporting its failure.
    pub fn release(&mut self) -> Result<(), PluginError> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        let _ = take_error();
        // SAFETY: the seed its create returned, destroyed exactly once (`released`).
        let status = unsafe { (self.destroy)(self.raw.as_ptr()) };
        if status == sys::OK {
            Ok(())
        } else {
            Err(reported(status, "destroy"))
        }
    }
}

impl Drop for PortableSeed {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("esper: a portable seed failed to release: {e}");
        }
    }
}
