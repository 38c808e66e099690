//! What libtorch has and tch 0.24 does not expose, through a small C++ shim
//! (`cpp/foreach.cpp`, compiled by `build.rs` with the `cc` crate against the libtorch
//! headers tch was built with): fused SGD and Adam steps over a whole parameter group
//! with the `_foreach_*` kernels. On CUDA that is one launch per op for the group
//! instead of one per parameter and op; on the CPU, fewer temporaries. And the
//! isolation layer's [`straight_through`] estimator as one autograd function.
//!
//! [`autocast`] enters bfloat16 mixed precision on the CPU or CUDA. Where the libtorch
//! has CUDA, [`graph`] adds CUDA graphs (`cpp/graph.cpp`): capture and
//! replay of a whole training step, and [`rtc`] CUDA kernels compiled at run time with
//! NVRTC (`cpp/rtc.cpp`; their CUDA source is `cuda/`).
//!
//! This crate is the shim's Rust face and the only place it is called from; its
//! `unsafe` blocks are the FFI calls, each with its `SAFETY:` reason. The C interface is
//! `include/esper_shim.h`, declared in Rust once (`sys`, checked against it by a test).
//! The crate's README says what each piece is for and how to add a kernel.

pub mod autocast;
pub mod dist;
pub mod dlpack;
pub mod graph;
#[cfg(test)]
mod program;
pub mod rtc;
#[allow(dead_code)] // the whole header: a few functions serve the tests only
mod sys;

use std::ffi::c_char;
use sys::{
    esper_clear_grads, esper_foreach_adam, esper_foreach_sgd, esper_foreach_zero, esper_keep_freed_host_memory,
    esper_set_cudnn_tf32, esper_set_deterministic_cudnn, esper_straight_through, esper_zero_missing_grads,
};
use tch::Tensor;
use torch_sys::C_tensor;

/// Turns cuDNN's deterministic algorithms on or off for the process (libtorch's
/// `torch.backends.cudnn.deterministic`); returns the previous setting. Runs that must
/// repeat bit for bit on a GPU (the tests that compare graph replays with eager steps)
/// need it: cuDNN's fastest algorithms accumulate with atomics.
pub fn set_deterministic_cudnn(on: bool) -> bool {
    // SAFETY: a plain flag in libtorch's global context; no pointer crosses.
    unsafe { esper_set_deterministic_cudnn(i32::from(on)) != 0 }
}

/// Lets cuDNN multiply float32 convolutions in TF32 (libtorch's default,
/// `torch.backends.cudnn.allow_tf32`) or not; returns the previous setting. Tests that
/// compare results across implementations turn it off.
pub fn set_cudnn_tf32(on: bool) -> bool {
    // SAFETY: a plain flag in libtorch's global context; no pointer crosses.
    unsafe { esper_set_cudnn_tf32(i32::from(on)) != 0 }
}

/// A libtorch error from the shim (its message, C++ frames included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimError(pub String);

impl std::fmt::Display for ShimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShimError {}

fn handles(ts: &[&Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr().cast_mut()).collect()
}

/// Runs a shim call with an error buffer; the message on failure.
pub(crate) fn call(f: impl FnOnce(*mut c_char, usize) -> i32) -> Result<(), ShimError> {
    let mut err = [0u8; 4096]; // on the stack: shim calls sit on the step's hot path
    if f(err.as_mut_ptr().cast(), err.len()) == 0 {
        return Ok(());
    }
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    Err(ShimError(String::from_utf8_lossy(&err[..end]).into_owned()))
}

fn same_lengths(lists: &[usize]) -> Result<usize, ShimError> {
    let n = lists[0];
    if lists.iter().any(|&l| l != n) {
        return Err(ShimError(format!("parameter group lists of different lengths: {lists:?}")));
    }
    Ok(n)
}

/// Zeroes every tensor of `ts` in place (a group's gradients: one kernel on CUDA).
pub fn zero(ts: &[&Tensor]) -> Result<(), ShimError> {
    if ts.is_empty() {
        return Ok(()); // libtorch refuses an empty list on CUDA
    }
    let t = handles(ts);
    // SAFETY: `t` holds `t.len()` live handles; exceptions are caught in the shim.
    call(|err, len| unsafe { esper_foreach_zero(t.as_ptr(), t.len(), err, len) })
}

