// CUDA kernels compiled at run time (NVRTC), for float32 / bfloat16 tensors:
//
// * A 2x2 max pool (stride 2) of a channels-last tensor, optionally with the ReLU before
//   it folded in: one kernel forward, one backward.
// * A channels-last -> NCHW copy (a tiled transpose through shared memory), for the
//   isolation layer's contiguous seed input and the gradient handed back to an NCHW
//   seed: libtorch's strided copy runs at about a quarter of the memory bandwidth.
// * batchnorm.cpp's BatchNorm + ReLU (+ pool) kernels, optim.cpp's SGD, conv.cpp's
//   first convolution and wgrad.cpp's weight gradient, compiled in the same program.
//
// The pool:
// Why: libtorch's channels-last max-pool backward scatters through int64 indices and
// is the costliest kernel of the host's training step at large batches, and a ReLU in
// front of a pool is a full-size pass forward and backward. ReLU and max commute
// (relu(max(v)) == max(relu(v))), and the gradient routes to the same element, so
// `relu -> pool` becomes one pool kernel that writes a 2-bit window index (one byte)
// and clamps the pooled value; backward reads the pooled gradient, the index and the
// pooled value (for the ReLU mask) and writes every input element once (each belongs to
// exactly one window), so no zero fill.
//
// The kernels are compiled at run time with NVRTC (the torch wheel's libnvrtc, found
// beside the libcudart libtorch_cuda loaded) for the device's architecture, once: the
// cubin is cached on disk (see cache_file), so later processes only load it. They are
// launched on libtorch's current stream, so CUDA graphs capture them like any libtorch
// kernel. No exception crosses the C boundary.
#include "error.h"
#include "rtc.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nvrtc.h>
#include <torch/csrc/autograd/custom_function.h>

#include <dlfcn.h>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

namespace {

// The CUDA runtime functions used here, looked up in the libcudart libtorch_cuda loaded
// (this file links no CUDA library of its own); null where it is not loaded.
using LaunchFn = cudaError_t (*)(const void *, dim3, dim3, void **, size_t, cudaStream_t);
using LoadFn = cudaError_t (*)(cudaLibrary_t *, const void *, cudaJitOption *, void **, unsigned int,
                               cudaLibraryOption *, void **, unsigned int);
using GetKernelFn = cudaError_t (*)(cudaKernel_t *, cudaLibrary_t, const char *);
using ErrorStringFn = const char *(*)(cudaError_t);
using IsCapturingFn = cudaError_t (*)(cudaStream_t, cudaStreamCaptureStatus *);

template <typename F>
F runtime(const char *name) {
    return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}
struct Cudart {
    LaunchFn launch_kernel = runtime<LaunchFn>("cudaLaunchKernel");
    LoadFn load_library = runtime<LoadFn>("cudaLibraryLoadData");
    GetKernelFn get_kernel = runtime<GetKernelFn>("cudaLibraryGetKernel");
    ErrorStringFn error_string = runtime<ErrorStringFn>("cudaGetErrorString");
    IsCapturingFn is_capturing = runtime<IsCapturingFn>("cudaStreamIsCapturing");
};

// Looked up on first use (libtorch_cuda, and so libcudart, is loaded by then).
const Cudart &cudart() {
    static const Cudart c;
    return c;
}

const char *kSource = R"CUDA(
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

// One thread per VEC pooled elements: x is N x H x W x C, z and idx N x OH x OW x C
// (OH = H / 2, OW = W / 2), all counted here in vectors (total of them, Cv per pixel).
// A later window element wins only if greater, or NaN (as libtorch).
template <typename T, int VEC, bool RELU>
__device__ void forward(const Vec<T, VEC> *__restrict__ x, Vec<T, VEC> *__restrict__ z,
                        Idx<VEC> *__restrict__ idx, int total, int Cv, int OW, int OH, int W) {
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += gridDim.x * blockDim.x) {
        int row;
        const int base = window(o, Cv, OW, OH, W, &row);
        const Vec<T, VEC> v[4] = {x[base], x[base + Cv], x[base + row], x[base + row + Cv]};
        Vec<T, VEC> m = v[0];
        Idx<VEC> k;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
            float mf = Val<T>::f(m.v[j]);
            k.v[j] = 0;
#pragma unroll
            for (int i = 1; i < 4; ++i) {
                const float f = Val<T>::f(v[i].v[j]);
                if (f > mf || f != f) {
                    m.v[j] = v[i].v[j];
                    mf = f;
                    k.v[j] = (unsigned char)i;
                }
            }
            if (RELU && mf < 0.f) m.v[j] = T(0);
        }
        z[o] = m;
        idx[o] = k;
    }
}

