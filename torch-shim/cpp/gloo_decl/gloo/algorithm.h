// Declarations only, for c10d's ProcessGroupGloo.hpp: see torch-shim/cpp/gloo_decl/README.md.
#pragma once
