// What cpp/dist.cpp (Gloo, every build) and cpp/dist_nccl.cpp (CUDA builds) share: the
// handles behind the C interface's `EsperStore` and `EsperGroup`.
#pragma once
#include "esper_shim.h"

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>

// A c10d store (a TCPStore) the process groups rendezvous through.
struct EsperStore {
    c10::intrusive_ptr<c10d::Store> store;
};

// A process group: c10d's backend, this process's rank, the group's size, and the
// device a NCCL group's collectives run on (none for Gloo).
struct EsperGroup {
    c10::intrusive_ptr<c10d::Backend> backend;
    int rank;
    int size;
    std::optional<at::Device> device;
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

inline void check_ranks(int rank, int size) {
    if (size < 1 || rank < 0 || rank >= size) {
        throw std::invalid_argument("rank " + std::to_string(rank) + " is not in a group of " + std::to_string(size));
    }
}

}  // namespace esper::dist
