// Ampere's tensor-core and asynchronous-copy instructions (mma.sync with TF32, cp.async)
// as the convolution kernels use them.
#ifndef ESPER_MMA_CUH
#define ESPER_MMA_CUH

// Tensor cores with TF32 and cp.async need sm_80 (Ampere) or later; the host side runs
// these kernels only there (usable), but the program must still compile for older GPUs,
// whose other kernels (pool, BatchNorm, SGD) it carries: there cp.async becomes a plain
// copy and the tensor-core paths trap.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define ESPER_SM80 1
#else
#define ESPER_SM80 0
#endif

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
#if ESPER_SM80
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
#else
    *reinterpret_cast<int4 *>(smem) = *reinterpret_cast<const int4 *>(gmem);
#endif
}
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem) {
#if ESPER_SM80
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
#else
    *reinterpret_cast<float *>(smem) = *reinterpret_cast<const float *>(gmem);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if ESPER_SM80
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if ESPER_SM80
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// float32 -> TF32 (round to nearest, ties away), as a tensor-core operand.
__device__ __forceinline__ unsigned tf32(float v) {
#if ESPER_SM80
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
    return r;
#else
    __trap();
    return 0u;
#endif
}

// d += a (16 x 8, row) * b (8 x 8, col) on the tensor cores, TF32 in, float32 sums. Lane
// l holds a at rows l / 4 (+ 8), columns l % 4 (+ 4); b at row l % 4 (+ 4), column l / 4;
// d at row l / 4 (+ 8), columns 2 (l % 4) (+ 1).
__device__ __forceinline__ void mma_tf32(float d[4], const unsigned a[4], const unsigned b[2]) {
#if ESPER_SM80
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}

#endif  // ESPER_MMA_CUH
