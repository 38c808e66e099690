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
// Their CUDA source is cuda/ (pool.cu and nchw.cu for this file's), which build.rs
// assembles into one program, kernels_src.h's kProgram; kernel_slots below lists every
// kernel looked up in it.
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
#include "esper_shim.h"

#include "error.h"
#include "kernels_src.h"
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
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <mutex>
#include <string>
#include <utility>
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

// NVRTC's functions (looked up once; throws why they cannot be).
struct Nvrtc {
    decltype(&nvrtcCreateProgram) create;
    decltype(&nvrtcCompileProgram) compile;
    decltype(&nvrtcGetProgramLogSize) log_size;
    decltype(&nvrtcGetProgramLog) get_log;
    decltype(&nvrtcGetCUBINSize) cubin_size;
    decltype(&nvrtcGetCUBIN) get_cubin;
    decltype(&nvrtcGetPTXSize) ptx_size;
    decltype(&nvrtcGetPTX) get_ptx;
    decltype(&nvrtcDestroyProgram) destroy;
    decltype(&nvrtcGetErrorString) error_string;
};

const Nvrtc &nvrtc() {
    static const Nvrtc n = [] {
        void *lib = open_nvrtc();  // stays loaded
        return Nvrtc{
            symbol<decltype(&nvrtcCreateProgram)>(lib, "nvrtcCreateProgram"),
            symbol<decltype(&nvrtcCompileProgram)>(lib, "nvrtcCompileProgram"),
            symbol<decltype(&nvrtcGetProgramLogSize)>(lib, "nvrtcGetProgramLogSize"),
            symbol<decltype(&nvrtcGetProgramLog)>(lib, "nvrtcGetProgramLog"),
            symbol<decltype(&nvrtcGetCUBINSize)>(lib, "nvrtcGetCUBINSize"),
            symbol<decltype(&nvrtcGetCUBIN)>(lib, "nvrtcGetCUBIN"),
            symbol<decltype(&nvrtcGetPTXSize)>(lib, "nvrtcGetPTXSize"),
            symbol<decltype(&nvrtcGetPTX)>(lib, "nvrtcGetPTX"),
            symbol<decltype(&nvrtcDestroyProgram)>(lib, "nvrtcDestroyProgram"),
            symbol<decltype(&nvrtcGetErrorString)>(lib, "nvrtcGetErrorString"),
        };
    }();
    return n;
}

// `source` (called `name` in NVRTC's messages) compiled with `options`: the program (for
// the caller to destroy), or throws with NVRTC's log.
nvrtcProgram nvrtc_compile(const char *source, const char *name, const std::vector<const char *> &options) {
    const Nvrtc &n = nvrtc();
    nvrtcProgram program = nullptr;
    nvrtcResult status = n.create(&program, source, name, 0, nullptr, nullptr);
    TORCH_CHECK(status == NVRTC_SUCCESS, "nvrtcCreateProgram: ", n.error_string(status));
    status = n.compile(program, static_cast<int>(options.size()), options.data());
    if (status != NVRTC_SUCCESS) {
        size_t size = 0;
        n.log_size(program, &size);
        std::string log(size, '\0');
        n.get_log(program, log.data());
        n.destroy(&program);
        std::string opts;
        for (const char *o : options) opts += std::string(" ") + o;
        TORCH_CHECK(false, "NVRTC could not compile ", name, " (", opts.substr(1), "): ", n.error_string(status),
                    "\n", log);
    }
    return program;
}

// The options the kernels' program is compiled with, for an architecture option.
std::vector<const char *> program_options(const std::string &arch) {
    return {arch.c_str(), "--std=c++17", "-default-device"};
}

// NVRTC's cubin of the kernels' program (kernels_src.h) for `arch` (an sm_XY option).
std::vector<char> compile_cubin(const std::string &arch) {
    const Nvrtc &n = nvrtc();
    nvrtcProgram program = nvrtc_compile(esper::rtc::kProgram, "esper_rtc.cu", program_options(arch));
    size_t size = 0;
    n.cubin_size(program, &size);
    std::vector<char> cubin(size);
    n.get_cubin(program, cubin.data());
    n.destroy(&program);
    return cubin;
}

// The names of the kernels (`.entry`) in PTX text, one a line.
std::string ptx_entries(const std::string &ptx) {
    std::string names;
    for (size_t at = ptx.find(".entry "); at != std::string::npos; at = ptx.find(".entry ", at + 1)) {
        const size_t begin = at + 7, end = ptx.find_first_of("( \n", begin);
        if (end != std::string::npos) names += ptx.substr(begin, end - begin) + "\n";
    }
    return names;
}

