//! Tensors of the runtime handed to Python's torch without a copy, through DLPack: a
//! `DLManagedTensor` describing the tensor's memory (pointer, shape, strides, dtype,
//! device), owning a shallow clone of the tensor (so the storage lives as long as
//! Python's tensor does), in a `"dltensor"` capsule that `torch.utils.dlpack.from_dlpack`
//! consumes. The result shares memory with the runtime's tensor: an in-place change on
//! either side is seen by the other. The only unsafe code of the crate: this is where
//! tensors cross into another library's ABI (the DLPack C structs, a Python capsule).

use pyo3::{exceptions::PyValueError, ffi, prelude::*};
use std::ffi::{c_void, CStr};
use tch::{Device, Kind, Tensor};

/// DLPack's `DLDevice`.
#[repr(C)]
struct DlDevice {
    device_type: i32,
    device_id: i32,
}

/// DLPack's `DLDataType`.
#[repr(C)]
struct DlDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

/// DLPack's `DLTensor`.
#[repr(C)]
struct DlTensor {
    data: *mut c_void,
    device: DlDevice,
    ndim: i32,
    dtype: DlDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

/// DLPack's `DLManagedTensor` (the unversioned one every torch reads).
#[repr(C)]
struct DlManagedTensor {
    dl_tensor: DlTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DlManagedTensor)>,
}

/// What a capsule owns: the tensor (keeping its storage alive), the shape and strides
/// its `DlTensor` points into, and the `DlManagedTensor` itself.
struct Export {
    _tensor: Tensor,
    shape: Vec<i64>,
    strides: Vec<i64>,
    managed: DlManagedTensor,
}

const CAPSULE: &CStr = c"dltensor";

/// DLPack's type code and bits for `kind`.
fn dtype(kind: Kind) -> PyResult<DlDataType> {
    let (code, bits) = match kind {
        Kind::Bool => (6, 8),
        Kind::Uint8 => (1, 8),
        Kind::Int8 => (0, 8),
        Kind::Int16 => (0, 16),
        Kind::Int => (0, 32),
        Kind::Int64 => (0, 64),
        Kind::Half => (2, 16),
        Kind::Float => (2, 32),
        Kind::Double => (2, 64),
        Kind::BFloat16 => (4, 16),
        other => return Err(PyValueError::new_err(format!("a {other:?} tensor has no DLPack form"))),
    };
    Ok(DlDataType { code, bits, lanes: 1 })
}

/// DLPack's device for `device`.
fn device(device: Device) -> PyResult<DlDevice> {
    match device {
        Device::Cpu => Ok(DlDevice { device_type: 1, device_id: 0 }),
        Device::Cuda(id) => Ok(DlDevice { device_type: 2, device_id: id as i32 }),
        other => Err(PyValueError::new_err(format!("a tensor on {other:?} has no DLPack form here"))),
    }
}

/// Frees the `Export` behind `managed`: DLPack's deleter, called by torch when its
/// tensor goes, or by the capsule's destructor when torch never took it.
unsafe extern "C" fn delete(managed: *mut DlManagedTensor) {
    if managed.is_null() {
        return;
    }
    // SAFETY: `manager_ctx` is the `Box<Export>` leaked by `capsule`, freed once: torch
    // calls the deleter once for a capsule it consumed (and renames it), the capsule's
    // destructor only for one it did not.
    unsafe { drop(Box::from_raw((*managed).manager_ctx.cast::<Export>())) };
}

/// The capsule's destructor: frees the export unless torch consumed it.
unsafe extern "C" fn destroy_capsule(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with the capsule being destroyed; a consumed capsule is
    // renamed "used_dltensor" by torch, so it is not valid under `CAPSULE` any more.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, CAPSULE.as_ptr()) == 1 {
            delete(ffi::PyCapsule_GetPointer(capsule, CAPSULE.as_ptr()).cast());
        }
    }
}

/// `tensor` in a DLPack capsule owning a shallow clone of it.
fn capsule<'py>(py: Python<'py>, tensor: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let (dtype, device) = (dtype(tensor.kind())?, device(tensor.device())?);
    let mut export = Box::new(Export {
        _tensor: tensor.shallow_clone(),
        shape: tensor.size(),
        strides: tensor.stride(),
        managed: DlManagedTensor {
            dl_tensor: DlTensor {
                data: tensor.data_ptr(),
                device,
                ndim: tensor.dim() as i32,
                dtype,
                shape: std::ptr::null_mut(),
                strides: std::ptr::null_mut(),
                byte_offset: 0,
            },
            manager_ctx: std::ptr::null_mut(),
            deleter: Some(delete),
        },
    });
    export.managed.dl_tensor.shape = export.shape.as_mut_ptr();
    export.managed.dl_tensor.strides = export.strides.as_mut_ptr();
    let export = Box::into_raw(export);
    // SAFETY: `export` is a live, leaked box; its `managed` field (and the vectors it
    // points into) stay where they are until `delete` frees the box.
    unsafe {
        (*export).managed.manager_ctx = export.cast();
        let managed = std::ptr::addr_of_mut!((*export).managed);
        let raw = ffi::PyCapsule_New(managed.cast(), CAPSULE.as_ptr(), Some(destroy_capsule));
        if raw.is_null() {
            delete(managed);
        }
        Bound::from_owned_ptr_or_err(py, raw)
    }
}

/// `tensor` as a `torch.Tensor` sharing its memory (no copy; no autograd history).
pub fn to_torch<'py>(py: Python<'py>, tensor: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let capsule = capsule(py, tensor)?;
    py.import("torch.utils.dlpack")?.getattr("from_dlpack")?.call1((capsule,))
}
