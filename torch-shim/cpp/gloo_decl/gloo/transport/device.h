// Declarations only, for c10d's ProcessGroupGloo.hpp: see torch-shim/cpp/gloo_decl/README.md.
#pragma once

namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo
