// How the shim's C++ files (rtc, batchnorm, straight) report an exception across the C
// boundary: the message without libtorch's C++ backtrace, into the caller's buffer.
#pragma once
#include <c10/util/Exception.h>

#include <cstdio>
#include <exception>

namespace esper {

inline const char *message(const std::exception &e) {
    const auto *c10_error = dynamic_cast<const c10::Error *>(&e);
    return c10_error ? c10_error->what_without_backtrace() : e.what();
}

// Writes `e`'s message into `err` (at most `len` bytes) and returns 1, the shim's failure.
inline int fail(const std::exception &e, char *err, size_t len) {
    if (err && len) std::snprintf(err, len, "%s", message(e));
    return 1;
}

}  // namespace esper
