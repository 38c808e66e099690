// libtorch's process-wide settings that tch does not expose. No exception crosses.
#include "esper_shim.h"

#include <ATen/Context.h>

extern "C" {

// cuDNN's deterministic algorithms on (1) or off (0); returns the previous setting.
int esper_set_deterministic_cudnn(int on) {
    const bool was = at::globalContext().deterministicCuDNN();
    at::globalContext().setDeterministicCuDNN(on != 0);
    return was ? 1 : 0;
}

// TF32 in cuDNN's float32 convolutions on (1, libtorch's default) or off (0); returns
// the previous setting.
int esper_set_cudnn_tf32(int on) {
    const bool was = at::globalContext().allowTF32CuDNN();
    at::globalContext().setAllowTF32CuDNN(on != 0);
    return was ? 1 : 0;
}

}  // extern "C"
