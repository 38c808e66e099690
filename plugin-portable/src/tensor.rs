//! The runtime's tensors as a portable plugin sees them: owned handles, every op a call
//! through the runtime's op table, every failure a [`PluginError`] naming the op and the
//! shapes.

use crate::{sys, ErrorKind, PluginError};
use std::{
    ffi::CStr,
    mem::ManuallyDrop,
    ptr::{self, NonNull},
    sync::atomic::{AtomicPtr, Ordering},
};

/// The runtime's op table, installed by the entry point before any seed exists.
static OPS: AtomicPtr<sys::EsperOps> = AtomicPtr::new(ptr::null_mut());

/// Keeps the runtime's op table, after checking that this plugin can work with it: the
/// same ABI major, a minor no older than this crate's, a table at least as long as ours.
pub(crate) fn install(ops: *const sys::EsperOps) -> Result<(), String> {
    // SAFETY: the runtime passes its table, which lives for the process; null is refused.
    let table = unsafe { ops.as_ref() }.ok_or("the runtime passed no op table")?;
    let (major, minor) = (table.abi_major, table.abi_minor);
    if major != sys::ABI_MAJOR || minor < sys::ABI_MINOR {
        return Err(format!(
            "plugin built against ABI {}.{}, runtime offers ABI {major}.{minor}",
            sys::ABI_MAJOR,
            sys::ABI_MINOR
        ));
    }
    if (table.size as usize) < std::mem::size_of::<sys::EsperOps>() {
        return Err(format!(
            "the runtime's op table is {} bytes, ABI {major}.{minor} needs at least {}",
            table.size,
            std::mem::size_of::<sys::EsperOps>()
        ));
    }
    OPS.store(ops.cast_mut(), Ordering::Release);
    Ok(())
}

/// The installed op table.
pub(crate) fn ops() -> &'static sys::EsperOps {
    let table = OPS.load(Ordering::Acquire);
    assert!(!table.is_null(), "esper-plugin-portable: no op table (the plugin's entry point was not called)");
    // SAFETY: non-null, and only ever set by `install` to the runtime's table, which
    // lives for the process and is never written after.
    unsafe { &*table }
}

/// The error the op table reports for a failed call on this thread.
pub(crate) fn last_error(status: sys::Status) -> PluginError {
    // SAFETY: `last_error` returns null or a nul-terminated string valid until the next
    // op on this thread; it is copied at once.
    let text = unsafe {
        let p = (ops().last_error)();
        if p.is_null() {
            None
        } else {
            Some(CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    };
    PluginError::new(
        ErrorKind::from_code(status),
        text.unwrap_or_else(|| format!("an op failed with status {status} and no message")),
    )
}

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Float,
    Double,
    Half,
    BFloat16,
    Int64,
    Int,
    Bool,
    Uint8,
    /// A type the ABI has no name for.
    Other,
}

/// Where a tensor lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(i32),
    Other,
}

/// A tensor of the runtime, owned by this handle (dropping it releases the handle; the
/// tensor lives on while anything else holds it). Ops return new tensors and never
/// write their inputs.
pub struct Tensor {
    raw: NonNull<sys::EsperTensor>,
}

// SAFETY: a handle owns a reference to one of the runtime's tensors, which libtorch lets
// any thread use; the op table's functions may be called from any thread.
unsafe impl Send for Tensor {}

macro_rules! unary {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(&self) -> Result<Tensor, PluginError> {
            let f = ops().$name;
            // SAFETY: `self` is a live handle; `out` is a valid place for the result.
            Self::call(|out| unsafe { f(self.as_ptr(), out) })
        }
    )*};
}

macro_rules! binary {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(&self, other: &Tensor) -> Result<Tensor, PluginError> {
            let f = ops().$name;
            // SAFETY: both are live handles; `out` is a valid place for the result.
            Self::call(|out| unsafe { f(self.as_ptr(), other.as_ptr(), out) })
        }
    )*};
}

macro_rules! scalar {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(&self, s: f64) -> Result<Tensor, PluginError> {
            let f = ops().$name;
            // SAFETY: `self` is a live handle; `out` is a valid place for the result.
            Self::call(|out| unsafe { f(self.as_ptr(), s, out) })
        }
    )*};
}

impl Tensor {
    /// Runs one op-table call that writes a new handle to `out`.
    pub(crate) fn call(f: impl FnOnce(sys::Out) -> sys::Status) -> Result<Tensor, PluginError> {
        let mut out: *mut sys::EsperTensor = ptr::null_mut();
        let status = f(&mut out);
        if status != sys::OK {
            return Err(last_error(status));
        }
        NonNull::new(out)
            .map(|raw| Tensor { raw })
            .ok_or_else(|| PluginError::new(ErrorKind::Tensor, "an op succeeded without returning a tensor"))
    }

    pub(crate) fn as_ptr(&self) -> *const sys::EsperTensor {
        self.raw.as_ptr()
    }

