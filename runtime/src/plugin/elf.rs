//! The headers of a library file, checked before the dynamic loader sees it.
//!
//! `dlopen` trusts a file's program headers: glibc maps every `PT_LOAD` segment at the
//! file range it names and touches it, so a library cut short (an interrupted copy, a
//! partial download, a full disk) whose segments reach past the end of the file kills
//! the process with SIGBUS inside `dlopen`. [`check`] reads the ELF header, the program
//! headers and the extent of the section header table (through the `object` crate) and
//! refuses a file that is not a 64-bit shared library of this machine's architecture and
//! byte order, whose loadable or dynamic segments do not fit in the file, that has no
//! dynamic section, or whose section header table (written last by linkers) is cut off.
//! Only a [`Vetted`] file, made by [`Vetted::new`] from the bytes that passed, is handed
//! to the loader.

use object::{
    elf,
    read::elf::{FileHeader, ProgramHeader},
    Endianness, ReadRef,
};
use std::{fmt, path::Path};

/// Bytes of the ELF identification (`e_ident`), and where in it the class and the byte
/// order are (the ELF specification's `EI_CLASS` and `EI_DATA`).
const IDENT_LEN: u64 = std::mem::size_of::<elf::Ident>() as u64;
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;

/// What makes a file no loadable shared library for this runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfProblem {
    /// Zero bytes.
    Empty,
    /// Shorter than the ELF header.
    TooShort { len: u64, needed: u64 },
    /// Its first bytes are not `\x7fELF`.
    NotElf { magic: Vec<u8> },
    /// Another ELF class (`e_ident[EI_CLASS]`: 1 is 32-bit, 2 is 64-bit).
    Class { found: u8, expected: u8 },
    /// Another byte order (`e_ident[EI_DATA]`: 1 is little-endian, 2 is big-endian).
    ByteOrder { found: u8, expected: u8 },
    /// A header `object` cannot read (an unknown ELF version, ...).
    Header { cause: String },
    /// Built for another architecture (`e_machine`).
    Machine { found: u16, expected: u16 },
    /// Not a shared object (`e_type` is not `ET_DYN`).
    NotShared { e_type: u16 },
    /// The program header table does not fit in the file.
    ProgramHeadersPastEnd { end: u64, len: u64 },
    /// No `PT_LOAD` segment: nothing to map.
    NoLoadSegment,
    /// A segment's file range does not fit in the file.
    SegmentPastEnd { segment: Segment, index: usize, start: u64, end: u64, len: u64 },
    /// No `PT_DYNAMIC` segment: not a dynamic library.
    NoDynamic,
    /// The section header table does not fit in the file.
    SectionHeadersPastEnd { start: u64, end: u64, len: u64 },
}

/// The kinds of segment whose file range is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Load,
    Dynamic,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segment::Load => "loadable segment (PT_LOAD)",
            Segment::Dynamic => "dynamic segment (PT_DYNAMIC)",
        })
    }
}

/// What a file cut short is likely to be.
const TRUNCATED: &str = "the file is truncated (an interrupted copy or download, or a full disk?)";

impl fmt::Display for ElfProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfProblem::Empty => write!(f, "the file is empty (0 bytes; an interrupted copy or a full disk?)"),
            ElfProblem::TooShort { len, needed } => {
                write!(f, "the file is {len} bytes, too short for an ELF header ({needed} bytes): {TRUNCATED}")
            }
            ElfProblem::NotElf { magic } => {
                write!(f, "it is not an ELF file (it starts with {}, not \\x7fELF)", escaped(magic))
            }
            ElfProblem::Class { found, expected } => {
                write!(f, "it is a {} ELF file; this runtime loads {} libraries", class(*found), class(*expected))
            }
            ElfProblem::ByteOrder { found, expected } => {
                write!(f, "it is a {} ELF file; this runtime is {}", byte_order(*found), byte_order(*expected))
            }
            ElfProblem::Header { cause } => write!(f, "its ELF header cannot be read: {cause}"),
            ElfProblem::Machine { found, expected } => write!(
                f,
                "it is built for {} (e_machine {found}), not for this runtime's {} (e_machine {expected})",
                machine(*found),
                machine(*expected)
            ),
            ElfProblem::NotShared { e_type } => {
                write!(f, "it is an ELF {}, not a shared library (ET_DYN)", file_type(*e_type))
            }
            ElfProblem::ProgramHeadersPastEnd { end, len } => {
                write!(
                    f,
                    "its program header table ends at byte {end}, past the end of the file ({len} bytes): {TRUNCATED}"
                )
            }
            ElfProblem::NoLoadSegment => write!(f, "it has no loadable segment (PT_LOAD)"),
            ElfProblem::SegmentPastEnd { segment, index, start, end, len } => write!(
                f,
                "its {segment} #{index} spans bytes {start}..{end}, past the end of the file ({len} bytes): {TRUNCATED}"
            ),
            ElfProblem::NoDynamic => write!(f, "it has no dynamic section (PT_DYNAMIC): it is no shared library"),
            ElfProblem::SectionHeadersPastEnd { start, end, len } => write!(
                f,
                "its section header table spans bytes {start}..{end}, past the end of the file ({len} bytes): \
                 {TRUNCATED}"
            ),
        }
    }
}

