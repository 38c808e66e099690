// Declarations only, for c10d's ProcessGroupGloo.hpp: see torch-shim/cpp/gloo_decl/README.md.
#pragma once

#include <chrono>

namespace gloo {

// The one member an inline function of the header calls (`ProcessGroupGloo::setTimeout`,
// which the shim does not call: its code is libtorch's).
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};

}  // namespace gloo
