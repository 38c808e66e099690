//! [`GradSync`]: a parameter set's gradients averaged across the ranks while the
//! backward runs (`cpp/grad_sync.cpp`), as DDP overlaps its allreduces with the backward.
//!
//! Built once per parameter set, it puts the parameters' gradients in buckets (reverse
//! parameter order, one dtype and device each, up to `bucket_bytes`, as
//! [`ProcessGroup::allreduce_mean`] does) and hooks each parameter's gradient
//! accumulator. A step is [`GradSync::begin`], the backward, then [`GradSync::finish`]
//! (or [`GradSync::abandon`] where the backward failed): during the backward each
//! bucket's allreduce starts as soon as its gradients are computed; `finish` starts the
//! rest, waits, and writes the mean into each `.grad`. Outside `begin`..`finish` the
//! hooks do nothing, so other backwards over the same parameters start no collective.

use super::{handle, ProcessGroup};
use crate::sys::{
    esper_grad_sync_begin, esper_grad_sync_finish, esper_grad_sync_free, esper_grad_sync_launched, esper_grad_sync_new,
    EsperGradSync, GradSyncEnd,
};
use crate::{call, handles, ShimError};
use std::ptr::NonNull;
use tch::Tensor;

/// Gradient averaging hooked into the backward of one parameter set (see the module
/// documentation). Every rank builds it from the same parameters in the same order
/// (the same shapes and dtypes), so every rank forms the same buckets; after
/// [`GradSync::begin`], every rank must reach [`GradSync::finish`] or
/// [`GradSync::abandon`] exactly once, whatever happened in between (a failed forward or
/// backward included), or its peers wait for its collectives until the group's timeout.
/// Between `begin` and `finish` no other collective may run on the same group.
///
/// Where a parameter got no gradient on this rank (not reached by this backward), its
/// share is zeros; its `.grad` gets the mean as the others do (created where it was
/// undefined) if any rank had a gradient for it, and is left as it was if none had, as
/// DDP leaves parameters unused on every rank. `.grad` is written only by a `finish`
/// that succeeds.
///
/// Dropping it removes the hooks (rebuild it when the parameter set changes); drop it
/// between steps, not while a backward over these parameters runs on another thread.
pub struct GradSync {
    ptr: NonNull<EsperGradSync>,
    buckets: usize,
}

// SAFETY: the C++ state behind the handle guards its step fields with its own mutex
// (the hooks may run on autograd's device thread, `finish` on the caller's); it holds
// its tensors and the group's backend by reference count, so nothing it points to is
// tied to the thread that built it. `GradSync` is not `Sync`: its methods take `&mut`.
unsafe impl Send for GradSync {}

impl GradSync {
    /// Hooks `params` (leaf tensors that require a gradient, on `group`'s device, none
    /// twice) so that each step's gradients are averaged over `group`'s ranks, in buckets
    /// of up to `bucket_bytes` ([`super::BUCKET_BYTES`] is the collectives' default).
    /// The group's backend is shared, not borrowed: the `ProcessGroup` handle may go first.
    pub fn new(group: &ProcessGroup, params: &[&Tensor], bucket_bytes: usize) -> Result<Self, ShimError> {
        Self::with_scale(group, params, bucket_bytes, 1.0 / group.size() as f64)
    }

    /// [`GradSync::new`] with each `.grad` the sum over the ranks times `scale` (positive
    /// and finite) instead of the mean.
    pub fn with_scale(
        group: &ProcessGroup,
        params: &[&Tensor],
        bucket_bytes: usize,
        scale: f64,
    ) -> Result<Self, ShimError> {
        let t = handles(params);
        let mut buckets = 0;
        // SAFETY: `group.ptr` is a live group handle (the state keeps its own reference to
        // the backend); `t` holds `t.len()` live tensor handles for the call (the state
        // keeps its own references to the tensors); `buckets` is a live usize; the shim
        // catches every C++ exception.
        let ptr = handle(|err, len| unsafe {
            esper_grad_sync_new(group.ptr.as_ptr(), t.as_ptr(), t.len(), bucket_bytes, scale, &mut buckets, err, len)
        })?;
        Ok(Self { ptr, buckets })
    }