/// Drops the gradient of every tensor of `ts` (`p.grad = None` in PyTorch): the next
/// backward gives each parameter its gradient as computed, where a zeroed one would take
/// an add kernel per parameter.
pub fn clear_grads(ts: &[&Tensor]) -> Result<(), ShimError> {
    let t = handles(ts);
    // SAFETY: `t` holds `t.len()` live handles; exceptions are caught in the shim.
    call(|err, len| unsafe { esper_clear_grads(t.as_ptr(), t.len(), err, len) })
}

/// Gives each tensor `ts[i]` with `had[i]` and no gradient now a zero gradient: after a
/// backward that followed [`clear_grads`], what zeroing instead would have left for a
/// parameter the backward did not reach.
pub fn zero_missing_grads(ts: &[&Tensor], had: &[bool]) -> Result<(), ShimError> {
    same_lengths(&[ts.len(), had.len()])?;
    let t = handles(ts);
    let had: Vec<i32> = had.iter().map(|&h| i32::from(h)).collect();
    // SAFETY: `t` and `had` hold `t.len()` entries; exceptions are caught in the shim.
    call(|err, len| unsafe { esper_zero_missing_grads(t.as_ptr(), had.as_ptr(), t.len(), err, len) })
}

/// The SGD settings of [`sgd`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

/// SGD on a group, in place: `g = grad + weight_decay * p`; with momentum
/// `buf = momentum * buf + g` and the update is `buf`, else `g`; `p -= lr * update`.
/// `bufs` (one per parameter, ignored without momentum) are updated in place. Float32
/// CUDA tensors on the current device take one kernel of our own for the group where the
/// runtime's kernels are built (`cpp/optim.cpp`, the same arithmetic as [`sgd_foreach`]),
/// anything else libtorch's `_foreach_*` ops. `Ok(true)`: the kernel ran.
pub fn sgd(params: &[&Tensor], grads: &[&Tensor], bufs: &[&Tensor], settings: Sgd) -> Result<bool, ShimError> {
    sgd_with(true, params, grads, bufs, settings)
}

/// [`sgd`] with libtorch's `_foreach_*` ops only (what the kernel is compared with).
pub fn sgd_foreach(params: &[&Tensor], grads: &[&Tensor], bufs: &[&Tensor], settings: Sgd) -> Result<(), ShimError> {
    sgd_with(false, params, grads, bufs, settings).map(|_| ())
}

fn sgd_with(
    kernel: bool,
    params: &[&Tensor],
    grads: &[&Tensor],
    bufs: &[&Tensor],
    Sgd { lr, momentum, weight_decay }: Sgd,
) -> Result<bool, ShimError> {
    let n = same_lengths(&[params.len(), grads.len(), if momentum != 0.0 { bufs.len() } else { params.len() }])?;
    if n == 0 {
        return Ok(false);
    }
    let (p, g, b) = (handles(params), handles(grads), handles(bufs));
    let mut kernel = i32::from(kernel);
    // SAFETY: `p`, `g` (and `b` with momentum) hold `n` live tch tensor handles
    // (`at::Tensor*`) that outlive the call; the shim catches every C++ exception and
    // writes at most `len` bytes of message into `err`; `kernel` is a live i32 it may
    // overwrite.
    call(|err, len| unsafe {
        esper_foreach_sgd(p.as_ptr(), g.as_ptr(), b.as_ptr(), n, lr, momentum, weight_decay, 0, &mut kernel, err, len)
    })?;
    Ok(kernel == 1)
}

/// The straight-through estimator `host + (seed - seed.detach())` as one autograd
/// function (`cpp/straight.cpp`): the value is `host` itself (no kernel), the gradient
/// reaches the host unchanged and the seed converted once to the seed output's dtype and
/// memory format. Shapes must match.
pub fn straight_through(host: &Tensor, seed: &Tensor) -> Result<Tensor, ShimError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `host` and `seed` are live tch handles (`at::Tensor*`) borrowed for the
    // call; on success the shim stores in `out` a new `at::Tensor*` nothing else owns;
    // exceptions are caught in the shim.
    call(|err, len| unsafe { esper_straight_through(host.as_ptr(), seed.as_ptr(), &mut out, err, len) })?;
    // SAFETY: `out` is the fresh, owned handle written above; tch frees it on drop.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Keeps memory that libtorch's CPU tensors free inside the process for the next
