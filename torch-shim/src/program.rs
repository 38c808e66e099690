//! The runtime-compiled kernels' NVRTC program, assembled from the files of `cuda/`:
//! `build.rs` embeds it into the shim (`OUT_DIR/kernels_src.h`), and the tests check it.
//!
//! The program is one text: each file in [`FILES`] order after a `#line` directive that
//! names it (NVRTC's messages then point into the file), with the `#include` lines of the
//! program's own headers blanked (those come earlier in the program; a `.cu` file keeps
//! them so that it is valid CUDA on its own).

/// The program's files, in order: the shared headers, then one file per kernel family.
pub const FILES: &[&str] =
    &["common.cuh", "mma.cuh", "pool.cu", "nchw.cu", "batchnorm.cu", "optim.cu", "conv.cu", "wgrad.cu"];

/// The program of `files` (name and text, in [`FILES`] order). Err where a file includes
/// one of the program's headers that does not come before it.
pub fn assemble(files: &[(&str, &str)]) -> Result<String, String> {
    let mut program = String::new();
    for (i, (name, text)) in files.iter().enumerate() {
        program.push_str(&format!("#line 1 \"torch-shim/cuda/{name}\"\n"));
        for line in text.lines() {
            if let Some(header) = local_include(line) {
                if !files[..i].iter().any(|(earlier, _)| *earlier == header) {
                    return Err(format!(
                        "cuda/{name} includes \"{header}\", which is not one of the program's files before it \
                         (torch-shim/src/program.rs: FILES)"
                    ));
                }
            } else {
                program.push_str(line);
            }
            program.push('\n');
        }
    }
    Ok(program)
}

/// The header named by an `#include "NAME"` line (a file of `cuda/`), if `line` is one.
fn local_include(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start().strip_prefix("include")?.trim();
    rest.strip_prefix('"')?.strip_suffix('"')
}

/// 64-bit FNV-1a of `bytes`: the program's part of the on-disk cubin cache's key (stable
/// across builds and runs; `cpp/rtc.cpp`'s `cache_file` adds the architecture and the
/// CUDA version).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `text` as a C++ string literal: one quoted piece per line (adjacent literals join),
/// with `\`, `"`, `?` (no trigraphs) and control characters escaped.
pub fn cpp_literal(text: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        out.push('"');
        for c in line.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '?' => out.push_str("\\?"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\{:03o}", c as u32)),
                c => out.push(c),
            }
        }
        out.push_str("\"\n");
    }
    if out.is_empty() {
        out.push_str("\"\"\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The files of `cuda/` now, in program order.
    fn cuda_files() -> Vec<(&'static str, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
        FILES.iter().map(|name| (*name, std::fs::read_to_string(dir.join(name)).unwrap())).collect()
    }

    fn program_of(files: &[(&str, String)]) -> String {
        let borrowed: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        assemble(&borrowed).unwrap()
    }

    /// The program build.rs embedded, and its hash (the cache key's part).
    const BUILT: &str = include_str!(concat!(env!("OUT_DIR"), "/esper_rtc.cu"));
    const BUILT_HASH: &str = env!("ESPER_RTC_PROGRAM_HASH");

    #[test]
    fn the_embedded_program_is_the_cuda_folder_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
        let mut on_disk: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|f| f.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "every file of cuda/ is in FILES and the other way round");
        let files = cuda_files();
        assert_eq!(program_of(&files), BUILT, "build.rs embeds the program of the files as they are");
        assert_eq!(BUILT_HASH, format!("{:016x}", fnv1a(BUILT.as_bytes())));
        for (name, text) in &files {
            for line in text.lines().filter(|l| local_include(l).is_none()) {
                assert!(BUILT.contains(line), "cuda/{name}: {line:?} is not in the program");
            }
        }
    }

    #[test]
    fn a_change_to_any_cuda_file_changes_the_program_and_its_cache_key() {
        let files = cuda_files();
        for i in 0..files.len() {
            for edit in [|t: &str| t.replacen(' ', "  ", 1), |t: &str| format!("{t}// more\n")] {
                let mut changed = files.clone();
                changed[i].1 = edit(&changed[i].1);
                let program = program_of(&changed);
                assert_ne!(program, BUILT, "{}", changed[i].0);
                assert_ne!(format!("{:016x}", fnv1a(program.as_bytes())), BUILT_HASH, "{}", changed[i].0);
            }
        }
    }

    #[test]
    fn includes_are_blanked_in_place_and_must_come_first() {
        let program =
            assemble(&[("a.cuh", "int a;\n"), ("b.cu", "// b\n#include \"a.cuh\"\n#include <x.h>\nint b;")]).unwrap();
        assert_eq!(
            program,
            "#line 1 \"torch-shim/cuda/a.cuh\"\nint a;\n#line 1 \"torch-shim/cuda/b.cu\"\n// b\n\n#include <x.h>\nint b;\n"
        );
        let e = assemble(&[("b.cu", "#include \"a.cuh\"\n"), ("a.cuh", "")]).unwrap_err();
        assert!(e.contains("cuda/b.cu includes \"a.cuh\""), "{e}");
    }

    #[test]
    fn a_cpp_literal_reads_back_as_the_text() {
        assert_eq!(cpp_literal("a \"b\" \\ c??=\n\td\n"), "\"a \\\"b\\\" \\\\ c\\?\\?=\\n\"\n\"\\td\\n\"\n");
        assert_eq!(cpp_literal(""), "\"\"\n");
        assert_eq!(cpp_literal("\x01"), "\"\\001\"\n");
    }
}