// The gradient of `forward`: the pooled gradient (zero where the ReLU clamped, as
// threshold_backward: pooled value <= 0) goes to the window's chosen element, zero to
// the other three; every input element is written.
template <typename T, int VEC, bool RELU>
__device__ void backward(const Vec<T, VEC> *__restrict__ g, const Vec<T, VEC> *__restrict__ z,
                         const Idx<VEC> *__restrict__ idx, Vec<T, VEC> *__restrict__ gx, int total, int Cv,
                         int OW, int OH, int W) {
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += gridDim.x * blockDim.x) {
        int row;
        const int base = window(o, Cv, OW, OH, W, &row);
        Vec<T, VEC> gv = g[o];
        const Idx<VEC> k = idx[o];
        if (RELU) {
            const Vec<T, VEC> zv = z[o];
#pragma unroll
            for (int j = 0; j < VEC; ++j)
                if (Val<T>::f(zv.v[j]) <= 0.f) gv.v[j] = T(0);
        }
        Vec<T, VEC> out[4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < VEC; ++j) out[i].v[j] = k.v[j] == i ? gv.v[j] : T(0);
        gx[base] = out[0];
        gx[base + Cv] = out[1];
        gx[base + row] = out[2];
        gx[base + row + Cv] = out[3];
    }
}

#define ESPER_POOL_KERNELS(NAME, T, VEC, RELU)                                                               \
    extern "C" __global__ void fwd_##NAME(const Vec<T, VEC> *x, Vec<T, VEC> *z, Idx<VEC> *idx, int total,     \
                                          int Cv, int OW, int OH, int W) {                                    \
        forward<T, VEC, RELU>(x, z, idx, total, Cv, OW, OH, W);                                              \
    }                                                                                                        \
    extern "C" __global__ void bwd_##NAME(const Vec<T, VEC> *g, const Vec<T, VEC> *z, const Idx<VEC> *idx,    \
                                          Vec<T, VEC> *gx, int total, int Cv, int OW, int OH, int W) {        \
        backward<T, VEC, RELU>(g, z, idx, gx, total, Cv, OW, OH, W);                                         \
    }
ESPER_POOL_KERNELS(f32_v1, float, 1, false)
ESPER_POOL_KERNELS(f32_v1_relu, float, 1, true)
ESPER_POOL_KERNELS(bf16_v1, unsigned short, 1, false)
ESPER_POOL_KERNELS(bf16_v1_relu, unsigned short, 1, true)
ESPER_POOL_KERNELS(f32_v4, float, 4, false)
ESPER_POOL_KERNELS(f32_v4_relu, float, 4, true)
ESPER_POOL_KERNELS(bf16_v4, unsigned short, 4, false)
ESPER_POOL_KERNELS(bf16_v4_relu, unsigned short, 4, true)

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
)CUDA";

// The compiled kernels: [dtype: f32, bf16][vector: 1, 4 channels][relu: no, yes].
// And the channels-last -> NCHW copy: [dtype]; and batchnorm.cpp's.
struct Kernels {
    cudaKernel_t fwd[2][2][2] = {};
    cudaKernel_t bwd[2][2][2] = {};
    cudaKernel_t nchw[2] = {};
    cudaKernel_t nchw_bf16_f32 = {};
    esper::rtc::BatchNormKernels bn;
    esper::rtc::OptimKernels optim;
    esper::rtc::ConvKernels conv;
    esper::rtc::WgradKernels wgrad;
};

