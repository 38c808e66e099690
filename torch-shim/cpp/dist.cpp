// c10d, libtorch's communication layer: a TCPStore to rendezvous through, Gloo process
// groups (CPU tensors; cpp/dist_nccl.cpp adds NCCL's where libtorch has CUDA), and the
// collectives the trainer needs, each waited for before it returns. Many tensors go in
// few collectives: each run of tensors of one dtype and device is copied into one flat
// buffer (up to `bucket_bytes`), reduced or broadcast once, and copied back.
// No exception crosses: a failure (a peer gone, a collective past its timeout) comes
// back as c10d's message, prefixed with the operation and the rank.
#include "dist.h"
#include "esper_shim.h"

#include "error.h"

#include <ATen/ATen.h>
#include <ATen/DeviceAccelerator.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <atomic>
#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace {

using esper::dist::fail;
using esper::dist::timeout;

// Waits for `work`; rethrows its failure. A CUDA group's work is queued on a stream:
// waiting makes the current stream wait for it, synchronizing the device makes the
// host wait, so that the caller's tensors hold the result.
void finish(const EsperGroup *g, const c10::intrusive_ptr<c10d::Work> &work) {
    work->wait();
    if (g->device && g->device->is_cuda()) at::accelerator::synchronizeDevice(g->device->index());
}

// Whether esper_group_free aborts NCCL groups (see esper_groups_abort_on_free).
std::atomic<bool> &abort_on_free() {
    static std::atomic<bool> abort{false};
    return abort;
}

// Starts a collective on `g` (see esper::dist::start).
template <class Start>
c10::intrusive_ptr<c10d::Work> start(const EsperGroup *g, Start start) {
    return esper::dist::start(!g->device.has_value(), start);
}

std::vector<at::Tensor> tensors(EsperTensor *const *ts, size_t n) {
    std::vector<at::Tensor> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) out.push_back(*ts[i]);
    return out;
}

// Runs `op` (one collective, in place on a contiguous tensor) over `ts` in buckets: the
// tensors of one dtype and device, in order, up to `bucket_bytes` a bucket (a larger
// tensor alone). A bucket of one contiguous tensor goes as it is; others through a flat
// copy. Every rank forms the same buckets from the same list. Returns the collectives run.
template <class Op>
size_t bucketed(const std::vector<at::Tensor> &ts, size_t bucket_bytes, Op op) {
    at::NoGradGuard no_grad;  // parameters that require gradients are written in place
    for (const auto &t : ts) {
        TORCH_CHECK(t.defined(), "an undefined tensor in the list");
        TORCH_CHECK(t.layout() == at::kStrided, "a sparse tensor in the list");
    }
    const auto members = esper::dist::buckets(ts, /*reverse=*/false, bucket_bytes);
    for (const auto &indices : members) {
        std::vector<at::Tensor> bucket;
        bucket.reserve(indices.size());
        for (size_t k : indices) bucket.push_back(ts[k]);
        if (bucket.size() == 1 && bucket[0].is_contiguous()) {
            op(bucket[0]);
            continue;
        }
        std::vector<at::Tensor> flat_views;
        flat_views.reserve(bucket.size());
        for (const auto &t : bucket) flat_views.push_back(t.reshape({-1}));
        auto flat = at::cat(flat_views);
        op(flat);
        // Back into the tensors in one foreach copy (one kernel launch per bucket on CUDA).
        std::vector<int64_t> numels;
        numels.reserve(bucket.size());
        for (const auto &t : bucket) numels.push_back(t.numel());
        auto parts = flat.split_with_sizes(numels);
        for (size_t i = 0; i < parts.size(); ++i) parts[i] = parts[i].view(bucket[i].sizes());
        at::_foreach_copy_(bucket, parts);
    }
    return members.size();
}

}  // namespace

