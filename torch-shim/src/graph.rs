//! CUDA graphs (`cpp/graph.cpp`): a side stream to run steps on, and the capture, replay
//! and release of a graph of everything queued on it between [`Capture::begin`] and
//! [`Capture::end`].
//!
//! A capture records kernels without running them: tensors allocated while capturing
//! come from the graph's own memory pool and keep their addresses on every replay, so a
//! replay reads its inputs from, and writes its outputs to, the tensors the capture saw.
//!
//! Built where the libtorch has CUDA and the CUDA headers were found (see `build.rs`);
//! elsewhere [`available`] says why not and every call returns that reason.

#[cfg(esper_cuda)]
use crate::sys as ffi;
use crate::sys::{EsperGraph, EsperSideStream, EsperStream};
use crate::ShimError;
use std::ffi::c_char;

/// Whether this build can capture CUDA graphs; Err says why not.
pub fn available() -> Result<(), ShimError> {
    #[cfg(esper_cuda)]
    return Ok(());
    #[cfg(not(esper_cuda))]
    Err(ShimError(format!("this build has no CUDA graph support: {}", env!("ESPER_NO_CUDA"))))
}

/// Runs a shim call that returns a handle (null on failure, with the message).
#[cfg_attr(not(esper_cuda), allow(dead_code))]
fn handle<T>(f: impl FnOnce(*mut c_char, usize) -> *mut T) -> Result<*mut T, ShimError> {
    let mut out = std::ptr::null_mut();
    crate::call(|err, len| {
        out = f(err, len);
        i32::from(out.is_null())
    })?;
    Ok(out)
}

/// A CUDA stream from libtorch's pool (not the default stream), to run a trainer's
/// steps on: made once, entered with [`SideStream::enter`] as often as needed.
pub struct CudaStream(*mut EsperStream);

impl CudaStream {
    pub fn new(device: usize) -> Result<Self, ShimError> {
        available()?;
        #[cfg(esper_cuda)]
        {
            let device = i32::try_from(device).map_err(|_| ShimError(format!("CUDA device {device}")))?;
            // SAFETY: plain values in; the shim catches every C++ exception.
            handle(|err, len| unsafe { ffi::esper_stream_new(device, err, len) }).map(Self)
        }
        #[cfg(not(esper_cuda))]
        unreachable!("available() is Err without CUDA graph support (device {device})")
    }
}

impl Drop for CudaStream {
    fn drop(&mut self) {
        #[cfg(esper_cuda)]
        // SAFETY: `self.0` came from `esper_stream_new` and is freed once, here.
        unsafe {
            ffi::esper_stream_free(self.0)
        }
    }
}

impl std::fmt::Debug for CudaStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CudaStream")
    }
}

/// `stream` made current on its device (after the work queued on the stream that was
/// current); dropping it (or [`SideStream::exit`]) makes that stream current again, after
/// the side stream's work. Current streams are per thread: enter and leave on one.
pub struct SideStream(*mut EsperSideStream);

impl SideStream {
    #[cfg_attr(not(esper_cuda), allow(unused_variables))]
    pub fn enter(stream: &CudaStream) -> Result<Self, ShimError> {
        available()?;
        #[cfg(esper_cuda)]
        // SAFETY: `stream.0` is a live stream handle borrowed for the call; exceptions
        // are caught in the shim.
        return handle(|err, len| unsafe { ffi::esper_side_stream_enter(stream.0, err, len) }).map(Self);
        #[cfg(not(esper_cuda))]
        unreachable!("available() is Err without CUDA graph support")
    }

    /// Leaves the side stream, reporting an error (dropping it ignores one).
    pub fn exit(mut self) -> Result<(), ShimError> {
        let scope = std::mem::replace(&mut self.0, std::ptr::null_mut());
        exit(scope)
    }
}

#[cfg_attr(not(esper_cuda), allow(unused_variables))]
fn exit(scope: *mut EsperSideStream) -> Result<(), ShimError> {
    if scope.is_null() {
        return Ok(());
    }
    #[cfg(esper_cuda)]
    // SAFETY: `scope` came from `esper_side_stream_enter` and is released here once
    // (the caller nulls its copy); exceptions are caught in the shim.
    return crate::call(|err, len| unsafe { ffi::esper_side_stream_exit(scope, err, len) });
    #[cfg(not(esper_cuda))]
    Ok(())
}

