// The host allocator's thresholds for a training process. libtorch's CPU tensors come
// from glibc's malloc; by default glibc serves blocks above a (dynamic) threshold with
// mmap and hands freed memory at the heap's top back to the kernel, so a CPU training
// step that frees and reallocates its activations every step pays page faults and
// kernel page zeroing on each one (4-6% of a batch-128 step in clear_page_erms and the
// fault handler under perf, and about 30% of its time end to end). Raising the mmap
// threshold to 1 GiB and the trim threshold to 2 GiB keeps that memory in the process
// for the next step: its resident size stays at its peak, which a training process
// reaches every step anyway.
#include "esper_shim.h"

#include <climits>  // first: it defines __GLIBC__ where this is glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

extern "C" {

// 0: both thresholds set; 1: glibc refused one; 2: not glibc (nothing done).
int esper_keep_freed_host_memory() {
#if defined(__GLIBC__)
    const int mmap_ok = mallopt(M_MMAP_THRESHOLD, 1 << 30);
    const int trim_ok = mallopt(M_TRIM_THRESHOLD, INT_MAX);
    return mmap_ok && trim_ok ? 0 : 1;
#else
    return 2;
#endif
}

}  // extern "C"
