//! Where the extension finds libtorch at run time: the torch package beside it once
//! installed from a wheel (site-packages/esper_runtime/ next to site-packages/torch/),
//! else the libtorch it was built against (`maturin develop` leaves the module in
//! python/esper_runtime/). Either way the libtorch of the venv's own torch, so
//! `import torch` and `import esper_runtime` share one copy in either order.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN/../torch/lib");
    if let Some(lib) = std::env::var_os("LIBTORCH").and_then(|dir| std::fs::canonicalize(dir).ok()) {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,{}", lib.join("lib").display());
    }
}
