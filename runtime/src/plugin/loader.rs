//! Loading one plugin library: open it, check its ABI version and layout (abi_stable),
//! check the handshake (ABI version by the compatibility rule, libtorch and tch by
//! equality), list its blueprints.
//!
//! Before the dynamic loader sees a file, its ELF headers are checked ([`super::elf`]):
//! `dlopen` of a library cut short crashes the process. Only a [`Vetted`] file is opened.
//!
//! A pinned load ([`LoadedPlugin::load_pinned`]) hashes, checks and opens the *same
//! bytes*: the file is read once, its sha256 compared with the pin, and exactly those
//! bytes written to a private copy (a fresh folder of mode 0700 under the temp folder,
//! the file 0600, both created exclusively), which is what the dynamic loader opens; the
//! copy is unlinked right after (the mapping stays valid). Replacing the original file
//! between the check and the load therefore changes nothing. Messages name the original
//! path. An unpinned load reads only the headers it checks, from the file it then
//! opens by path: a file rewritten in place between the two is not covered (pin it).

use super::{elf::Vetted, library_file::regular_file, FileProblem, LoadError, OptionsSchema, PluginKind};
use abi_stable::library::{lib_header_from_path, LibraryError};
use esper_plugin_api::abi::{
    init_root_module, AbiVersion, BlueprintDescriptor, Handshake, Mismatch, PluginRootRef, ABI_VERSION,
};
use esper_portable_runtime::{PortableBlueprint, PortableLibrary, PortableLoadError};
use sha2::{Digest, Sha256};
use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// A loaded, checked plugin library. Libraries are never unloaded (seeds created from
/// them may live as long as the process).
pub struct LoadedPlugin {
    path: PathBuf,
    /// The pin the library was loaded under (lowercase hex), if any.
    sha256: Option<String>,
    blueprints: Vec<BlueprintDescriptor>,
    library: Library,
}

/// The library behind a [`LoadedPlugin`], by kind.
pub(crate) enum Library {
    /// An abi_stable root module and the handshake it answered.
    Native { root: PluginRootRef, handshake: Handshake },
    /// A portable library (its entry point answered, its description checked).
    Portable(PortableLibrary),
}

