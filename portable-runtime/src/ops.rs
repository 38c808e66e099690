//! The op table the runtime gives portable plugins: each entry runs one libtorch op
//! (through tch) on the runtime's tensors. Nothing unwinds out: a libtorch error or a
//! panic becomes an error status and a message naming the op and its operands' shapes.

use super::{
    handle::{last_error_ptr, set_error, Handle},
    params,
};
use esper_plugin_api::panic_message;
use esper_plugin_sys::{self as sys, EsperOps, EsperTensor, Out, Status, T};
use std::{
    ffi::c_char,
    panic::{catch_unwind, AssertUnwindSafe},
};
use tch::{Kind, TchError, Tensor};

/// The operands of an op, as the plugin passed them (null where optional and absent).
struct Operands<'a, const N: usize>([Option<&'a Tensor>; N]);

impl<'a, const N: usize> Operands<'a, N> {
    fn need(&self, i: usize) -> Result<&'a Tensor, String> {
        self.0[i].ok_or_else(|| format!("operand {} is null", i + 1))
    }
    fn opt(&self, i: usize) -> Option<&'a Tensor> {
        self.0[i]
    }
    /// `[1, 64, 8, 8] Float, null`: for messages.
    fn describe(&self) -> String {
        let one = |t: &Option<&Tensor>| match t {
            Some(t) => format!("{:?} {:?}", t.size(), t.kind()),
            None => "null".to_string(),
        };
        self.0.iter().map(one).collect::<Vec<_>>().join(", ")
    }
}

/// Why an op failed.
enum OpError {
    /// Bad arguments from the plugin (null operand, dead handle, bad dims).
    Argument(String),
    /// libtorch refused (shape, dtype, device ...).
    Torch(TchError),
}

impl From<String> for OpError {
    fn from(e: String) -> Self {
        Self::Argument(e)
    }
}
impl From<TchError> for OpError {
    fn from(e: TchError) -> Self {
        Self::Torch(e)
    }
}

/// Runs op `name` on `inputs`, writing the result's new handle to `out`.
///
/// # Safety
/// Each input is null or a handle the runtime made; `out` is null or a valid place.
unsafe fn run<const N: usize>(
    name: &str,
    inputs: [T; N],
    out: Out,
    f: impl FnOnce(&Operands<'_, N>) -> Result<Tensor, OpError>,
) -> Status {
    if out.is_null() {
        return set_error(sys::ERR_INVALID_ARGUMENT, &format!("{name}: the output place is null"));
    }
    let mut resolved = [None; N];
    for (slot, raw) in resolved.iter_mut().zip(inputs) {
        if raw.is_null() {
            continue;
        }
        // SAFETY: by the caller's contract.
        match unsafe { Handle::get(raw) } {
            Ok(h) => *slot = Some(&h.tensor),
            Err(e) => return set_error(sys::ERR_INVALID_ARGUMENT, &format!("{name}: {e}")),
        }
    }
    let operands = Operands(resolved);
    match catch_unwind(AssertUnwindSafe(|| f(&operands))) {
        Ok(Ok(t)) => {
            // SAFETY: `out` is a valid place (checked non-null; the caller's contract).
            unsafe { *out = Handle::owned(t) };
            sys::OK
        }
        Ok(Err(OpError::Argument(e))) => {
            set_error(sys::ERR_INVALID_ARGUMENT, &format!("{name}({}): {e}", operands.describe()))
        }
        Ok(Err(OpError::Torch(e))) => set_error(sys::ERR_TENSOR, &format!("{name}({}): {e}", operands.describe())),
        Err(p) => set_error(sys::ERR_PANIC, &format!("{name}: panicked: {}", panic_message(p.as_ref()))),
    }
}

/// `n` values at `p` (an empty list for `n == 0`).
///
/// # Safety
/// `p` points at `n` readable values (or `n` is 0).
unsafe fn list<'a>(p: *const i64, n: usize) -> Result<&'a [i64], String> {
    match (p.is_null(), n) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(format!("a list of {n} values is null")),
        // SAFETY: by the caller's contract.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(p, n) }),
    }
}

/// A (height, width) pair at `p`.
///
/// # Safety
/// `p` is null or points at 2 readable values.
unsafe fn pair(p: *const i64) -> Result<[i64; 2], String> {
    // SAFETY: by the caller's contract.
    unsafe { list(p, 2) }.map(|s| [s[0], s[1]])
}

