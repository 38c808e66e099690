//! Data-parallel communication through libtorch's c10d (`cpp/dist.cpp`): a [`Store`]
//! (c10d's TCPStore) the processes rendezvous through, and a [`ProcessGroup`] over it
//! (Gloo on CPU tensors; NCCL on CUDA tensors where this build has CUDA) with the
//! collectives a trainer needs: broadcast the initial parameters, sum the gradients,
//! reduce metrics, broadcast rank 0's decisions, gather every rank's fingerprint, and
//! a barrier.
//!
//! Every collective returns once it is done (on NCCL: once the device has finished),
//! or with a [`ShimError`] naming the operation and the rank with c10d's message, for
//! instance when a peer does not join it within the group's timeout (Gloo; NCCL's
//! watchdog ends the process instead). Every rank must call the same collectives in the
//! same order, with tensors of the same shapes and dtypes.
//!
//! [`GradSync`] (`dist/grad_sync.rs`) averages a parameter set's gradients with
//! allreduces started from autograd hooks while the backward runs.
//!
//! Who a process is (torchrun's variables) is the caller's to read: the runtime's
//! `esper_runtime::distributed::RankEnv`; rank 0 runs the store unless torchrun's agent
//! does (`TORCHELASTIC_USE_AGENT_STORE=True`), then every rank connects to it.

use crate::rtc::BatchNormParams;
use crate::sys::{
    esper_group_all_gather, esper_group_allreduce_sum, esper_group_barrier, esper_group_broadcast, esper_group_free,
    esper_group_gloo, esper_store_free, esper_store_new, esper_store_port, esper_sync_batch_norm,
    esper_sync_batch_norm_forget, esper_sync_batch_norm_release, EsperGroup, EsperStore,
};
use crate::{call, handles, ShimError};
use std::ffi::{c_char, CString};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

mod grad_sync;
pub use grad_sync::GradSync;

/// The most bytes the tensors of one dtype and device share in one collective's flat
/// buffer: a bound on the copy's memory; a larger tensor goes alone.
pub const BUCKET_BYTES: usize = 64 << 20;

/// Which c10d process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo, over TCP: CPU tensors.
    Gloo,
    /// NCCL, on `cuda:device` (this process's GPU): CUDA tensors on that device. Only
    /// where this build has CUDA.
    Nccl { device: usize },
}

impl Backend {
    /// Where this backend's tensors live.
    pub fn device(self) -> Device {
        match self {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl { device } => Device::Cuda(device),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl { .. } => "nccl",
        }
    }
}

/// Runs a shim call that returns a handle (null on failure, with the message).
fn handle<T>(f: impl FnOnce(*mut c_char, usize) -> *mut T) -> Result<NonNull<T>, ShimError> {
    let mut out = std::ptr::null_mut();
    call(|err, len| {
        out = f(err, len);
        i32::from(out.is_null())
    })?;
    NonNull::new(out).ok_or_else(|| ShimError("the shim returned no handle".into()))
}

fn int(what: &str, n: usize) -> Result<i32, ShimError> {
    i32::try_from(n).map_err(|_| ShimError(format!("{what} {n} is too large")))
}

/// A c10d TCP store: a key-value server one process runs (the master) and every process
/// of the job connects to. Process groups rendezvous through it.
pub struct Store {
    ptr: NonNull<EsperStore>,
    /// Process groups made over this store so far: each gets its own keys.
    groups: AtomicUsize,
}

// SAFETY: c10d's TCPStore serializes its own operations (a lock around each request);
// the handle is only read after construction and freed once, in `drop`.
unsafe impl Send for Store {}
// SAFETY: as above; `groups` is atomic.
unsafe impl Sync for Store {}

impl Store {
    /// The store at `host:port`: the master listens there (on a free port where `port`
    /// is 0: see [`Store::port`]), the others connect, retrying until `timeout`. The
    /// master does not wait for the others here; [`ProcessGroup::new`] does.
    pub fn new(
        host: &str,
        port: u16,
        world_size: usize,
        is_master: bool,
        timeout: Duration,
    ) -> Result<Self, ShimError> {
        let c_host = CString::new(host).map_err(|_| ShimError(format!("a host name with a NUL byte: {host:?}")))?;
        let world = int("a world size of", world_size)?;
        // SAFETY: `c_host` is a NUL-terminated string alive for the call; the rest are
        // plain values; the shim catches every C++ exception.
        let ptr = handle(|err, len| unsafe {
            esper_store_new(
                c_host.as_ptr(),
                i32::from(port),
                world,
                i32::from(is_master),
                timeout.as_secs_f64(),
                err,
                len,
            )
        })?;
        Ok(Self { ptr, groups: AtomicUsize::new(0) })
    }

