// The channels-last -> NCHW copy, a tiled transpose (launched by cpp/rtc.cpp).
#include "common.cuh"

// in is N x P x C (P = H * W, channels innermost), out N x C x P: 32 x 32 tiles of
// (P, C) per sample, read along C and written along P, both coalesced; T in, U out.
template <typename T, typename U>
__device__ void transpose(const T *__restrict__ in, U *__restrict__ out, int P, int C) {
    __shared__ T tile[32][33];
    const long long offset = (long long)blockIdx.z * P * C;
    const int c0 = blockIdx.x * 32, p0 = blockIdx.y * 32;
    for (int j = threadIdx.y; j < 32; j += blockDim.y) {
        const int p = p0 + j, c = c0 + threadIdx.x;
        if (p < P && c < C) tile[j][threadIdx.x] = in[offset + (long long)p * C + c];
    }
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += blockDim.y) {
        const int c = c0 + j, p = p0 + threadIdx.x;
        if (c < C && p < P) out[offset + (long long)c * P + p] = Val<U>::t(Val<T>::f(tile[threadIdx.x][j]));
    }
}
extern "C" __global__ void nchw_f32(const float *in, float *out, int P, int C) { transpose<float, float>(in, out, P, C); }
extern "C" __global__ void nchw_bf16(const unsigned short *in, unsigned short *out, int P, int C) {
    transpose<unsigned short, unsigned short>(in, out, P, C);
}
// bfloat16 in, float32 out (exact): the isolation layer's gradient for a float32 seed output
// under bfloat16 autocast.
extern "C" __global__ void nchw_bf16_f32(const unsigned short *in, float *out, int P, int C) {
    transpose<unsigned short, float>(in, out, P, C);
}