macro_rules! unary_ops {
    ($($name:ident => |$x:ident| $body:expr;)*) => {$(
        unsafe extern "C" fn $name(x: T, out: Out) -> Status {
            // SAFETY: the plugin passes its handles and a place (checked inside `run`).
            unsafe { run(stringify!($name), [x], out, |o| { let $x = o.need(0)?; Ok($body?) }) }
        }
    )*};
}

macro_rules! binary_ops {
    ($($name:ident => $method:ident;)*) => {$(
        unsafe extern "C" fn $name(a: T, b: T, out: Out) -> Status {
            // SAFETY: as in `unary_ops`.
            unsafe { run(stringify!($name), [a, b], out, |o| Ok(o.need(0)?.$method(o.need(1)?)?)) }
        }
    )*};
}

macro_rules! scalar_ops {
    ($($name:ident => $method:ident;)*) => {$(
        unsafe extern "C" fn $name(x: T, s: f64, out: Out) -> Status {
            // SAFETY: as in `unary_ops`.
            unsafe { run(stringify!($name), [x], out, |o| Ok(o.need(0)?.$method(s)?)) }
        }
    )*};
}

unary_ops! {
    shallow_clone => |x| Ok::<_, TchError>(x.shallow_clone());
    neg => |x| x.f_neg();
    relu => |x| x.f_relu();
    gelu => |x| x.f_gelu("none");
    sigmoid => |x| x.f_sigmoid();
    tanh => |x| x.f_tanh();
    exp => |x| x.f_exp();
    sqrt => |x| x.f_sqrt();
    contiguous => |x| x.f_contiguous();
    zeros_like => |x| x.f_zeros_like();
    ones_like => |x| x.f_ones_like();
    detach => |x| x.f_detach();
}

binary_ops! {
    add => f_add;
    sub => f_sub;
    mul => f_mul;
    div => f_div;
    matmul => f_matmul;
}

scalar_ops! {
    add_scalar => f_add_scalar;
    sub_scalar => f_sub_scalar;
    mul_scalar => f_mul_scalar;
    div_scalar => f_div_scalar;
    pow_scalar => f_pow_tensor_scalar;
}

unsafe extern "C" fn conv2d(
    x: T,
    w: T,
    b: T,
    stride: *const i64,
    padding: *const i64,
    dilation: *const i64,
    groups: i64,
    out: Out,
) -> Status {
    // SAFETY: handles and a place as in `run`; each pair points at 2 values (ABI).
    unsafe {
        run("conv2d", [x, w, b], out, |o| {
            let (s, p, d) = (pair(stride)?, pair(padding)?, pair(dilation)?);
            Ok(o.need(0)?.f_conv2d(o.need(1)?, o.opt(2), s, p, d, groups)?)
        })
    }
}

unsafe extern "C" fn linear(x: T, w: T, b: T, out: Out) -> Status {
    // SAFETY: as in `run`.
    unsafe { run("linear", [x, w, b], out, |o| Ok(o.need(0)?.f_linear(o.need(1)?, o.opt(2))?)) }
}

unsafe extern "C" fn group_norm(x: T, groups: i64, w: T, b: T, eps: f64, out: Out) -> Status {
    // SAFETY: as in `run`.
    unsafe {
        run("group_norm", [x, w, b], out, |o| Ok(o.need(0)?.f_group_norm(groups, o.opt(1), o.opt(2), eps, true)?))
    }
}

unsafe extern "C" fn layer_norm(x: T, shape: *const i64, n: usize, w: T, b: T, eps: f64, out: Out) -> Status {
    // SAFETY: as in `run`; `shape` points at `n` values (ABI).
    unsafe {
        run("layer_norm", [x, w, b], out, |o| {
            Ok(o.need(0)?.f_layer_norm(list(shape, n)?, o.opt(1), o.opt(2), eps, true)?)
        })
    }
}

unsafe extern "C" fn mean(x: T, dims: *const i64, n: usize, keepdim: i32, out: Out) -> Status {
    // SAFETY: as in `run`; `dims` points at `n` values (ABI).
    unsafe { run("mean", [x], out, |o| Ok(o.need(0)?.f_mean_dim(list(dims, n)?, keepdim != 0, None::<Kind>)?)) }
}

unsafe extern "C" fn sum(x: T, dims: *const i64, n: usize, keepdim: i32, out: Out) -> Status {
    // SAFETY: as in `run`; `dims` points at `n` values (ABI).
    unsafe { run("sum", [x], out, |o| Ok(o.need(0)?.f_sum_dim_intlist(list(dims, n)?, keepdim != 0, None::<Kind>)?)) }
}

