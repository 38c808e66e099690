//! # esper-plugin-sys
//!
//! The portable plugin ABI, both sides of it in one place: the C header
//! `include/esper_plugin.h` (for plugins in C and other languages) and its Rust mirror,
//! field for field (a test compares the two). Both sides build on this crate: the author
//! crate `esper-plugin-portable` (the safe types a Rust plugin uses) and the runtime's
//! op table in `esper-portable-runtime`. No libtorch, no tch, no dependencies.

use std::ffi::c_char;

/// The folder holding `esper_plugin.h`, for C builds (`-I`), e.g. from a build script
/// with this crate as a build dependency.
pub const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
/// The path of `esper_plugin.h` (for `cargo:rerun-if-changed`).
pub const HEADER_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include/esper_plugin.h");

/// The ABI version this crate is built against (shared with native plugins).
pub const ABI_MAJOR: u32 = 1;
pub const ABI_MINOR: u32 = 3;
/// The one symbol a portable plugin exports: an [`EntryFn`].
pub const ENTRY_SYMBOL: &str = "esper_portable_plugin";

pub type Status = i32;
pub const OK: Status = 0;
pub const ERR_TENSOR: Status = 1;
pub const ERR_INVALID_ARGUMENT: Status = 2;
pub const ERR_BAD_OPTIONS: Status = 3;
pub const ERR_PANIC: Status = 4;
pub const ERR_UNKNOWN_BLUEPRINT: Status = 5;
pub const ERR_OTHER: Status = 6;

/// A tensor of the runtime (opaque).
#[repr(C)]
pub struct EsperTensor {
    _opaque: [u8; 0],
}
/// Where `create` asks for parameters (opaque).
#[repr(C)]
pub struct EsperParams {
    _opaque: [u8; 0],
}
/// A plugin's own seed state (opaque to the runtime).
#[repr(C)]
pub struct EsperSeed {
    _opaque: [u8; 0],
}

pub const DTYPE_OTHER: i32 = -1;
pub const DTYPE_FLOAT32: i32 = 0;
pub const DTYPE_FLOAT64: i32 = 1;
pub const DTYPE_FLOAT16: i32 = 2;
pub const DTYPE_BFLOAT16: i32 = 3;
pub const DTYPE_INT64: i32 = 4;
pub const DTYPE_INT32: i32 = 5;
pub const DTYPE_BOOL: i32 = 6;
pub const DTYPE_UINT8: i32 = 7;

pub const DEVICE_CPU: i32 = 0;
pub const DEVICE_CUDA: i32 = 1;
pub const DEVICE_OTHER: i32 = 2;

pub const INIT_ZEROS: i32 = 0;
pub const INIT_ONES: i32 = 1;
pub const INIT_CONSTANT: i32 = 2;
pub const INIT_UNIFORM: i32 = 3;
pub const INIT_NORMAL: i32 = 4;
pub const INIT_KAIMING_UNIFORM: i32 = 5;

/// `param` flags: a parameter (gets gradients); without it a buffer.
pub const PARAM_TRAINABLE: i32 = 1;
/// `param` flags: part of the seed's output layer (zeroed under a MULTIPLY blend).
pub const PARAM_OUTPUT_LAYER: i32 = 2;

/// A parameter initialiser: `kind` (`INIT_*`) and up to two numbers.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EsperInit {
    pub kind: i32,
    pub a: f64,
    pub b: f64,
}

pub type Out = *mut *mut EsperTensor;
pub type T = *const EsperTensor;
pub type UnaryFn = unsafe extern "C" fn(x: T, out: Out) -> Status;
pub type BinaryFn = unsafe extern "C" fn(a: T, b: T, out: Out) -> Status;
pub type ScalarFn = unsafe extern "C" fn(x: T, s: f64, out: Out) -> Status;
pub type DimsFn = unsafe extern "C" fn(x: T, dims: *const i64, n: usize, out: Out) -> Status;
pub type ReduceFn = unsafe extern "C" fn(x: T, dims: *const i64, n: usize, keepdim: i32, out: Out) -> Status;

