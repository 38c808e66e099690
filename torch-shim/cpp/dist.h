// What cpp/dist.cpp (Gloo, every build) and cpp/dist_nccl.cpp (CUDA builds) share: the
// handles behind the C interface's `EsperStore` and `EsperGroup`.
#pragma once
#include "esper_shim.h"

#include "error.h"

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <ATen/core/ivalue.h>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

// A c10d store (a TCPStore) the process groups rendezvous through.
struct EsperStore {
    c10::intrusive_ptr<c10d::Store> store;
};

namespace esper::dist {

// Starts a collective: `start()` calls the backend, which queues the work and returns
// it. Gloo's (`gloo`) are started one at a time in the process: c10d's flight recorder,
// on by default, logs every collective started and, on a group's first one, adds the
// group to a map before it takes its lock (libtorch 2.11,
// FlightRecorder::recordWithResetEnabled), so two threads starting collectives at once
// can corrupt it (ranks as threads of one process crashed in it). NCCL's are not
// serialised: a group's first collective makes its communicator, which waits for every
// rank's, and ranks sharing one process would wait on each other through the lock.
inline std::mutex &start_lock() {
    static std::mutex lock;
    return lock;
}

template <class Start>
c10::intrusive_ptr<c10d::Work> start(bool gloo, Start start) {
    if (!gloo) return start();
    std::lock_guard<std::mutex> guard(start_lock());
    return start();
}

// The exchanges a group's synchronised BatchNorms owe their backward (cpp/sync_bn.cpp):
// each forward adds one, its backward takes it back (the last first, as a backward runs
// the layers in reverse). A backward that fails part way leaves some owed, which
// `esper_sync_batch_norm_release` pays with zeros so the peers' backwards complete.
struct Owed : torch::CustomClassHolder {
    struct Exchange {
        int64_t numel;
        at::TensorOptions options;
    };

    Owed(c10::intrusive_ptr<c10d::Backend> backend, bool gloo) : backend(std::move(backend)), gloo(gloo) {}

    // One exchange: `sums` summed over the ranks, in place, waited for.
    void allreduce_sum(std::vector<at::Tensor> &sums) {
        c10d::AllreduceOptions options;
        options.reduceOp = c10d::ReduceOp::SUM;
        start(gloo, [&] { return backend->allreduce(sums, options); })->wait();
    }

    void add(int64_t numel, at::TensorOptions options) {
        std::lock_guard<std::mutex> guard(mutex);
        exchanges.push_back({numel, options});
    }

    // The last exchange owed, taken off the list (none: the list was cleared since).
    std::optional<Exchange> take() {
        std::lock_guard<std::mutex> guard(mutex);
        if (exchanges.empty()) return std::nullopt;
        Exchange last = exchanges.back();
        exchanges.pop_back();
        return last;
    }

    void clear() {
        std::lock_guard<std::mutex> guard(mutex);
        exchanges.clear();
    }

    c10::intrusive_ptr<c10d::Backend> backend;
    bool gloo;  // a Gloo group (else NCCL)
    std::mutex mutex;
    std::vector<Exchange> exchanges;
};

}  // namespace esper::dist

// A process group: c10d's backend, this process's rank, the group's size, the device a
// NCCL group's collectives run on (none for Gloo), and the BatchNorm exchanges owed on it.
struct EsperGroup {
    c10::intrusive_ptr<c10d::Backend> backend;
    int rank;
    int size;
    std::optional<at::Device> device;
    c10::intrusive_ptr<esper::dist::Owed> owed;
};

namespace esper::dist {

// `seconds` as c10d's milliseconds; refuses what is not a positive, finite time.
inline std::chrono::milliseconds timeout(double seconds) {
    if (!(seconds > 0.0) || !std::isfinite(seconds) || seconds > 1e9) {
        throw std::invalid_argument("a timeout must be a positive number of seconds, not " + std::to_string(seconds));
    }
    return std::chrono::milliseconds(static_cast<int64_t>(std::ceil(seconds * 1000.0)));
}

// `store` with every key under `prefix/`: the keys of one process group.
inline c10::intrusive_ptr<c10d::Store> prefixed(const EsperStore *store, const char *prefix) {
    return c10::make_intrusive<c10d::PrefixStore>(prefix, store->store);
}

// The buckets of `ts` for collectives that run many tensors at once, the same on every
// rank for the same list: the tensors taken in order (last first where `reverse`, as
// gradients become ready in the backward), those of one dtype and device together, up to
// `bucket_bytes` a bucket (a larger tensor alone). Each bucket lists indices into `ts`.
inline std::vector<std::vector<size_t>> buckets(const std::vector<at::Tensor> &ts, bool reverse,
                                                size_t bucket_bytes) {
    std::vector<std::vector<size_t>> out;
    std::map<std::pair<int, std::string>, std::pair<size_t, size_t>> open;  // key -> (bucket, bytes)
    for (size_t n = 0; n < ts.size(); ++n) {
        const size_t k = reverse ? ts.size() - 1 - n : n;
        const auto &t = ts[k];
        auto key = std::make_pair(static_cast<int>(t.scalar_type()), t.device().str());
        size_t bytes = t.nbytes();
        auto it = open.find(key);
        if (it != open.end() && it->second.second + bytes <= bucket_bytes) {
            out[it->second.first].push_back(k);
            it->second.second += bytes;
        } else {
            open[key] = {out.size(), bytes};
            out.push_back({k});
        }
    }
    return out;
}

// Writes "`what` on rank R of N: <c10d's message>" into `err`; returns 1.
inline int fail(const EsperGroup *g, const char *what, const std::exception &e, char *err, size_t len) {
    if (err && len) std::snprintf(err, len, "%s on rank %d of %d: %s", what, g->rank, g->size, esper::message(e));
    return 1;
}

inline void check_ranks(int rank, int size) {
    if (size < 1 || rank < 0 || rank >= size) {
        throw std::invalid_argument("rank " + std::to_string(rank) + " is not in a group of " + std::to_string(size));
    }
}

}  // namespace esper::dist
