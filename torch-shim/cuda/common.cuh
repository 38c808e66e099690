// What the kernels share: bfloat16 as raw bits (Val), vectors of channels (Vec, Idx)
// and a 2x2 pooling window's place in a channels-last tensor (window).
#ifndef ESPER_COMMON_CUH
#define ESPER_COMMON_CUH

template <typename T> struct Val;
template <> struct Val<float> {
    static __device__ __forceinline__ float f(float v) { return v; }
    static __device__ __forceinline__ float t(float v) { return v; }
};
// bfloat16 as its raw bits; t rounds to nearest even (NaN stays NaN), as libtorch does.
template <> struct Val<unsigned short> {
    static __device__ __forceinline__ float f(unsigned short v) { return __uint_as_float(((unsigned int)v) << 16); }
    static __device__ __forceinline__ unsigned short t(float v) {
        const unsigned int u = __float_as_uint(v);
        if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
        return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
};

// VEC consecutive channels, loaded and stored as one access.
template <typename T, int VEC> struct alignas(sizeof(T) * VEC) Vec { T v[VEC]; };
template <int VEC> struct alignas(VEC) Idx { unsigned char v[VEC]; };

// The input element of window slot k (0..3, libtorch's scan order) of the pooled
// element at (n, oh, ow, channel group c), counted in vectors of an NHWC
// (channels-last) tensor with Cv vectors per pixel.
__device__ __forceinline__ int window(int o, int Cv, int OW, int OH, int W, int *row) {
    const int c = o % Cv;
    int r = o / Cv;
    const int ow = r % OW;
    r /= OW;
    const int oh = r % OH;
    const int n = r / OH;
    *row = W * Cv;
    return ((n * 2 * OH + 2 * oh) * W + 2 * ow) * Cv + c;
}

#endif  // ESPER_COMMON_CUH