// The whole program: this file's kernels, then batchnorm.cpp's (which use them).
const std::string &source() {
    static const std::string s = std::string(kSource) + esper::rtc::batchnorm_source() + esper::rtc::optim_source() +
                                 esper::rtc::conv_source() + esper::rtc::wgrad_source();
    return s;
}

void check_cuda(cudaError_t status, const char *what) {
    TORCH_CHECK(status == cudaSuccess, what, ": ",
                cudart().error_string ? cudart().error_string(status) : "CUDA error ", static_cast<int>(status));
}

template <typename F>
F symbol(void *lib, const char *name) {
    void *f = dlsym(lib, name);
    TORCH_CHECK(f, "NVRTC has no ", name);
    return reinterpret_cast<F>(f);
}

// libnvrtc of the CUDA version libtorch runs with: beside its libcudart, else wherever
// the loader finds it. Its builtins library (which NVRTC opens by name when compiling)
// is loaded first from the same folder, as torch's Python package does, since that
// folder is usually not on the loader's path.
void *open_nvrtc() {
    const std::string name = "libnvrtc.so." + std::to_string(CUDART_VERSION / 1000);
    std::string dir;
    Dl_info info{};
    if (cudart().launch_kernel && dladdr(reinterpret_cast<void *>(cudart().launch_kernel), &info) && info.dli_fname) {
        dir = info.dli_fname;
        dir = dir.substr(0, dir.find_last_of('/') + 1);
    }
    void *lib = dir.empty() ? nullptr : dlopen((dir + name).c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    TORCH_CHECK(lib, "cannot load ", name, " (NVRTC, for the runtime-compiled kernels): ", dlerror());
    int major = 0, minor = 0;
    if (!dir.empty() && symbol<decltype(&nvrtcVersion)>(lib, "nvrtcVersion")(&major, &minor) == NVRTC_SUCCESS) {
        const std::string builtins = "libnvrtc-builtins.so." + std::to_string(major) + "." + std::to_string(minor);
        dlopen((dir + builtins).c_str(), RTLD_NOW | RTLD_GLOBAL);  // else NVRTC looks for it itself
    }
    return lib;
}

// NVRTC's cubin of kSource for `arch` (an sm_XY option).
std::vector<char> compile_cubin(const std::string &arch) {
    void *lib = open_nvrtc();  // stays loaded
    auto create = symbol<decltype(&nvrtcCreateProgram)>(lib, "nvrtcCreateProgram");
    auto compile = symbol<decltype(&nvrtcCompileProgram)>(lib, "nvrtcCompileProgram");
    auto log_size = symbol<decltype(&nvrtcGetProgramLogSize)>(lib, "nvrtcGetProgramLogSize");
    auto get_log = symbol<decltype(&nvrtcGetProgramLog)>(lib, "nvrtcGetProgramLog");
    auto cubin_size = symbol<decltype(&nvrtcGetCUBINSize)>(lib, "nvrtcGetCUBINSize");
    auto get_cubin = symbol<decltype(&nvrtcGetCUBIN)>(lib, "nvrtcGetCUBIN");
    auto destroy = symbol<decltype(&nvrtcDestroyProgram)>(lib, "nvrtcDestroyProgram");
    auto error_string = symbol<decltype(&nvrtcGetErrorString)>(lib, "nvrtcGetErrorString");

    nvrtcProgram program = nullptr;
    nvrtcResult status = create(&program, source().c_str(), "esper_rtc.cu", 0, nullptr, nullptr);
    TORCH_CHECK(status == NVRTC_SUCCESS, "nvrtcCreateProgram: ", error_string(status));
    const char *options[] = {arch.c_str(), "--std=c++17", "-default-device"};
    status = compile(program, 3, options);
    if (status != NVRTC_SUCCESS) {
        size_t size = 0;
        log_size(program, &size);
        std::string log(size, '\0');
        get_log(program, log.data());
        destroy(&program);
        TORCH_CHECK(false, "NVRTC could not compile the runtime's kernels for ", arch, ": ", error_string(status),
                    "\n", log);
    }
    size_t size = 0;
    cubin_size(program, &size);
    std::vector<char> cubin(size);
    get_cubin(program, cubin.data());
    destroy(&program);
    return cubin;
}

// Where the cubin for `arch` is cached between processes (compiling takes seconds):
// $ESPER_KERNEL_CACHE (a folder; "off": no cache), else
// $XDG_CACHE_HOME/esper-runtime/kernels, else ~/.cache/esper-runtime/kernels; the name
// hashes the source, the architecture and the CUDA version. Empty: no cache.
std::string cache_file(const std::string &arch) {
    std::string dir;
    if (const char *env = std::getenv("ESPER_KERNEL_CACHE"); env && *env) {
        if (std::string(env) == "off") return "";
        dir = env;
    } else if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
        dir = std::string(xdg) + "/esper-runtime/kernels";
    } else if (const char *home = std::getenv("HOME"); home && *home) {
        dir = std::string(home) + "/.cache/esper-runtime/kernels";
    } else {
        return "";
    }
    uint64_t hash = 1469598103934665603ull;  // FNV-1a, stable across builds and runs
    const std::string key = source() + arch + std::to_string(CUDART_VERSION);
    for (unsigned char c : key) hash = (hash ^ c) * 1099511628211ull;
    char name[64];
    std::snprintf(name, sizeof name, "/rtc-%016llx.cubin", static_cast<unsigned long long>(hash));
    return dir + name;
}