    /// The port the store is at (the one the master picked, for a port of 0).
    pub fn port(&self) -> u16 {
        // SAFETY: `self.ptr` is a live store handle.
        let port = unsafe { esper_store_port(self.ptr.as_ptr()) };
        u16::try_from(port).unwrap_or(0)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: `self.ptr` came from `esper_store_new` and is freed once, here; process
        // groups hold their own reference to the store.
        unsafe { esper_store_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store(port {})", self.port())
    }
}

/// A c10d process group: `size` processes (ranks), each holding one; see the module's
/// documentation for the rules its collectives follow.
pub struct ProcessGroup {
    ptr: NonNull<EsperGroup>,
    rank: usize,
    size: usize,
    backend: Backend,
}

// SAFETY: c10d's process groups may be used from any thread; `ProcessGroup` is not
// `Sync`, so its collectives are issued from one thread at a time, in order.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group of `size` ranks as `rank`: returns once every rank has joined
    /// (Err after `timeout`). `timeout` also bounds each collective. Every process makes
    /// its groups over its store in the same order (each gets its own keys).
    pub fn new(
        store: &Store,
        backend: Backend,
        rank: usize,
        size: usize,
        timeout: Duration,
    ) -> Result<Self, ShimError> {
        if size == 0 || rank >= size {
            return Err(ShimError(format!("rank {rank} is not in a group of {size}")));
        }
        let n = store.groups.fetch_add(1, Ordering::SeqCst);
        let prefix = CString::new(format!("esper/{}/{n}", backend.name())).map_err(|e| ShimError(e.to_string()))?;
        let (r, s, seconds) = (int("rank", rank)?, int("group size", size)?, timeout.as_secs_f64());
        let ptr = match backend {
            // SAFETY: `store.ptr` is a live store handle and `prefix` a NUL-terminated
            // string, both alive for the call; the group keeps its own reference to the
            // store; the shim catches every C++ exception.
            Backend::Gloo => handle(|err, len| unsafe {
                esper_group_gloo(store.ptr.as_ptr(), prefix.as_ptr(), r, s, seconds, err, len)
            })?,
            Backend::Nccl { device } => nccl(store, &prefix, r, s, device, seconds)?,
        };
        Ok(Self { ptr, rank, size, backend })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Makes every tensor of `ts` (in place) what it is on rank `root`. Tensors of one
    /// dtype go in one collective (up to [`BUCKET_BYTES`]); returns how many ran.
    pub fn broadcast(&self, ts: &[&Tensor], root: usize) -> Result<usize, ShimError> {
        let root = int("root", root)?;
        let t = handles(ts);
        let mut collectives = 0;
        // SAFETY: `self.ptr` is a live group handle; `t` holds `t.len()` live tensor
        // handles that outlive the call; `collectives` is a live usize the shim writes;
        // exceptions are caught in the shim.
        call(|err, len| unsafe {
            esper_group_broadcast(
                self.ptr.as_ptr(),
                t.as_ptr(),
                t.len(),
                root,
                BUCKET_BYTES,
                &mut collectives,
                err,
                len,
            )
        })?;
        Ok(collectives)
    }

    /// Replaces every tensor of `ts` (in place) with its sum over the ranks. Tensors of
    /// one dtype go in one collective (up to [`BUCKET_BYTES`]); returns how many ran.
    pub fn allreduce_sum(&self, ts: &[&Tensor]) -> Result<usize, ShimError> {
        self.allreduce_scaled(ts, 1.0)
    }

    /// [`ProcessGroup::allreduce_sum`] divided by the number of ranks: the mean over the ranks
    /// (DDP's gradient averaging), scaled once per bucket.
    pub fn allreduce_mean(&self, ts: &[&Tensor]) -> Result<usize, ShimError> {
        self.allreduce_scaled(ts, 1.0 / self.size as f64)
    }

    fn allreduce_scaled(&self, ts: &[&Tensor], scale: f64) -> Result<usize, ShimError> {
        let t = handles(ts);
        let mut collectives = 0;
        // SAFETY: as in `broadcast`.
        call(|err, len| unsafe {
            let g = self.ptr.as_ptr();
            esper_group_allreduce_sum(g, t.as_ptr(), t.len(), scale, BUCKET_BYTES, &mut collectives, err, len)
        })?;
        Ok(collectives)
    }

    /// The sum over the ranks of each of `values` (every rank passes as many): metrics.
    pub fn allreduce_scalars(&self, values: &[f64]) -> Result<Vec<f64>, ShimError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let t = Tensor::from_slice(values).to_device(self.backend.device());
        self.allreduce_sum(&[&t])?;
        Vec::<f64>::try_from(t.to_device(Device::Cpu)).map_err(|e| ShimError(e.to_string()))
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), ShimError> {
        // SAFETY: `self.ptr` is a live group handle; exceptions are caught in the shim.
        call(|err, len| unsafe { esper_group_barrier(self.ptr.as_ptr(), err, len) })
    }

    /// Rank `root`'s `bytes` on every rank (what the others pass is ignored): its length,
    /// then its bytes.
    pub fn broadcast_bytes(&self, root: usize, bytes: Vec<u8>) -> Result<Vec<u8>, ShimError> {
        let device = self.backend.device();
        let length = Tensor::from_slice(&[len_i64(bytes.len())?]).to_device(device);
        self.broadcast(&[&length], root)?;
        let n = usize::try_from(length.int64_value(&[0])).map_err(|e| ShimError(e.to_string()))?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let payload = if self.rank == root {
            Tensor::from_slice(&bytes)
        } else {
            Tensor::zeros([len_i64(n)?], (Kind::Uint8, Device::Cpu))
        };
        let payload = payload.to_device(device);
        self.broadcast(&[&payload], root)?;
        Vec::<u8>::try_from(payload.to_device(Device::Cpu)).map_err(|e| ShimError(e.to_string()))
    }

    /// Every rank's `bytes`, in rank order (they may differ in length).
    pub fn all_gather_bytes(&self, bytes: Vec<u8>) -> Result<Vec<Vec<u8>>, ShimError> {
        let device = self.backend.device();
        let length = Tensor::from_slice(&[len_i64(bytes.len())?]).to_device(device);
        let lengths = Vec::<i64>::try_from(self.all_gather(&length)?.reshape([-1]).to_device(Device::Cpu))
            .map_err(|e| ShimError(e.to_string()))?;
        let longest = lengths.iter().copied().max().unwrap_or(0);
        if longest == 0 {
            return Ok(vec![Vec::new(); self.size]);
        }
        let padded = Tensor::zeros([longest], (Kind::Uint8, Device::Cpu));
        if !bytes.is_empty() {
            let mut head = padded.narrow(0, 0, len_i64(bytes.len())?);
            head.copy_(&Tensor::from_slice(&bytes));
        }
        let all = self.all_gather(&padded.to_device(device))?.to_device(Device::Cpu);
        lengths
            .iter()
            .enumerate()
            .map(|(r, &n)| {
                let row = all.get(int("rank", r)?.into()).narrow(0, 0, n);
                Vec::<u8>::try_from(row).map_err(|e| ShimError(e.to_string()))
            })
            .collect()
    }