/// allocation (glibc's mmap threshold to 1 GiB, its trim threshold to 2 GiB;
/// `cpp/host_alloc.cpp` says why): a CPU training step reallocates its activations
/// every step, and by default each large one costs fresh pages from the kernel.
/// Process-wide; Err where glibc refused or this is not glibc.
pub fn keep_freed_host_memory() -> Result<(), ShimError> {
    // SAFETY: no arguments; mallopt only changes the allocator's thresholds, which glibc
    // reads under its own lock.
    match unsafe { esper_keep_freed_host_memory() } {
        0 => Ok(()),
        1 => Err(ShimError("glibc refused the malloc thresholds".into())),
        _ => Err(ShimError("not glibc: the host allocator is left as it is".into())),
    }
}

/// The Adam settings of [`adam`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// Adam on a group, in place, as `torch.optim.Adam`: moments `ms` and `vs` are updated in
/// place, and so is `step`, the group's step count (a 0-d double tensor on the
/// parameters' device, 0 before the first step), incremented first; the bias corrections
/// come from it on the device (nothing in the step changes on the host from one step
/// to the next, so a CUDA graph of it replays right).
pub fn adam(
    params: &[&Tensor],
    grads: &[&Tensor],
    ms: &[&Tensor],
    vs: &[&Tensor],
    settings: Adam,
    step: &Tensor,
) -> Result<(), ShimError> {
    let n = same_lengths(&[params.len(), grads.len(), ms.len(), vs.len()])?;
    if n == 0 {
        return Ok(());
    }
    let (p, g, m, v) = (handles(params), handles(grads), handles(ms), handles(vs));
    let Adam { lr, beta1, beta2, weight_decay, eps } = settings;
    // SAFETY: as in `sgd`: four lists of `n` live handles and a live `step` handle,
    // exceptions caught in the shim.
    call(|err, len| unsafe {
        esper_foreach_adam(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            n,
            lr,
            beta1,
            beta2,
            weight_decay,
            eps,
            step.as_ptr().cast_mut(),
            err,
            len,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    #[cfg(target_env = "gnu")]
    fn glibc_takes_the_malloc_thresholds() {
        keep_freed_host_memory().unwrap();
        let t = Tensor::ones([1 << 20], (Kind::Float, Device::Cpu)); // a 4 MiB block, freed again
        assert_eq!(t.sum(Kind::Float).double_value(&[]), (1 << 20) as f64);
    }

    #[test]
    fn straight_through_is_the_host_forward_and_both_backward() {
        // Host channels-last (NHWC strides), seed NCHW, as in the runtime.
        let host_leaf = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let host = host_leaf.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        let w = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let seed = &w * 2.0;
        let y = straight_through(&host, &seed).unwrap();
        assert!(y.equal(&host) && y.stride() == host.stride(), "the value is the host tensor");
        let g = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        (&y * &g).sum(Kind::Float).backward();
        // The formula's gradients: host gets g, the seed gets g (so w gets 2 g).
        assert!(host_leaf.grad().equal(&g));
        assert!(w.grad().equal(&(&g * 2.0)));
        let e = straight_through(&host, &Tensor::zeros([2, 3], (Kind::Float, Device::Cpu))).unwrap_err();
        assert!(e.0.contains("straight-through"), "{e}");
    }

    #[test]
    fn straight_through_hands_a_float32_seed_its_gradient_in_float32_nchw() {
        // bfloat16 autocast: host bfloat16 channels-last, the seed's output float32 NCHW.
        let host_leaf = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let host = host_leaf.to_kind(Kind::BFloat16).permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        let seed_out = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = straight_through(&host, &seed_out).unwrap();
        assert_eq!(y.kind(), Kind::BFloat16, "the value is the host tensor");
        let g = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
        let g = g.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        (&y * &g).sum(Kind::Float).backward(); // y's gradient: g itself, channels-last
        let got = seed_out.grad();
        assert!(got.kind() == Kind::Float && got.is_contiguous(), "float32 NCHW");
        assert!(got.equal(&g.to_kind(Kind::Float)), "bfloat16 widens exactly");
    }

    fn close(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    fn r(v: &[Tensor]) -> Vec<&Tensor> {
        v.iter().collect()
    }

    #[test]
    fn sgd_with_momentum_and_weight_decay_is_torch_optim_sgd() {
        let p: Vec<Tensor> = (0..3).map(|i| Tensor::randn([4 + i, 3], (Kind::Float, Device::Cpu))).collect();
        let g: Vec<Tensor> = p.iter().map(Tensor::randn_like).collect();
        let b: Vec<Tensor> = p.iter().map(Tensor::zeros_like).collect();
        let (expected_p, expected_b): (Vec<_>, Vec<_>) = p
            .iter()
            .zip(&g)
            .map(|(p, g)| {
                let d = g + p * 0.01;
                let buf = &d; // the first step: buf = d (0 * 0.9 + d)
                (p - buf * 0.1, buf.copy())
            })
            .unzip();
        sgd(&r(&p), &r(&g), &r(&b), Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.01 }).unwrap();
        for i in 0..3 {
            assert!(close(&p[i], &expected_p[i]) < 1e-6 && close(&b[i], &expected_b[i]) < 1e-6);
        }
        // A second step: buf = 0.9 buf + d.
        let before = (p[0].copy(), b[0].copy());
        sgd(&r(&p), &r(&g), &r(&b), Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0 }).unwrap();
        let buf = &before.1 * 0.9 + &g[0];
        assert!(close(&b[0], &buf) < 1e-6 && close(&p[0], &(&before.0 - &buf * 0.1)) < 1e-6);
    }

    #[test]
    fn adam_is_torch_optim_adam_with_its_step_count_on_the_device() {
        let p = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
        let g = Tensor::randn_like(&p);
        let (m, v) = (p.zeros_like(), p.zeros_like());
        let step = Tensor::zeros([], (Kind::Double, Device::Cpu));
        let (lr, b1, b2, eps) = (1e-3, 0.9, 0.999, 1e-8);
        let settings = Adam { lr, beta1: b1, beta2: b2, weight_decay: 0.0, eps };
        let (mut pe, mut me, mut ve) = (p.copy(), m.copy(), v.copy());
        for t in 1..=2 {
            me = &me * b1 + &g * (1.0 - b1);
            ve = &ve * b2 + &g * &g * (1.0 - b2);
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            pe = &pe - (&me / c1) / ((&ve / c2).sqrt() + eps) * lr;
            adam(&[&p], &[&g], &[&m], &[&v], settings, &step).unwrap();
            assert_eq!(step.double_value(&[]), t as f64);
            assert!(close(&p, &pe) < 1e-6 && close(&m, &me) < 1e-7 && close(&v, &ve) < 1e-7, "step {t}");
        }
    }

    #[test]
    fn clear_grads_drops_gradients_and_the_next_backward_sets_them_anew() {
        let w = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (&w * 2.0).sum(Kind::Float).backward();
        assert!(w.grad().defined());
        clear_grads(&[&w]).unwrap();
        assert!(!w.grad().defined(), "dropped");
        (&w * 3.0).sum(Kind::Float).backward();
        assert!(w.grad().equal(&Tensor::from_slice(&[3.0f32, 3.0, 3.0])), "not added to the old one");
        clear_grads(&[]).unwrap();
        let unused = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        zero_missing_grads(&[&w, &unused], &[true, true]).unwrap();
        assert!(w.grad().equal(&Tensor::from_slice(&[3.0f32, 3.0, 3.0])), "a gradient it has stays");
        assert!(unused.grad().equal(&Tensor::zeros([2], (Kind::Float, Device::Cpu))), "a missing one is zero");
        let other = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        zero_missing_grads(&[&other], &[false]).unwrap();
        assert!(!other.grad().defined(), "none where there was none");
        assert!(zero_missing_grads(&[&other], &[]).is_err());
    }

    #[test]
    fn zero_zeroes_a_list() {
        let ts: Vec<Tensor> = (1..4).map(|i| Tensor::ones([i], (Kind::Float, Device::Cpu))).collect();
        zero(&r(&ts)).unwrap();
        zero(&[]).unwrap();
        sgd(&[], &[], &[], Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0 }).unwrap();
        assert!(ts.iter().all(|t| t.abs().sum(Kind::Float).double_value(&[]) == 0.0));
    }

    #[test]
    fn a_libtorch_error_comes_back_as_a_message() {
        let p = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let g = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        let e = sgd(&[&p], &[&g], &[], Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.0 }).unwrap_err();
        assert!(e.0.contains("size"), "{e}");
        let e = sgd(&[&p], &[], &[], Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.0 }).unwrap_err();
        assert!(e.0.contains("different lengths"), "{e}");
    }
}