unsafe extern "C" fn adaptive_avg_pool2d(x: T, size: *const i64, out: Out) -> Status {
    // SAFETY: as in `run`; `size` points at 2 values (ABI).
    unsafe { run("adaptive_avg_pool2d", [x], out, |o| Ok(o.need(0)?.f_adaptive_avg_pool2d(pair(size)?)?)) }
}

unsafe extern "C" fn max_pool2d(x: T, kernel: *const i64, stride: *const i64, padding: *const i64, out: Out) -> Status {
    // SAFETY: as in `run`; each pair points at 2 values (ABI).
    unsafe {
        run("max_pool2d", [x], out, |o| {
            Ok(o.need(0)?.f_max_pool2d(pair(kernel)?, pair(stride)?, pair(padding)?, [1, 1], false)?)
        })
    }
}

unsafe extern "C" fn softmax(x: T, dim: i64, out: Out) -> Status {
    // SAFETY: as in `run`.
    unsafe { run("softmax", [x], out, |o| Ok(o.need(0)?.f_softmax(dim, None::<Kind>)?)) }
}

unsafe extern "C" fn attention(q: T, k: T, v: T, out: Out) -> Status {
    // SAFETY: as in `run`.
    unsafe { sdpa("attention", q, k, v, out, false) }
}

/// ABI 1.2.
unsafe extern "C" fn causal_attention(q: T, k: T, v: T, out: Out) -> Status {
    // SAFETY: as in `run`.
    unsafe { sdpa("causal_attention", q, k, v, out, true) }
}

/// ABI 1.2. The mask is built on the operands' device from their shapes (known on the
/// host), so no call waits for the device.
unsafe extern "C" fn window_attention(q: T, k: T, v: T, window: i64, out: Out) -> Status {
    // SAFETY: as in `run`.
    unsafe {
        run("window_attention", [q, k, v], out, |o| {
            let (q, k, v) = (o.need(0)?, o.need(1)?, o.need(2)?);
            if window < 1 {
                return Err(format!("window must be at least 1, got {window}").into());
            }
            let (tq, tk) = match (&q.size()[..], &k.size()[..]) {
                ([.., tq, _], [.., tk, _]) => (*tq, *tk),
                _ => return Err("q and k need (..., T, D)".to_string().into()),
            };
            let positions = |n| Tensor::f_arange(n, (Kind::Int64, q.device()));
            // distance[i, j] = i - j: key j is visible to query i when 0 <= i - j < window.
            let distance = positions(tq)?.f_unsqueeze(1)?.f_sub(&positions(tk)?.f_unsqueeze(0)?)?;
            let visible = distance.f_ge(0)?.f_logical_and(&distance.f_lt(window)?)?;
            Ok(Tensor::f_scaled_dot_product_attention(q, k, v, Some(&visible), 0.0, false, None::<f64>, false)?)
        })
    }
}

/// `scaled_dot_product_attention(q, k, v)` with `is_causal` as given.
unsafe fn sdpa(op: &str, q: T, k: T, v: T, out: Out, causal: bool) -> Status {
    // SAFETY: as in `run`.
    unsafe {
        run(op, [q, k, v], out, |o| {
            Ok(Tensor::f_scaled_dot_product_attention(
                o.need(0)?,
                o.need(1)?,
                o.need(2)?,
                None::<&Tensor>,
                0.0,
                causal,
                None::<f64>,
                false,
            )?)
        })
    }
}

macro_rules! dims_ops {
    ($($name:ident => $method:ident;)*) => {$(
        unsafe extern "C" fn $name(x: T, dims: *const i64, n: usize, out: Out) -> Status {
            // SAFETY: as in `run`; `dims` points at `n` values (ABI).
            unsafe { run(stringify!($name), [x], out, |o| Ok(o.need(0)?.$method(list(dims, n)?)?)) }
        }
    )*};
}

dims_ops! {
    reshape => f_reshape;
    view => f_view;
    permute => f_permute;
}

unsafe extern "C" fn transpose(x: T, dim0: i64, dim1: i64, out: Out) -> Status {
    // SAFETY: as in `run`.
    unsafe { run("transpose", [x], out, |o| Ok(o.need(0)?.f_transpose(dim0, dim1)?)) }
}

