//! Builds the portable fixture plugin written in C (tests/portable-c/channel_gain.c)
//! and its refused variants as shared libraries with the `cc` crate's compiler, into
//! OUT_DIR; tests find them through `ESPER_C_FIXTURES`.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = PathBuf::from("portable-c/channel_gain.c");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed={}", esper_plugin_sys::HEADER_PATH);
    let compiler = cc::Build::new().cargo_metadata(false).get_compiler();
    for (name, defines) in [
        ("c_gain", &[][..]),
        ("c_gain_abi_2_0", &["-DFIXTURE_ABI_MAJOR=2", "-DFIXTURE_ABI_MINOR=0"][..]),
        ("c_gain_abi_1_9", &["-DFIXTURE_ABI_MINOR=9"][..]),
        ("c_gain_abi_1_1", &["-DFIXTURE_ABI_MINOR=1"][..]),
        ("c_gain_null_forward", &["-DFIXTURE_NULL_FORWARD"][..]),
    ] {
        let lib = out.join(format!("libesper_fixture_{name}.so"));
        let status = Command::new(compiler.path())
            .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-shared", "-fPIC"])
            .arg(format!("-I{}", esper_plugin_sys::INCLUDE_DIR))
            .args(defines)
            .arg(&source)
            .arg("-o")
            .arg(&lib)
            .status()
            .unwrap_or_else(|e| panic!("cannot run the C compiler {}: {e}", compiler.path().display()));
        assert!(status.success(), "building {} failed ({status})", lib.display());
    }
    println!("cargo:rustc-env=ESPER_C_FIXTURES={}", out.display());
}
