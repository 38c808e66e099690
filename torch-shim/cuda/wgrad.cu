// The weight gradient of a 3x3 convolution from 32 to 64 channels on the tensor cores
// (launched by cpp/wgrad.cpp, which says how and why).
#include "mma.cuh"

#define WG_THREADS 256
#define WG_SMEM 36864   // bytes of shared memory: a band's output gradient, then its input rows

// 4 (x4) or 2 (x2) 8 x 8 bfloat16 matrices from shared memory, transposed: lane l gives
// the address of row l % 8 of matrix l / 8 and receives, of each matrix, the elements
// (rows 2 (l % 4), 2 (l % 4) + 1; column l / 4) packed in one register.
__device__ __forceinline__ void ldsm_x4_t(unsigned r[4], const unsigned short *p) {
#if ESPER_SM80
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#else
    __trap();
#endif
}
__device__ __forceinline__ void ldsm_x2_t(unsigned r[2], const unsigned short *p) {
#if ESPER_SM80
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
#else
    __trap();
#endif
}

// d += a (16 x 16, row) * b (16 x 8, col), bfloat16 operands, float32 sums. Lane l holds
// a at rows l / 4 (+ 8), columns 2 (l % 4) (+ 1) (+ 8); b at rows 2 (l % 4) (+ 1) (+ 8),
// column l / 4; d at rows l / 4 (+ 8), columns 2 (l % 4) (+ 1).
__device__ __forceinline__ void mma_bf16(float d[4], const unsigned a[4], unsigned b0, unsigned b1) {
#if ESPER_SM80
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap();
#endif
}

// The warp's products over one band: gs holds the band's TP pixels' output gradient
// (rows GS apart), xs its input rows (W + 2 pixels each, XS apart, zero border). Pixel k
// of the band at tap (kh, kw) is xs's pixel (k / W + kh) (W + 2) + k % W + kw.
//
// bfloat16: 16 pixels a step (m16n8k16), operands gathered by ldmatrix (transposed): for
// a, lane l addresses pixel a_k = l % 8 + 8 (l / 16) at output channel a_m + 8 (l / 8 % 2);
// for b, pixel b_k = l % 8 + 8 (l / 8 % 2) at each column pair's tap and channel b_off.
template <int CIN, int COUT, int MT, int NT>
__device__ __forceinline__ void wgrad_band(const unsigned short *gs, const unsigned short *xs, int TP, int W,
                                           int a_k, int a_m, int b_k, const int *b_off, float (*acc)[NT][4]) {
    constexpr int XS = CIN + 8, GS = COUT + 8;
    const int W2 = W + 2;
    for (int k0 = 0; k0 < TP; k0 += 16) {
        unsigned a[MT][4];
#pragma unroll
        for (int m = 0; m < MT; ++m) ldsm_x4_t(a[m], gs + (k0 + a_k) * GS + a_m + m * 16);
        const int kb = k0 + b_k, hr = kb / W;
        const unsigned short *xb = xs + (hr * W2 + kb - hr * W) * XS;
#pragma unroll
        for (int p = 0; p < NT / 2; ++p) {
            unsigned b[4];
            ldsm_x4_t(b, xb + b_off[p]);
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                mma_bf16(acc[m][2 * p], a[m], b[0], b[1]);
                mma_bf16(acc[m][2 * p + 1], a[m], b[2], b[3]);
            }
        }
        if (NT % 2) {
            unsigned b[2];
            ldsm_x2_t(b, xb + b_off[NT / 2]);
#pragma unroll
            for (int m = 0; m < MT; ++m) mma_bf16(acc[m][NT - 1], a[m], b[0], b[1]);
        }
    }
}

// float32: 8 pixels a step (m16n8k8, TF32 operands rounded to nearest as cuDNN's), each
// operand a scalar load (row strides of 8 mod 32 words: conflict-free): a at pixels
// k0 + l % 4 (+ 4), output channels a_m + l / 4 (+ 8); b at the same pixels, channel
// l / 4 of each column tile (its tap and first channel in n_off).
template <int CIN, int COUT, int MT, int NT>
__device__ __forceinline__ void wgrad_band(const float *gs, const float *xs, int TP, int W, int a_m,
                                           const int *n_off, float (*acc)[NT][4]) {
    constexpr int XS = CIN + 8, GS = COUT + 8;
    const int lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4, W2 = W + 2;
    for (int k0 = 0; k0 < TP; k0 += 8) {
        const int k = k0 + tig, h1 = k / W, h2 = (k + 4) / W;
        const float *x1 = xs + (h1 * W2 + k - h1 * W) * XS + gid, *x2 = xs + (h2 * W2 + k + 4 - h2 * W) * XS + gid;
        unsigned a[MT][4];
#pragma unroll
        for (int m = 0; m < MT; ++m) {
            const float *r = gs + k * GS + a_m + m * 16 + gid;
            a[m][0] = tf32(r[0]);
            a[m][1] = tf32(r[8]);
            a[m][2] = tf32(r[4 * GS]);
            a[m][3] = tf32(r[4 * GS + 8]);
        }
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            const unsigned b[2] = {tf32(x1[n_off[n]]), tf32(x2[n_off[n]])};
#pragma unroll
            for (int m = 0; m < MT; ++m) mma_tf32(acc[m][n], a[m], b);
        }
    }
}