/// The runtime's op table. Fields are only ever appended (ABI minor versions).
#[repr(C)]
pub struct EsperOps {
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `size_of::<EsperOps>()` of the runtime.
    pub size: u64,

    pub last_error: unsafe extern "C" fn() -> *const c_char,
    pub set_error: unsafe extern "C" fn(code: Status, message: *const c_char),

    pub drop: unsafe extern "C" fn(t: *mut EsperTensor),
    pub shallow_clone: UnaryFn,
    pub shape: unsafe extern "C" fn(t: T, dims: *mut i64, cap: usize, ndim: *mut usize) -> Status,
    pub dtype: unsafe extern "C" fn(t: T) -> i32,
    pub device: unsafe extern "C" fn(t: T, index: *mut i32) -> i32,

    pub param: unsafe extern "C" fn(
        params: *mut EsperParams,
        name: *const c_char,
        shape: *const i64,
        ndim: usize,
        init: EsperInit,
        flags: i32,
        out: Out,
    ) -> Status,

    pub add: BinaryFn,
    pub sub: BinaryFn,
    pub mul: BinaryFn,
    pub div: BinaryFn,
    pub add_scalar: ScalarFn,
    pub sub_scalar: ScalarFn,
    pub mul_scalar: ScalarFn,
    pub div_scalar: ScalarFn,
    pub pow_scalar: ScalarFn,
    pub neg: UnaryFn,
    pub relu: UnaryFn,
    pub gelu: UnaryFn,
    pub sigmoid: UnaryFn,
    pub tanh: UnaryFn,
    pub exp: UnaryFn,
    pub sqrt: UnaryFn,

    pub conv2d: unsafe extern "C" fn(
        x: T,
        weight: T,
        bias: T,
        stride: *const i64,
        padding: *const i64,
        dilation: *const i64,
        groups: i64,
        out: Out,
    ) -> Status,
    pub linear: unsafe extern "C" fn(x: T, weight: T, bias: T, out: Out) -> Status,
    pub matmul: BinaryFn,
    pub group_norm: unsafe extern "C" fn(x: T, groups: i64, weight: T, bias: T, eps: f64, out: Out) -> Status,
    pub layer_norm:
        unsafe extern "C" fn(x: T, shape: *const i64, n: usize, weight: T, bias: T, eps: f64, out: Out) -> Status,
    pub mean: ReduceFn,
    pub sum: ReduceFn,
    pub adaptive_avg_pool2d: unsafe extern "C" fn(x: T, size: *const i64, out: Out) -> Status,
    pub max_pool2d:
        unsafe extern "C" fn(x: T, kernel: *const i64, stride: *const i64, padding: *const i64, out: Out) -> Status,
    pub softmax: unsafe extern "C" fn(x: T, dim: i64, out: Out) -> Status,
    pub attention: unsafe extern "C" fn(q: T, k: T, v: T, out: Out) -> Status,

    pub reshape: DimsFn,
    pub view: DimsFn,
    pub permute: DimsFn,
    pub transpose: unsafe extern "C" fn(x: T, dim0: i64, dim1: i64, out: Out) -> Status,
    pub contiguous: UnaryFn,
    pub cat: unsafe extern "C" fn(xs: *const T, n: usize, dim: i64, out: Out) -> Status,
    pub zeros_like: UnaryFn,
    pub ones_like: UnaryFn,
    pub detach: UnaryFn,

    // ABI 1.2.
    pub causal_attention: unsafe extern "C" fn(q: T, k: T, v: T, out: Out) -> Status,
    pub window_attention: unsafe extern "C" fn(q: T, k: T, v: T, window: i64, out: Out) -> Status,
}

pub type CreateFn = unsafe extern "C" fn(
    params: *mut EsperParams,
    channels: i64,
    options_json: *const c_char,
    out: *mut *mut EsperSeed,
) -> Status;
pub type ForwardFn = unsafe extern "C" fn(seed: *mut EsperSeed, input: T, train: i32, out: Out) -> Status;
pub type DestroyFn = unsafe extern "C" fn(seed: *mut EsperSeed) -> Status;

