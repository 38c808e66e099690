//! CUDA kernels compiled at run time with NVRTC (`cpp/rtc.cpp`):
//!
//! * [`relu_max_pool2x2`]: a fused ReLU + 2x2 max pool for channels-last tensors, one
//!   launch forward and one backward, instead of libtorch's ReLU and its channels-last
//!   max pool (whose backward scatters through int64 indices). ReLU and max commute, so
//!   the result and its gradient are exactly those of `max_pool2d(relu(x), 2)`.
//! * [`nchw_copy`]: `contiguous()` of a channels-last tensor as a tiled transpose, for
//!   inputs detached anyway (the isolation layer's seed input).
//! * [`bn_relu`]: BatchNorm in training mode + ReLU (+ the 2x2 max pool after it), two
//!   launches forward and two backward, the normalized tensor never written
//!   (`cpp/batchnorm.cpp`).
//! * [`first_conv`]: the host's first convolution (3 input channels, 3x3, padding 1),
//!   forward and weight gradient, where cuDNN has no good kernel (`cpp/conv.cpp`).
//! * [`conv3x3`]: a 32 -> 64 channel 3x3 convolution (bfloat16 under autocast, or
//!   float32) whose weight gradient is the runtime's kernel (`cpp/wgrad.cpp`; forward and
//!   input gradient stay cuDNN's).
//!
//! The kernels' CUDA source is `cuda/` (one NVRTC program, embedded by `build.rs`; see
//! the crate's README). Built with the CUDA graph support (same headers, see `build.rs`);
//! elsewhere [`available`] says why not.

use crate::ShimError;
use tch::Tensor;

#[cfg(esper_cuda)]
use crate::sys as ffi;

/// Whether the kernels can run here. The first call loads them for the current CUDA
/// device from the on-disk cache (`$ESPER_KERNEL_CACHE`, `off` for none, else
/// `~/.cache/esper-runtime/kernels`), or compiles them (seconds, once per machine and
/// CUDA version) and caches them.
/// Err says why not (no CUDA build, no NVRTC, an architecture NVRTC does not know).
pub fn available() -> Result<(), ShimError> {
    crate::graph::available()?;
    #[cfg(esper_cuda)]
    // SAFETY: only the error buffer crosses; exceptions are caught in the shim.
    return crate::call(|err, len| unsafe { ffi::esper_pool_ready(err, len) });
    #[cfg(not(esper_cuda))]
    unreachable!("graph::available() is Err without CUDA support")
}

/// `max_pool2d(relu ? relu(x) : x, 2, 2)`, differentiable: the fused kernels where `x`
/// suits them (CUDA, 4-d channels-last float32 or bfloat16, even height and width),
/// libtorch's ops otherwise. Err where the kernels would run but cannot be built (the
/// reason [`available`] gives).
#[cfg_attr(not(esper_cuda), allow(unused_variables))]
pub fn relu_max_pool2x2(x: &Tensor, relu: bool) -> Result<Tensor, ShimError> {
    crate::graph::available()?; // the shim compiles the kernels on first use, or says why not
    #[cfg(esper_cuda)]
    {
        let mut out = std::ptr::null_mut();
        // SAFETY: `x` is a live tch handle (`at::Tensor*`) borrowed for the call; on
        // success the shim stores in `out` a new `at::Tensor*` that nothing else owns.
        crate::call(|err, len| unsafe {
            ffi::esper_relu_max_pool2x2(x.as_ptr(), i32::from(relu), &mut out, err, len)
        })?;
        // SAFETY: `out` is the fresh, owned handle written above; tch frees it on drop.
        Ok(unsafe { Tensor::from_ptr(out) })
    }
    #[cfg(not(esper_cuda))]
    unreachable!("available() is Err without CUDA support")
}

/// `x.contiguous()` (NCHW) with no autograd history: a transpose kernel for a 4-d
/// channels-last float32 or bfloat16 CUDA tensor once [`available`] is Ok (at about
/// memory bandwidth, where libtorch's strided copy reaches a quarter of it), libtorch's
/// copy otherwise (detached).
pub fn nchw_copy(x: &Tensor) -> Result<Tensor, ShimError> {
    #[cfg(esper_cuda)]
    {
        let mut out = std::ptr::null_mut();
        // SAFETY: `x` is a live tch handle borrowed for the call; on success `out` holds a
        // new `at::Tensor*` nothing else owns; exceptions are caught in the shim.
        crate::call(|err, len| unsafe { ffi::esper_nchw_copy(x.as_ptr(), &mut out, err, len) })?;
        // SAFETY: `out` is the fresh, owned handle written above; tch frees it on drop.
        Ok(unsafe { Tensor::from_ptr(out) })
    }
    #[cfg(not(esper_cuda))]
    x.f_contiguous().map(|c| c.detach()).map_err(|e| ShimError(e.to_string()))
}

/// A BatchNorm layer's tensors and settings, as [`bn_relu`] takes them.
pub struct BatchNormParams<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    /// Updated in place (as libtorch's training-mode BatchNorm does).
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub momentum: f64,
    pub eps: f64,
}

