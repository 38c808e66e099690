// Declarations only, for c10d's ProcessGroupGloo.hpp: see torch-shim/cpp/gloo_decl/README.md.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace gloo {
namespace rendezvous {

// The virtual functions c10d's `GlooStore` overrides (without GLOO_STORE_HAS_STORE_V2);
// the shim never makes one.
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string &key, const std::vector<char> &data) = 0;
  virtual std::vector<char> get(const std::string &key) = 0;
  virtual void wait(const std::vector<std::string> &keys) = 0;
  virtual void wait(const std::vector<std::string> &keys, const std::chrono::milliseconds &timeout) = 0;
};

}  // namespace rendezvous
}  // namespace gloo
