//! Parameters of a portable seed: the op table's `param` reaches the runtime's
//! [`ParamSink`](esper_plugin_api::abi::ParamSink) of the seed being created, and only
//! while it is.

use super::handle::{set_error, Handle};
use esper_plugin_api::{
    abi::{ParamSinkRef, ParamSpec},
    ErrorKind, Init,
};
use esper_plugin_sys::{self as sys, EsperInit, EsperParams, Out, Status};
use std::{cell::Cell, ffi::c_char};

thread_local! {
    /// The sink of the seed being created on this thread (null outside `create`).
    static CURRENT: Cell<*mut EsperParams> = const { Cell::new(std::ptr::null_mut()) };
}

/// Runs `f` with `sink` reachable through the handle it receives.
pub(crate) fn with_sink<R>(sink: &mut ParamSinkRef<'_>, f: impl FnOnce(*mut EsperParams) -> R) -> R {
    let raw = (sink as *mut ParamSinkRef<'_>).cast::<EsperParams>();
    let previous = CURRENT.with(|c| c.replace(raw));
    let result = f(raw);
    CURRENT.with(|c| c.set(previous));
    result
}

/// The status code of a plugin-API error kind.
pub(crate) fn code_of(kind: ErrorKind) -> Status {
    match kind {
        ErrorKind::BadOptions => sys::ERR_BAD_OPTIONS,
        ErrorKind::UnknownBlueprint => sys::ERR_UNKNOWN_BLUEPRINT,
        ErrorKind::Panic => sys::ERR_PANIC,
        ErrorKind::Tensor => sys::ERR_TENSOR,
        ErrorKind::InvalidArgument => sys::ERR_INVALID_ARGUMENT,
        ErrorKind::Other => sys::ERR_OTHER,
    }
}

/// The plugin-API error kind of a status code.
pub(crate) fn kind_of(code: Status) -> ErrorKind {
    match code {
        sys::ERR_BAD_OPTIONS => ErrorKind::BadOptions,
        sys::ERR_UNKNOWN_BLUEPRINT => ErrorKind::UnknownBlueprint,
        sys::ERR_PANIC => ErrorKind::Panic,
        sys::ERR_TENSOR => ErrorKind::Tensor,
        sys::ERR_INVALID_ARGUMENT => ErrorKind::InvalidArgument,
        _ => ErrorKind::Other,
    }
}

fn init_of(init: EsperInit) -> Result<Init, String> {
    Ok(match init.kind {
        sys::INIT_ZEROS => Init::Zeros,
        sys::INIT_ONES => Init::Ones,
        sys::INIT_CONSTANT => Init::Constant { value: init.a },
        sys::INIT_UNIFORM => Init::Uniform { lo: init.a, hi: init.b },
        sys::INIT_NORMAL => Init::Normal { mean: init.a, std: init.b },
        sys::INIT_KAIMING_UNIFORM => Init::KaimingUniform,
        other => return Err(format!("unknown initialiser kind {other}")),
    })
}

pub(crate) unsafe extern "C" fn param(
    params: *mut EsperParams,
    name: *const c_char,
    shape: *const i64,
    ndim: usize,
    init: EsperInit,
    flags: i32,
    out: Out,
) -> Status {
    if params.is_null() || params != CURRENT.with(Cell::get) {
        return set_error(
            sys::ERR_INVALID_ARGUMENT,
            "param: called outside the seed's create (parameters are created only while the runtime creates the seed)",
        );
    }
    if name.is_null() || out.is_null() || (shape.is_null() && ndim > 0) {
        return set_error(sys::ERR_INVALID_ARGUMENT, "param: a null name, shape or output place");
    }
    // SAFETY: a nul-terminated name (ABI, checked non-null).
    let Ok(name) = (unsafe { std::ffi::CStr::from_ptr(name) }).to_str() else {
        return set_error(sys::ERR_INVALID_ARGUMENT, "param: the name is not UTF-8");
    };
    // SAFETY: `shape` points at `ndim` values (ABI, checked non-null when ndim > 0).
    let shape: &[i64] = if ndim == 0 { &[] } else { unsafe { std::slice::from_raw_parts(shape, ndim) } };
    let init = match init_of(init) {
        Ok(i) => i,
        Err(e) => return set_error(sys::ERR_INVALID_ARGUMENT, &format!("param `{name}`: {e}")),
    };
    // SAFETY: `params` is the live sink of this thread's `create` (checked against
    // CURRENT above), made from a `&mut ParamSinkRef` in `with_sink` that outlives it.
    let sink = unsafe { &mut *params.cast::<ParamSinkRef<'_>>() };
    let trainable = flags & sys::PARAM_TRAINABLE != 0;
    let spec = ParamSpec { name: name.into(), shape: shape.into(), init, trainable };
    let created = sink.create(spec).into_result().and_then(|t| {
        if flags & sys::PARAM_OUTPUT_LAYER != 0 {
            sink.mark_output(name.into()).into_result()?;
        }
        Ok(t)
    });
    match created {
        Ok(t) => {
            // SAFETY: a valid place (ABI, checked non-null).
            unsafe { *out = Handle::owned(t.into_tensor()) };
            sys::OK
        }
        Err(e) => set_error(code_of(e.kind), &e.message),
    }
}