    /// BatchNorm of `x` (channels in dimension 1) in training mode with the statistics
    /// of the global batch, every rank's `x` together, as PyTorch's SyncBatchNorm:
    /// differentiable in `x`, the weight and the bias; the running statistics updated in
    /// place with the global mean and unbiased variance, the same on every rank. The
    /// weight and bias gradients are this rank's own (averaging the gradients over the
    /// ranks makes them the global batch's). One all-gather forward and one all-reduce
    /// backward: every rank must run the same BatchNorms forward and backward, in the
    /// same order. `x` lives on this group's device.
    pub fn sync_batch_norm(&self, x: &Tensor, bn: &BatchNormParams<'_>) -> Result<Tensor, ShimError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: `self.ptr` is a live group handle and every tensor a live tch handle
        // borrowed for the call (the running statistics are written in place, as
        // libtorch's BatchNorm writes them); on success the shim stores in `out` a new
        // `at::Tensor*` nothing else owns; exceptions are caught in the shim.
        call(|err, len| unsafe {
            esper_sync_batch_norm(
                self.ptr.as_ptr(),
                x.as_ptr(),
                bn.weight.as_ptr(),
                bn.bias.as_ptr(),
                bn.running_mean.as_ptr(),
                bn.running_var.as_ptr(),
                bn.momentum,
                bn.eps,
                &mut out,
                err,
                len,
            )
        })?;
        // SAFETY: `out` is the fresh, owned handle written above; tch frees it on drop.
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// After this rank's backward failed part way: makes, with zeros, the backward
    /// exchanges its synchronised BatchNorms still owe (the last first), so that the other
    /// ranks' backwards complete (every rank must then discard the step). Returns how
    /// many were made.
    pub fn release_batch_norm_exchanges(&self) -> Result<usize, ShimError> {
        let mut exchanges = 0;
        // SAFETY: `self.ptr` is a live group handle; `exchanges` a live usize the shim
        // writes; exceptions are caught in the shim.
        call(|err, len| unsafe { esper_sync_batch_norm_release(self.ptr.as_ptr(), &mut exchanges, err, len) })?;
        Ok(exchanges)
    }

    /// Forgets the backward exchanges owed (a forward no rank runs the backward of).
    pub fn forget_batch_norm_exchanges(&self) {
        // SAFETY: `self.ptr` is a live group handle; the shim catches every exception.
        unsafe { esper_sync_batch_norm_forget(self.ptr.as_ptr()) }
    }

    /// Every rank's `t` (same shape and dtype everywhere), stacked in rank order.
    fn all_gather(&self, t: &Tensor) -> Result<Tensor, ShimError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: `self.ptr` is a live group handle, `t` a live tensor handle borrowed for
        // the call; on success the shim stores in `out` a new `at::Tensor*` nothing else
        // owns; exceptions are caught in the shim.
        call(|err, len| unsafe { esper_group_all_gather(self.ptr.as_ptr(), t.as_ptr(), &mut out, err, len) })?;
        // SAFETY: `out` is the fresh, owned handle written above; tch frees it on drop.
        Ok(unsafe { Tensor::from_ptr(out) })
    }
}

/// Marks this process's ranks as failed: from now on a NCCL group dropped is aborted, its
/// kernels waiting for a peer ended at once, instead of shut down, which waits for them
/// to finish (and never returns where a peer is gone and no watchdog ends the wait, as
/// inside a CUDA graph). For every group of the process, once and for good.
pub fn abort_groups_on_drop() {
    // SAFETY: no arguments; it sets an atomic flag in the shim.
    unsafe { crate::sys::esper_groups_abort_on_free() }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `self.ptr` came from `esper_group_*` and is freed once, here.
        unsafe { esper_group_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessGroup({:?}, rank {} of {})", self.backend, self.rank, self.size)
    }
}

fn len_i64(n: usize) -> Result<i64, ShimError> {
    i64::try_from(n).map_err(|_| ShimError(format!("{n} bytes are too many")))
}

#[cfg(esper_cuda)]
fn nccl(
    store: &Store,
    prefix: &CString,
    rank: i32,
    size: i32,
    device: usize,
    seconds: f64,
) -> Result<NonNull<EsperGroup>, ShimError> {
    let device = int("CUDA device", device)?;
    // SAFETY: as for Gloo in `ProcessGroup::new`.
    handle(|err, len| unsafe {
        crate::sys::esper_group_nccl(store.ptr.as_ptr(), prefix.as_ptr(), rank, size, device, seconds, err, len)
    })
}