// Where the cubin for `arch` is cached between processes (compiling takes seconds):
// $ESPER_KERNEL_CACHE (a folder; "off": no cache), else
// $XDG_CACHE_HOME/esper-runtime/kernels, else ~/.cache/esper-runtime/kernels; the name
// hashes the program's hash (build.rs's, of the text: any change to a cuda/ file changes
// it), the architecture and the CUDA version. Empty: no cache.
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
    const std::string key = std::string(esper::rtc::kProgramHash) + arch + std::to_string(CUDART_VERSION);
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

// Every kernel the launcher looks up in the program: its name and where `k` keeps it.
std::vector<std::pair<std::string, cudaKernel_t *>> kernel_slots(Kernels &k) {
    std::vector<std::pair<std::string, cudaKernel_t *>> s;
    const char *dtypes[2] = {"f32", "bf16"};
    const char *vecs[2] = {"_v1", "_v4"};
    for (int d = 0; d < 2; ++d) {
        for (int v = 0; v < 2; ++v) {
            for (int relu = 0; relu < 2; ++relu) {
                const std::string suffix = std::string(dtypes[d]) + vecs[v] + (relu ? "_relu" : "");
                s.emplace_back("fwd_" + suffix, &k.fwd[d][v][relu]);
                s.emplace_back("bwd_" + suffix, &k.bwd[d][v][relu]);
            }
        }
        s.emplace_back(std::string("nchw_") + dtypes[d], &k.nchw[d]);
        const std::string bn = dtypes[d];
        s.emplace_back("bn_stats_" + bn, &k.bn.stats[d]);
        for (int pool = 0; pool < 2; ++pool) {
            const std::string suffix = bn + (pool ? "_pool" : "");
            s.emplace_back("bn_apply_" + suffix, &k.bn.apply[d][pool]);
            s.emplace_back("bn_grad_stats_" + suffix, &k.bn.grad_stats[d][pool]);
            s.emplace_back("bn_backward_" + suffix, &k.bn.backward[d][pool]);
        }
    }
    s.emplace_back("nchw_bf16_f32", &k.nchw_bf16_f32);
    s.emplace_back("sgd_f32", &k.optim.sgd);
    for (int in = 0; in < 2; ++in) {
        for (int out = 0; out < 2; ++out) {
            const std::string suffix = std::string(dtypes[in]) + "_" + dtypes[out];
            s.emplace_back("conv3_forward_" + suffix, &k.conv.forward[in][out]);
            for (int m = 0; m < 3; ++m) {
                s.emplace_back("conv3_wgrad_" + suffix + "_c" + std::to_string(1 << m), &k.conv.wgrad[in][out][m]);
            }
        }
    }
    s.emplace_back("conv3_wgrad_sum", &k.conv.wgrad_sum);
    for (int d = 0; d < 2; ++d) s.emplace_back(std::string("wgrad3x3_") + dtypes[d] + "_c32_64", &k.wgrad.c32_64[d]);
    s.emplace_back("wgrad3x3_sum", &k.wgrad.sum);
    return s;
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
    for (auto &[name, slot] : kernel_slots(k)) check_cuda(rt.get_kernel(slot, library, name.c_str()), name.c_str());
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

// For the tests of the program and of each cuda/ file (no GPU needed).
int esper_rtc_compile(const char *source, const char *name, const char *const *options, int n_options,
                      char *entries, size_t entries_len, char *err, size_t len) {
    try {
        const Nvrtc &n = nvrtc();
        nvrtcProgram program = nvrtc_compile(source, name, std::vector<const char *>(options, options + n_options));
        size_t size = 0;
        n.ptx_size(program, &size);
        std::string ptx(size, '\0');
        n.get_ptx(program, ptx.data());
        n.destroy(&program);
        const std::string names = ptx_entries(ptx);
        TORCH_CHECK(names.size() < entries_len, "the kernel names need ", names.size() + 1, " bytes, not ", entries_len);
        std::memcpy(entries, names.c_str(), names.size() + 1);
        return 0;
    } catch (const std::exception &e) {
        return esper::fail(e, err, len);
    }
}

size_t esper_rtc_kernel_names(char *out, size_t len) {
    Kernels k;
    std::string names;
    for (const auto &slot : kernel_slots(k)) names += slot.first + "\n";
    if (out && len) std::snprintf(out, len, "%s", names.c_str());
    return names.size() + 1;
}

}  // extern "C"