/// `relu(batch_norm(x))` in training mode, then a 2x2 max pool when `pool`,
/// differentiable in `x`, the weight and the bias; the running statistics are updated in
/// place. `Ok(None)` where `x` or the parameters do not suit the kernels (not CUDA, not
/// 4-d channels-last float32 or bfloat16, channels not a power of two from 4 to 512, odd
/// height or width for the pool, parameters not float32 on `x`'s device): the caller
/// runs libtorch's ops. Err where the kernels would run but cannot be built (the reason
/// [`available`] gives) or a launch fails.
///
/// The values are libtorch's to rounding, not bit for bit: the sums run in another order.
#[cfg_attr(not(esper_cuda), allow(unused_variables))]
pub fn bn_relu(x: &Tensor, bn: &BatchNormParams<'_>, pool: bool) -> Result<Option<Tensor>, ShimError> {
    #[cfg(esper_cuda)]
    // SAFETY: every tensor is a live tch handle (`at::Tensor*`) borrowed for the call;
    // exceptions are caught in the shim.
    return new_tensor_or_none(x, |out, err, len| unsafe {
        ffi::esper_bn_relu(
            x.as_ptr(),
            bn.weight.as_ptr(),
            bn.bias.as_ptr(),
            bn.running_mean.as_ptr(),
            bn.running_var.as_ptr(),
            bn.momentum,
            bn.eps,
            i32::from(pool),
            out,
            err,
            len,
        )
    });
    #[cfg(not(esper_cuda))]
    Ok(None)
}