#[cfg(not(esper_cuda))]
fn nccl(_: &Store, _: &CString, _: i32, _: i32, device: usize, _: f64) -> Result<NonNull<EsperGroup>, ShimError> {
    Err(ShimError(format!("no NCCL on cuda:{device}: this build has no CUDA support: {}", env!("ESPER_NO_CUDA"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    /// Runs `f` as rank 0 and rank 1 of a Gloo group, each on its own thread with its own
    /// store handle (rank 0's listens on a free port) and group; both results.
    pub(super) fn two_ranks<T: Send>(timeout: Duration, f: impl Fn(ProcessGroup) -> T + Sync) -> [T; 2] {
        let server = Store::new("127.0.0.1", 0, 2, true, timeout).unwrap();
        let port = server.port();
        assert_ne!(port, 0, "the master picked a port");
        std::thread::scope(|s| {
            let f = &f;
            let server = &server;
            let zero = s.spawn(move || f(ProcessGroup::new(server, Backend::Gloo, 0, 2, timeout).unwrap()));
            let one = s.spawn(move || {
                let client = Store::new("127.0.0.1", port, 2, false, timeout).unwrap();
                f(ProcessGroup::new(&client, Backend::Gloo, 1, 2, timeout).unwrap())
            });
            [zero.join().unwrap(), one.join().unwrap()]
        })
    }

    pub(super) const T: Duration = Duration::from_secs(20);

    fn cpu(values: &[f32]) -> Tensor {
        Tensor::from_slice(values)
    }

    #[test]
    fn broadcast_makes_every_rank_hold_the_roots_tensors() {
        let got = two_ranks(T, |g| {
            let r = g.rank() as f32;
            let a = cpu(&[r, r + 10.0, r + 20.0]).reshape([3, 1]);
            let b = Tensor::from_slice(&[r as i64 * 7]);
            let w = cpu(&[r; 4]).set_requires_grad(true); // a parameter: written in place
            let collectives = g.broadcast(&[&a, &b, &w], 1).unwrap();
            (
                Vec::<f32>::try_from(a.reshape([-1])).unwrap(),
                b.int64_value(&[0]),
                Vec::<f32>::try_from(w.detach()).unwrap(),
                collectives,
            )
        });
        for (a, b, w, collectives) in got {
            assert_eq!(a, [1.0, 11.0, 21.0], "rank 1's values");
            assert_eq!(b, 7);
            assert_eq!(w, [1.0; 4]);
            assert_eq!(collectives, 2, "one for the float32 tensors, one for the int64 one");
        }
    }

    #[test]
    fn allreduce_mean_divides_the_sum_by_the_ranks_in_buckets_and_alone() {
        let got = two_ranks(T, |g| {
            let r = f64::from(g.rank() as u8 + 1); // 1 and 2
            let small = Tensor::full([3, 2], r, (Kind::Float, Device::Cpu));
            let other = Tensor::full([5], 10.0 * r, (Kind::Float, Device::Cpu));
            let alone = Tensor::full([4], r, (Kind::Double, Device::Cpu));
            let collectives = g.allreduce_mean(&[&small, &other, &alone]).unwrap();
            (small, other, alone, collectives)
        });
        for (small, other, alone, collectives) in got {
            assert_eq!(collectives, 2, "float32 in one bucket, float64 alone");
            assert!(small.eq(1.5).all().int64_value(&[]) == 1, "(1 + 2) / 2 in a bucket");
            assert!(other.eq(15.0).all().int64_value(&[]) == 1, "(10 + 20) / 2 in a bucket");
            assert!(alone.eq(1.5).all().int64_value(&[]) == 1, "(1 + 2) / 2 alone");
        }
    }

    #[test]
    fn allreduce_sums_many_tensors_of_mixed_sizes_in_one_collective() {
        let got = two_ranks(T, |g| {
            let r = g.rank() as f32 + 1.0; // 1 and 2
            let ts: Vec<Tensor> = (1..=5i64)
                .map(|n| Tensor::full([n, n + 1], f64::from(r) * n as f64, (Kind::Float, Device::Cpu)))
                .collect();
            let strided = Tensor::full([4, 3], f64::from(r), (Kind::Float, Device::Cpu)).transpose(0, 1); // not contiguous
            let mut all: Vec<&Tensor> = ts.iter().collect();
            all.push(&strided);
            let collectives = g.allreduce_sum(&all).unwrap();
            let sums = g.allreduce_scalars(&[f64::from(r), 0.5]).unwrap();
            (ts, strided, collectives, sums)
        });
        for (ts, strided, collectives, sums) in got {
            assert_eq!(collectives, 1, "six float32 tensors, one flat buffer");
            for (i, t) in ts.iter().enumerate() {
                let n = (i + 1) as f64;
                assert_eq!(t.size(), [i as i64 + 1, i as i64 + 2], "shapes kept");
                assert!(t.eq(3.0 * n).all().int64_value(&[]) == 1, "1n + 2n on tensor {i}");
            }
            assert_eq!(strided.size(), [3, 4]);
            assert!(strided.eq(3.0).all().int64_value(&[]) == 1, "a non-contiguous tensor gets its sum too");
            assert_eq!(sums, [3.0, 1.0]);
        }
    }

    #[test]
    fn bytes_round_trip_and_the_barrier_waits_for_every_rank() {
        let got = two_ranks(T, |g| {
            let mine = format!("rank {} fingerprint", g.rank()).repeat(g.rank() + 1).into_bytes();
            let decision = if g.rank() == 0 { br#"{"grow": true}"#.to_vec() } else { Vec::new() };
            let decided = g.broadcast_bytes(0, decision).unwrap();
            let empty = g.broadcast_bytes(1, Vec::new()).unwrap();
            let all = g.all_gather_bytes(mine).unwrap();
            let none = g.all_gather_bytes(if g.rank() == 1 { b"x".to_vec() } else { Vec::new() }).unwrap();
            if g.rank() == 1 {
                std::thread::sleep(Duration::from_millis(300));
            }
            let before = Instant::now();
            g.barrier().unwrap();
            (decided, empty, all, none, before.elapsed())
        });
        for (rank, (decided, empty, all, none, waited)) in got.into_iter().enumerate() {
            assert_eq!(decided, br#"{"grow": true}"#);
            assert!(empty.is_empty());
            assert_eq!(all, [b"rank 0 fingerprint".to_vec(), b"rank 1 fingerprintrank 1 fingerprint".to_vec()]);
            assert_eq!(none, [Vec::new(), b"x".to_vec()]);
            if rank == 0 {
                assert!(waited >= Duration::from_millis(200), "rank 0 waited for rank 1: {waited:?}");
            }
        }
    }

    #[test]
    fn a_collective_a_peer_never_joins_fails_within_the_timeout() {
        let timeout = Duration::from_secs(2);
        let (done, wait_done) = mpsc::channel::<()>();
        let wait_done = std::sync::Mutex::new(wait_done);
        let got = two_ranks(timeout, |g| {
            if g.rank() == 1 {
                // Never joins; stays in the group until rank 0 has its answer.
                let _ = wait_done.lock().unwrap().recv_timeout(Duration::from_secs(30));
                return None;
            }
            let t = cpu(&[1.0, 2.0]);
            let start = Instant::now();
            let result = g.allreduce_sum(&[&t]);
            let _ = done.send(());
            Some((result, start.elapsed()))
        });
        let (result, took) = got[0].as_ref().unwrap();
        let e = result.as_ref().unwrap_err();
        assert!(e.0.starts_with("allreduce on rank 0 of 2: "), "{e}");
        assert!(e.0.to_lowercase().contains("timed out"), "{e}");
        assert!(*took < Duration::from_secs(10), "an error after {took:?}");
    }

    #[test]
    fn joining_alone_fails_within_the_timeout_and_bad_arguments_are_refused() {
        let timeout = Duration::from_secs(2);
        let server = Store::new("127.0.0.1", 0, 2, true, timeout).unwrap();
        let start = Instant::now();
        let e = ProcessGroup::new(&server, Backend::Gloo, 0, 2, timeout).unwrap_err();
        assert!(e.0.starts_with("joining a Gloo process group on rank 0 of 2: "), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        let e = ProcessGroup::new(&server, Backend::Gloo, 2, 2, timeout).unwrap_err();
        assert_eq!(e.0, "rank 2 is not in a group of 2");
        let e = Store::new("127.0.0.1", server.port(), 2, false, Duration::ZERO).unwrap_err();
        assert!(e.0.contains("a timeout must be a positive number of seconds"), "{e}");
    }

    /// A NCCL group of one rank on cuda:0 (and its store, to keep alive beside it).
    #[cfg(esper_cuda)]
    fn nccl_group_of_one() -> (Store, ProcessGroup) {
        assert!(tch::Cuda::is_available(), "needs a CUDA device");
        let timeout = Duration::from_secs(60);
        let store = Store::new("127.0.0.1", 0, 1, true, timeout).unwrap();
        let g = ProcessGroup::new(&store, Backend::Nccl { device: 0 }, 0, 1, timeout).unwrap();
        (store, g)
    }

    /// Every collective over NCCL, on the one GPU a single-GPU machine has: a group of one
    /// rank leaves the values as they are.
    #[test]
    #[cfg(esper_cuda)]
    #[ignore = "needs CUDA: scripts/test-gpu.sh"]
    fn nccl_group_of_one_reduces_broadcasts_and_scales_on_one_gpu() {
        let (_store, g) = nccl_group_of_one();
        let device = Device::Cuda(0);
        let ts: Vec<Tensor> = (1..=3i64).map(|n| Tensor::full([n, 2], n as f64, (Kind::Float, device))).collect();
        let strided = Tensor::full([4, 3], 2.0, (Kind::Float, device)).transpose(0, 1);
        let mut all: Vec<&Tensor> = ts.iter().collect();
        all.push(&strided);
        assert_eq!(g.allreduce_sum(&all).unwrap(), 1, "one bucket on the GPU");
        assert_eq!(g.allreduce_mean(&all).unwrap(), 1);
        assert_eq!(g.broadcast(&all, 0).unwrap(), 1);
        for (i, t) in ts.iter().enumerate() {
            assert!(t.eq((i + 1) as f64).all().int64_value(&[]) == 1, "tensor {i} kept its values");
        }
        assert!(strided.eq(2.0).all().int64_value(&[]) == 1 && strided.size() == [3, 4]);
        assert_eq!(g.allreduce_scalars(&[1.5, -2.0]).unwrap(), [1.5, -2.0]);
        assert_eq!(g.all_gather_bytes(vec![7, 8]).unwrap(), [vec![7u8, 8]]);
        g.barrier().unwrap();
    }

    /// [`GradSync`] over NCCL on the one GPU of a single-GPU machine: the backward (on
    /// autograd's device thread) starts every bucket; a group of one leaves the gradients
    /// as they were without it. (Here, not beside `GradSync`'s other tests, so that
    /// scripts/test-gpu.sh's filter for this module's NCCL tests selects it.)
    #[test]
    #[cfg(esper_cuda)]
    #[ignore = "needs CUDA: scripts/test-gpu.sh"]
    fn nccl_grad_sync_group_of_one_starts_buckets_in_the_backward() {
        let (_store, g) = nccl_group_of_one();
        let gpu = Device::Cuda(0);
        let shapes: [&[i64]; 4] = [&[4, 8], &[8], &[8, 3], &[3]];
        let params: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let n: i64 = s.iter().product();
                (Tensor::arange(n, (Kind::Float, gpu)) * 0.37 + k as f64).sin().reshape(*s).set_requires_grad(true)
            })
            .collect();
        let refs: Vec<&Tensor> = params.iter().collect();
        let x = Tensor::arange(20, (Kind::Float, gpu)).cos().reshape([5, 4]);
        let loss =
            || ((x.matmul(&params[0]) + &params[1]).tanh().matmul(&params[2]) + &params[3]).square().sum(Kind::Float);
        loss().backward();
        let want: Vec<Tensor> = params.iter().map(|p| p.grad().copy()).collect();
        crate::clear_grads(&refs).unwrap();
        // At 64 bytes: [b 12], [w 96], [b 32], [w 128].
        let mut sync = GradSync::new(&g, &refs, 64).unwrap();
        sync.begin().unwrap();
        loss().backward();
        assert_eq!(sync.launched(), 4, "every bucket started inside backward()");
        assert_eq!(sync.finish().unwrap(), 4);
        for (i, p) in params.iter().enumerate() {
            assert!(p.grad().allclose(&want[i], 1e-6, 1e-6, false), "parameter {i}");
        }
    }

    /// The allreduce test over NCCL, rank r on cuda:r (two threads of one process).
    #[test]
    #[cfg(esper_cuda)]
    #[ignore = "needs two GPUs: scripts/test-gpu.sh"]
    fn nccl_allreduce_sums_on_two_gpus() {
        let gpus = tch::Cuda::device_count();
        assert!(gpus >= 2, "needs two CUDA devices, found {gpus}");
        let timeout = Duration::from_secs(60);
        let server = Store::new("127.0.0.1", 0, 2, true, timeout).unwrap();
        let port = server.port();
        let run = |store: &Store, rank: usize| {
            let g = ProcessGroup::new(store, Backend::Nccl { device: rank }, rank, 2, timeout).unwrap();
            let device = Device::Cuda(rank);
            let r = rank as f64 + 1.0;
            let ts: Vec<Tensor> =
                (1..=5i64).map(|n| Tensor::full([n, n + 1], r * n as f64, (Kind::Float, device))).collect();
            let collectives = g.allreduce_sum(&ts.iter().collect::<Vec<_>>()).unwrap();
            let bytes = g.all_gather_bytes(vec![rank as u8; rank + 1]).unwrap();
            g.barrier().unwrap();
            (ts.iter().map(|t| t.to_device(Device::Cpu)).collect::<Vec<_>>(), collectives, bytes)
        };
        let got = std::thread::scope(|s| {
            let zero = s.spawn(|| run(&server, 0));
            let one = s.spawn(|| run(&Store::new("127.0.0.1", port, 2, false, timeout).unwrap(), 1));
            [zero.join().unwrap(), one.join().unwrap()]
        });
        for (ts, collectives, bytes) in got {
            assert_eq!(collectives, 1);
            for (i, t) in ts.iter().enumerate() {
                assert!(t.eq(3.0 * (i + 1) as f64).all().int64_value(&[]) == 1, "tensor {i}");
            }
            assert_eq!(bytes, [vec![0u8], vec![1u8, 1]]);
        }
    }

    /// A BatchNorm layer's tensors for the sync-BatchNorm tests: weight, bias and
    /// running statistics of `c` channels (the weight not all ones, the statistics not
    /// the defaults, so that each one's part shows).
    struct Bn {
        weight: Tensor,
        bias: Tensor,
        mean: Tensor,
        var: Tensor,
    }

    impl Bn {
        fn new(c: i64) -> Self {
            Self::of_kind(c, Kind::Float)
        }

        fn of_kind(c: i64, kind: Kind) -> Self {
            let ramp = Tensor::arange(c, (kind, Device::Cpu));
            Self {
                weight: (&ramp * 0.25 + 0.5).set_requires_grad(true),
                bias: (&ramp * -0.1).set_requires_grad(true),
                mean: &ramp * 0.01,
                var: &ramp * 0.1 + 1.0,
            }
        }

        /// The same layer on `device`.
        #[cfg(esper_cuda)]
        fn on(self, device: Device) -> Self {
            Self {
                weight: self.weight.detach().to_device(device).set_requires_grad(true),
                bias: self.bias.detach().to_device(device).set_requires_grad(true),
                mean: self.mean.to_device(device),
                var: self.var.to_device(device),
            }
        }

        fn params(&self) -> BatchNormParams<'_> {
            let (running_mean, running_var) = (&self.mean, &self.var);
            BatchNormParams {
                weight: &self.weight,
                bias: &self.bias,
                running_mean,
                running_var,
                momentum: 0.1,
                eps: 1e-5,
            }
        }

        /// libtorch's own training-mode BatchNorm of `x`, on these tensors.
        fn libtorch(&self, x: &Tensor) -> Tensor {
            let p = self.params();
            Tensor::batch_norm(
                x,
                Some(p.weight),
                Some(p.bias),
                Some(p.running_mean),
                Some(p.running_var),
                true,
                p.momentum,
                p.eps,
                false,
            )
        }
    }

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let diff = (a - b).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]);
        assert!(diff <= 1e-5 * (1.0 + scale), "{what}: differs by {diff}\n{a}\n{b}");
    }

    /// A rank's input: [`BATCH`] samples of 4 channels, 64 by 32 (as many values a
    /// channel as the host's first BatchNorm has at batch 8: enough for float32 sums to
    /// stray), in channels-last memory (the host's format).
    const INPUT: [i64; 4] = [BATCH, 4, 64, 32];
    const BATCH: i64 = 8;

    /// Rank `rank`'s input (see [`INPUT`]), with a per-rank offset so that the ranks'
    /// means differ. Drawn from a generator of its own (the ranks' threads run at once).
    fn rank_input(rank: i64) -> Tensor {
        let x = seeded_randn(7 + rank) * (1.0 + rank as f64) + 3.0 * rank as f64;
        x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]).set_requires_grad(true)
    }

    fn seeded_randn(seed: i64) -> Tensor {
        let mut state = seed as u64;
        let values: Vec<f32> = (0..INPUT.iter().product::<i64>())
            .map(|_| {
                // A small LCG, then Box-Muller: reproducible on any thread.
                let mut uniform = || {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
                };
                let (u, v) = (uniform(), uniform());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect();
        Tensor::from_slice(&values).reshape(INPUT)
    }

    /// A backward that fails on rank 1 alone: rank 1 makes the two BatchNorms'
    /// backward exchanges its backward did not, with zeros, and rank 0's backward then
    /// completes (its input gradient is finite; without the release it would wait until
    /// the timeout). A forward whose backward no rank runs is forgotten: the next step's
    /// exchanges pair up.
    #[test]
    fn sync_batch_norm_exchanges_owed_by_a_failed_backward_are_released() {
        let got = two_ranks(T, |g| {
            let rank = g.rank() as i64;
            let (x, first, second) = (rank_input(rank), Bn::new(4), Bn::new(4));
            let forward = || g.sync_batch_norm(&g.sync_batch_norm(&x, &first.params()).unwrap(), &second.params());
            let y = forward().unwrap();
            let released = if rank == 1 {
                drop(y);
                g.release_batch_norm_exchanges().unwrap()
            } else {
                y.square().sum(Kind::Float).backward();
                0
            };
            let finite = rank == 1 || x.grad().isfinite().all().int64_value(&[]) == 1;
            // A forward on every rank, then no backward anywhere.
            drop(forward().unwrap());
            g.forget_batch_norm_exchanges();
            assert_eq!(g.release_batch_norm_exchanges().unwrap(), 0, "nothing owed once forgotten");
            forward().unwrap().square().sum(Kind::Float).backward();
            (released, finite)
        });
        assert_eq!(got, [(0, true), (2, true)]);
    }

    #[test]
    fn sync_batch_norm_over_two_ranks_is_batch_norm_over_the_global_batch() {
        // One thread per op, as each rank of a CPU run has on the 2-core machines: sums in
        // one sequence, where float32 errors add up most.
        tch::set_num_threads(1);
        let upstream = |rank: i64| seeded_randn(100 + rank);
        // Each rank: its output, input gradient, weight and bias gradients, running
        // statistics.
        let got = two_ranks(T, |g| {
            let rank = g.rank() as i64;
            let (x, bn) = (rank_input(rank), Bn::new(4));
            let y = g.sync_batch_norm(&x, &bn.params()).unwrap();
            (&y * upstream(rank)).sum(Kind::Float).backward();
            [y.detach(), x.grad(), bn.weight.grad(), bn.bias.grad(), bn.mean.copy(), bn.var.copy()]
        });
        // The reference: libtorch's BatchNorm over both ranks' inputs at once, in float64,
        // to within float32's rounding (statistics that accumulate errors of 1e-5, as
        // libtorch's float32 BatchNorm kernel does on the CPU, fail it).
        let double = |t: Tensor| t.detach().to_kind(Kind::Double).set_requires_grad(true);
        let (x0, x1, bn) = (double(rank_input(0)), double(rank_input(1)), Bn::of_kind(4, Kind::Double));
        let y = bn.libtorch(&Tensor::cat(&[&x0, &x1], 0));
        let dy = Tensor::cat(&[upstream(0), upstream(1)], 0).to_kind(Kind::Double);
        (&y * dy).sum(Kind::Double).backward();
        let exact = |a: &Tensor, b: &Tensor, what: &str| {
            let diff = (a.to_kind(Kind::Double) - b).abs().max().double_value(&[]);
            let scale = b.abs().max().double_value(&[]);
            assert!(diff <= 1e-6 * (1.0 + scale), "{what}: differs by {diff} from float64's\n{a}\n{b}");
        };
        for (r, (rank, x)) in got.iter().zip([&x0, &x1]).enumerate() {
            exact(&rank[0], &y.detach().narrow(0, BATCH * r as i64, BATCH), &format!("rank {r}'s output"));
            exact(&rank[1], &x.grad(), &format!("rank {r}'s input gradient"));
            exact(&rank[4], &bn.mean, &format!("rank {r}'s running mean"));
            exact(&rank[5], &bn.var, &format!("rank {r}'s running variance"));
        }
        // The weight and bias gradients are each rank's own: their sum is the global one.
        exact(&(&got[0][2] + &got[1][2]), &bn.weight.grad(), "the weight gradient summed over the ranks");
        exact(&(&got[0][3] + &got[1][3]), &bn.bias.grad(), "the bias gradient summed over the ranks");
    }

    #[test]
    fn sync_batch_norm_in_a_group_of_one_is_libtorchs_batch_norm_and_refuses_bad_input() {
        let store = Store::new("127.0.0.1", 0, 1, true, T).unwrap();
        let g = ProcessGroup::new(&store, Backend::Gloo, 0, 1, T).unwrap();
        // 4-d channels-last and 3-d (N, C, L) inputs.
        for x in [rank_input(1), Tensor::randn([6, 4, 7], (Kind::Float, Device::Cpu)).set_requires_grad(true)] {
            let (ours, theirs) = (Bn::new(4), Bn::new(4));
            let y = g.sync_batch_norm(&x, &ours.params()).unwrap();
            y.square().sum(Kind::Float).backward();
            let gx = x.grad().copy();
            let _ = x.grad().zero_();
            let y_ref = theirs.libtorch(&x);
            y_ref.square().sum(Kind::Float).backward();
            close(&y, &y_ref, "output");
            close(&gx, &x.grad(), "input gradient");
            close(&ours.weight.grad(), &theirs.weight.grad(), "weight gradient");
            close(&ours.bias.grad(), &theirs.bias.grad(), "bias gradient");
            close(&ours.mean, &theirs.mean, "running mean");
            close(&ours.var, &theirs.var, "running variance");
        }
        let bn = Bn::new(4);
        let wrong = Bn::new(3);
        let x = Tensor::randn([2, 4, 3], (Kind::Float, Device::Cpu));
        let mixed = BatchNormParams { weight: &wrong.weight, ..bn.params() };
        let e = g.sync_batch_norm(&x, &mixed).unwrap_err().to_string();
        assert!(e.contains("synchronised BatchNorm on rank 0 of 1") && e.contains("of 4 values"), "{e}");
        let one = Tensor::randn([1, 4], (Kind::Float, Device::Cpu));
        let e = g.sync_batch_norm(&one, &bn.params()).unwrap_err().to_string();
        assert!(e.contains("more than 1 value per channel"), "{e}");
    }

    /// On a GPU through NCCL (a group of one): the synchronised BatchNorm is libtorch's,
    /// in float32, and in bfloat16 it keeps the input's dtype with float32 statistics.
    #[test]
    #[cfg(esper_cuda)]
    #[ignore = "needs CUDA: scripts/test-gpu.sh"]
    fn nccl_sync_batch_norm_on_one_gpu_is_libtorchs_batch_norm() {
        let (_store, g) = nccl_group_of_one();
        let cuda = Device::Cuda(0);
        let x = rank_input(1).detach().to_device(cuda).set_requires_grad(true);
        let (ours, theirs) = (Bn::new(4).on(cuda), Bn::new(4).on(cuda));
        let y = g.sync_batch_norm(&x, &ours.params()).unwrap();
        y.square().sum(Kind::Float).backward();
        let gx = x.grad().copy();
        let _ = x.grad().zero_();
        let y_ref = theirs.libtorch(&x);
        y_ref.square().sum(Kind::Float).backward();
        let cpu = |t: &Tensor| t.to_device(Device::Cpu);
        close(&cpu(&y), &cpu(&y_ref), "output");
        close(&cpu(&gx), &cpu(&x.grad()), "input gradient");
        close(&cpu(&ours.weight.grad()), &cpu(&theirs.weight.grad()), "weight gradient");
        close(&cpu(&ours.mean), &cpu(&theirs.mean), "running mean");
        close(&cpu(&ours.var), &cpu(&theirs.var), "running variance");
        let half = x.detach().to_kind(Kind::BFloat16).set_requires_grad(true);
        let y = g.sync_batch_norm(&half, &ours.params()).unwrap();
        assert_eq!(y.kind(), Kind::BFloat16);
        y.to_kind(Kind::Float).sum(Kind::Float).backward();
        assert_eq!(half.grad().kind(), Kind::BFloat16);
        assert_eq!(ours.weight.grad().kind(), Kind::Float);
        // A CPU tensor on a NCCL group is refused, with where it should be.
        let e = g.sync_batch_norm(&rank_input(0), &Bn::new(4).params()).unwrap_err().to_string();
        assert!(e.contains("live on cuda:0"), "{e}");
    }

    /// A training step captured in a CUDA graph on a NCCL group of one: the synchronised
    /// BatchNorm's exchanges and the gradient buckets' allreduces are captured with the
    /// backward and run at each replay. The gradients are the sum over the group times 2
    /// (so a replay that left out the write-back would show), checked against libtorch's
    /// BatchNorm on each replay's new input.
    #[test]
    #[cfg(esper_cuda)]
    #[ignore = "needs CUDA: scripts/test-gpu.sh"]
    fn nccl_grad_sync_and_sync_batch_norm_replay_in_a_cuda_graph() {
        use crate::graph::{Capture, CudaStream, SideStream};
        let (_store, g) = nccl_group_of_one();
        let cuda = Device::Cuda(0);
        let stream = CudaStream::new(0).unwrap();
        let _side = SideStream::enter(&stream).unwrap();
        let (ours, theirs) = (Bn::new(4).on(cuda), Bn::new(4).on(cuda));
        let scale = (Tensor::arange(4, (Kind::Float, cuda)) * 0.3 + 0.5).reshape([1, 4, 1, 1]);
        let (w, w_ref) = (scale.copy().set_requires_grad(true), scale.copy().set_requires_grad(true));
        let x = rank_input(0).detach().to_device(cuda);
        let params = [&w, &ours.weight, &ours.bias];
        let mut sync = GradSync::with_scale(&g, &params, 64, 2.0).unwrap();
        let step = || (g.sync_batch_norm(&x, &ours.params()).unwrap() * &w).square().sum(Kind::Float).backward();
        // An eager step first, as the trainer's warm-up (NCCL's communicator is made on
        // first use, which a capture cannot do).
        sync.begin().unwrap();
        step();
        sync.finish().unwrap();
        theirs.mean.shallow_clone().copy_(&ours.mean);
        theirs.var.shallow_clone().copy_(&ours.var);
        crate::clear_grads(&params).unwrap();
        let capture = Capture::begin().unwrap();
        sync.begin().unwrap();
        step();
        let collectives = sync.finish_captured().unwrap();
        let graph = capture.end().unwrap();
        assert!(collectives >= 1, "the buckets' allreduces were captured");
        let cpu = |t: &Tensor| t.to_device(Device::Cpu);
        for k in 1..=2 {
            x.shallow_clone().copy_(&rank_input(k).detach().to_device(cuda));
            graph.replay().unwrap();
            crate::clear_grads(&[&w_ref, &theirs.weight, &theirs.bias]).unwrap();
            (theirs.libtorch(&x) * &w_ref).square().sum(Kind::Float).backward();
            close(&cpu(&w.grad()), &cpu(&(w_ref.grad() * 2.0)), "scale gradient");
            close(&cpu(&ours.weight.grad()), &cpu(&(theirs.weight.grad() * 2.0)), "BatchNorm weight gradient");
            close(&cpu(&ours.bias.grad()), &cpu(&(theirs.bias.grad() * 2.0)), "BatchNorm bias gradient");
            close(&cpu(&ours.mean), &cpu(&theirs.mean), "running mean");
            close(&cpu(&ours.var), &cpu(&theirs.var), "running variance");
        }
        // A capture that fails is discarded: nothing launched or waited for, and the next
        // step works.
        let capture = Capture::begin().unwrap();
        sync.begin().unwrap();
        step();
        sync.discard().unwrap();
        drop(capture);
        sync.begin().unwrap();
        step();
        sync.finish().unwrap();
    }
}
