//! What a path named as a plugin library is, before anything reads it as one: a regular
//! file, or a typed reason why not (a directory, a symbolic link loop, a FIFO or device,
//! unreadable, or bytes no dynamic loader should see, [`ElfProblem`]).

use super::{elf::ElfProblem, LoadError};
use std::{
    fmt,
    path::{Path, PathBuf},
};

/// Why a file named as a plugin library cannot be opened as one (shown inside
/// [`LoadError::BadFile`]'s sentence, the system's error included).
#[derive(Debug)]
pub enum FileProblem {
    /// A directory (named like a library, or given where one library is expected).
    Directory,
    /// A symbolic link whose chain of links never reaches a file.
    SymlinkLoop,
    /// Not a regular file (a FIFO, socket or device: reading it may never end).
    NotRegular { kind: &'static str },
    /// The system refused to read it.
    Unreadable(std::io::Error),
    /// Its bytes are no shared library the loader can map safely.
    Elf(ElfProblem),
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileProblem::Directory => f.write_str("it is a directory, not a library file"),
            FileProblem::SymlinkLoop => f.write_str("it is a symbolic link loop (its links never reach a file)"),
            FileProblem::NotRegular { kind } => write!(f, "it is a {kind}, not a regular file"),
            FileProblem::Unreadable(cause) => write!(f, "it cannot be read: {cause}"),
            FileProblem::Elf(problem) => problem.fmt(f),
        }
    }
}

impl From<ElfProblem> for FileProblem {
    fn from(problem: ElfProblem) -> Self {
        FileProblem::Elf(problem)
    }
}

/// The canonical path of the regular file `path` names (through any symbolic links), or
/// why there is none: [`LoadError::NotFound`] when nothing is there,
/// [`LoadError::BadFile`] otherwise.
pub(crate) fn regular_file(path: &Path) -> Result<PathBuf, LoadError> {
    let refuse = |problem| LoadError::BadFile { path: path.to_path_buf(), problem };
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LoadError::NotFound { path: path.to_path_buf() })
        }
        Err(e) if is_symlink_loop(&e) => return Err(refuse(FileProblem::SymlinkLoop)),
        Err(e) => return Err(refuse(FileProblem::Unreadable(e))),
    };
    if metadata.is_dir() {
        return Err(refuse(FileProblem::Directory));
    }
    if !metadata.is_file() {
        return Err(refuse(FileProblem::NotRegular { kind: special_kind(&metadata) }));
    }
    path.canonicalize().map_err(|e| refuse(FileProblem::Unreadable(e)))
}

#[cfg(unix)]
fn is_symlink_loop(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(not(unix))]
fn is_symlink_loop(_: &std::io::Error) -> bool {
    false
}

#[cfg(unix)]
fn special_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::Metadata) -> &'static str {
    "special file"
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn problem(path: &Path) -> FileProblem {
        match regular_file(path) {
            Err(LoadError::BadFile { problem, path: named }) => {
                assert_eq!(named, path);
                problem
            }
            other => panic!("{}: expected a refused file, got {other:?}", path.display()),
        }
    }

    #[test]
    fn directories_links_and_special_files_are_named_as_such() {
        let dir = std::env::temp_dir().join(format!("esper-library-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("libdir.so")).unwrap();
        assert!(matches!(problem(&dir.join("libdir.so")), FileProblem::Directory));

        let (a, b) = (dir.join("liba.so"), dir.join("libb.so"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        assert!(matches!(problem(&a), FileProblem::SymlinkLoop));
        let e = regular_file(&a).unwrap_err().to_string();
        assert!(e.contains("liba.so") && e.contains("symbolic link loop"), "{e}");

        assert!(matches!(problem(Path::new("/dev/null")), FileProblem::NotRegular { kind: "character device" }));

        let missing = dir.join("libmissing.so");
        assert!(matches!(regular_file(&missing), Err(LoadError::NotFound { .. })));
        let link = dir.join("liblink.so");
        std::fs::write(dir.join("libreal.so"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.join("libreal.so"), &link).unwrap();
        assert_eq!(regular_file(&link).unwrap(), dir.join("libreal.so").canonicalize().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