extern "C" {

EsperStore *esper_store_new(const char *host, int port, int world_size, int is_master, double timeout_s, char *err,
                            size_t len) {
    try {
        TORCH_CHECK(port >= 0 && port <= 65535, "port ", port, " is not a TCP port");
        TORCH_CHECK(world_size >= 1, "a world of ", world_size, " processes");
        c10d::TCPStoreOptions options;
        options.port = static_cast<std::uint16_t>(port);
        options.isServer = is_master != 0;
        options.numWorkers = static_cast<std::size_t>(world_size);
        options.waitWorkers = false;  // the process groups' rendezvous waits, with their timeout
        options.timeout = timeout(timeout_s);
        auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
        return new EsperStore{std::move(store)};
    } catch (const std::exception &e) {
        if (err && len) {
            std::snprintf(err, len, "the TCP store at %s:%d (%s): %s", host, port, is_master ? "listening" : "connecting",
                          esper::message(e));
        }
        return nullptr;
    }
}

int esper_store_port(const EsperStore *store) {
    const auto *tcp = dynamic_cast<const c10d::TCPStore *>(store->store.get());
    return tcp ? static_cast<int>(tcp->getPort()) : -1;
}

void esper_store_free(EsperStore *store) {
    delete store;
}

EsperGroup *esper_group_gloo(EsperStore *store, const char *prefix, int rank, int size, double timeout_s, char *err,
                             size_t len) {
    EsperGroup tmp{{}, rank, size, std::nullopt, {}};
    try {
        esper::dist::check_ranks(rank, size);
        auto ms = timeout(timeout_s);
        // The devices of GLOO_SOCKET_IFNAME (a comma-separated list of interfaces) where
        // it is set, else one for this machine's hostname, or loopback where that does
        // not resolve.
        auto options = c10d::ProcessGroupGloo::Options::create_default(ms);
        options->timeout = ms;
        tmp.backend = c10::make_intrusive<c10d::ProcessGroupGloo>(esper::dist::prefixed(store, prefix), rank, size,
                                                                  options);
        tmp.owed = c10::make_intrusive<esper::dist::Owed>(tmp.backend, /*gloo=*/true);
        return new EsperGroup(std::move(tmp));
    } catch (const std::exception &e) {
        fail(&tmp, "joining a Gloo process group", e, err, len);
        return nullptr;
    }
}

void esper_groups_abort_on_free(void) {
    abort_on_free().store(true);
}

void esper_group_free(EsperGroup *g) {
    // A NCCL group is shut down first, as destroy_process_group() does (else c10d warns
    // at exit that it was not); Gloo's needs nothing. Once this process's ranks failed it
    // is aborted instead: shutting down waits for its kernels, and one waiting for a peer
    // that is gone (inside a CUDA graph no watchdog ends it) never finishes. A failure to
    // shut down is reported, never thrown: the group is freed either way.
    if (g->device) {
        try {
            if (abort_on_free().load()) {
                g->backend->abort();
            } else {
                g->backend->shutdown();
            }
        } catch (const std::exception &e) {
            std::fprintf(stderr, "esper: shutting down the NCCL group of rank %d: %s\n", g->rank, esper::message(e));
        }
    }
    delete g;
}

int esper_group_broadcast(EsperGroup *g, EsperTensor *const *ts, size_t n, int root, size_t bucket_bytes,
                          size_t *collectives, char *err, size_t len) {
    try {
        TORCH_CHECK(root >= 0 && root < g->size, "root ", root, " is not a rank of the group");
        c10d::BroadcastOptions options;
        options.rootRank = root;
        *collectives = bucketed(tensors(ts, n), bucket_bytes, [&](at::Tensor &t) {
            std::vector<at::Tensor> one{t};
            finish(g, start(g, [&] { return g->backend->broadcast(one, options); }));
        });
        return 0;
    } catch (const std::exception &e) {
        return fail(g, "broadcast", e, err, len);
    }
}

int esper_group_allreduce_sum(EsperGroup *g, EsperTensor *const *ts, size_t n, double scale, size_t bucket_bytes,
                              size_t *collectives, char *err, size_t len) {
    try {
        c10d::AllreduceOptions options;
        options.reduceOp = c10d::ReduceOp::SUM;
        *collectives = bucketed(tensors(ts, n), bucket_bytes, [&](at::Tensor &t) {
            std::vector<at::Tensor> one{t};
            finish(g, start(g, [&] { return g->backend->allreduce(one, options); }));
            // Gloo has no AVG: one scaling per bucket (not per tensor) makes the mean.
            if (scale != 1.0) t.mul_(scale);
        });
        return 0;
    } catch (const std::exception &e) {
        return fail(g, "allreduce", e, err, len);
    }
}

int esper_group_all_gather(EsperGroup *g, const EsperTensor *t, EsperTensor **out, char *err, size_t len) {
    try {
        std::vector<at::Tensor> input{t->contiguous()};
        std::vector<std::vector<at::Tensor>> outputs(1);
        for (int r = 0; r < g->size; ++r) outputs[0].push_back(at::empty_like(input[0]));
        finish(g, start(g, [&] { return g->backend->allgather(outputs, input); }));
        *out = new at::Tensor(at::stack(outputs[0]));
        return 0;
    } catch (const std::exception &e) {
        return fail(g, "all-gather", e, err, len);
    }
}

int esper_group_barrier(EsperGroup *g, char *err, size_t len) {
    try {
        c10d::BarrierOptions options;
        if (g->device && g->device->is_cuda()) options.device_ids = {g->device->index()};
        finish(g, start(g, [&] { return g->backend->barrier(options); }));
        return 0;
    } catch (const std::exception &e) {
        return fail(g, "barrier", e, err, len);
    }
}

}  // extern "C"