    /// How many buckets (one collective each per step).
    pub fn buckets(&self) -> usize {
        self.buckets
    }

    /// Arms the hooks for the next backward. Err (and nothing armed anew) where the
    /// previous step was not finished or abandoned.
    pub fn begin(&mut self) -> Result<(), ShimError> {
        // SAFETY: `self.ptr` is a live handle; exceptions are caught in the shim.
        call(|err, len| unsafe { esper_grad_sync_begin(self.ptr.as_ptr(), err, len) })
    }

    /// The collectives this step has started so far: read between the backward and
    /// [`GradSync::finish`], those the backward started.
    pub fn launched(&self) -> usize {
        // SAFETY: `self.ptr` is a live handle; the shim locks the state's mutex.
        unsafe { esper_grad_sync_launched(self.ptr.as_ptr()) }
    }

    /// After a backward that succeeded: starts the buckets the backward did not, waits
    /// for every one (on CUDA: the current stream waits; the host does not, unless this
    /// rank had no gradient for some parameter: then it reads that bucket's flags), and
    /// writes the mean into the `.grad` tensors. Returns the collectives run (one per
    /// bucket). Err where a collective or a hook failed: every collective was still
    /// started and waited for, no `.grad` was written; the step is to be discarded.
    pub fn finish(&mut self) -> Result<usize, ShimError> {
        self.end(GradSyncEnd::Finish)
    }

    /// [`GradSync::finish`] inside a CUDA graph capture on a NCCL group: the buckets'
    /// collectives, the waits and the writes into `.grad` are captured (they run at each
    /// replay), and nothing is read from the device. A parameter this rank had no
    /// gradient for keeps its `.grad`: a captured backward has no data-dependent path, so
    /// it reaches the same parameters on every rank.
    pub fn finish_captured(&mut self) -> Result<usize, ShimError> {
        self.end(GradSyncEnd::FinishCaptured)
    }

    /// Ends a step whose capture failed: the collectives captured so far are dropped
    /// (a capture runs none), none is started or waited for, no `.grad` is written.
    /// The ranks must agree that the capture failed before any of them runs a step.
    pub fn discard(&mut self) -> Result<usize, ShimError> {
        self.end(GradSyncEnd::Discard)
    }

    /// After a forward or backward that failed (or any step to discard): starts the
    /// buckets not yet started (a gradient not computed counts as zeros) and waits for
    /// every one, so the peers' collectives complete; writes no `.grad`. Returns the
    /// collectives run. The peers' `finish` succeeds and averages a partial gradient of
    /// this rank: the caller's own exchange (which step to discard) must tell them.
    pub fn abandon(&mut self) -> Result<usize, ShimError> {
        self.end(GradSyncEnd::Abandon)
    }

    fn end(&mut self, how: GradSyncEnd) -> Result<usize, ShimError> {
        let mut collectives = 0;
        // SAFETY: `self.ptr` is a live handle; `how` is one of the enum's values (the C
        // side checks the range too); `collectives` a live usize the shim writes;
        // exceptions are caught in the shim.
        call(|err, len| unsafe { esper_grad_sync_finish(self.ptr.as_ptr(), how, &mut collectives, err, len) })?;
        Ok(collectives)
    }
}