/// One blueprint of a plugin.
#[repr(C)]
pub struct EsperBlueprint {
    pub name: *const c_char,
    pub topology: *const c_char,
    pub description: *const c_char,
    pub param_estimate: u64,
    /// The options' JSON schema, or null.
    pub options_schema: *const c_char,
    /// Never null in a valid plugin (an `Option` so the runtime can refuse a null one).
    pub create: Option<CreateFn>,
    pub forward: Option<ForwardFn>,
    pub destroy: Option<DestroyFn>,
}

/// What the entry point returns: valid for the life of the process.
#[repr(C)]
pub struct EsperPlugin {
    pub abi_major: u32,
    pub abi_minor: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub blueprint_count: usize,
    pub blueprints: *const EsperBlueprint,
}

/// The entry point, exported as [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn(ops: *const EsperOps) -> *const EsperPlugin;

#[cfg(test)]
mod tests {
    /// The field names of `struct NAME { ... }` in `text`, in order: for C, the names
    /// before `;` (function pointers by their `(*name)`), for Rust `pub name:`.
    fn fields(text: &str, open: &str) -> Vec<String> {
        let start = text.find(open).unwrap_or_else(|| panic!("no `{open}`"));
        let body = &text[start + open.len()..];
        let body = &body[..body.find("\n}").expect("struct end")];
        let mut names = Vec::new();
        let mut statement = String::new();
        for line in body.lines() {
            let line = strip_comments(line);
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("pub ") {
                names.push(rest.split(':').next().unwrap().trim().to_string());
                continue;
            }
            statement.push_str(line);
            statement.push(' ');
            if line.ends_with(';') {
                let s = statement.trim().trim_end_matches(';').to_string();
                let name = match s.find("(*") {
                    Some(i) => s[i + 2..s[i..].find(')').map(|j| i + j).unwrap()].to_string(),
                    None => s.split_whitespace().last().unwrap().trim_start_matches('*').to_string(),
                };
                names.push(name);
                statement.clear();
            }
        }
        names
    }

    /// `line` without its `/* ... */` and `//` comments (a comment left open drops the rest).
    fn strip_comments(line: &str) -> String {
        let mut out = String::new();
        let mut rest = line;
        while let Some(i) = rest.find("/*") {
            out.push_str(&rest[..i]);
            rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
        }
        out.push_str(rest);
        out.split("//").next().unwrap_or("").to_string()
    }

    #[test]
    fn the_header_paths_name_the_header_this_crate_mirrors() {
        let on_disk = std::fs::read_to_string(super::HEADER_PATH).expect("HEADER_PATH is readable");
        assert_eq!(on_disk, include_str!("../include/esper_plugin.h"));
        let joined = std::path::Path::new(super::INCLUDE_DIR).join("esper_plugin.h");
        assert_eq!(joined, std::path::Path::new(super::HEADER_PATH));
    }

    #[test]
    fn the_c_header_and_this_crate_declare_the_same_fields_in_the_same_order() {
        let header = include_str!("../include/esper_plugin.h");
        let rust = include_str!("lib.rs");
        for (c, r) in [
            ("typedef struct esper_ops {", "pub struct EsperOps {"),
            ("typedef struct esper_blueprint {", "pub struct EsperBlueprint {"),
            ("typedef struct esper_plugin {", "pub struct EsperPlugin {"),
            ("typedef struct esper_init {", "pub struct EsperInit {"),
        ] {
            let (c_fields, rust_fields) = (fields(header, c), fields(rust, r));
            assert!(c_fields.len() > 2, "{c}: {c_fields:?}");
            assert_eq!(c_fields, rust_fields, "{c} vs {r}");
        }
        for (name, value) in [("ESPER_ABI_MAJOR", super::ABI_MAJOR), ("ESPER_ABI_MINOR", super::ABI_MINOR)] {
            assert!(header.contains(&format!("#define {name} {value}\n")), "{name} is not {value} in the header");
        }
    }
}
