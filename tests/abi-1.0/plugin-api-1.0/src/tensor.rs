//! Tensor handles that cross the plugin boundary.
//!
//! Both sides link the same libtorch shared library, so a tensor is passed as the
//! pointer to its libtorch `at::Tensor` object (what `tch::Tensor` wraps). Two handle
//! types make the ownership explicit:
//!
//! * [`TensorRef`]: **borrowed**. Valid for the duration of the call it is passed to;
//!   the receiver must not free it and must not keep it. Viewing it as a `tch::Tensor`
//!   costs nothing (no allocation, no reference-count change).
//! * [`TensorOut`]: **owned**. The receiver owns the `at::Tensor` object and frees it
//!   when the handle (or the `tch::Tensor` made from it) is dropped.
//!
//! This module is the only place in the workspace where tensors cross the ABI, and so
//! the only place with `unsafe` code for it. Plugin authors only see `tch::Tensor`.

use abi_stable::StableAbi;
use std::{ffi::c_void, marker::PhantomData, mem::ManuallyDrop, ops::Deref, ptr::NonNull};
use tch::Tensor;
use torch_sys::C_tensor;

/// A borrowed tensor: valid for the call it is passed to, never freed by the receiver.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct TensorRef<'a> {
    ptr: NonNull<c_void>,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> TensorRef<'a> {
    /// Lends `tensor` for the lifetime of the borrow.
    pub fn new(tensor: &'a Tensor) -> Self {
        let ptr = NonNull::new(tensor.as_ptr() as *mut c_void).expect("tch tensors are never null");
        Self { ptr, _borrow: PhantomData }
    }

    /// Views the borrowed tensor as a `tch::Tensor` for the duration of the borrow.
    pub fn view(self) -> TensorView<'a> {
        // SAFETY: `ptr` came from a live `tch::Tensor` borrowed for `'a` (see `new`), so
        // it points to a valid `at::Tensor` for `'a`. The view is wrapped in
        // `ManuallyDrop` and never dropped, so the lender keeps sole ownership, and
        // `TensorView` only hands out `&Tensor`, so it cannot be moved out or freed.
        let tensor = unsafe { Tensor::from_ptr(self.ptr.as_ptr() as *mut C_tensor) };
        TensorView { tensor: ManuallyDrop::new(tensor), _borrow: PhantomData }
    }
}

/// A `tch::Tensor` view of a [`TensorRef`]; dereferences to `&Tensor`.
pub struct TensorView<'a> {
    tensor: ManuallyDrop<Tensor>,
    _borrow: PhantomData<&'a ()>,
}

impl Deref for TensorView<'_> {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.tensor
    }
}

/// An owned tensor: whoever holds it frees it.
#[repr(transparent)]
#[derive(StableAbi)]
pub struct TensorOut {
    ptr: NonNull<c_void>,
}

// SAFETY: a `TensorOut` is an owned `tch::Tensor` in another form, and `tch::Tensor` is
// `Send` (libtorch tensors may move between threads).
unsafe impl Send for TensorOut {}

impl TensorOut {
    /// Gives up ownership of `tensor` so that it can cross the boundary.
    pub fn new(tensor: Tensor) -> Self {
        let mut tensor = ManuallyDrop::new(tensor);
        let ptr = NonNull::new(tensor.as_mut_ptr() as *mut c_void).expect("tch tensors are never null");
        Self { ptr }
    }

    /// Takes ownership back as a `tch::Tensor`.
    pub fn into_tensor(self) -> Tensor {
        let this = ManuallyDrop::new(self);
        // SAFETY: `ptr` came from a `tch::Tensor` whose ownership was given up in `new`
        // and has not been reclaimed (the handle is consumed here and its `Drop` is
        // suppressed), so exactly one owner results. Both sides of the boundary link
        // the same libtorch, so the object is freed by the same allocator.
        unsafe { Tensor::from_ptr(this.ptr.as_ptr() as *mut C_tensor) }
    }
}

impl Drop for TensorOut {
    fn drop(&mut self) {
        // SAFETY: as in `into_tensor`: this handle is the sole owner of the object, and
        // dropping the reclaimed `tch::Tensor` frees it exactly once.
        drop(unsafe { Tensor::from_ptr(self.ptr.as_ptr() as *mut C_tensor) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn borrowed_view_reads_the_same_tensor_without_taking_it() {
        let t = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
        {
            let v = TensorRef::new(&t).view();
            assert_eq!(v.size(), vec![2, 3]);
            assert_eq!(v.data_ptr(), t.data_ptr());
        }
        // `t` is still alive and intact after the view is gone.
        assert_eq!(t.sum(Kind::Float).double_value(&[]), 15.0);
    }

    #[test]
    fn owned_round_trip_keeps_storage() {
        let t = Tensor::ones([4], (Kind::Float, Device::Cpu));
        let ptr = t.data_ptr();
        let back = TensorOut::new(t).into_tensor();
        assert_eq!(back.data_ptr(), ptr);
        drop(TensorOut::new(back)); // frees through Drop
    }
}
