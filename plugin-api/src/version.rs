//! The handshake: what a plugin was built with, checked by the runtime before any
//! blueprint is used, and the ABI version with its compatibility rule.

use abi_stable::{sabi_types::VersionStrings, std_types::RString, StableAbi};
use std::fmt;

/// The ABI version of this plugin API, `MAJOR.MINOR`, separate from the crate version.
///
/// The rule: a plugin built against ABI `M.n` loads in every runtime of ABI `M.k` with
/// `k >= n`. A minor version only appends fields to the root module (an abi_stable
/// prefix type), which a runtime reads as absent in an older plugin; anything else is
/// a new major version.
pub const ABI_VERSION: AbiVersion = AbiVersion::new(1, 3);
/// [`ABI_VERSION`] as `MAJOR.MINOR.0`: the version abi_stable compares (same major) when
/// it opens a library, before the layout check. A unit test keeps the two equal.
pub const ABI_VERSION_STRINGS: VersionStrings = VersionStrings::new("1.3.0");
/// Version of this plugin API crate (`esper-plugin-api`): informational only, the runtime
/// does not compare it.
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");
/// libtorch version this crate was compiled against, read from the libtorch headers.
pub const LIBTORCH_VERSION: &str = env!("ESPER_LIBTORCH_VERSION");
/// tch version this crate is pinned to (`tch = "=0.24.0"`; a test checks the lock file).
pub const TCH_VERSION: &str = "0.24.0";

/// How [`Handshake::panicked`] marks the versions of a handshake that panicked.
const PANICKED_PREFIX: &str = "<panicked in handshake: ";

/// An ABI version, `MAJOR.MINOR`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbiVersion {
    pub major: u32,
    pub minor: u32,
}

impl AbiVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Whether a runtime of this ABI loads a plugin built against `plugin`: the same
    /// major, and a minor no newer than this one.
    pub fn accepts(self, plugin: AbiVersion) -> Result<(), Mismatch> {
        if plugin.major != self.major {
            Err(Mismatch::AbiMajor { plugin, runtime: self })
        } else if plugin.minor > self.minor {
            Err(Mismatch::AbiNewerMinor { plugin, runtime: self })
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a runtime refuses a plugin's handshake. Each names both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Built against another ABI major version.
    AbiMajor { plugin: AbiVersion, runtime: AbiVersion },
    /// Built against a newer minor version of the runtime's ABI major.
    AbiNewerMinor { plugin: AbiVersion, runtime: AbiVersion },
    /// Built with another libtorch (native plugins share libtorch's tensors).
    Libtorch { plugin: String, runtime: String },
    /// Built with another tch.
    Tch { plugin: String, runtime: String },
    /// The plugin's handshake panicked (caught inside the plugin): its versions are unknown.
    Panicked { message: String },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AbiMajor { plugin, runtime } => write!(
                f,
                "ABI: plugin built against ABI {plugin}, runtime has ABI {runtime} (another major version: \
                 rebuild the plugin against ABI {}.x)",
                runtime.major
            ),
            Self::AbiNewerMinor { plugin, runtime } => write!(
                f,
                "ABI: plugin built against ABI {plugin}, runtime has ABI {runtime} (the plugin is newer: \
                 use a runtime of ABI {plugin} or later)"
            ),
            Self::Libtorch { plugin, runtime } => {
                write!(f, "libtorch: plugin built with {plugin}, runtime has {runtime}")
            }
            Self::Tch { plugin, runtime } => write!(f, "tch: plugin built with {plugin}, runtime has {runtime}"),
            Self::Panicked { message } => {
                write!(f, "its handshake panicked (contained; its versions are unknown): {message}")
            }
        }
    }
}

/// What a plugin states about itself and the toolchain it was built with.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// [`ABI_VERSION`] as compiled into the plugin.
    pub abi: AbiVersion,
    /// The plugin crate's name.
    pub plugin_name: RString,
    /// The plugin crate's version.
    pub plugin_version: RString,
    /// [`PLUGIN_API_VERSION`] as compiled into the plugin (informational).
    pub plugin_api: RString,
    /// [`LIBTORCH_VERSION`] as compiled into the plugin.
    pub libtorch: RString,
    /// [`TCH_VERSION`] as compiled into the plugin.
    pub tch: RString,
}

impl Handshake {
    /// The handshake of code compiled against this very crate.
    pub fn current(plugin_name: &str, plugin_version: &str) -> Self {
        Self {
            abi: ABI_VERSION,
            plugin_name: plugin_name.into(),
            plugin_version: plugin_version.into(),
            plugin_api: PLUGIN_API_VERSION.into(),
            libtorch: LIBTORCH_VERSION.into(),
            tch: TCH_VERSION.into(),
        }
    }

    /// The handshake a plugin answers when its handshake function panicked (the panic is
    /// caught inside the plugin): every version reads `<panicked in handshake: MESSAGE>`,
    /// which matches no runtime, so the runtime refuses the plugin naming the panic.
    pub fn panicked(message: &str) -> Self {
        let marker: RString = format!("{PANICKED_PREFIX}{message}>").into();
        Self {
            abi: AbiVersion::new(0, 0),
            plugin_name: "unknown".into(),
            plugin_version: "unknown".into(),
            plugin_api: marker.clone(),
            libtorch: marker.clone(),
            tch: marker,
        }
    }