std::vector<char> read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    return in ? std::vector<char>(std::istreambuf_iterator<char>(in), {}) : std::vector<char>();
}

// Best effort: a cache that cannot be written only costs the next process a compile.
void write_file(const std::string &path, const std::vector<char> &bytes) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    const std::string tmp = path + ".tmp" + std::to_string(getpid());
    {
        std::ofstream out(tmp, std::ios::binary);
        if (!out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()))) return;
    }
    std::filesystem::rename(tmp, path, ec);  // atomic: readers see all of it or nothing
    if (ec) std::filesystem::remove(tmp, ec);
}

// The kernels for the current device: the cached cubin if it loads, else compiled (and
// cached).
Kernels compile() {
    const Cudart &rt = cudart();
    TORCH_CHECK(rt.launch_kernel && rt.load_library && rt.get_kernel,
                "the CUDA runtime (libcudart) is not loaded");
    const cudaDeviceProp *prop = at::cuda::getCurrentDeviceProperties();
    const std::string arch = "--gpu-architecture=sm_" + std::to_string(prop->major * 10 + prop->minor);
    const std::string cached = cache_file(arch);
    cudaLibrary_t library = nullptr;
    if (!cached.empty()) {
        std::vector<char> cubin = read_file(cached);
        if (!cubin.empty() &&
            rt.load_library(&library, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0) != cudaSuccess) {
            library = nullptr;  // stale or damaged: compile afresh
        }
    }
    if (!library) {
        std::vector<char> cubin = compile_cubin(arch);
        check_cuda(rt.load_library(&library, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0),
                   "loading the runtime-compiled kernels");
        if (!cached.empty()) write_file(cached, cubin);
    }
    Kernels k;
    const char *dtypes[2] = {"f32", "bf16"};
    const char *vecs[2] = {"_v1", "_v4"};
    for (int d = 0; d < 2; ++d) {
        for (int v = 0; v < 2; ++v) {
            for (int relu = 0; relu < 2; ++relu) {
                const std::string suffix = std::string(dtypes[d]) + vecs[v] + (relu ? "_relu" : "");
                check_cuda(rt.get_kernel(&k.fwd[d][v][relu], library, ("fwd_" + suffix).c_str()), "fwd kernel");
                check_cuda(rt.get_kernel(&k.bwd[d][v][relu], library, ("bwd_" + suffix).c_str()), "bwd kernel");
            }
        }
        check_cuda(rt.get_kernel(&k.nchw[d], library, (std::string("nchw_") + dtypes[d]).c_str()), "nchw kernel");
        const std::string bn = dtypes[d];
        check_cuda(rt.get_kernel(&k.bn.stats[d], library, ("bn_stats_" + bn).c_str()), "bn_stats kernel");
        for (int pool = 0; pool < 2; ++pool) {
            const std::string suffix = bn + (pool ? "_pool" : "");
            check_cuda(rt.get_kernel(&k.bn.apply[d][pool], library, ("bn_apply_" + suffix).c_str()), "bn_apply kernel");
            check_cuda(rt.get_kernel(&k.bn.grad_stats[d][pool], library, ("bn_grad_stats_" + suffix).c_str()),
                       "bn_grad_stats kernel");
            check_cuda(rt.get_kernel(&k.bn.backward[d][pool], library, ("bn_backward_" + suffix).c_str()),
                       "bn_backward kernel");
        }
    }
    check_cuda(rt.get_kernel(&k.nchw_bf16_f32, library, "nchw_bf16_f32"), "nchw kernel");
    check_cuda(rt.get_kernel(&k.optim.sgd, library, "sgd_f32"), "sgd kernel");
    for (int in = 0; in < 2; ++in) {
        for (int out = 0; out < 2; ++out) {
            const std::string suffix = std::string(dtypes[in]) + "_" + dtypes[out];
            check_cuda(rt.get_kernel(&k.conv.forward[in][out], library, ("conv3_forward_" + suffix).c_str()),
                       "conv3_forward kernel");
            for (int m = 0; m < 3; ++m) {
                const std::string name = "conv3_wgrad_" + suffix + "_c" + std::to_string(1 << m);
                check_cuda(rt.get_kernel(&k.conv.wgrad[in][out][m], library, name.c_str()), "conv3_wgrad kernel");
            }
        }
    }
    check_cuda(rt.get_kernel(&k.conv.wgrad_sum, library, "conv3_wgrad_sum"), "conv3_wgrad_sum kernel");
    for (int d = 0; d < 2; ++d) {
        const std::string name = std::string("wgrad3x3_") + dtypes[d] + "_c32_64";
        check_cuda(rt.get_kernel(&k.wgrad.c32_64[d], library, name.c_str()), "wgrad3x3 kernel");
    }
    check_cuda(rt.get_kernel(&k.wgrad.sum, library, "wgrad3x3_sum"), "wgrad3x3_sum kernel");
    return k;
}

