// CUDA graphs for a whole training step: a side stream to run (and capture) the steps
// on, and libtorch's at::cuda::CUDAGraph to capture, replay and free a step.
//
// Compiled only where the CUDA headers are found (see build.rs). It calls no CUDA
// runtime function of its own that needs linking: streams, guards and events go through
// c10's device-generic interfaces (c10::StreamGuard, c10::Event), which dispatch to
// libtorch_cuda, and the one runtime call it makes (clearing the error an aborted
// capture leaves) is a weak reference, resolved from the libcudart libtorch_cuda loads.
// No exception crosses: each function returns 0 (or a handle), or 1 (or null) with the
// message in `err`.
#include "esper_shim.h"

#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdio>
#include <exception>
#include <optional>

#pragma weak cudaGetLastError
#pragma weak cudaStreamIsCapturing
#pragma weak cudaStreamEndCapture
#pragma weak cudaGraphDestroy
#pragma weak cudaGraphGetNodes

namespace {

int fail(const char *what, char *err, size_t len) {
    if (err && len) std::snprintf(err, len, "%s", what);
    return 1;
}

// Makes `waiter` wait (on the device) for what is queued on `on` so far.
void wait(const c10::Stream &waiter, const c10::Stream &on) {
    c10::Event event(c10::DeviceType::CUDA);
    event.record(on);
    event.block(waiter);
}

}  // namespace

struct EsperSideStream {
    c10::Stream previous;
    c10::Stream side;
    std::optional<c10::StreamGuard> guard;
};

// libtorch's graph, with what an abandoned capture needs: CUDAGraph::capture_end gives
// the allocator and the RNG generators back only when the capture succeeded.
struct EsperGraph : at::cuda::CUDAGraph {
    // keep_graph: the captured cudaGraph_t stays until the graph is freed, so its nodes
    // can be counted before instantiation (esper_graph_end instantiates).
    EsperGraph() : at::cuda::CUDAGraph(true) {}

    // Nodes of the captured graph (kernels, memsets, copies): the work one replay does;
    // 0 where it cannot be counted.
    size_t nodes() {
        size_t count = 0;
        if (cudaGraphGetNodes && graph_) cudaGraphGetNodes(graph_, nullptr, &count);
        return count;
    }

    // Ends a capture that failed (or that has to be dropped) and puts back what
    // capture_begin took: the stream leaves capture mode, the caching allocator stops
    // routing its allocations to this graph's pool, and each generator the capture
    // registered leaves capture mode (else every later random op on the device fails
    // with "Offset increment outside graph capture").
    void abandon() {
        try {
            capture_end();
            return;  // it was a valid capture after all: the graph is simply dropped
        } catch (const std::exception &) {
        }
        if (cudaStreamIsCapturing && cudaStreamEndCapture) {
            cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
            if (cudaStreamIsCapturing(capture_stream_.stream(), &status) == cudaSuccess &&
                status != cudaStreamCaptureStatusNone) {
                cudaGraph_t partial = nullptr;
                cudaStreamEndCapture(capture_stream_.stream(), &partial);
                if (partial && cudaGraphDestroy) cudaGraphDestroy(partial);
            }
        }
        try {
            c10::cuda::CUDACachingAllocator::endAllocateToPool(capture_dev_, mempool_id_);
        } catch (const std::exception &) {
        }
        // What CUDAGeneratorState::capture_epilogue does (libtorch does not export it).
        for (auto &entry : captured_generator_states_) entry.first->capturing_ = false;
        if (cudaGetLastError) (void)cudaGetLastError();
    }
};

extern "C" {

// A stream from libtorch's pool on `device` (pool streams live as long as the process;
// the handle is freed with esper_stream_free).
c10::Stream *esper_stream_new(int device, char *err, size_t len) {
    try {
        auto index = static_cast<c10::DeviceIndex>(device);
        return new c10::Stream(at::cuda::getStreamFromPool(false, index).unwrap());
    } catch (const std::exception &e) {
        fail(e.what(), err, len);
        return nullptr;
    }
}

void esper_stream_free(c10::Stream *stream) {
    delete stream;
}

// Makes `stream` current on its device, after the work queued on the stream that was
// current (a capture needs a stream other than the default one, and the steps before a
// capture run there too, as PyTorch's warm-up does).
EsperSideStream *esper_side_stream_enter(const c10::Stream *stream, char *err, size_t len) {
    if (!stream) {
        fail("no stream", err, len);
        return nullptr;
    }
    try {
        c10::Stream previous = at::cuda::getCurrentCUDAStream(stream->device_index()).unwrap();
        wait(*stream, previous);
        auto *scope = new EsperSideStream{previous, *stream, std::nullopt};
        scope->guard.emplace(*stream);
        return scope;
    } catch (const std::exception &e) {
        fail(e.what(), err, len);
        return nullptr;
    }
}

// Makes the previous stream current again, after the side stream's queued work.
int esper_side_stream_exit(EsperSideStream *scope, char *err, size_t len) {
    if (!scope) return fail("no side stream", err, len);
    try {
        wait(scope->previous, scope->side);
        delete scope;
        return 0;
    } catch (const std::exception &e) {
        delete scope;
        return fail(e.what(), err, len);
    }
}

// Starts capturing the current stream (which must not be the default one) into a new
// graph with its own memory pool.
EsperGraph *esper_graph_begin(char *err, size_t len) {
    EsperGraph *g = nullptr;
    try {
        g = new EsperGraph();
        g->capture_begin();
        return g;
    } catch (const std::exception &e) {
        delete g;
        fail(e.what(), err, len);
        return nullptr;
    }
}

// Ends the capture, counts the graph's nodes into `nodes` and instantiates it.
int esper_graph_end(EsperGraph *g, size_t *nodes, char *err, size_t len) {
    if (!g) return fail("no graph", err, len);
    try {
        g->capture_end();
        *nodes = g->nodes();
        g->instantiate();
        return 0;
    } catch (const std::exception &e) {
        return fail(e.what(), err, len);
    }
}

// Ends a capture that went wrong (an op that cannot be captured, or an error on the
// Rust side) and frees the graph: the stream leaves capture mode and the caching
// allocator stops routing this stream's allocations to the graph's pool.
void esper_graph_abort(EsperGraph *g) {
    if (!g) return;
    g->abandon();
    delete g;
}

// Replays the graph on the current stream.
int esper_graph_replay(EsperGraph *g, char *err, size_t len) {
    if (!g) return fail("no graph", err, len);
    try {
        g->replay();
        return 0;
    } catch (const std::exception &e) {
        return fail(e.what(), err, len);
    }
}

void esper_graph_free(EsperGraph *g) {
    delete g;
}

}  // extern "C"