impl LoadedPlugin {
    /// Opens and checks the plugin library at `path`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let path = regular_file(path)?;
        let refuse = |problem: FileProblem| LoadError::BadFile { path: path.clone(), problem };
        let file = std::fs::File::open(&path).map_err(|e| refuse(FileProblem::Unreadable(e)))?;
        let headers = object::ReadCache::new(&file);
        let vetted = Vetted::new(&path, &headers).map_err(|e| refuse(e.into()))?;
        Self::open(vetted, path.clone(), None)
    }

    /// Loads the library at `path` only if its bytes hash to `expected_sha256` (hex, any
    /// case), and loads exactly the bytes hashed (see the module docs).
    pub fn load_pinned(path: &Path, expected_sha256: &str) -> Result<Self, LoadError> {
        let original = regular_file(path)?;
        let pinned = |step| {
            let path = original.clone();
            move |source| LoadError::PinnedIo { path, step, source }
        };
        let bytes = std::fs::read(&original).map_err(pinned("cannot read it"))?;
        let actual = sha256_hex(&bytes);
        let expected = expected_sha256.trim().to_ascii_lowercase();
        if actual != expected {
            return Err(LoadError::PinMismatch { path: original, expected: expected_sha256.trim().into(), actual });
        }
        let file_name = original.file_name().map_or_else(|| "plugin".into(), |n| n.to_os_string());
        let copy = PrivateCopy::write(&bytes, &file_name).map_err(pinned("cannot write a private copy to load"))?;
        let vetted = Vetted::new(copy.path(), &bytes[..])
            .map_err(|e| LoadError::BadFile { path: original.clone(), problem: e.into() })?;
        let loaded = Self::open(vetted, original, Some(actual));
        drop(copy); // unlinked: the loader keeps its mapping
        loaded
    }

    /// Opens the checked library file `vetted`, naming it `path` in messages and
    /// afterwards: a portable plugin when it exports the portable entry point, else a
    /// native one.
    fn open(vetted: Vetted<'_>, path: PathBuf, sha256: Option<String>) -> Result<Self, LoadError> {
        let file = vetted.file();
        if let Some(portable) = PortableLibrary::open(file) {
            let library = portable.map_err(|e| match e {
                PortableLoadError::Version(m) => LoadError::VersionMismatch { path: path.clone(), mismatches: vec![m] },
                PortableLoadError::Invalid(cause) => LoadError::PortableRefused { path: path.clone(), cause },
            })?;
            let blueprints = library.blueprints().iter().map(|b| b.descriptor().clone()).collect();
            return Ok(Self { path, sha256, blueprints, library: Library::Portable(library) });
        }
        let root = lib_header_from_path(file).and_then(init_root_module).map_err(|e| classify(&path, e, file))?;
        let handshake = super::text::sanitize_handshake((root.handshake())());
        let mismatches = handshake.mismatches();
        if !mismatches.is_empty() {
            return Err(LoadError::VersionMismatch { path, mismatches });
        }
        let blueprints = (root.blueprints())()
            .into_result()
            .map_err(|e| LoadError::Failed { key: "<list>".into(), path: path.clone(), message: e.to_string() })?
            .into_vec();
        Ok(Self { path, sha256, blueprints, library: Library::Native { root, handshake } })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The sha256 pin it was loaded under (lowercase hex), if it was pinned.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }
    /// The native handshake (plugin API, libtorch and tch versions); `None` for a
    /// portable library, which links no libtorch.
    pub fn handshake(&self) -> Option<&Handshake> {
        match &self.library {
            Library::Native { handshake, .. } => Some(handshake),
            Library::Portable(_) => None,
        }
    }
    /// The plugin crate's name and version, as the library states them.
    pub fn name_and_version(&self) -> (&str, &str) {
        match &self.library {
            Library::Native { handshake, .. } => (handshake.plugin_name.as_str(), handshake.plugin_version.as_str()),
            Library::Portable(p) => (p.name(), p.version()),
        }
    }
    /// How the library reaches libtorch.
    pub fn kind(&self) -> PluginKind {
        match &self.library {
            Library::Native { .. } => PluginKind::Native,
            Library::Portable(_) => PluginKind::Portable,
        }
    }
    /// The ABI version the library was built against.
    pub fn abi_version(&self) -> AbiVersion {
        match &self.library {
            Library::Native { handshake, .. } => handshake.abi,
            Library::Portable(p) => p.abi(),
        }
    }
    pub(crate) fn library(&self) -> &Library {
        &self.library
    }
    /// The portable blueprint `name` of this library (a portable library only).
    pub(crate) fn portable_blueprint(&self, name: &str) -> Option<&PortableBlueprint> {
        match &self.library {
            Library::Portable(p) => p.blueprints().iter().find(|b| b.descriptor().name.as_str() == name),
            Library::Native { .. } => None,
        }
    }

    /// The options schema of blueprint `blueprint` (its bare name) of this library.
    /// A library of ABI 1.0 has no `describe_options`: [`OptionsSchema::NotInAbi`].
    /// A failing, panicking or malformed answer is an error naming the blueprint.
    pub fn options_schema(&self, key: &str, blueprint: &str) -> Result<OptionsSchema, LoadError> {
        let root = match &self.library {
            Library::Native { root, .. } => root,
            Library::Portable(_) => {
                let text = self.portable_blueprint(blueprint).and_then(PortableBlueprint::options_schema);
                return text.map_or(Ok(OptionsSchema::NotPublished), |t| self.parse_schema(key, t));
            }
        };
        let Some(describe) = root.describe_options() else {
            return Ok(OptionsSchema::NotInAbi(self.abi_version()));
        };
        let answer =
            describe(blueprint.into()).into_result().map_err(|e| LoadError::from_plugin(key, &self.path, e))?;
        let Some(text) = answer.into_option() else { return Ok(OptionsSchema::NotPublished) };
        self.parse_schema(key, text.as_str())
    }

    fn parse_schema(&self, key: &str, text: &str) -> Result<OptionsSchema, LoadError> {
        serde_json::from_str(text).map(OptionsSchema::Schema).map_err(|e| LoadError::Failed {
            key: key.into(),
            path: self.path.clone(),
            message: format!("its options schema is not JSON ({e}): {text}"),
        })
    }
    pub fn blueprints(&self) -> &[BlueprintDescriptor] {
        &self.blueprints
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("kind", &self.kind())
            .field("abi", &self.abi_version())
            .field("blueprints", &self.blueprints)
            .finish_non_exhaustive()
    }
}

/// Lowercase hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A private copy of a library's bytes: a fresh folder only this user can enter, holding
/// one file only this user can read, both created exclusively (never an existing one).
/// Dropping it removes both.
struct PrivateCopy {
    dir: PathBuf,
    file: PathBuf,
}