unsafe extern "C" fn cat(xs: *const T, n: usize, dim: i64, out: Out) -> Status {
    if n > 0 && xs.is_null() {
        return set_error(sys::ERR_INVALID_ARGUMENT, &format!("cat: a list of {n} tensors is null"));
    }
    // SAFETY: `xs` points at `n` handles (ABI; checked non-null above).
    let handles: &[T] = if n == 0 { &[] } else { unsafe { std::slice::from_raw_parts(xs, n) } };
    let mut tensors = Vec::with_capacity(n);
    for (i, &raw) in handles.iter().enumerate() {
        // SAFETY: each is a handle the runtime made (ABI).
        match unsafe { Handle::get(raw) } {
            Ok(h) => tensors.push(&h.tensor),
            Err(e) => return set_error(sys::ERR_INVALID_ARGUMENT, &format!("cat: tensor {}: {e}", i + 1)),
        }
    }
    // SAFETY: no handle operands (resolved above); `out` checked inside `run`.
    unsafe {
        run("cat", [], out, |_| {
            Tensor::f_cat(&tensors, dim).map_err(|e| {
                let shapes: Vec<_> = tensors.iter().map(|t| t.size()).collect();
                OpError::Argument(format!("{shapes:?} along {dim}: {e}"))
            })
        })
    }
}

unsafe extern "C" fn drop_handle(t: *mut EsperTensor) {
    // SAFETY: the plugin passes its own handle (a dead or borrowed one is ignored).
    unsafe { Handle::drop_raw(t) }
}

unsafe extern "C" fn shape(t: T, dims: *mut i64, cap: usize, ndim: *mut usize) -> Status {
    // SAFETY: the plugin passes its handle.
    let tensor = match unsafe { Handle::get(t) } {
        Ok(h) => &h.tensor,
        Err(e) => return set_error(sys::ERR_INVALID_ARGUMENT, &format!("shape: {e}")),
    };
    let size = tensor.size();
    if !ndim.is_null() {
        // SAFETY: a valid place (ABI).
        unsafe { *ndim = size.len() };
    }
    if !dims.is_null() {
        for (i, d) in size.iter().take(cap).enumerate() {
            // SAFETY: `dims` has room for `cap` values (ABI), i < cap.
            unsafe { *dims.add(i) = *d };
        }
    }
    sys::OK
}

unsafe extern "C" fn dtype(t: T) -> i32 {
    // SAFETY: the plugin passes its handle.
    match unsafe { Handle::get(t) }.map(|h| h.tensor.kind()) {
        Ok(Kind::Float) => sys::DTYPE_FLOAT32,
        Ok(Kind::Double) => sys::DTYPE_FLOAT64,
        Ok(Kind::Half) => sys::DTYPE_FLOAT16,
        Ok(Kind::BFloat16) => sys::DTYPE_BFLOAT16,
        Ok(Kind::Int64) => sys::DTYPE_INT64,
        Ok(Kind::Int) => sys::DTYPE_INT32,
        Ok(Kind::Bool) => sys::DTYPE_BOOL,
        Ok(Kind::Uint8) => sys::DTYPE_UINT8,
        _ => sys::DTYPE_OTHER,
    }
}

unsafe extern "C" fn device(t: T, index: *mut i32) -> i32 {
    // SAFETY: the plugin passes its handle.
    let (kind, i) = match unsafe { Handle::get(t) }.map(|h| h.tensor.device()) {
        Ok(tch::Device::Cpu) => (sys::DEVICE_CPU, 0),
        Ok(tch::Device::Cuda(i)) => (sys::DEVICE_CUDA, i as i32),
        _ => (sys::DEVICE_OTHER, 0),
    };
    if !index.is_null() {
        // SAFETY: a valid place (ABI).
        unsafe { *index = i };
    }
    kind
}

unsafe extern "C" fn last_error() -> *const c_char {
    last_error_ptr()
}

unsafe extern "C" fn set_error_from_plugin(code: Status, message: *const c_char) {
    let text = if message.is_null() {
        "(no message)".into()
    } else {
        // SAFETY: a nul-terminated string (ABI), copied here.
        unsafe { std::ffi::CStr::from_ptr(message) }.to_string_lossy()
    };
    set_error(code, &text);
}

