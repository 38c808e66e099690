//! Compiles cpp/foreach.cpp against the libtorch headers torch-sys compiled with
//! (`DEP_TCH_LIBTORCH_LIB/../include`). Only ATen's CPU-side headers: the `_foreach_*`
//! ops dispatch to CUDA kernels at run time when the tensors are on a GPU, so no CUDA
//! header is needed and it builds on a CPU-only machine.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=cpp/foreach.cpp");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not report its libtorch lib directory (DEP_TCH_LIBTORCH_LIB)");
    let include = PathBuf::from(lib).join("../include");
    cc::Build::new()
        .cpp(true)
        .file("cpp/foreach.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .opt_level(2)
        .warnings(false)
        .compile("esper_torch_shim");
}
