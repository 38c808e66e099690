//! Errors that cross the plugin boundary.

use abi_stable::{std_types::RString, StableAbi};
use std::fmt;

/// What kind of failure a plugin reports.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The blueprint options were not accepted (unknown key, wrong type, ...).
    BadOptions,
    /// No blueprint of that name in this plugin.
    UnknownBlueprint,
    /// A panic inside the plugin, caught before it crossed the boundary.
    Panic,
    /// A libtorch error (shape, dtype, device ...).
    Tensor,
    /// An argument the blueprint cannot work with (e.g. a channel count).
    InvalidArgument,
    /// Anything else.
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::BadOptions => "bad options",
            ErrorKind::UnknownBlueprint => "unknown blueprint",
            ErrorKind::Panic => "panic",
            ErrorKind::Tensor => "tensor error",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Other => "error",
        })
    }
}

/// An error returned across the ABI: a kind and a human-readable message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: RString,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: RString::from(message.into()) }
    }
    pub fn bad_options(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadOptions, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, message)
    }
    /// Turns a caught panic payload into an error.
    pub fn from_panic(context: &str, payload: Box<dyn std::any::Any + Send>) -> Self {
        let what = panic_message(payload.as_ref());
        Self::new(ErrorKind::Panic, format!("plugin panicked in {context}: {what}"))
    }
}

/// The text of a panic payload (what `catch_unwind` returns): the message of a
/// `panic!("...")` (a `&str` or a `String`), or a placeholder for any other payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<tch::TchError> for PluginError {
    fn from(e: tch::TchError) -> Self {
        Self::new(ErrorKind::Tensor, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_reads_str_and_string_payloads() {
        let s = std::panic::catch_unwind(|| panic!("static text")).unwrap_err();
        assert_eq!(panic_message(s.as_ref()), "static text");
        let n = 3;
        let s = std::panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(s.as_ref()), "formatted 3");
        let s = std::panic::catch_unwind(|| std::panic::panic_any(7_u32)).unwrap_err();
        assert_eq!(panic_message(s.as_ref()), "non-string panic payload");
        let e = PluginError::from_panic("forward", Box::new("boom"));
        assert!(e.to_string().contains("plugin panicked in forward: boom"), "{e}");
    }
}