impl Drop for SideStream {
    fn drop(&mut self) {
        let scope = std::mem::replace(&mut self.0, std::ptr::null_mut());
        if let Err(e) = exit(scope) {
            tracing::warn!(error = %e, "leaving the CUDA side stream failed");
        }
    }
}

/// A capture in progress on the current (side) stream. Dropping it aborts the capture.
pub struct Capture(*mut EsperGraph);

impl Capture {
    /// Starts capturing the current stream, which must not be the default stream (enter a
    /// [`SideStream`] first).
    pub fn begin() -> Result<Self, ShimError> {
        available()?;
        #[cfg(esper_cuda)]
        // SAFETY: no arguments but the error buffer; exceptions are caught in the shim.
        return handle(|err, len| unsafe { ffi::esper_graph_begin(err, len) }).map(Self);
        #[cfg(not(esper_cuda))]
        unreachable!("available() is Err without CUDA graph support")
    }

    /// Ends the capture: the graph, ready to replay. On failure the capture is aborted.
    pub fn end(mut self) -> Result<CudaGraph, ShimError> {
        let g = std::mem::replace(&mut self.0, std::ptr::null_mut());
        #[cfg(esper_cuda)]
        {
            let mut nodes = 0usize;
            // SAFETY: `g` is the live handle `begin` returned, owned by `self` until here;
            // `nodes` is a live, writable usize.
            if let Err(e) = crate::call(|err, len| unsafe { ffi::esper_graph_end(g, &mut nodes, err, len) }) {
                abort(g);
                return Err(e);
            }
            Ok(CudaGraph { handle: g, nodes })
        }
        #[cfg(not(esper_cuda))]
        Err(ShimError(format!("no CUDA graph support (handle {g:?})")))
    }
}

#[cfg_attr(not(esper_cuda), allow(unused_variables))]
fn abort(g: *mut EsperGraph) {
    #[cfg(esper_cuda)]
    if !g.is_null() {
        // SAFETY: `g` came from `esper_graph_begin` and is released here once.
        unsafe { ffi::esper_graph_abort(g) }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        abort(std::mem::replace(&mut self.0, std::ptr::null_mut()));
    }
}

/// A captured CUDA graph.
pub struct CudaGraph {
    handle: *mut EsperGraph,
    nodes: usize,
}

impl CudaGraph {
    /// The graph's nodes (kernels, memsets, copies): the launches one replay stands for.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Replays the graph on the current stream (asynchronously, as the kernels would run).
    pub fn replay(&self) -> Result<(), ShimError> {
        #[cfg(esper_cuda)]
        // SAFETY: `self.handle` is a live graph handle owned by `self`; exceptions are caught.
        return crate::call(|err, len| unsafe { ffi::esper_graph_replay(self.handle, err, len) });
        #[cfg(not(esper_cuda))]
        Err(ShimError("no CUDA graph support".into()))
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        #[cfg(esper_cuda)]
        // SAFETY: `self.handle` is a live graph handle owned by `self`, freed once here.
        unsafe {
            ffi::esper_graph_free(self.handle)
        }
    }
}

impl std::fmt::Debug for CudaGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CudaGraph")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_matches_the_build() {
        let built = cfg!(esper_cuda);
        assert_eq!(available().is_ok(), built);
        if let Err(e) = available() {
            assert!(e.0.contains("no CUDA graph support"), "{e}");
        }
    }

    #[test]
    fn without_a_cuda_device_a_stream_is_an_error_not_a_crash() {
        if tch::Cuda::is_available() {
            return; // the GPU machine: tests/all/gpu.rs covers streams and graphs there
        }
        let e = CudaStream::new(0).expect_err("no CUDA device: no stream");
        assert!(!e.0.is_empty());
        assert!(Capture::begin().is_err(), "no capture without a CUDA device");
    }
}