impl Drop for GradSync {
    fn drop(&mut self) {
        // SAFETY: `self.ptr` came from `esper_grad_sync_new` and is freed once, here;
        // freeing removes the hooks from the accumulators.
        unsafe { esper_grad_sync_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for GradSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GradSync({} buckets)", self.buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{two_ranks, T};
    use super::super::{Backend, Store};
    use super::*;
    use crate::sys::esper_grad_post_hooks;
    use std::time::{Duration, Instant};
    use tch::{Device, Kind};

    /// The post hooks on `t`'s gradient accumulator; None where it has none alive.
    fn post_hooks(t: &Tensor) -> Option<usize> {
        // SAFETY: `t` is a live tensor handle borrowed for the call; exceptions are
        // caught in the shim.
        let n = unsafe { esper_grad_post_hooks(t.as_ptr()) };
        usize::try_from(n).ok()
    }

    /// Three linear layers: w1 [4, 8], b1, w2 [8, 8], b2, w3 [8, 3], b3 (float32, 4 bytes
    /// an element), the same values on every rank.
    const SHAPES: [&[i64]; 6] = [&[4, 8], &[8], &[8, 8], &[8], &[8, 3], &[3]];

    fn param(k: usize, shape: &[i64]) -> Tensor {
        let n: i64 = shape.iter().product();
        ((Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + k as f64).sin() * 0.5)
            .reshape(shape)
            .set_requires_grad(true)
    }

    fn mlp() -> Vec<Tensor> {
        SHAPES.iter().enumerate().map(|(k, s)| param(k, s)).collect()
    }

    /// A batch of 5 that differs per rank and step.
    fn input(rank: usize, step: usize) -> Tensor {
        (Tensor::arange(20, (Kind::Float, Device::Cpu)) * (0.3 + rank as f64 + 0.7 * step as f64)).cos().reshape([5, 4])
    }

    fn hidden(p: &[Tensor], x: &Tensor) -> Tensor {
        let h = (x.matmul(&p[0]) + &p[1]).relu();
        (h.matmul(&p[2]) + &p[3]).tanh()
    }

    fn loss(p: &[Tensor], x: &Tensor) -> Tensor {
        (hidden(p, x).matmul(&p[4]) + &p[5]).square().sum(Kind::Float)
    }

    fn refs(ts: &[Tensor]) -> Vec<&Tensor> {
        ts.iter().collect()
    }

    /// Each tensor's `.grad` (a copy; undefined where it has none).
    fn grads(ts: &[Tensor]) -> Vec<Tensor> {
        ts.iter().map(|t| t.grad().copy()).collect()
    }

    /// The gradients of `loss(mlp(), input(rank, step))` on this rank alone.
    fn local(rank: usize, step: usize) -> Vec<Tensor> {
        let p = mlp();
        loss(&p, &input(rank, step)).backward();
        grads(&p)
    }

    fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
        assert_eq!(got.size(), want.size(), "{what}: shape");
        let diff = (got - want).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{what}: off by {diff}");
    }

    fn assert_means(got: &[Tensor], a: &[Tensor], b: &[Tensor], what: &str) {
        for (i, g) in got.iter().enumerate() {
            assert_close(g, &((&a[i] + &b[i]) / 2.0), &format!("{what}, parameter {i}"));
        }
    }

    #[test]
    fn grad_sync_averages_in_buckets_launched_during_the_backward() {
        // Reverse order at 160 bytes: [b3 12 + w3 96 + b2 32], [w2 256], [b1 32 + w1 128].
        let got = two_ranks(T, |g| {
            let p = mlp();
            let mut sync = GradSync::new(&g, &refs(&p), 160).unwrap();
            let mut steps = Vec::new();
            for step in 0..2 {
                crate::clear_grads(&refs(&p)).unwrap();
                sync.begin().unwrap();
                loss(&p, &input(g.rank(), step)).backward();
                let during = sync.launched();
                let collectives = sync.finish().unwrap();
                steps.push((grads(&p), during, collectives));
            }
            (sync.buckets(), steps)
        });
        for (rank, (buckets, steps)) in got.into_iter().enumerate() {
            assert_eq!(buckets, 3, "rank {rank}");
            for (step, (grads, during, collectives)) in steps.into_iter().enumerate() {
                assert_eq!(during, 3, "rank {rank}, step {step}: every bucket started inside backward()");
                assert_eq!(collectives, 3, "rank {rank}, step {step}: one collective per bucket");
                assert_means(&grads, &local(0, step), &local(1, step), &format!("rank {rank}, step {step}"));
            }
        }
    }

    #[test]
    fn grad_sync_reduces_parameters_without_a_gradient_as_zeros_in_the_same_order() {
        // [w1, unused, b1, one rank's, w2, b2, w3, b3] at 160 bytes: [b3, w3, b2], [w2],
        // [one rank's 24 + b1 32 + unused 20], [w1 128]. Neither rank completes the third
        // bucket in the backward (the unused one): both start the first two there, the
        // rest in finish. Step s: only rank s has a gradient for "one rank's"; in step 1
        // rank 0's share of it must be zeros, not what step 0 left in the bucket.
        let got = two_ranks(Duration::from_secs(5), |g| {
            let net = mlp();
            let unused = param(7, &[5]);
            let one = param(8, &[6]);
            let p = [&net[0], &unused, &net[1], &one, &net[2], &net[3], &net[4], &net[5]];
            let mut sync = GradSync::new(&g, &p, 160).unwrap();
            let mut steps = Vec::new();
            for step in 0..2 {
                crate::clear_grads(&p).unwrap();
                sync.begin().unwrap();
                let l = loss(&net, &input(g.rank(), step));
                let l = if g.rank() == step { l + (&one * &one).sum(Kind::Float) * 3.0 } else { l };
                l.backward();
                let during = sync.launched();
                let start = Instant::now();
                let collectives = sync.finish().unwrap();
                steps.push((grads(&net), unused.grad().defined(), one.grad(), during, collectives, start.elapsed()));
            }
            (steps, &one * 3.0)
        });
        for (rank, (steps, want)) in got.into_iter().enumerate() {
            for (step, (grads, unused, one, during, collectives, took)) in steps.into_iter().enumerate() {
                let what = format!("rank {rank}, step {step}");
                assert_eq!((during, collectives), (2, 4), "{what}: started in backward, in all");
                assert!(took < Duration::from_secs(4), "{what}: finish took {took:?}");
                assert!(!unused, "{what}: no rank had a gradient for it: none written");
                assert!(one.defined(), "{what}: rank {step}'s gradient reaches every rank");
                assert_close(&one, &want, &format!("{what}: (6 u + 0) / 2"));
                assert_means(&grads, &local(0, step), &local(1, step), &what);
            }
        }
    }

    #[test]
    fn grad_sync_abandoned_after_a_failed_backward_releases_the_peer() {
        // At 108 bytes: [b3, w3], [b2], [w2], [b1], [w1]. Rank 1's backward fails past
        // the first bucket (its tanh's saved result was freed by an earlier backward).
        let timeout = Duration::from_secs(5);
        let got = two_ranks(timeout, |g| {
            let p = mlp();
            let mut sync = GradSync::new(&g, &refs(&p), 108).unwrap();
            let x = input(g.rank(), 0);
            if g.rank() == 0 {
                sync.begin().unwrap();
                loss(&p, &x).backward();
                let start = Instant::now();
                let finished = sync.finish();
                return (finished, start.elapsed(), None, true);
            }
            let h = hidden(&p, &x);
            h.sum(Kind::Float).backward(); // not armed: starts nothing, frees h's graph
            let w1_before = p[0].grad().copy();
            sync.begin().unwrap();
            let failed = (h.matmul(&p[4]) + &p[5]).square().sum(Kind::Float).f_backward().unwrap_err();
            let during = sync.launched();
            let start = Instant::now();
            let abandoned = sync.abandon();
            let untouched = p[0].grad().equal(&w1_before);
            (abandoned, start.elapsed(), Some((failed.to_string(), during)), untouched)
        });
        let (finished, took, _, _) = &got[0];
        assert_eq!(finished.as_ref().unwrap(), &5, "rank 0 finished every bucket");
        assert!(*took < timeout, "rank 0 waited {took:?}");
        let (abandoned, _, failed, untouched) = &got[1];
        let (failed, during) = failed.as_ref().unwrap();
        assert!(failed.contains("backward through the graph a second time"), "{failed}");
        assert_eq!(*during, 1, "the first bucket started before the failure");
        assert_eq!(abandoned.as_ref().unwrap(), &5, "the other four started by abandon");
        assert!(untouched, "abandon writes no gradient");
    }

    #[test]
    fn grad_sync_dropped_leaves_no_hook_and_a_rebuilt_one_averages_its_own_set() {
        let got = two_ranks(T, |g| {
            let p = mlp();
            let x = input(g.rank(), 0);
            let first = GradSync::new(&g, &refs(&p), 160).unwrap();
            let l = loss(&p, &x); // its graph keeps every accumulator alive past the drop
            let hooked: Vec<_> = p.iter().map(post_hooks).collect();
            drop(first);
            let dropped: Vec<_> = p.iter().map(post_hooks).collect();
            let mut second = GradSync::new(&g, &refs(&p[2..]), 160).unwrap();
            let rebuilt: Vec<_> = p.iter().map(post_hooks).collect();
            second.begin().unwrap();
            l.backward();
            let collectives = second.finish().unwrap();
            let got = grads(&p);
            drop((l, second));
            let released: Vec<_> = p.iter().map(post_hooks).collect();
            (hooked, dropped, rebuilt, collectives, got, released)
        });
        let (a, b) = (local(0, 0), local(1, 0));
        for (rank, (hooked, dropped, rebuilt, collectives, got, released)) in got.into_iter().enumerate() {
            assert_eq!(hooked, [Some(1); 6], "rank {rank}: one hook each");
            assert_eq!(dropped, [Some(0); 6], "rank {rank}: the drop removed them");
            assert_eq!(rebuilt, [Some(0), Some(0), Some(1), Some(1), Some(1), Some(1)], "rank {rank}");
            assert_eq!(collectives, 2, "rank {rank}: [b3, w3, b2], [w2]");
            assert_means(&got[2..], &a[2..], &b[2..], &format!("rank {rank}, the second set"));
            for i in 0..2 {
                assert_close(&got[i], &[&a, &b][rank][i], &format!("rank {rank}: {i}, no longer in a set, local"));
            }
            assert_eq!(released, [None; 6], "rank {rank}: nothing keeps an accumulator (or its tensor) alive");
        }
    }

    #[test]
    fn grad_sync_refuses_what_it_cannot_hook_and_steps_out_of_order() {
        let store = Store::new("127.0.0.1", 0, 1, true, T).unwrap();
        let g = ProcessGroup::new(&store, Backend::Gloo, 0, 1, T).unwrap();
        let p = mlp();
        let frozen = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let inner = &p[1] * 2.0;
        let cases: [(Vec<&Tensor>, f64, &str); 4] = [
            (vec![&p[0], &frozen], 1.0, "parameter 1 does not require a gradient"),
            (vec![&p[0], &inner], 1.0, "parameter 1 is not a leaf tensor"),
            (vec![&p[0], &p[1], &p[0]], 1.0, "parameter 2 is listed twice"),
            (vec![&p[0]], f64::NAN, "a scale must be positive and finite"),
        ];
        for (params, scale, want) in cases {
            let e = GradSync::with_scale(&g, &params, 64, scale).unwrap_err();
            assert!(e.0.starts_with("gradient sync on rank 0 of 1: "), "{e}");
            assert!(e.0.contains(want), "{e} (wanted {want})");
        }
        // (`inner`'s graph keeps p[1]'s accumulator alive: with no hook on it.)
        let left: Vec<_> = p.iter().map(post_hooks).collect();
        assert_eq!(left, [None, Some(0), None, None, None, None], "a refused set leaves no hook");
        let mut sync = GradSync::new(&g, &refs(&p), 64).unwrap();
        let e = sync.finish().unwrap_err();
        assert!(e.0.contains("finish or abandon without begin"), "{e}");
        sync.begin().unwrap();
        let e = sync.begin().unwrap_err();
        assert!(e.0.contains("begin while a step is under way"), "{e}");
        loss(&p, &input(0, 0)).backward();
        assert_eq!(sync.finish().unwrap(), sync.buckets(), "the step armed first still finishes");
    }
}
