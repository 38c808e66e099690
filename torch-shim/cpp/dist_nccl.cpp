// NCCL process groups (CUDA builds only; the collectives are cpp/dist.cpp's). NCCL's
// timeout is enforced by c10d's watchdog thread, which by default tears the process
// down on a collective that does not finish in time (TORCH_NCCL_ASYNC_ERROR_HANDLING):
// unlike Gloo's, it does not come back as an error.
#include "dist.h"
#include "esper_shim.h"

#include "error.h"

#include <c10/core/DeviceGuard.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <cstdio>
#include <exception>
#include <utility>

extern "C" {

EsperGroup *esper_group_nccl(EsperStore *store, const char *prefix, int rank, int size, int device, double timeout_s,
                             char *err, size_t len) {
    EsperGroup tmp{{}, rank, size, at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)), {}};
    try {
        esper::dist::check_ranks(rank, size);
        auto options = c10d::ProcessGroupNCCL::Options::create();
        options->timeout = esper::dist::timeout(timeout_s);
        c10::DeviceGuard guard(tmp.device.value());
        tmp.backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(esper::dist::prefixed(store, prefix), rank, size,
                                                                  std::move(options));
        tmp.owed = c10::make_intrusive<esper::dist::Owed>(tmp.backend, /*gloo=*/false);
        return new EsperGroup(std::move(tmp));
    } catch (const std::exception &e) {
        if (err && len) {
            std::snprintf(err, len, "joining a NCCL process group on cuda:%d, rank %d of %d: %s", device, rank, size,
                          esper::message(e));
        }
        return nullptr;
    }
}

}  // extern "C"
