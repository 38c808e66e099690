//! Compiles the C++ shim against the libtorch headers torch-sys compiled with
//! (`DEP_TCH_LIBTORCH_LIB/../include`).
//!
//! * `cpp/autocast.cpp` (always): bfloat16 autocast on the CPU or CUDA.
//! * `cpp/straight.cpp` (always): the isolation layer's straight-through estimator as
//!   one autograd function.
//! * `cpp/host_alloc.cpp` (always): glibc malloc thresholds for a CPU training process.
//! * `cpp/context.cpp` (always): libtorch settings tch lacks (cuDNN determinism).
//! * `cpp/foreach.cpp` (always): only ATen's CPU-side headers. The `_foreach_*` ops
//!   dispatch to CUDA kernels at run time when the tensors are on a GPU, so no CUDA
//!   header is needed and it builds on a CPU-only machine (with `ESPER_RTC`, SGD on CUDA
//!   goes to `cpp/optim.cpp`'s kernel).
//! * `cpp/graph.cpp` (CUDA graphs), where this libtorch has CUDA: `lib/libtorch_cuda.so`
//!   beside it and the CUDA headers of the torch wheel's venv
//!   (`site-packages/nvidia/cu13/include`, with `nv/target` from the
//!   `nvidia-cuda-cccl` wheel that `scripts/setup.sh` adds), or `$ESPER_CUDA_INCLUDE`.
//!   Then it links `torch_cuda` and `c10_cuda` and sets the `esper_cuda_graphs` cfg;
//!   elsewhere the Rust face says why graphs are not available.
//! * `cpp/rtc.cpp` (CUDA kernels compiled at run time with NVRTC: a fused ReLU + max
//!   pool, a channels-last to NCHW copy), `cpp/batchnorm.cpp` (the BatchNorm + ReLU
//!   (+ pool) kernels compiled with them), `cpp/optim.cpp` (SGD over a group as one
//!   kernel, which `foreach.cpp` calls), `cpp/conv.cpp` (the host's 3-channel first
//!   convolution) and `cpp/wgrad.cpp` (a bfloat16 3x3 convolution's weight gradient),
//!   with `graph.cpp`, under the same conditions;
//!   rtc.cpp loads libnvrtc itself (`dl`). `ESPER_RTC` is defined then, for `straight.cpp`.

use std::{
    env,
    path::{Path, PathBuf},
};

/// The CUDA include folders for `lib` (libtorch's lib folder), or why there are none.
fn cuda_includes(lib: &Path) -> Result<Vec<PathBuf>, String> {
    if !lib.join("libtorch_cuda.so").exists() {
        return Err(format!("{} has no libtorch_cuda.so (a CPU-only libtorch)", lib.display()));
    }
    let site = lib.join("../..");
    let main = match env::var_os("ESPER_CUDA_INCLUDE") {
        Some(dir) => PathBuf::from(dir),
        None => site.join("nvidia/cu13/include"),
    };
    if !main.join("cuda_runtime_api.h").exists() {
        return Err(format!("no CUDA headers at {} (set ESPER_CUDA_INCLUDE)", main.display()));
    }
    if !main.join("nv/target").exists() {
        return Err(format!(
            "{} has no nv/target (pip install \"nvidia-cuda-cccl==13.0.*\" into the torch venv: scripts/setup.sh does)",
            main.display()
        ));
    }
    let mut dirs = vec![main];
    let triton = site.join("triton/backends/nvidia/include");
    if triton.exists() {
        dirs.push(triton); // crt/host_config.h, where the cu13 folder lacks it
    }
    Ok(dirs)
}

fn main() {
    println!("cargo:rerun-if-changed=cpp/foreach.cpp");
    println!("cargo:rerun-if-changed=cpp/graph.cpp");
    println!("cargo:rerun-if-changed=cpp/rtc.cpp");
    println!("cargo:rerun-if-changed=cpp/rtc.h");
    println!("cargo:rerun-if-changed=cpp/batchnorm.cpp");
    println!("cargo:rerun-if-changed=cpp/optim.cpp");
    println!("cargo:rerun-if-changed=cpp/conv.cpp");
    println!("cargo:rerun-if-changed=cpp/wgrad.cpp");
    println!("cargo:rerun-if-changed=cpp/error.h");
    println!("cargo:rerun-if-changed=cpp/autocast.cpp");
    println!("cargo:rerun-if-changed=cpp/straight.cpp");
    println!("cargo:rerun-if-changed=cpp/host_alloc.cpp");
    println!("cargo:rerun-if-changed=cpp/context.cpp");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=ESPER_CUDA_INCLUDE");
    println!("cargo::rustc-check-cfg=cfg(esper_cuda_graphs)");
    let lib = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not report its libtorch lib directory (DEP_TCH_LIBTORCH_LIB)"),
    );
    let include = lib.join("../include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("cpp/foreach.cpp")
        .file("cpp/autocast.cpp")
        .file("cpp/straight.cpp")
        .file("cpp/host_alloc.cpp")
        .file("cpp/context.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .opt_level(2)
        .warnings(false);
    let graphs = cuda_includes(&lib);
    if let Ok(dirs) = &graphs {
        build
            .file("cpp/graph.cpp")
            .file("cpp/rtc.cpp")
            .file("cpp/batchnorm.cpp")
            .file("cpp/optim.cpp")
            .file("cpp/conv.cpp")
            .file("cpp/wgrad.cpp")
            .define("ESPER_RTC", None);
        for dir in dirs {
            build.include(dir);
        }
    }
    build.compile("esper_torch_shim");
    match graphs {
        Ok(_) => {
            println!("cargo:rustc-cfg=esper_cuda_graphs");
            println!("cargo:rustc-link-search=native={}", lib.display());
            println!("cargo:rustc-link-lib=dylib=torch_cuda");
            println!("cargo:rustc-link-lib=dylib=c10_cuda");
            println!("cargo:rustc-link-lib=dylib=dl");
        }
        Err(why) => {
            println!("cargo:warning=CUDA graphs not built: {why}");
            println!("cargo:rustc-env=ESPER_NO_CUDA_GRAPHS={why}");
        }
    }
}
