//! Records the libtorch version this crate is compiled against, read from the libtorch
//! headers that torch-sys compiled with (`DEP_TCH_LIBTORCH_LIB`), so that the handshake
//! states the real version rather than an assumed one.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not report its libtorch lib directory (DEP_TCH_LIBTORCH_LIB)");
    let header = PathBuf::from(&lib).join("../include/torch/headeronly/version.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let text = fs::read_to_string(&header)
        .unwrap_or_else(|e| panic!("cannot read libtorch version header {}: {e}", header.display()));
    let field = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("{} has no {name}", header.display()))
            .trim()
            .to_string()
    };
    let version =
        format!("{}.{}.{}", field("TORCH_VERSION_MAJOR"), field("TORCH_VERSION_MINOR"), field("TORCH_VERSION_PATCH"));
    println!("cargo:rustc-env=ESPER_LIBTORCH_VERSION={version}");
}