    /// Gives the handle to the runtime (the output of `forward`).
    pub(crate) fn into_raw(self) -> *mut sys::EsperTensor {
        ManuallyDrop::new(self).raw.as_ptr()
    }

    /// Views a handle the runtime lends (the input of `forward`) without owning it.
    ///
    /// # Safety
    /// `raw` must be a live handle for as long as the result is used.
    pub(crate) unsafe fn borrowed(raw: *const sys::EsperTensor) -> Option<ManuallyDrop<Tensor>> {
        NonNull::new(raw.cast_mut()).map(|raw| ManuallyDrop::new(Tensor { raw }))
    }

    fn opt(t: Option<&Tensor>) -> *const sys::EsperTensor {
        t.map_or(ptr::null(), Tensor::as_ptr)
    }

    /// The sizes of the tensor's dimensions.
    pub fn size(&self) -> Vec<i64> {
        let shape = ops().shape;
        let mut dims = [0i64; 8];
        let mut n = 0usize;
        // SAFETY: a live handle; `dims` holds `dims.len()` values, `n` is a valid place.
        let status = unsafe { shape(self.as_ptr(), dims.as_mut_ptr(), dims.len(), &mut n) };
        if status == sys::OK && n <= dims.len() {
            return dims[..n].to_vec();
        }
        let mut dims = vec![0i64; n];
        // SAFETY: as above, with room for all `n` dimensions.
        let status = unsafe { shape(self.as_ptr(), dims.as_mut_ptr(), dims.len(), &mut n) };
        assert_eq!(status, sys::OK, "the runtime could not report a live tensor's shape");
        dims
    }

    /// The number of dimensions.
    pub fn dim(&self) -> usize {
        self.size().len()
    }

    pub fn kind(&self) -> Kind {
        // SAFETY: a live handle.
        match unsafe { (ops().dtype)(self.as_ptr()) } {
            sys::DTYPE_FLOAT32 => Kind::Float,
            sys::DTYPE_FLOAT64 => Kind::Double,
            sys::DTYPE_FLOAT16 => Kind::Half,
            sys::DTYPE_BFLOAT16 => Kind::BFloat16,
            sys::DTYPE_INT64 => Kind::Int64,
            sys::DTYPE_INT32 => Kind::Int,
            sys::DTYPE_BOOL => Kind::Bool,
            sys::DTYPE_UINT8 => Kind::Uint8,
            _ => Kind::Other,
        }
    }

    pub fn device(&self) -> Device {
        let mut index = 0i32;
        // SAFETY: a live handle; `index` is a valid place.
        match unsafe { (ops().device)(self.as_ptr(), &mut index) } {
            sys::DEVICE_CPU => Device::Cpu,
            sys::DEVICE_CUDA => Device::Cuda(index),
            _ => Device::Other,
        }
    }

    /// A second handle to the same tensor (no copy).
    pub fn shallow_clone(&self) -> Tensor {
        let f = ops().shallow_clone;
        // SAFETY: a live handle; `out` is a valid place.
        Self::call(|out| unsafe { f(self.as_ptr(), out) }).expect("the runtime could not clone a live handle")
    }

    unary! {
        neg, relu,
        /// GELU (exact, erf-based).
        gelu,
        sigmoid, tanh, exp, sqrt,
        /// A contiguous tensor with the same values (this one if already contiguous).
        contiguous,
        zeros_like, ones_like,
        /// The same values, cut from the autograd graph.
        detach,
    }

    binary! { add, sub, mul, div, matmul }

    scalar! { add_scalar, sub_scalar, mul_scalar, div_scalar, pow_scalar }