/// The runtime's op table: one for the process.
pub(crate) static OPS: EsperOps = EsperOps {
    abi_major: sys::ABI_MAJOR,
    abi_minor: sys::ABI_MINOR,
    size: std::mem::size_of::<EsperOps>() as u64,
    last_error,
    set_error: set_error_from_plugin,
    drop: drop_handle,
    shallow_clone,
    shape,
    dtype,
    device,
    param: params::param,
    add,
    sub,
    mul,
    div,
    add_scalar,
    sub_scalar,
    mul_scalar,
    div_scalar,
    pow_scalar,
    neg,
    relu,
    gelu,
    sigmoid,
    tanh,
    exp,
    sqrt,
    conv2d,
    linear,
    matmul,
    group_norm,
    layer_norm,
    mean,
    sum,
    adaptive_avg_pool2d,
    max_pool2d,
    softmax,
    attention,
    reshape,
    view,
    permute,
    transpose,
    contiguous,
    cat,
    zeros_like,
    ones_like,
    detach,
    causal_attention,
    window_attention,
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn handle(t: Tensor) -> *mut EsperTensor {
        Handle::owned(t)
    }

    /// The tensor behind an output handle, the handle freed.
    fn take(out: *mut EsperTensor) -> Tensor {
        // SAFETY: an owned handle just made by an op.
        unsafe { Handle::take(out) }.unwrap()
    }

    fn last() -> String {
        // SAFETY: null or a message valid until the next error.
        unsafe { CStr::from_ptr(last_error_ptr()) }.to_string_lossy().into_owned()
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.size() == b.size() && (a - b).abs().max().double_value(&[]) == 0.0
    }

    #[test]
    fn ops_compute_what_libtorch_computes() {
        let x = Tensor::randn([2, 4, 5, 5], (Kind::Float, tch::Device::Cpu));
        let w = Tensor::randn([4, 2, 3, 3], (Kind::Float, tch::Device::Cpu));
        let (hx, hw) = (handle(x.shallow_clone()), handle(w.shallow_clone()));
        let mut out = std::ptr::null_mut();
        // SAFETY: live handles and a valid place, as a plugin passes them.
        unsafe {
            assert_eq!((OPS.tanh)(hx, &mut out), sys::OK);
            assert!(same(&take(out), &x.tanh()));
            assert_eq!((OPS.add_scalar)(hx, 1.5, &mut out), sys::OK);
            assert!(same(&take(out), &(&x + 1.5)));
            assert_eq!(
                (OPS.conv2d)(hx, hw, std::ptr::null(), [1, 1].as_ptr(), [1, 1].as_ptr(), [1, 1].as_ptr(), 2, &mut out),
                sys::OK
            );
            assert!(same(&take(out), &x.conv2d(&w, None::<&Tensor>, [1, 1], [1, 1], [1, 1], 2)));
            assert_eq!((OPS.mean)(hx, [2, 3].as_ptr(), 2, 1, &mut out), sys::OK);
            assert!(same(&take(out), &x.mean_dim([2i64, 3].as_slice(), true, Kind::Float)));
            assert_eq!((OPS.permute)(hx, [0, 2, 3, 1].as_ptr(), 4, &mut out), sys::OK);
            assert!(same(&take(out), &x.permute([0, 2, 3, 1])));
            let both = [hx as T, hx as T];
            assert_eq!((OPS.cat)(both.as_ptr(), 2, 1, &mut out), sys::OK);
            assert_eq!(take(out).size(), [2, 8, 5, 5]);
            let mut dims = [0i64; 4];
            let mut n = 0;
            assert_eq!((OPS.shape)(hx, dims.as_mut_ptr(), 4, &mut n), sys::OK);
            assert_eq!((n, dims), (4, [2, 4, 5, 5]));
            assert_eq!((OPS.dtype)(hx), sys::DTYPE_FLOAT32);
            drop_handle(hx);
            drop_handle(hw);
        }
    }

    #[test]
    fn attention_ops_compute_libtorchs_sdpa_causal_or_not() {
        let opts = (Kind::Float, tch::Device::Cpu);
        let (q, k, v) =
            (Tensor::randn([2, 3, 5, 4], opts), Tensor::randn([2, 3, 5, 4], opts), Tensor::randn([2, 3, 5, 4], opts));
        let (hq, hk, hv) = (handle(q.shallow_clone()), handle(k.shallow_clone()), handle(v.shallow_clone()));
        let sdpa =
            |causal| Tensor::scaled_dot_product_attention(&q, &k, &v, None::<&Tensor>, 0.0, causal, None::<f64>, false);
        let mut out = std::ptr::null_mut();
        // SAFETY: live handles and a valid place, as a plugin passes them.
        unsafe {
            assert_eq!((OPS.causal_attention)(hq, hk, hv, &mut out), sys::OK);
            let causal = take(out);
            assert!(same(&causal, &sdpa(true)));
            assert!(!same(&causal, &sdpa(false)), "the causal op masks the future");
            // The first query sees only the first key: its output is the first value.
            let first = (causal.narrow(2, 0, 1) - v.narrow(2, 0, 1)).abs().max().double_value(&[]);
            assert!(first < 1e-6, "{first}");
            assert_eq!((OPS.attention)(hq, hk, hv, &mut out), sys::OK);
            assert!(same(&take(out), &sdpa(false)));
            // A window as long as the sequence is causal attention; a window of 1 sees
            // only itself (its own value); a window of 2 is what an explicit mask gives.
            assert_eq!((OPS.window_attention)(hq, hk, hv, 5, &mut out), sys::OK);
            assert!((take(out) - sdpa(true)).abs().max().double_value(&[]) < 1e-6);
            assert_eq!((OPS.window_attention)(hq, hk, hv, 1, &mut out), sys::OK);
            assert!((take(out) - &v).abs().max().double_value(&[]) < 1e-6);
            let mask = Tensor::ones([5, 5], (Kind::Bool, tch::Device::Cpu))
                .tril(0)
                .logical_and(&Tensor::ones([5, 5], (Kind::Bool, tch::Device::Cpu)).triu(-1));
            let banded = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&mask), 0.0, false, None::<f64>, false);
            assert_eq!((OPS.window_attention)(hq, hk, hv, 2, &mut out), sys::OK);
            let two = take(out);
            assert!((&two - banded).abs().max().double_value(&[]) < 1e-6);
            assert!((&two - sdpa(true)).abs().max().double_value(&[]) > 1e-3, "the window cuts the far past");
            assert_eq!((OPS.window_attention)(hq, hk, hv, 0, &mut out), sys::ERR_INVALID_ARGUMENT);
            assert!(last().contains("window must be at least 1, got 0"), "{}", last());
            drop_handle(hq);
            drop_handle(hk);
            drop_handle(hv);
        }
    }

    #[test]
    fn a_failing_op_names_itself_and_its_operands_shapes() {
        let a = handle(Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu)));
        let b = handle(Tensor::zeros([4, 5], (Kind::Float, tch::Device::Cpu)));
        let mut out = std::ptr::null_mut();
        // SAFETY: live handles and a valid place.
        let status = unsafe { (OPS.matmul)(a, b, &mut out) };
        assert_eq!((status, out.is_null()), (sys::ERR_TENSOR, true));
        let text = last();
        assert!(text.starts_with("matmul([2, 3] Float, [4, 5] Float): "), "{text}");
        // SAFETY: a null bias is allowed; a null weight is refused by name.
        let status = unsafe { (OPS.linear)(a, std::ptr::null(), std::ptr::null(), &mut out) };
        assert_eq!(status, sys::ERR_INVALID_ARGUMENT);
        assert!(last().contains("linear([2, 3] Float, null, null): operand 2 is null"), "{}", last());
        // SAFETY: owned handles, dropped once each.
        unsafe {
            drop_handle(a);
            drop_handle(b);
        }
    }

    #[test]
    fn dead_and_foreign_handles_are_refused_not_followed() {
        let a = handle(Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)));
        let borrowed = Handle::borrowed(Tensor::ones([2], (Kind::Float, tch::Device::Cpu)));
        let mut out = std::ptr::null_mut();
        // SAFETY: a borrowed handle may not be dropped by the plugin: ignored, still usable.
        unsafe {
            drop_handle(borrowed.as_raw().cast_mut());
            assert_eq!((OPS.neg)(borrowed.as_raw(), &mut out), sys::OK);
            drop_handle(out);
            drop_handle(a);
        }
        let garbage = [0u64; 8];
        // SAFETY: readable memory that is not a handle: refused by its first word.
        let status = unsafe { (OPS.neg)(garbage.as_ptr().cast(), &mut out) };
        assert_eq!(status, sys::ERR_INVALID_ARGUMENT);
        assert!(last().contains("not live"), "{}", last());
    }

    #[test]
    fn param_outside_create_is_refused() {
        let mut out = std::ptr::null_mut();
        let init = sys::EsperInit { kind: sys::INIT_ZEROS, a: 0.0, b: 0.0 };
        let fake = 8usize as *mut sys::EsperParams;
        // SAFETY: the handle is checked against the current create before any use.
        let status = unsafe { (OPS.param)(fake, c"w".as_ptr(), [2].as_ptr(), 1, init, 1, &mut out) };
        assert_eq!(status, sys::ERR_INVALID_ARGUMENT);
        assert!(last().contains("outside the seed's create"), "{}", last());
    }
}