impl std::error::Error for ElfProblem {}

/// A library file whose bytes passed [`check`]: the only thing the loader opens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vetted<'a> {
    file: &'a Path,
}

impl<'a> Vetted<'a> {
    /// `file`, when `data` (its bytes, or a reader of them) passes [`check`].
    pub(crate) fn new<'d, R: ReadRef<'d>>(file: &'a Path, data: R) -> Result<Self, ElfProblem> {
        check(data)?;
        Ok(Self { file })
    }

    /// The file to hand to the dynamic loader.
    pub(crate) fn file(&self) -> &'a Path {
        self.file
    }
}

/// The ELF class of this runtime's libraries.
const fn native_class() -> u8 {
    if cfg!(target_pointer_width = "64") {
        elf::ELFCLASS64.0
    } else {
        elf::ELFCLASS32.0
    }
}

/// The ELF byte order of this runtime's libraries.
const fn native_byte_order() -> u8 {
    if cfg!(target_endian = "little") {
        elf::ELFDATA2LSB.0
    } else {
        elf::ELFDATA2MSB.0
    }
}

/// The ELF machine of this runtime's libraries; `None` on an architecture not listed
/// (then any machine passes).
const fn native_machine() -> Option<u16> {
    if cfg!(target_arch = "x86_64") {
        Some(elf::EM_X86_64.0)
    } else if cfg!(target_arch = "aarch64") {
        Some(elf::EM_AARCH64.0)
    } else if cfg!(target_arch = "riscv64") {
        Some(elf::EM_RISCV.0)
    } else if cfg!(target_arch = "powerpc64") {
        Some(elf::EM_PPC64.0)
    } else if cfg!(target_arch = "s390x") {
        Some(elf::EM_S390.0)
    } else {
        None
    }
}

/// Checks that `data` (a library file's bytes, or a reader of them) is a shared library
/// the dynamic loader can map without reading past the end of the file (module docs).
pub fn check<'d, R: ReadRef<'d>>(data: R) -> Result<(), ElfProblem> {
    let header_problem = |cause: String| ElfProblem::Header { cause };
    let len = data.len().map_err(|()| header_problem("cannot read the file's length".into()))?;
    if len == 0 {
        return Err(ElfProblem::Empty);
    }
    let magic_len = elf::ELFMAG.len().min(len as usize);
    let magic =
        data.read_bytes_at(0, magic_len as u64).map_err(|()| header_problem("cannot read its first bytes".into()))?;
    if magic != &elf::ELFMAG[..magic_len] {
        return Err(ElfProblem::NotElf { magic: magic.to_vec() });
    }
    if len < IDENT_LEN {
        return Err(ElfProblem::TooShort { len, needed: IDENT_LEN });
    }
    let ident =
        data.read_bytes_at(0, IDENT_LEN).map_err(|()| header_problem("cannot read its identification bytes".into()))?;
    if ident[..elf::ELFMAG.len()] != elf::ELFMAG {
        return Err(ElfProblem::NotElf { magic: ident[..elf::ELFMAG.len()].to_vec() });
    }
    let (class, byte_order) = (ident[EI_CLASS], ident[EI_DATA]);
    if class != native_class() {
        return Err(ElfProblem::Class { found: class, expected: native_class() });
    }
    if byte_order != native_byte_order() {
        return Err(ElfProblem::ByteOrder { found: byte_order, expected: native_byte_order() });
    }
    if class == elf::ELFCLASS64.0 {
        check_headers::<elf::FileHeader64<Endianness>, R>(data, len)
    } else {
        check_headers::<elf::FileHeader32<Endianness>, R>(data, len)
    }
}

