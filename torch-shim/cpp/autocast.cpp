// Mixed precision: entering and leaving libtorch's autocast with bfloat16 on the CPU or
// CUDA (tch's `autocast` only knows CUDA and its default float16). The weight cache is
// off inside (a CUDA graph of the step must cast the weights on every replay, and each
// weight is used once per forward here anyway). No exception crosses.
#include "esper_shim.h"

#include <ATen/autocast_mode.h>

#include <cstdio>
#include <exception>

namespace {

at::DeviceType device_type(int cuda) {
    return cuda ? at::kCUDA : at::kCPU;
}

}  // namespace

extern "C" {

int esper_autocast_enter(int cuda, EsperAutocastState *previous, char *err, size_t len) {
    try {
        auto device = device_type(cuda);
        previous->enabled = at::autocast::is_autocast_enabled(device);
        previous->dtype = static_cast<int>(at::autocast::get_autocast_dtype(device));
        previous->cache = at::autocast::is_autocast_cache_enabled();
        at::autocast::set_autocast_enabled(device, true);
        at::autocast::set_autocast_dtype(device, at::kBFloat16);
        at::autocast::set_autocast_cache_enabled(false);
        at::autocast::increment_nesting();
        return 0;
    } catch (const std::exception &e) {
        if (err && len) std::snprintf(err, len, "%s", e.what());
        return 1;
    }
}

int esper_autocast_exit(int cuda, const EsperAutocastState *previous, char *err, size_t len) {
    try {
        auto device = device_type(cuda);
        if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
        at::autocast::set_autocast_enabled(device, previous->enabled != 0);
        at::autocast::set_autocast_dtype(device, static_cast<at::ScalarType>(previous->dtype));
        at::autocast::set_autocast_cache_enabled(previous->cache != 0);
        return 0;
    } catch (const std::exception &e) {
        if (err && len) std::snprintf(err, len, "%s", e.what());
        return 1;
    }
}

int esper_autocast_enabled(int cuda) {
    try {
        return at::autocast::is_autocast_enabled(device_type(cuda)) ? 1 : 0;
    } catch (const std::exception &) {
        return 0;
    }
}

}  // extern "C"