// Per block, the sums over its bands of g[p][o] * x[p + tap][c] into partial[block][o][tap
// * CIN + c]. g and x are N x H x W x COUT and N x H x W x CIN (channels-last, bfloat16 or
// float32); a band is TR rows of an image (TR * W pixels, a multiple of 16; the host
// checks that it fits WG_SMEM). Warp (wm, wn) owns output rows wm * COUT / 2 .. and
// columns wn * 9 CIN / 4 ..; its sums stay in registers until the end.
template <typename T, int CIN, int COUT>
__device__ void wgrad3x3(const T *__restrict__ g, const T *__restrict__ x, float *__restrict__ partial, int N, int H,
                         int W, int TR) {
    constexpr int XS = CIN + 8, GS = COUT + 8, NCOL = 9 * CIN, V = 16 / sizeof(T);
    constexpr int MT = COUT / 32, NT = NCOL / 32;  // the warp's 16-row and 8-column tiles
    __shared__ __align__(16) unsigned char smem[WG_SMEM];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, wm = warp % 2, wn = warp / 2;
    const int W2 = W + 2, TP = TR * W, bands = H / TR, tiles = N * bands;
    T *gs = reinterpret_cast<T *>(smem), *xs = gs + TP * GS;
    // Zeros once: the columns either side of the image are never written after this.
    for (int e = threadIdx.x; e < (TR + 2) * W2 * XS / V; e += blockDim.x)
        reinterpret_cast<int4 *>(xs)[e] = make_int4(0, 0, 0, 0);
    const int li = lane / 8, lr = lane % 8, a_m = wm * (COUT / 2);
    // Each column tile's (bfloat16: each column pair's, per lane) tap and channel, as an
    // offset into xs.
    int off[NT];
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        int t = n;
        if (sizeof(T) == 2) {
            t = 2 * (n / 2) + li / 2 < NT ? 2 * (n / 2) + li / 2 : 2 * (n / 2);  // x2 lanes 16-31: unused
        }
        const int col = (wn * NT + t) * 8, tap = col / CIN;
        off[n] = ((tap / 3) * W2 + tap % 3) * XS + col % CIN;
    }
    float acc[MT][NT][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[m][n][j] = 0.f;
    __syncthreads();
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        const int n = t / bands, h0 = (t - n * bands) * TR;
        const T *gt = g + (long long)(n * H + h0) * W * COUT;
        for (int i = threadIdx.x; i < TP * (COUT / V); i += blockDim.x)
            cp_async16(gs + (i / (COUT / V)) * GS + (i % (COUT / V)) * V, gt + (long long)i * V);
        for (int i = threadIdx.x; i < (TR + 2) * W * (CIN / V); i += blockDim.x) {
            const int part = i % (CIN / V), q = i / (CIN / V), w = q % W, r = q / W, hh = h0 - 1 + r;
            T *dst = xs + (r * W2 + w + 1) * XS + part * V;
            if (hh >= 0 && hh < H)
                cp_async16(dst, x + ((long long)(n * H + hh) * W + w) * CIN + part * V);
            else
                *reinterpret_cast<int4 *>(dst) = make_int4(0, 0, 0, 0);
        }
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        if constexpr (sizeof(T) == 2) {
            int b_off[(NT + 1) / 2];
#pragma unroll
            for (int p = 0; p < (NT + 1) / 2; ++p) b_off[p] = off[2 * p];
            wgrad_band<CIN, COUT, MT, NT>(gs, xs, TP, W, lr + (li / 2) * 8, a_m + (li % 2) * 8, lr + (li % 2) * 8,
                                          b_off, acc);
        } else {
            wgrad_band<CIN, COUT, MT, NT>(gs, xs, TP, W, a_m, off, acc);
        }
        __syncthreads();
    }
    const int gid = lane / 4, tig = lane % 4;
    float *out = partial + (long long)blockIdx.x * COUT * NCOL;
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            const int row = a_m + m * 16 + gid, col = (wn * NT + n) * 8 + 2 * tig;
            *reinterpret_cast<float2 *>(&out[row * NCOL + col]) = make_float2(acc[m][n][0], acc[m][n][1]);
            *reinterpret_cast<float2 *>(&out[(row + 8) * NCOL + col]) = make_float2(acc[m][n][2], acc[m][n][3]);
        }
}

extern "C" __global__ void __launch_bounds__(WG_THREADS, 2)
    wgrad3x3_bf16_c32_64(const unsigned short *g, const unsigned short *x, float *partial, int N, int H, int W,
                         int TR) {
    wgrad3x3<unsigned short, 32, 64>(g, x, partial, N, H, W, TR);
}
extern "C" __global__ void __launch_bounds__(WG_THREADS, 2)
    wgrad3x3_f32_c32_64(const float *g, const float *x, float *partial, int N, int H, int W, int TR) {
    wgrad3x3<float, 32, 64>(g, x, partial, N, H, W, TR);
}

// dw (COUT x CIN x 3 x 3 in its strides) = the blocks' partial rows (E = COUT 9 CIN each)
// added up: a block takes 32 consecutive elements, its warp k the rows k, k + 8, ... in
// order, then the 8 warps' sums in order.
extern "C" __global__ void __launch_bounds__(256)
    wgrad3x3_sum(const float *__restrict__ partial, int blocks, int E, int CIN, float *dw, int s0, int s1, int s2,
                 int s3) {
    __shared__ float part[8][32];
    const int lane = threadIdx.x % 32, k = threadIdx.x / 32, e = blockIdx.x * 32 + lane;
    float s = 0.f;
    if (e < E)
        for (int b = k; b < blocks; b += 8) s += partial[(long long)b * E + e];
    part[k][lane] = s;
    __syncthreads();
    if (k == 0 && e < E) {
        for (int j = 1; j < 8; ++j) s += part[j][lane];
        const int o = e / (9 * CIN), r = e % (9 * CIN), tap = r / CIN, c = r % CIN;
        dw[o * s0 + c * s1 + (tap / 3) * s2 + (tap % 3) * s3] = s;
    }
}
