//! Tensor handles as the runtime hands them to portable plugins, and the per-thread
//! error slot of the op table.

use esper_plugin_sys::{self as sys, EsperTensor, Status};
use std::{cell::RefCell, ffi::CString};
use tch::Tensor;

/// Marks a live handle: a handle whose first word is not this was freed or is foreign.
const MAGIC: u64 = 0x4553_5045_525f_5431; // "ESPER_T1"

/// What an `esper_tensor *` points at.
pub(crate) struct Handle {
    magic: u64,
    /// `false` for the borrowed input of `forward`: `drop` ignores it.
    owned: bool,
    pub(crate) tensor: Tensor,
}

impl Handle {
    /// A new owned handle, given to the plugin.
    pub(crate) fn owned(tensor: Tensor) -> *mut EsperTensor {
        Box::into_raw(Box::new(Handle { magic: MAGIC, owned: true, tensor })).cast()
    }

    /// A handle the runtime lends for one call (kept on the runtime's stack).
    pub(crate) fn borrowed(tensor: Tensor) -> Handle {
        Handle { magic: MAGIC, owned: false, tensor }
    }

    pub(crate) fn as_raw(&self) -> *const EsperTensor {
        (self as *const Handle).cast()
    }

    /// The handle behind `raw`, when it is one.
    ///
    /// # Safety
    /// `raw` is null or points at memory readable as a [`Handle`] (a handle the runtime
    /// made and the plugin has not dropped).
    pub(crate) unsafe fn get<'a>(raw: *const EsperTensor) -> Result<&'a Handle, String> {
        // SAFETY: by the caller's contract.
        let handle = unsafe { raw.cast::<Handle>().as_ref() }.ok_or("a tensor handle is null")?;
        if handle.magic != MAGIC {
            return Err("a tensor handle is not live (dropped twice, or not made by the runtime)".into());
        }
        Ok(handle)
    }

    /// Frees an owned handle; a borrowed or dead one is left alone.
    ///
    /// # Safety
    /// As [`Handle::get`]; the plugin does not use `raw` afterwards.
    pub(crate) unsafe fn drop_raw(raw: *mut EsperTensor) {
        // SAFETY: by the caller's contract.
        if matches!(unsafe { Handle::get(raw) }, Ok(h) if h.owned) {
            // SAFETY: an owned live handle was made by `Box::into_raw` in `owned`.
            let mut handle = unsafe { Box::from_raw(raw.cast::<Handle>()) };
            handle.magic = 0;
        }
    }

    /// Takes the tensor out of the handle the plugin returned from `forward`: an owned
    /// handle is freed, the borrowed input gives a new reference to the input.
    ///
    /// # Safety
    /// As [`Handle::drop_raw`].
    pub(crate) unsafe fn take(raw: *mut EsperTensor) -> Result<Tensor, String> {
        // SAFETY: by the caller's contract.
        let handle = unsafe { Handle::get(raw) }?;
        if !handle.owned {
            return Ok(handle.tensor.shallow_clone());
        }
        // SAFETY: an owned live handle was made by `Box::into_raw` in `owned`.
        let mut handle = unsafe { Box::from_raw(raw.cast::<Handle>()) };
        handle.magic = 0;
        let Handle { tensor, .. } = *handle;
        Ok(tensor)
    }
}

thread_local! {
    /// The last error on this thread: its status and nul-terminated message.
    static LAST_ERROR: RefCell<Option<(Status, CString)>> = const { RefCell::new(None) };
}

/// Records an error for `last_error` and returns its status.
pub(crate) fn set_error(code: Status, message: &str) -> Status {
    let code = if code == sys::OK { sys::ERR_OTHER } else { code };
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some((code, text)));
    code
}

/// The message of the last error on this thread (null when none); valid until the next
/// error is recorded on this thread.
pub(crate) fn last_error_ptr() -> *const std::ffi::c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |(_, m)| m.as_ptr()))
}

/// Takes the last error on this thread, if any.
pub(crate) fn take_error() -> Option<(Status, String)> {
    LAST_ERROR.with(|e| e.borrow_mut().take()).map(|(c, m)| (c, m.to_string_lossy().into_owned()))
}
