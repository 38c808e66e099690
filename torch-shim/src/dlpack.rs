//! A tensor handed to another library without a copy: libtorch's own DLPack export
//! (`at::toDLPack`, `cpp/dlpack.cpp`), which Python's torch reads from a `"dltensor"`
//! capsule. The export shares the tensor's memory and keeps it alive until its consumer
//! calls the deleter.

use crate::{
    call,
    sys::{esper_dlpack_free, esper_to_dlpack},
    ShimError,
};
use std::{ffi::c_void, ptr::NonNull};
use tch::Tensor;

/// libtorch's `DLManagedTensor` of a tensor, owned until given away with
/// [`DlPack::into_raw`]; dropped unconsumed, it is freed.
pub struct DlPack(NonNull<c_void>);

impl DlPack {
    /// `t` as DLPack: its memory, shape, strides, dtype and device (libtorch refuses a
    /// dtype DLPack lacks, naming it).
    pub fn export(t: &Tensor) -> Result<Self, ShimError> {
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: `t` is a live tensor handle for the call; `out` is a live pointer the
        // shim writes; exceptions are caught in the shim.
        call(|err, len| unsafe { esper_to_dlpack(t.as_ptr(), &mut out, err, len) })?;
        NonNull::new(out).map(Self).ok_or_else(|| ShimError("libtorch's DLPack export was null".into()))
    }

    /// The `DLManagedTensor *`, given away: its consumer frees it through its deleter, or
    /// [`free`] does when nobody consumed it.
    pub fn into_raw(self) -> *mut c_void {
        let ptr = self.0.as_ptr();
        std::mem::forget(self);
        ptr
    }
}

impl Drop for DlPack {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `esper_to_dlpack` and was not given away.
        unsafe { esper_dlpack_free(self.0.as_ptr()) }
    }
}

/// Frees a `DLManagedTensor *` from [`DlPack::into_raw`] that nobody consumed.
///
/// # Safety
/// `managed` came from [`DlPack::into_raw`] and was neither consumed nor freed.
pub unsafe fn free(managed: *mut c_void) {
    // SAFETY: as the caller promises.
    unsafe { esper_dlpack_free(managed) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn a_tensor_exports_and_a_dtype_dlpack_lacks_is_refused_by_name() {
        let t = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
        let raw = DlPack::export(&t).unwrap().into_raw();
        drop(t); // the export holds its own reference to the storage
                 // SAFETY: from `into_raw`, not consumed.
        unsafe { free(raw) };
        let q = Tensor::ones([2], (Kind::Float, Device::Cpu)).quantize_per_tensor(0.1, 0, Kind::QInt8);
        let err = DlPack::export(&q).err().expect("a quantized tensor has no DLPack form");
        assert!(err.0.contains("not supported by dlpack"), "{err}");
    }
}
