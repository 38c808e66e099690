//! The handshake: what a plugin was built with, checked by the runtime before any
//! blueprint is used.

use abi_stable::{std_types::RString, StableAbi};

/// Version of this plugin API (the crate version of `esper-plugin-api`).
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");
/// libtorch version this crate was compiled against, read from the libtorch headers.
pub const LIBTORCH_VERSION: &str = env!("ESPER_LIBTORCH_VERSION");
/// tch version this crate is pinned to (`tch = "=0.24.0"`; a test checks the lock file).
pub const TCH_VERSION: &str = "0.24.0";

/// How [`Handshake::panicked`] marks the versions of a handshake that panicked.
const PANICKED_PREFIX: &str = "<panicked in handshake: ";

/// What a plugin states about itself and the toolchain it was built with.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The plugin crate's name.
    pub plugin_name: RString,
    /// The plugin crate's version.
    pub plugin_version: RString,
    /// [`PLUGIN_API_VERSION`] as compiled into the plugin.
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

    /// Compares this (a plugin's) handshake with the running side's versions.
    /// Returns one line per mismatch, naming both sides (one line naming the panic when
    /// the plugin's handshake panicked).
    pub fn mismatches(&self) -> Vec<String> {
        if let Some(message) = self.panic_message() {
            return vec![format!("its handshake panicked (contained; its versions are unknown): {message}")];
        }
        let mut out = Vec::new();
        let mut check = |what: &str, plugin: &RString, runtime: &str| {
            if plugin.as_str() != runtime {
                out.push(format!("{what}: plugin built with {plugin}, runtime has {runtime}"));
            }
        };
        check("plugin API", &self.plugin_api, PLUGIN_API_VERSION);
        check("libtorch", &self.libtorch, LIBTORCH_VERSION);
        check("tch", &self.tch, TCH_VERSION);
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
        let m = h.mismatches();
        assert_eq!(m, vec![format!("libtorch: plugin built with 2.10.0, runtime has {LIBTORCH_VERSION}")]);
    }

    #[test]
    fn a_panicked_handshake_is_refused_naming_the_panic() {
        let h = Handshake::panicked("boom");
        assert_eq!(h.plugin_api.as_str(), "<panicked in handshake: boom>");
        assert_eq!(h.panic_message(), Some("boom"));
        assert_eq!(h.mismatches(), vec!["its handshake panicked (contained; its versions are unknown): boom"]);
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