// The kernels, compiled on first use, or null; `failure` says why (set once, with them).
const Kernels *compiled(const std::string **failure = nullptr) {
    static std::once_flag once;
    static Kernels k;
    static std::string why;
    std::call_once(once, [] {
        try {
            k = compile();
        } catch (const std::exception &e) {
            why = esper::message(e);
        }
    });
    if (failure) *failure = &why;
    return why.empty() ? &k : nullptr;
}

// The kernels; throws why they could not be built.
const Kernels &kernels() {
    const std::string *why = nullptr;
    const Kernels *k = compiled(&why);
    TORCH_CHECK(k, *why);
    return *k;
}

// On the current device (the kernels launch on its stream), 4-d channels-last float32 or
// bfloat16 with even height and width, int-sized.
bool fusable(const at::Tensor &x) {
    return x.is_cuda() && x.get_device() == c10::cuda::current_device() && x.dim() == 4 &&
           (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) && x.size(2) % 2 == 0 &&
           x.size(3) % 2 == 0 && x.numel() > 0 && x.numel() <= std::numeric_limits<int>::max() &&
           x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// The pooled geometry, in vectors of `vec` channels: what the kernels take after the
// pointers.
struct Shape {
    int total, Cv, OW, OH, W;
};

Shape shape_of(const at::Tensor &full, int vec) {
    const int C = static_cast<int>(full.size(1)), H = static_cast<int>(full.size(2)),
              W = static_cast<int>(full.size(3));
    const int Cv = C / vec;
    return {static_cast<int>(full.size(0)) * (H / 2) * (W / 2) * Cv, Cv, W / 2, H / 2, W};
}

// 4 channels per thread where the channels divide by 4 and every pointer is aligned for
// it (a tensor may start at an offset into its storage), else 1.
int vector_width(const at::Tensor &full, std::initializer_list<const at::Tensor *> tensors) {
    if (full.size(1) % 4 != 0) return 1;
    for (const at::Tensor *t : tensors) {
        if (reinterpret_cast<uintptr_t>(t->data_ptr()) % (4 * t->element_size()) != 0) return 1;
    }
    return 4;
}

using esper::rtc::dtype_index;
using esper::rtc::launch_per_item;

struct ReluMaxPool : torch::autograd::Function<ReluMaxPool> {
    static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x, bool relu) {
        const Kernels &k = kernels();
        at::Tensor z = at::empty({x.size(0), x.size(1), x.size(2) / 2, x.size(3) / 2},
                                 x.options().memory_format(at::MemoryFormat::ChannelsLast));
        at::Tensor idx = at::empty(z.sizes(), x.options().dtype(at::kByte).memory_format(at::MemoryFormat::ChannelsLast));
        const int vec = vector_width(x, {&x, &z, &idx});
        Shape s = shape_of(x, vec);
        const void *xp = x.data_ptr();
        void *zp = z.data_ptr(), *ip = idx.data_ptr();
        void *args[] = {&xp, &zp, &ip, &s.total, &s.Cv, &s.OW, &s.OH, &s.W};
        launch_per_item(k.fwd[dtype_index(x)][vec == 4][relu], s.total, args);
        ctx->save_for_backward({z, idx});
        ctx->saved_data["relu"] = relu;
        ctx->saved_data["H"] = x.size(2);
        ctx->saved_data["W"] = x.size(3);
        return z;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                   torch::autograd::variable_list grads) {
        const Kernels &k = kernels();
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &z = saved[0], &idx = saved[1];
        const bool relu = ctx->saved_data["relu"].toBool();
        const at::Tensor g = grads[0].to(z.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
        at::Tensor gx = at::empty({z.size(0), z.size(1), ctx->saved_data["H"].toInt(), ctx->saved_data["W"].toInt()},
                                  z.options().memory_format(at::MemoryFormat::ChannelsLast));
        const int vec = vector_width(gx, {&g, &z, &idx, &gx});
        Shape s = shape_of(gx, vec);
        const void *gp = g.data_ptr(), *zp = z.data_ptr(), *ip = idx.data_ptr();
        void *gxp = gx.data_ptr();
        void *args[] = {&gp, &zp, &ip, &gxp, &s.total, &s.Cv, &s.OW, &s.OH, &s.W};
        launch_per_item(k.bwd[dtype_index(z)][vec == 4][relu], s.total, args);
        return {gx, at::Tensor()};
    }
};

}  // namespace