impl PrivateCopy {
    fn write(bytes: &[u8], file_name: &std::ffi::OsStr) -> std::io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let mut attempt = 0;
        let dir = loop {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let dir = base.join(format!(
                "esper-plugin-{}-{}-{nanos:x}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match create_private_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        let copy = Self { file: dir.join(file_name), dir };
        let mut f = create_private_file(&copy.file)?;
        f.write_all(bytes)?;
        f.flush()?;
        Ok(copy)
    }

    fn path(&self) -> &Path {
        &self.file
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().create(dir)
}

#[cfg(unix)]
fn create_private_file(file: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file)
}

#[cfg(not(unix))]
fn create_private_file(file: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(file)
}

/// Maps a loader error for the library opened from `file` to one naming `path` (they
/// differ for a pinned load's private copy).
fn classify(path: &Path, e: LibraryError, file: &Path) -> LoadError {
    let original = path.to_path_buf();
    let mut error = classify_at(original.clone(), e);
    if file != path {
        if let LoadError::NotAPlugin { cause, .. } | LoadError::AbiMismatch { cause, .. } = &mut error {
            *cause = cause.replace(&*file.to_string_lossy(), &original.to_string_lossy());
        }
    }
    error
}

fn classify_at(path: PathBuf, e: LibraryError) -> LoadError {
    match e {
        LibraryError::OpenError { err, .. } => {
            LoadError::NotAPlugin { path, cause: format!("cannot open it as a shared library: {err}") }
        }
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin {
            path,
            cause: "it exports no abi_stable root module (was it built with `export_plugin!`?)".into(),
        },
        LibraryError::RootModule { err, .. } => {
            LoadError::NotAPlugin { path, cause: format!("its root module failed to initialise: {err}") }
        }
        // abi_stable compares the library's version (our ABI version) first: another major.
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => {
            let plugin = AbiVersion::new(actual_version.major, actual_version.minor);
            let runtime = AbiVersion::new(expected_version.major, expected_version.minor);
            let mismatch = ABI_VERSION.accepts(plugin).err().unwrap_or(Mismatch::AbiMajor { plugin, runtime });
            LoadError::VersionMismatch { path, mismatches: vec![mismatch] }
        }
        // AbiInstability, InvalidAbiHeader, InvalidCAbi, ...
        other => LoadError::AbiMismatch { path, cause: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_copy_is_private_and_goes_away() {
        let copy = PrivateCopy::write(b"bytes", std::ffi::OsStr::new("libx.so")).unwrap();
        assert_eq!(std::fs::read(copy.path()).unwrap(), b"bytes");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(copy.path()) & 0o077, 0, "file readable by others");
            assert_eq!(mode(&copy.dir) & 0o077, 0, "folder open to others");
        }
        let (file, dir) = (copy.file.clone(), copy.dir.clone());
        drop(copy);
        assert!(!file.exists() && !dir.exists());
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn abi_stables_version_refusal_names_both_abi_versions() {
        use abi_stable::sabi_types::VersionNumber;
        let e = classify_at(
            PathBuf::from("/p/libfuture.so"),
            LibraryError::IncompatibleVersionNumber {
                library_name: "esper_plugin",
                expected_version: VersionNumber { major: ABI_VERSION.major, minor: ABI_VERSION.minor, patch: 0 },
                actual_version: VersionNumber { major: 2, minor: 0, patch: 0 },
            },
        );
        assert!(matches!(e, LoadError::VersionMismatch { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("/p/libfuture.so") && text.contains("ABI 2.0"), "{text}");
        assert!(text.contains(&format!("runtime has ABI {ABI_VERSION}")), "{text}");
    }

    #[test]
    fn a_wrong_pin_loads_nothing_and_names_the_file_and_both_hashes() {
        let dir = std::env::temp_dir().join(format!("esper-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libnot_a_plugin.so");
        std::fs::write(&lib, b"not a library").unwrap();
        let e = LoadedPlugin::load_pinned(&lib, &"ab".repeat(32)).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, LoadError::PinMismatch { .. }), "{text}");
        assert!(text.contains("libnot_a_plugin.so") && text.contains(&"ab".repeat(32)), "{text}");
        assert!(text.contains(&sha256_hex(b"not a library")), "{text}");
        // The right pin gets as far as the loader, whose error names the original file.
        let e = LoadedPlugin::load_pinned(&lib, &sha256_hex(b"not a library").to_uppercase()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&*lib.canonicalize().unwrap().to_string_lossy()), "{text}");
        assert!(!text.contains("esper-plugin-"), "the private copy leaks into: {text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