    /// The panic message, when this handshake is one [`Handshake::panicked`] made.
    pub fn panic_message(&self) -> Option<&str> {
        self.plugin_api.as_str().strip_prefix(PANICKED_PREFIX).map(|m| m.strip_suffix('>').unwrap_or(m))
    }

    /// Compares this (a plugin's) handshake with the running side: the ABI version by
    /// [`AbiVersion::accepts`], libtorch and tch by equality (a native plugin shares
    /// libtorch's tensors). The plugin-API crate version is not compared. Empty when
    /// the plugin is accepted; one [`Mismatch::Panicked`] when its handshake panicked.
    pub fn mismatches(&self) -> Vec<Mismatch> {
        if let Some(message) = self.panic_message() {
            return vec![Mismatch::Panicked { message: message.to_string() }];
        }
        let mut out: Vec<Mismatch> = ABI_VERSION.accepts(self.abi).err().into_iter().collect();
        if self.libtorch.as_str() != LIBTORCH_VERSION {
            out.push(Mismatch::Libtorch { plugin: self.libtorch.to_string(), runtime: LIBTORCH_VERSION.into() });
        }
        if self.tch.as_str() != TCH_VERSION {
            out.push(Mismatch::Tch { plugin: self.tch.to_string(), runtime: TCH_VERSION.into() });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_handshake_has_no_mismatch() {
        assert!(Handshake::current("p", "1").mismatches().is_empty());
    }

    #[test]
    fn mismatch_names_both_sides() {
        let mut h = Handshake::current("p", "1");
        h.libtorch = "2.10.0".into();
        let m: Vec<String> = h.mismatches().iter().map(ToString::to_string).collect();
        assert_eq!(m, vec![format!("libtorch: plugin built with 2.10.0, runtime has {LIBTORCH_VERSION}")]);
    }

    #[test]
    fn the_crate_version_is_not_compared() {
        let mut h = Handshake::current("p", "1");
        h.plugin_api = "0.7.3".into();
        assert!(h.mismatches().is_empty());
    }

    #[test]
    fn same_major_older_or_equal_minor_is_accepted_anything_else_refused() {
        let runtime = AbiVersion::new(1, 3);
        for minor in 0..=3 {
            assert_eq!(runtime.accepts(AbiVersion::new(1, minor)), Ok(()), "1.{minor}");
        }
        let newer = AbiVersion::new(1, 4);
        assert_eq!(runtime.accepts(newer), Err(Mismatch::AbiNewerMinor { plugin: newer, runtime }));
        for other in [AbiVersion::new(0, 3), AbiVersion::new(2, 0), AbiVersion::new(2, 3)] {
            assert_eq!(runtime.accepts(other), Err(Mismatch::AbiMajor { plugin: other, runtime }));
        }
        let text = Mismatch::AbiMajor { plugin: AbiVersion::new(2, 0), runtime }.to_string();
        assert!(text.contains("ABI 2.0") && text.contains("ABI 1.3"), "{text}");
    }

    #[test]
    fn a_handshake_of_another_abi_is_refused_naming_both() {
        let mut h = Handshake::current("p", "1");
        h.abi = AbiVersion::new(ABI_VERSION.major, ABI_VERSION.minor + 8);
        let m = h.mismatches();
        assert_eq!(m, vec![Mismatch::AbiNewerMinor { plugin: h.abi, runtime: ABI_VERSION }]);
        h.abi = AbiVersion::new(ABI_VERSION.major, 0);
        assert!(h.mismatches().is_empty(), "an older minor loads");
    }

    #[test]
    fn abi_stables_version_strings_are_the_abi_version() {
        let parsed = ABI_VERSION_STRINGS.parsed().expect("MAJOR.MINOR.PATCH");
        assert_eq!((parsed.major, parsed.minor, parsed.patch), (ABI_VERSION.major, ABI_VERSION.minor, 0));
    }

    #[test]
    fn a_panicked_handshake_is_refused_naming_the_panic() {
        let h = Handshake::panicked("boom");
        assert_eq!(h.plugin_api.as_str(), "<panicked in handshake: boom>");
        assert_eq!(h.panic_message(), Some("boom"));
        let m: Vec<String> = h.mismatches().iter().map(ToString::to_string).collect();
        assert_eq!(m, vec!["its handshake panicked (contained; its versions are unknown): boom"]);
        assert_eq!(Handshake::current("p", "1").panic_message(), None);
    }

    #[test]
    fn libtorch_version_is_the_one_tch_expects() {
        assert_eq!(LIBTORCH_VERSION, "2.11.0");
    }

    #[test]
    fn tch_version_matches_the_lock_file() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
            .expect("workspace Cargo.lock");
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"tch\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
            .map(|v| v.trim_end_matches('"').to_string())
            .expect("tch in Cargo.lock");
        assert_eq!(locked, TCH_VERSION);
    }
}