/// The checks past the identification, for the file's class `Elf`.
fn check_headers<'d, Elf, R>(data: R, len: u64) -> Result<(), ElfProblem>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'d>,
{
    let needed = std::mem::size_of::<Elf>() as u64;
    if len < needed {
        return Err(ElfProblem::TooShort { len, needed });
    }
    let header = Elf::parse(data).map_err(|e| ElfProblem::Header { cause: e.to_string() })?;
    let endian = header.endian().map_err(|e| ElfProblem::Header { cause: e.to_string() })?;
    let machine = header.e_machine(endian).0;
    if let Some(expected) = native_machine().filter(|&m| m != machine) {
        return Err(ElfProblem::Machine { found: machine, expected });
    }
    let e_type = header.e_type(endian);
    if e_type != elf::ET_DYN {
        return Err(ElfProblem::NotShared { e_type: e_type.0 });
    }
    let phoff: u64 = header.e_phoff(endian).into();
    let table_end = u64::from(header.e_phnum(endian))
        .checked_mul(u64::from(header.e_phentsize(endian)))
        .and_then(|size| size.checked_add(phoff))
        .unwrap_or(u64::MAX);
    if table_end > len {
        return Err(ElfProblem::ProgramHeadersPastEnd { end: table_end, len });
    }
    let segments = header.program_headers(endian, data).map_err(|e| ElfProblem::Header { cause: e.to_string() })?;
    let (mut loads, mut dynamic) = (0, false);
    for (index, segment) in segments.iter().enumerate() {
        let kind = match segment.p_type(endian) {
            elf::PT_LOAD => Segment::Load,
            elf::PT_DYNAMIC => Segment::Dynamic,
            _ => continue,
        };
        let (start, size) = segment.file_range(endian);
        let end = start.saturating_add(size);
        if end > len {
            return Err(ElfProblem::SegmentPastEnd { segment: kind, index, start, end, len });
        }
        match kind {
            Segment::Load => loads += 1,
            Segment::Dynamic => dynamic = true,
        }
    }
    if loads == 0 {
        return Err(ElfProblem::NoLoadSegment);
    }
    if !dynamic {
        return Err(ElfProblem::NoDynamic);
    }
    check_section_table(header, endian, len)
}

/// The section header table, when there is one, fits in the file. The loader never reads
/// it, but linkers write it last: a file cut anywhere after its segments loses it.
fn check_section_table<Elf: FileHeader<Endian = Endianness>>(
    header: &Elf,
    endian: Endianness,
    len: u64,
) -> Result<(), ElfProblem> {
    let start: u64 = header.e_shoff(endian).into();
    if start == 0 {
        return Ok(());
    }
    // e_shnum 0 with a table: the count is in entry 0, which must be there.
    let entries = u64::from(header.e_shnum(endian)).max(1);
    let end = entries
        .checked_mul(u64::from(header.e_shentsize(endian)))
        .and_then(|s| s.checked_add(start))
        .unwrap_or(u64::MAX);
    if end > len {
        return Err(ElfProblem::SectionHeadersPastEnd { start, end, len });
    }
    Ok(())
}

/// `\x7fELF`-style text of a few bytes.
fn escaped(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect()
}

fn class(c: u8) -> String {
    match elf::FileClass(c) {
        elf::ELFCLASS32 => "32-bit".into(),
        elf::ELFCLASS64 => "64-bit".into(),
        other => format!("class-{}", other.0),
    }
}

fn byte_order(d: u8) -> String {
    match elf::DataEncoding(d) {
        elf::ELFDATA2LSB => "little-endian".into(),
        elf::ELFDATA2MSB => "big-endian".into(),
        other => format!("byte-order-{}", other.0),
    }
}

fn machine(m: u16) -> &'static str {
    match elf::Machine(m) {
        elf::EM_X86_64 => "x86_64",
        elf::EM_AARCH64 => "aarch64",
        elf::EM_386 => "x86 (32-bit)",
        elf::EM_ARM => "arm (32-bit)",
        elf::EM_RISCV => "riscv",
        elf::EM_PPC64 => "powerpc64",
        elf::EM_S390 => "s390x",
        _ => "another architecture",
    }
}

fn file_type(t: u16) -> String {
    match elf::FileType(t) {
        elf::ET_REL => "object file (ET_REL)".into(),
        elf::ET_EXEC => "executable (ET_EXEC)".into(),
        elf::ET_CORE => "core dump (ET_CORE)".into(),
        other => format!("file of type {}", other.0),
    }
}

