//! Tensors of the runtime handed to Python's torch without a copy, through DLPack:
//! libtorch's own export of the tensor (`esper_torch_shim::dlpack`, `at::toDLPack`),
//! which keeps the storage alive, in a `"dltensor"` capsule that
//! `torch.utils.dlpack.from_dlpack` consumes. The result shares memory with the
//! runtime's tensor: an in-place change on either side is seen by the other. The only
//! unsafe code of the crate: this is where tensors cross into Python's ABI (a capsule).

use esper_torch_shim::dlpack::{self, DlPack};
use pyo3::{exceptions::PyValueError, ffi, prelude::*};
use std::ffi::CStr;
use tch::Tensor;

const CAPSULE: &CStr = c"dltensor";

/// The capsule's destructor: frees the export unless torch consumed it.
unsafe extern "C" fn destroy_capsule(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with the capsule being destroyed. torch renames a capsule
    // it consumed ("used_dltensor") and frees its export through the deleter, so one
    // still valid under `CAPSULE` holds an export nobody freed, from `DlPack::into_raw`.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, CAPSULE.as_ptr()) == 1 {
            dlpack::free(ffi::PyCapsule_GetPointer(capsule, CAPSULE.as_ptr()));
        }
    }
}

/// `tensor` in a DLPack capsule that owns libtorch's export of it.
fn capsule<'py>(py: Python<'py>, tensor: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let export = DlPack::export(tensor).map_err(|e| PyValueError::new_err(format!("no DLPack form: {e}")))?;
    let managed = export.into_raw();
    // SAFETY: `managed` is a live export given away to the capsule, whose destructor
    // frees it unless torch consumes it; freed here when no capsule could be made.
    unsafe {
        let raw = ffi::PyCapsule_New(managed, CAPSULE.as_ptr(), Some(destroy_capsule));
        if raw.is_null() {
            dlpack::free(managed);
        }
        Bound::from_owned_ptr_or_err(py, raw)
    }
}

/// `tensor` as a `torch.Tensor` sharing its memory (no copy; no autograd history).
pub fn to_torch<'py>(py: Python<'py>, tensor: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let capsule = capsule(py, tensor)?;
    py.import("torch.utils.dlpack")?.getattr("from_dlpack")?.call1((capsule,))
}
