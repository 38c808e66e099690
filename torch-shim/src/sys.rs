//! The shim's C interface, `include/esper_shim.h`, in Rust: every `esper_*` function,
//! declared once. The test below keeps the two equal (names, arity, and each argument's
//! and result's type: pointers with their constness, integers, floats) and checks that
//! every function `cpp/` defines is in the header; the C++ compiler holds the
//! definitions to the header's types (each file that defines one includes it).

use std::ffi::{c_char, c_int, c_void};
use torch_sys::C_tensor;

/// `EsperAutocastState`: the autocast state to restore on leaving.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct EsperAutocastState {
    pub enabled: c_int,
    pub dtype: c_int,
    pub cache: c_int,
}

/// Opaque handles of the CUDA builds (`c10::Stream`, the side-stream scope, a graph).
#[repr(C)]
pub struct EsperStream {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct EsperSideStream {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct EsperGraph {
    _opaque: [u8; 0],
}
/// Opaque handles of c10d (`cpp/dist.h`): a store, a process group.
#[repr(C)]
pub struct EsperStore {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct EsperGroup {
    _opaque: [u8; 0],
}
/// Opaque handle of `cpp/grad_sync.cpp`: a parameter set's gradient hooks and buckets.
#[repr(C)]
pub struct EsperGradSync {
    _opaque: [u8; 0],
}

// Every build.
extern "C" {
    pub fn esper_to_dlpack(t: *const C_tensor, out: *mut *mut c_void, err: *mut c_char, len: usize) -> c_int;
    pub fn esper_dlpack_free(managed: *mut c_void);
    pub fn esper_straight_through(
        host: *const C_tensor,
        seed: *const C_tensor,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn esper_keep_freed_host_memory() -> c_int;
    pub fn esper_set_deterministic_cudnn(on: c_int) -> c_int;
    pub fn esper_set_cudnn_tf32(on: c_int) -> c_int;
    pub fn esper_foreach_zero(ts: *const *mut C_tensor, n: usize, err: *mut c_char, err_len: usize) -> c_int;
    pub fn esper_clear_grads(ts: *const *mut C_tensor, n: usize, err: *mut c_char, err_len: usize) -> c_int;
    pub fn esper_zero_missing_grads(
        ts: *const *mut C_tensor,
        had: *const c_int,
        n: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn esper_foreach_sgd(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        bufs: *const *mut C_tensor,
        n: usize,
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        init_bufs: c_int,
        kernel: *mut c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn esper_foreach_adam(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        ms: *const *mut C_tensor,
        vs: *const *mut C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        step: *mut C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn esper_autocast_enter(cuda: c_int, previous: *mut EsperAutocastState, err: *mut c_char, len: usize) -> c_int;
    pub fn esper_autocast_exit(cuda: c_int, previous: *const EsperAutocastState, err: *mut c_char, len: usize)
        -> c_int;
    pub fn esper_autocast_enabled(cuda: c_int) -> c_int;

    pub fn esper_store_new(
        host: *const c_char,
        port: c_int,
        world_size: c_int,
        is_master: c_int,
        timeout_s: f64,
        err: *mut c_char,
        len: usize,
    ) -> *mut EsperStore;
    pub fn esper_store_port(store: *const EsperStore) -> c_int;
    pub fn esper_store_free(store: *mut EsperStore);
    pub fn esper_group_gloo(
        store: *mut EsperStore,
        prefix: *const c_char,
        rank: c_int,
        size: c_int,
        timeout_s: f64,
        err: *mut c_char,
        len: usize,
    ) -> *mut EsperGroup;
    pub fn esper_group_free(g: *mut EsperGroup);
    pub fn esper_groups_abort_on_free();
    pub fn esper_group_broadcast(
        g: *mut EsperGroup,
        ts: *const *mut C_tensor,
        n: usize,
        root: c_int,
        bucket_bytes: usize,
        collectives: *mut usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn esper_group_allreduce_sum(
        g: *mut EsperGroup,
        ts: *const *mut C_tensor,
        n: usize,
        scale: f64,
        bucket_bytes: usize,
        collectives: *mut usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn esper_group_all_gather(
        g: *mut EsperGroup,
        t: *const C_tensor,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn esper_group_barrier(g: *mut EsperGroup, err: *mut c_char, len: usize) -> c_int;
    pub fn esper_sync_batch_norm(
        g: *mut EsperGroup,
        x: *const C_tensor,
        weight: *const C_tensor,
        bias: *const C_tensor,
        running_mean: *const C_tensor,
        running_var: *const C_tensor,
        momentum: f64,
        eps: f64,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn esper_sync_batch_norm_release(
        g: *mut EsperGroup,
        exchanges: *mut usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn esper_sync_batch_norm_forget(g: *mut EsperGroup);
}

/// How a [`GradSync`](crate::dist::GradSync) step ends (`EsperGradSyncEnd`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradSyncEnd {
    Finish = 0,
    Abandon = 1,
    FinishCaptured = 2,
    Discard = 3,
}

// Every build: cpp/grad_sync.cpp.
extern "C" {
    pub fn esper_grad_sync_new(
        g: *mut EsperGroup,
        params: *const *mut C_tensor,
        n: usize,
        bucket_bytes: usize,
        scale: f64,
        buckets: *mut usize,
        err: *mut c_char,
        len: usize,
    ) -> *mut EsperGradSync;
    pub fn esper_grad_sync_begin(s: *mut EsperGradSync, err: *mut c_char, len: usize) -> c_int;
    pub fn esper_grad_sync_launched(s: *mut EsperGradSync) -> usize;
    pub fn esper_grad_sync_finish(
        s: *mut EsperGradSync,
        how: GradSyncEnd,
        collectives: *mut usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn esper_grad_sync_free(s: *mut EsperGradSync);
    pub fn esper_grad_post_hooks(t: *const C_tensor) -> c_int;
}

// CUDA builds only.
#[cfg(esper_cuda)]
extern "C" {
    pub fn esper_stream_new(device: c_int, err: *mut c_char, len: usize) -> *mut EsperStream;
    pub fn esper_stream_free(stream: *mut EsperStream);
    pub fn esper_side_stream_enter(stream: *const EsperStream, err: *mut c_char, len: usize) -> *mut EsperSideStream;
    pub fn esper_side_stream_exit(scope: *mut EsperSideStream, err: *mut c_char, len: usize) -> c_int;
    pub fn esper_graph_begin(err: *mut c_char, len: usize) -> *mut EsperGraph;
    pub fn esper_graph_end(g: *mut EsperGraph, nodes: *mut usize, err: *mut c_char, len: usize) -> c_int;
    pub fn esper_graph_abort(g: *mut EsperGraph);
    pub fn esper_graph_replay(g: *mut EsperGraph, err: *mut c_char, len: usize) -> c_int;
    pub fn esper_graph_free(g: *mut EsperGraph);

    pub fn esper_pool_ready(err: *mut c_char, len: usize) -> c_int;
    pub fn esper_relu_max_pool2x2(
        x: *const C_tensor,
        relu: c_int,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn esper_nchw_copy(x: *const C_tensor, out: *mut *mut C_tensor, err: *mut c_char, len: usize) -> c_int;
    pub fn esper_rtc_compile(
        source: *const c_char,
        name: *const c_char,
        options: *const *const c_char,
        n_options: c_int,
        entries: *mut c_char,
        entries_len: usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn esper_rtc_kernel_names(out: *mut c_char, len: usize) -> usize;

    pub fn esper_bn_relu(
        x: *const C_tensor,
        weight: *const C_tensor,
        bias: *const C_tensor,
        running_mean: *const C_tensor,
        running_var: *const C_tensor,
        momentum: f64,
        eps: f64,
        pool: c_int,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn esper_first_conv(
        x: *const C_tensor,
        w: *const C_tensor,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn esper_conv3x3(
        x: *const C_tensor,
        w: *const C_tensor,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;

    pub fn esper_group_nccl(
        store: *mut EsperStore,
        prefix: *const c_char,
        rank: c_int,
        size: c_int,
        device: c_int,
        timeout_s: f64,
        err: *mut c_char,
        len: usize,
    ) -> *mut EsperGroup;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    /// A C or Rust type, normalized: the pointer levels from the outermost in (`true`:
    /// points to const), then the base type in C's spelling.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Type {
        pointers: Vec<bool>,
        base: String,
    }

    /// A function: its argument types and its result (`void`: none).
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Signature {
        args: Vec<Type>,
        result: Type,
    }

    fn void() -> Type {
        Type { pointers: vec![], base: "void".into() }
    }

    /// The C spelling of a Rust base type of this interface.
    fn c_base(rust: &str) -> Result<&'static str, String> {
        Ok(match rust {
            "c_int" | "i32" => "int",
            "usize" => "size_t",
            "f64" => "double",
            "c_char" => "char",
            "c_void" => "void",
            "C_tensor" => "EsperTensor",
            "EsperStream" => "EsperStream",
            "EsperSideStream" => "EsperSideStream",
            "EsperGraph" => "EsperGraph",
            "EsperStore" => "EsperStore",
            "EsperGroup" => "EsperGroup",
            "EsperGradSync" => "EsperGradSync",
            "GradSyncEnd" => "EsperGradSyncEnd",
            "EsperAutocastState" => "EsperAutocastState",
            other => return Err(format!("a Rust type the check does not know: {other}")),
        })
    }

    /// Strips `//` and `/* */` comments and preprocessor lines.
    fn c_code(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("/*") {
                rest = r.find("*/").map_or("", |end| &r[end + 2..]);
            } else if let Some(r) = rest.strip_prefix("//") {
                rest = r.find('\n').map_or("", |end| &r[end..]);
            } else {
                let c = rest.chars().next().unwrap_or(' ');
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        out.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n")
    }

    /// A C type with an optional name after it (`const EsperTensor *const *ts`).
    fn c_type(decl: &str, named: bool) -> Result<Type, String> {
        let spaced = decl.replace('*', " * ");
        let mut tokens: Vec<&str> = spaced.split_whitespace().collect();
        if named {
            match tokens.last() {
                Some(t) if *t != "*" && *t != "const" && tokens.len() > 1 => {
                    tokens.pop();
                }
                _ => return Err(format!("no argument name in `{decl}`")),
            }
        }
        let mut base = None;
        let mut konst = false; // the const that applies to what the next `*` points at
        let mut inner_first = Vec::new();
        for t in tokens {
            match t {
                "const" => konst = true,
                "*" => {
                    inner_first.push(konst);
                    konst = false;
                }
                name if base.is_none() => base = Some(name.to_string()),
                other => return Err(format!("unexpected `{other}` in `{decl}`")),
            }
        }
        inner_first.reverse();
        Ok(Type { pointers: inner_first, base: base.ok_or_else(|| format!("no type in `{decl}`"))? })
    }

    /// The `esper_*` functions the C header declares.
    fn header_functions(text: &str) -> Result<BTreeMap<String, Signature>, String> {
        let code = c_code(text);
        let mut out = BTreeMap::new();
        for decl in code.split(';') {
            let Some(open) = decl.find("esper_") else { continue };
            let Some(paren) = decl[open..].find('(').map(|p| open + p) else { continue };
            let name = decl[open..paren].trim().to_string();
            let close = decl.rfind(')').ok_or_else(|| format!("`{name}`: no `)`"))?;
            let result = c_type(decl[..open].rsplit(['{', '}']).next().unwrap_or("").trim(), false)?;
            let inside = decl[paren + 1..close].trim();
            let args = if inside == "void" || inside.is_empty() {
                vec![]
            } else {
                inside.split(',').map(|a| c_type(a.trim(), true)).collect::<Result<_, _>>()?
            };
            if out.insert(name.clone(), Signature { args, result }).is_some() {
                return Err(format!("`{name}` declared twice"));
            }
        }
        Ok(out)
    }

    /// A Rust FFI type (`*const *mut C_tensor`, `c_int`, `()`).
    fn rust_type(text: &str) -> Result<Type, String> {
        let mut rest = text.trim();
        let mut pointers = Vec::new();
        while let Some(r) = rest.strip_prefix('*') {
            let r = r.trim_start();
            if let Some(r) = r.strip_prefix("const ") {
                pointers.push(true);
                rest = r.trim_start();
            } else if let Some(r) = r.strip_prefix("mut ") {
                pointers.push(false);
                rest = r.trim_start();
            } else {
                return Err(format!("a raw pointer without const or mut: `{text}`"));
            }
        }
        let base = if rest == "()" { "void" } else { c_base(rest.rsplit("::").next().unwrap_or(rest))? };
        Ok(Type { pointers, base: base.into() })
    }

    /// The `esper_*` functions of the `extern "C"` blocks of Rust source.
    fn rust_functions(text: &str) -> Result<BTreeMap<String, Signature>, String> {
        let mut out = BTreeMap::new();
        let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
        let mut rest = code.as_str();
        while let Some(at) = rest.find("fn esper_") {
            let decl = &rest[at + 3..];
            let end = decl.find(';').ok_or("a declaration without `;`")?;
            let decl = &decl[..end];
            rest = &rest[at + 3 + end..];
            let open = decl.find('(').ok_or("no `(`")?;
            let close = decl.rfind(')').ok_or("no `)`")?;
            let name = decl[..open].trim().to_string();
            let args = decl[open + 1..close]
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| {
                    let (_, ty) = a.split_once(':').ok_or_else(|| format!("`{name}`: `{a}` has no type"))?;
                    rust_type(ty)
                })
                .collect::<Result<_, _>>()?;
            let result = match decl[close + 1..].trim().strip_prefix("->") {
                Some(ty) => rust_type(ty)?,
                None => void(),
            };
            if out.insert(name.clone(), Signature { args, result }).is_some() {
                return Err(format!("`{name}` declared twice"));
            }
        }
        Ok(out)
    }

    /// The names of the `esper_*` functions C++ source defines (at the start of a line).
    fn cpp_definitions(text: &str) -> Vec<String> {
        c_code(text)
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()))
            .filter_map(|l| {
                let at = l.find("esper_")?;
                let name: String = l[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                l[at + name.len()..].starts_with('(').then_some(name)
            })
            .collect()
    }

    /// What differs between the header's functions and the Rust declarations.
    fn differences(header: &str, rust: &str) -> Result<Vec<String>, String> {
        let (c, r) = (header_functions(header)?, rust_functions(rust)?);
        let mut out = Vec::new();
        for (name, cs) in &c {
            match r.get(name) {
                None => out.push(format!("{name}: in the header, not in src/sys.rs")),
                Some(rs) if rs.args.len() != cs.args.len() => out.push(format!(
                    "{name}: {} arguments in the header, {} in src/sys.rs",
                    cs.args.len(),
                    rs.args.len()
                )),
                Some(rs) => {
                    for (i, (ca, ra)) in cs.args.iter().zip(&rs.args).enumerate() {
                        if ca != ra {
                            out.push(format!("{name}: argument {i} is {ca:?} in the header, {ra:?} in src/sys.rs"));
                        }
                    }
                    if cs.result != rs.result {
                        out.push(format!(
                            "{name}: returns {:?} in the header, {:?} in src/sys.rs",
                            cs.result, rs.result
                        ));
                    }
                }
            }
        }
        out.extend(r.keys().filter(|n| !c.contains_key(*n)).map(|n| format!("{n}: in src/sys.rs, not in the header")));
        Ok(out)
    }

    fn read(path: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
    }

    const HEADER: &str = include_str!("../include/esper_shim.h");

    /// This file's declarations (not its tests, whose strings would read as more).
    fn rust() -> &'static str {
        include_str!("sys.rs").split("\n#[cfg(test)]").next().unwrap()
    }

    #[test]
    fn the_rust_declarations_are_the_header() {
        let found = differences(HEADER, rust()).unwrap();
        assert!(found.is_empty(), "include/esper_shim.h and src/sys.rs differ:\n{}", found.join("\n"));
        assert!(header_functions(HEADER).unwrap().len() >= 29, "the parser sees every declaration");
    }

    #[test]
    fn every_function_the_cpp_files_define_is_in_the_header() {
        let declared = header_functions(HEADER).unwrap();
        let mut defined = Vec::new();
        for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("cpp")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "cpp") {
                let text = read(&format!("cpp/{}", path.file_name().unwrap().to_string_lossy()));
                let names = cpp_definitions(&text);
                if !names.is_empty() {
                    assert!(text.contains("#include \"esper_shim.h\""), "{} defines {names:?}", path.display());
                }
                defined.extend(names);
            }
        }
        defined.sort();
        let declared: Vec<String> = declared.into_keys().collect();
        assert_eq!(defined, declared, "defined in cpp/ vs declared in include/esper_shim.h");
    }

    #[test]
    fn the_check_fails_on_a_function_on_one_side_or_a_different_signature() {
        // One function more on either side.
        let extra_c = format!("{HEADER}\nint esper_new_op(const EsperTensor *x, char *err, size_t len);\n");
        let found = differences(&extra_c, rust()).unwrap();
        assert_eq!(found, ["esper_new_op: in the header, not in src/sys.rs"]);
        let extra_rust = rust().replacen(
            "extern \"C\" {",
            "extern \"C\" {\n    pub fn esper_new_op(x: *const C_tensor) -> c_int;",
            1,
        );
        assert_eq!(differences(HEADER, &extra_rust).unwrap(), ["esper_new_op: in src/sys.rs, not in the header"]);
        // An argument more, a pointer's constness, an integer for a pointer, the result.
        let arity = rust().replacen(
            "pub fn esper_set_cudnn_tf32(on: c_int)",
            "pub fn esper_set_cudnn_tf32(on: c_int, x: c_int)",
            1,
        );
        assert_eq!(
            differences(HEADER, &arity).unwrap(),
            ["esper_set_cudnn_tf32: 1 arguments in the header, 2 in src/sys.rs"]
        );
        let constness = HEADER.replacen(
            "int esper_foreach_zero(EsperTensor *const *ts",
            "int esper_foreach_zero(EsperTensor **ts",
            1,
        );
        let found = differences(&constness, rust()).unwrap();
        assert!(found.len() == 1 && found[0].starts_with("esper_foreach_zero: argument 0"), "{found:?}");
        let kind = HEADER.replacen("int esper_set_cudnn_tf32(int on)", "int esper_set_cudnn_tf32(int *on)", 1);
        assert!(differences(&kind, rust()).unwrap()[0].starts_with("esper_set_cudnn_tf32: argument 0"));
        let result = HEADER.replacen("size_t esper_rtc_kernel_names", "int esper_rtc_kernel_names", 1);
        assert!(differences(&result, rust()).unwrap()[0].starts_with("esper_rtc_kernel_names: returns"));
    }

    #[test]
    fn the_parsers_read_this_style() {
        let c =
            header_functions("/* x */ int esper_a(const EsperTensor *const *t, size_t n); // y\nvoid esper_b(void);")
                .unwrap();
        let t = |pointers: Vec<bool>, base: &str| Type { pointers, base: base.into() };
        assert_eq!(c["esper_a"].args, [t(vec![true, true], "EsperTensor"), t(vec![], "size_t")]);
        assert_eq!(c["esper_b"], Signature { args: vec![], result: void() });
        let r =
            rust_functions("extern \"C\" {\n    fn esper_a(t: *const *const C_tensor, n: usize) -> c_int;\n}").unwrap();
        assert_eq!(r["esper_a"].args, c["esper_a"].args);
        assert_eq!(cpp_definitions("int esper_x(int a) {\n    esper_y(1);\n// int esper_z(\n"), ["esper_x"]);
    }
}
