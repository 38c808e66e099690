// A tensor as a DLPack `DLManagedTensor`, made by libtorch itself (`at::toDLPack`: the
// dtype and device codes, shape and strides, and a reference that keeps the storage
// alive until the consumer calls the deleter). What a Python `"dltensor"` capsule holds,
// so Python's torch sees the runtime's memory without a copy. No exception crosses the
// C boundary.
#include "esper_shim.h"

#include "error.h"

#include <ATen/DLConvertor.h>

extern "C" {

int esper_to_dlpack(const EsperTensor *t, void **out, char *err, size_t len) {
    try {
        *out = at::toDLPack(*t);
        return 0;
    } catch (const std::exception &e) {
        return esper::fail(e, err, len);
    }
}

void esper_dlpack_free(void *managed) {
    auto *m = static_cast<DLManagedTensor *>(managed);
    if (m && m->deleter) m->deleter(m);
}

}  // extern "C"