/// `conv2d(x, w, padding 1)` (stride 1, no bias), differentiable in `x` and `w`, for the
/// host's first convolution: the runtime's kernels forward and for the weight gradient
/// (the input gradient, rarely wanted, is libtorch's). Under CUDA autocast to bfloat16 the
/// output is bfloat16, as libtorch's `conv2d` would make it; the weight gradient is
/// float32 either way. `Ok(None)` where the tensors do not suit the kernels (not a
/// 3-channel channels-last float32 or bfloat16 CUDA input on the current device; the
/// weight not a dense float32 `[C, 3, 3, 3]` beside it with C 16, 32 or 64): the caller
/// runs libtorch's convolution. Err where the kernels would run but cannot be built (the
/// reason [`available`] gives) or a launch fails.
///
/// The products run on the tensor cores with TF32 operands and float32 sums, as cuDNN's
/// do by default for float32: libtorch's values to TF32 rounding.
#[cfg_attr(not(esper_cuda), allow(unused_variables))]
pub fn first_conv(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>, ShimError> {
    #[cfg(esper_cuda)]
    // SAFETY: `x` and `w` are live tch handles (`at::Tensor*`) borrowed for the call;
    // exceptions are caught in the shim.
    return new_tensor_or_none(x, |out, err, len| unsafe {
        ffi::esper_first_conv(x.as_ptr(), w.as_ptr(), out, err, len)
    });
    #[cfg(not(esper_cuda))]
    Ok(None)
}

/// `conv2d(x, w, padding 1)` (stride 1, no bias) of a 32-channel input to 64 channels,
/// differentiable in `x` and `w`: cuDNN's forward and input gradient (what `conv2d` runs;
/// under autocast on the weight's bfloat16 copy), the runtime's kernel for the weight
/// gradient, float32. Under CUDA autocast to bfloat16 (a bfloat16 input) libtorch's
/// gradient is rounded to bfloat16 before its cast back to float32 and this one is not;
/// without autocast (a float32 input) both multiply TF32 operands, and the kernel runs only
/// while cuDNN may use TF32 (`set_cudnn_tf32`, on by default). `Ok(None)` where the tensors
/// do not suit the kernel (the input not a 32-channel channels-last CUDA tensor of that
/// dtype on the current device, or images that do not tile; the weight not a dense float32
/// `[64, 32, 3, 3]` beside it; a GPU before Ampere): the caller runs libtorch's
/// convolution. Err where the kernel would run but cannot be built (the reason
/// [`available`] gives) or a launch fails.
#[cfg_attr(not(esper_cuda), allow(unused_variables))]
pub fn conv3x3(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>, ShimError> {
    #[cfg(esper_cuda)]
    // SAFETY: `x` and `w` are live tch handles (`at::Tensor*`) borrowed for the call;
    // exceptions are caught in the shim.
    return new_tensor_or_none(x, |out, err, len| unsafe { ffi::esper_conv3x3(x.as_ptr(), w.as_ptr(), out, err, len) });
    #[cfg(not(esper_cuda))]
    Ok(None)
}

/// A shim call that writes a new tensor or null into `out`: Ok(None) for null and for an
/// `x` that is not on CUDA (no call then), the tensor otherwise.
#[cfg(esper_cuda)]
fn new_tensor_or_none(
    x: &Tensor,
    f: impl FnOnce(*mut *mut torch_sys::C_tensor, *mut std::ffi::c_char, usize) -> i32,
) -> Result<Option<Tensor>, ShimError> {
    if !x.device().is_cuda() {
        return Ok(None);
    }
    let mut out = std::ptr::null_mut();
    crate::call(|err, len| f(&mut out, err, len))?;
    if out.is_null() {
        return Ok(None);
    }
    // SAFETY: on success the shim stores in `out` null (handled above) or a new
    // `at::Tensor*` that nothing else owns; tch frees it on drop.
    Ok(Some(unsafe { Tensor::from_ptr(out) }))
}

#[cfg(all(test, esper_cuda))]
mod tests {
    use crate::{sys, ShimError};
    use std::collections::BTreeSet;
    use std::ffi::{c_char, CString};
    use std::path::Path;

    /// The kernels (`.entry` names) of `source` compiled by NVRTC to PTX with `options`.
    fn entries(source: &str, name: &str, options: &[&str]) -> Result<BTreeSet<String>, ShimError> {
        let source = CString::new(source).unwrap();
        let name = CString::new(name).unwrap();
        let options: Vec<CString> = options.iter().map(|o| CString::new(*o).unwrap()).collect();
        let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let mut out = vec![0u8; 1 << 16];
        // SAFETY: every pointer is a live NUL-terminated string or array of `pointers.len()`
        // of them; the shim writes at most `out.len()` bytes into `out` and catches every
        // exception.
        crate::call(|err, len| unsafe {
            sys::esper_rtc_compile(
                source.as_ptr(),
                name.as_ptr(),
                pointers.as_ptr(),
                pointers.len() as i32,
                out.as_mut_ptr().cast(),
                out.len(),
                err,
                len,
            )
        })?;
        let end = out.iter().position(|&b| b == 0).unwrap();
        Ok(String::from_utf8(out[..end].to_vec()).unwrap().lines().map(String::from).collect())
    }

    /// The kernels the launcher (`cpp/rtc.cpp`'s `kernel_slots`) looks up.
    fn launcher_names() -> BTreeSet<String> {
        // SAFETY: a null buffer of length 0 only asks for the size.
        let size = unsafe { sys::esper_rtc_kernel_names(std::ptr::null_mut(), 0) };
        let mut out = vec![0u8; size];
        // SAFETY: `out` has the `size` bytes the list needs.
        unsafe { sys::esper_rtc_kernel_names(out.as_mut_ptr().cast(), size) };
        String::from_utf8(out[..size - 1].to_vec()).unwrap().lines().map(String::from).collect()
    }

    const PROGRAM: &str = include_str!(concat!(env!("OUT_DIR"), "/esper_rtc.cu"));

    #[test]
    fn the_program_compiles_for_every_architecture_with_every_kernel_the_launcher_looks_up() {
        let names = launcher_names();
        assert!(names.len() > 50 && names.contains("sgd_f32") && names.contains("wgrad3x3_sum"), "{names:?}");
        // Turing (the oldest architecture of CUDA 13, no tensor-core paths), Ampere, Hopper.
        for arch in ["compute_75", "compute_80", "compute_90"] {
            let arch = format!("--gpu-architecture={arch}");
            let found = entries(PROGRAM, "esper_rtc.cu", &[&arch, "--std=c++17", "-default-device"]).unwrap();
            assert_eq!(found, names, "{arch}: the program's kernels vs the ones the launcher looks up");
        }
        // A kernel renamed in its file is a kernel the launcher would not find.
        let renamed = PROGRAM.replacen("void sgd_f32(", "void sgd_f32_renamed(", 1);
        let found =
            entries(&renamed, "esper_rtc.cu", &["--gpu-architecture=compute_80", "--std=c++17", "-default-device"]);
        assert!(!found.unwrap().contains("sgd_f32"));
    }

    #[test]
    fn each_cuda_file_compiles_on_its_own_with_its_includes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
        let include = format!("--include-path={}", dir.display());
        let mut all = BTreeSet::new();
        for name in crate::program::FILES.iter().filter(|f| f.ends_with(".cu")) {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            // No -default-device: each function says where it runs, as nvcc needs.
            let found = entries(&text, name, &["--gpu-architecture=compute_80", "--std=c++17", &include])
                .unwrap_or_else(|e| panic!("cuda/{name} on its own: {e}"));
            assert!(!found.is_empty(), "cuda/{name} has no kernel");
            all.extend(found);
        }
        assert_eq!(all, launcher_names(), "the files' kernels together are the program's");
    }

    #[test]
    fn a_cuda_error_comes_back_with_the_file_and_line() {
        let broken = PROGRAM.replacen("sgd_f32(const SgdList l", "sgd_f32(const SgdLst l", 1);
        let e = entries(&broken, "esper_rtc.cu", &["--gpu-architecture=compute_80", "--std=c++17", "-default-device"])
            .unwrap_err();
        assert!(e.0.contains("torch-shim/cuda/optim.cu("), "{e}");
    }
}