namespace esper::rtc {

const BatchNormKernels &batchnorm_kernels() {
    return kernels().bn;
}

const ConvKernels &conv_kernels() {
    return kernels().conv;
}

const WgradKernels &wgrad_kernels() {
    return kernels().wgrad;
}

const OptimKernels *optim_kernels() {
    const Kernels *k = compiled();
    return k ? &k->optim : nullptr;
}

void launch(cudaKernel_t kernel, dim3 grid, dim3 block, void **args) {
    check_cuda(cudart().launch_kernel(reinterpret_cast<const void *>(kernel), grid, block, args, 0,
                                      at::cuda::getCurrentCUDAStream().stream()),
               "launching a runtime-compiled kernel");
}

void launch_per_item(cudaKernel_t kernel, int total, void **args) {
    const int threads = 256;
    const int blocks = std::min((total + threads - 1) / threads, 1 << 20);
    launch(kernel, dim3(static_cast<unsigned>(blocks)), dim3(threads), args);
}

int dtype_index(const at::Tensor &x) {
    return x.scalar_type() == at::kBFloat16 ? 1 : 0;
}

bool capturing() {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    TORCH_CHECK(cudart().is_capturing, "the CUDA runtime (libcudart) is not loaded");
    check_cuda(cudart().is_capturing(at::cuda::getCurrentCUDAStream().stream(), &status), "cudaStreamIsCapturing");
    return status != cudaStreamCaptureStatusNone;
}

int multiprocessors() {
    return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}

at::Tensor nchw_contiguous(const at::Tensor &x, at::ScalarType dtype) {
    const bool same = dtype == x.scalar_type();
    const bool widen = x.scalar_type() == at::kBFloat16 && dtype == at::kFloat;
    const bool fits = x.is_cuda() && x.get_device() == c10::cuda::current_device() && x.dim() == 4 &&
                      (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) && (same || widen) &&
                      x.numel() > 0 && x.size(0) <= 65535 &&
                      x.size(1) * x.size(2) * x.size(3) <= std::numeric_limits<int>::max() && !x.is_contiguous() &&
                      x.is_contiguous(at::MemoryFormat::ChannelsLast);
    const Kernels *k = fits ? compiled() : nullptr;  // no exception on the fallback path
    if (!k) {
        if (same) return x.contiguous();
        if (x.is_contiguous()) return x.to(dtype);
        // One copy that converts and transposes at once.
        return at::empty(x.sizes(), x.options().dtype(dtype).memory_format(at::MemoryFormat::Contiguous)).copy_(x);
    }
    at::Tensor out = at::empty(x.sizes(), x.options().dtype(dtype).memory_format(at::MemoryFormat::Contiguous));
    int P = static_cast<int>(x.size(2) * x.size(3)), C = static_cast<int>(x.size(1));
    const void *in = x.data_ptr();
    void *o = out.data_ptr();
    void *args[] = {&in, &o, &P, &C};
    launch(same ? k->nchw[dtype_index(x)] : k->nchw_bf16_f32,
           dim3((C + 31) / 32, (P + 31) / 32, static_cast<unsigned>(x.size(0))), dim3(32, 8), args);
    return out;
}

at::Tensor nchw_contiguous(const at::Tensor &x) {
    return nchw_contiguous(x, x.scalar_type());
}

}  // namespace esper::rtc