    /// 2-d convolution; `weight` is `[out, in / groups, kh, kw]`. Pairs are (height, width).
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [i64; 2],
        padding: [i64; 2],
        dilation: [i64; 2],
        groups: i64,
    ) -> Result<Tensor, PluginError> {
        let f = ops().conv2d;
        // SAFETY: live handles (the bias null or live); each pair points at 2 values.
        Self::call(|out| unsafe {
            f(
                self.as_ptr(),
                weight.as_ptr(),
                Self::opt(bias),
                stride.as_ptr(),
                padding.as_ptr(),
                dilation.as_ptr(),
                groups,
                out,
            )
        })
    }

    /// `x @ weight^T + bias` over the last dimension.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, PluginError> {
        let f = ops().linear;
        // SAFETY: live handles (the bias null or live).
        Self::call(|out| unsafe { f(self.as_ptr(), weight.as_ptr(), Self::opt(bias), out) })
    }

    /// Group normalisation over `groups` groups of channels (dimension 1).
    pub fn group_norm(
        &self,
        groups: i64,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor, PluginError> {
        let f = ops().group_norm;
        // SAFETY: live handles (weight and bias null or live).
        Self::call(|out| unsafe { f(self.as_ptr(), groups, Self::opt(weight), Self::opt(bias), eps, out) })
    }

    /// Layer normalisation over the last `shape.len()` dimensions.
    pub fn layer_norm(
        &self,
        shape: &[i64],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor, PluginError> {
        let f = ops().layer_norm;
        // SAFETY: live handles; `shape` points at `shape.len()` values.
        Self::call(|out| unsafe {
            f(self.as_ptr(), shape.as_ptr(), shape.len(), Self::opt(weight), Self::opt(bias), eps, out)
        })
    }

    /// The mean over `dims`.
    pub fn mean(&self, dims: &[i64], keepdim: bool) -> Result<Tensor, PluginError> {
        let f = ops().mean;
        // SAFETY: a live handle; `dims` points at `dims.len()` values.
        Self::call(|out| unsafe { f(self.as_ptr(), dims.as_ptr(), dims.len(), keepdim as i32, out) })
    }

    /// The sum over `dims`.
    pub fn sum(&self, dims: &[i64], keepdim: bool) -> Result<Tensor, PluginError> {
        let f = ops().sum;
        // SAFETY: a live handle; `dims` points at `dims.len()` values.
        Self::call(|out| unsafe { f(self.as_ptr(), dims.as_ptr(), dims.len(), keepdim as i32, out) })
    }

    pub fn adaptive_avg_pool2d(&self, size: [i64; 2]) -> Result<Tensor, PluginError> {
        let f = ops().adaptive_avg_pool2d;
        // SAFETY: a live handle; `size` points at 2 values.
        Self::call(|out| unsafe { f(self.as_ptr(), size.as_ptr(), out) })
    }

    pub fn max_pool2d(&self, kernel: [i64; 2], stride: [i64; 2], padding: [i64; 2]) -> Result<Tensor, PluginError> {
        let f = ops().max_pool2d;
        // SAFETY: a live handle; each pair points at 2 values.
        Self::call(|out| unsafe { f(self.as_ptr(), kernel.as_ptr(), stride.as_ptr(), padding.as_ptr(), out) })
    }

    pub fn softmax(&self, dim: i64) -> Result<Tensor, PluginError> {
        let f = ops().softmax;
        // SAFETY: a live handle.
        Self::call(|out| unsafe { f(self.as_ptr(), dim, out) })
    }

    /// Scaled dot-product attention of `q`, `k`, `v` (no mask, no dropout, not causal).
    pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor, PluginError> {
        let f = ops().attention;
        // SAFETY: live handles.
        Self::call(|out| unsafe { f(q.as_ptr(), k.as_ptr(), v.as_ptr(), out) })
    }

    /// Causal scaled dot-product attention of `q`, `k`, `v` (`is_causal`: query `i` attends
    /// to keys `0..=i`; no dropout). ABI 1.2.
    pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor, PluginError> {
        let f = ops().causal_attention;
        // SAFETY: live handles.
        Self::call(|out| unsafe { f(q.as_ptr(), k.as_ptr(), v.as_ptr(), out) })
    }

    /// Causal attention over a sliding window of `window` positions: query `i` attends to
    /// keys `i - window + 1 ..= i` (`window` >= 1; no dropout). ABI 1.2.
    pub fn window_attention(q: &Tensor, k: &Tensor, v: &Tensor, window: i64) -> Result<Tensor, PluginError> {
        let f = ops().window_attention;
        // SAFETY: live handles.
        Self::call(|out| unsafe { f(q.as_ptr(), k.as_ptr(), v.as_ptr(), window, out) })
    }

    fn dims_op(&self, f: sys::DimsFn, dims: &[i64]) -> Result<Tensor, PluginError> {
        // SAFETY: a live handle; `dims` points at `dims.len()` values.
        Self::call(|out| unsafe { f(self.as_ptr(), dims.as_ptr(), dims.len(), out) })
    }
    /// The same values in `shape` (a copy only where a view is impossible; -1 infers).
    pub fn reshape(&self, shape: &[i64]) -> Result<Tensor, PluginError> {
        self.dims_op(ops().reshape, shape)
    }
    /// A view in `shape` (an error where the strides do not allow one).
    pub fn view(&self, shape: &[i64]) -> Result<Tensor, PluginError> {
        self.dims_op(ops().view, shape)
    }
    pub fn permute(&self, dims: &[i64]) -> Result<Tensor, PluginError> {
        self.dims_op(ops().permute, dims)
    }

    pub fn transpose(&self, dim0: i64, dim1: i64) -> Result<Tensor, PluginError> {
        let f = ops().transpose;
        // SAFETY: a live handle.
        Self::call(|out| unsafe { f(self.as_ptr(), dim0, dim1, out) })
    }

    /// The tensors joined along `dim`.
    pub fn cat(tensors: &[&Tensor], dim: i64) -> Result<Tensor, PluginError> {
        let handles: Vec<*const sys::EsperTensor> = tensors.iter().map(|t| t.as_ptr()).collect();
        let f = ops().cat;
        // SAFETY: `handles` holds `handles.len()` live handles.
        Self::call(|out| unsafe { f(handles.as_ptr(), handles.len(), dim, out) })
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: this handle is owned and dropped exactly once.
        unsafe { (ops().drop)(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?}, {:?})", self.size(), self.kind(), self.device())
    }
}