#[cfg(all(test, target_os = "linux", target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// A real shared library this test process has loaded, as its linker wrote it (its
    /// section header table last): the C library.
    fn real_library() -> Vec<u8> {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        let path = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.ends_with("/libc.so.6") || (p.contains("/libc-") && p.ends_with(".so")))
            .expect("the C library is loaded");
        let bytes = std::fs::read(path).expect("read the C library");
        assert!(bytes.len() > (1 << 20) + 1, "premise: {path} is over 1 MiB ({} bytes)", bytes.len());
        bytes
    }

    #[test]
    fn a_real_library_passes() {
        assert_eq!(check(&real_library()[..]), Ok(()));
    }

    #[test]
    fn a_library_cut_anywhere_is_refused_as_truncated() {
        let bytes = real_library();
        let len = bytes.len();
        for cut in [4096, 100_000, 1 << 20, len - 1] {
            let e = check(&bytes[..cut]).expect_err(&format!("cut at {cut} of {len}"));
            let past_end = matches!(
                e,
                ElfProblem::SegmentPastEnd { len, .. }
                    | ElfProblem::SectionHeadersPastEnd { len, .. }
                    | ElfProblem::ProgramHeadersPastEnd { len, .. } if len == cut as u64
            );
            assert!(past_end, "cut at {cut}: {e:?}");
            assert!(e.to_string().contains("the file is truncated"), "{e}");
        }
        // Cut before the last loadable segment: named as such, with its range.
        let e = check(&bytes[..100_000]).unwrap_err();
        assert!(matches!(e, ElfProblem::SegmentPastEnd { segment: Segment::Load, .. }), "{e:?}");
        assert!(e.to_string().contains("past the end of the file (100000 bytes)"), "{e}");
    }

    #[test]
    fn empty_short_and_foreign_files_are_refused() {
        assert_eq!(check(&[][..]), Err(ElfProblem::Empty));
        assert_eq!(check(&b"\x7fELF"[..]), Err(ElfProblem::TooShort { len: 4, needed: 16 }));
        assert_eq!(check(&b"\x7fE"[..]), Err(ElfProblem::TooShort { len: 2, needed: 16 }));
        assert_eq!(check(&b"MZ"[..]), Err(ElfProblem::NotElf { magic: b"MZ".to_vec() }));
        let e = check(&b"#!/bin/sh\necho not a library\n"[..]).unwrap_err();
        assert_eq!(e, ElfProblem::NotElf { magic: b"#!/b".to_vec() });
        assert!(e.to_string().contains("not an ELF file (it starts with #!/b"), "{e}");
        let head = &real_library()[..40];
        assert!(matches!(check(head), Err(ElfProblem::TooShort { len: 40, needed: 64 })));
    }

    #[test]
    fn another_architecture_class_byte_order_or_type_is_refused() {
        let bytes = real_library();
        let patched = |at: usize, value: &[u8]| {
            let mut b = bytes.clone();
            b[at..at + value.len()].copy_from_slice(value);
            b
        };
        let aarch64 = patched(18, &elf::EM_AARCH64.0.to_le_bytes());
        let e = check(&aarch64[..]).unwrap_err();
        assert_eq!(e, ElfProblem::Machine { found: elf::EM_AARCH64.0, expected: elf::EM_X86_64.0 });
        assert!(e.to_string().contains("built for aarch64") && e.to_string().contains("x86_64"), "{e}");
        let e = check(&patched(EI_CLASS, &[elf::ELFCLASS32.0])[..]).unwrap_err();
        assert!(e.to_string().contains("a 32-bit ELF file; this runtime loads 64-bit libraries"), "{e}");
        let e = check(&patched(EI_DATA, &[elf::ELFDATA2MSB.0])[..]).unwrap_err();
        assert_eq!(e, ElfProblem::ByteOrder { found: elf::ELFDATA2MSB.0, expected: elf::ELFDATA2LSB.0 });
        let e = check(&patched(16, &elf::ET_EXEC.0.to_le_bytes())[..]).unwrap_err();
        assert!(e.to_string().contains("an ELF executable (ET_EXEC), not a shared library"), "{e}");
    }

    #[test]
    fn a_library_without_a_dynamic_segment_is_refused() {
        let mut bytes = real_library();
        let (phoff, phnum) = (u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize, bytes[56] as usize);
        for i in 0..phnum {
            let at = phoff + i * 56;
            if u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == elf::PT_DYNAMIC.0 {
                bytes[at..at + 4].copy_from_slice(&elf::PT_NOTE.0.to_le_bytes());
            }
        }
        assert_eq!(check(&bytes[..]), Err(ElfProblem::NoDynamic));
    }

    #[test]
    fn a_file_read_through_a_cache_is_checked_the_same() {
        let dir = std::env::temp_dir().join(format!("esper-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("libcut.so");
        std::fs::write(&path, &real_library()[..100_000]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let cache = object::ReadCache::new(&file);
        assert!(matches!(check(&cache), Err(ElfProblem::SegmentPastEnd { len: 100_000, .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