extern "C" {

// Compiles the kernels now (they are otherwise compiled on first use): 0, or 1 with why
// they cannot be used in `err`.
int esper_pool_ready(char *err, size_t len) {
    try {
        kernels();
        return 0;
    } catch (const std::exception &e) {
        return esper::fail(e, err, len);
    }
}

// `max_pool2d(relu ? relu(x) : x, 2, 2)` with autograd into `*out` (a new tensor the
// caller owns). The fused kernels where `x` suits them (CUDA, 4-d channels-last
// contiguous float32 or bfloat16, even height and width), else libtorch's own ops.
int esper_relu_max_pool2x2(const at::Tensor *x, int relu, at::Tensor **out, char *err, size_t len) {
    try {
        at::Tensor z = fusable(*x) ? ReluMaxPool::apply(*x, relu != 0)
                                   : at::max_pool2d(relu ? at::relu(*x) : *x, {2, 2}, {2, 2});
        *out = new at::Tensor(std::move(z));
        return 0;
    } catch (const std::exception &e) {
        return esper::fail(e, err, len);
    }
}

// `x.contiguous()` (NCHW) into `*out`, through the transpose kernel where it applies
// (see rtc.h), with no autograd history: for inputs that are detached anyway.
int esper_nchw_copy(const at::Tensor *x, at::Tensor **out, char *err, size_t len) {
    try {
        at::NoGradGuard no_grad;
        *out = new at::Tensor(esper::rtc::nchw_contiguous(*x).detach());
        return 0;
    } catch (const std::exception &e) {
        return esper::fail(e, err, len);
    }
}

}  // extern "C"
