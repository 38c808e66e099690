//! Errors of a portable plugin, as the runtime will report them.

use crate::sys;
use std::fmt;

/// What went wrong, in the runtime's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A tensor op failed (shape, dtype, device, ...): the message names the op and shapes.
    Tensor,
    /// An argument the blueprint cannot work with (e.g. a channel count).
    InvalidArgument,
    /// The blueprint's options were not accepted.
    BadOptions,
    /// A panic inside the plugin, caught before it crossed the boundary.
    Panic,
    /// No blueprint of that name.
    UnknownBlueprint,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The C status code of this kind.
    pub fn code(self) -> sys::Status {
        match self {
            Self::Tensor => sys::ERR_TENSOR,
            Self::InvalidArgument => sys::ERR_INVALID_ARGUMENT,
            Self::BadOptions => sys::ERR_BAD_OPTIONS,
            Self::Panic => sys::ERR_PANIC,
            Self::UnknownBlueprint => sys::ERR_UNKNOWN_BLUEPRINT,
            Self::Other => sys::ERR_OTHER,
        }
    }

    /// The kind of a C status code (an unknown nonzero code is [`ErrorKind::Other`]).
    pub fn from_code(code: sys::Status) -> Self {
        match code {
            sys::ERR_TENSOR => Self::Tensor,
            sys::ERR_INVALID_ARGUMENT => Self::InvalidArgument,
            sys::ERR_BAD_OPTIONS => Self::BadOptions,
            sys::ERR_PANIC => Self::Panic,
            sys::ERR_UNKNOWN_BLUEPRINT => Self::UnknownBlueprint,
            _ => Self::Other,
        }
    }
}

/// An error of a portable plugin: a kind and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: String,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn bad_options(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadOptions, message)
    }
    /// The error of a caught panic, its payload as text.
    pub fn from_panic(context: &str, payload: Box<dyn std::any::Any + Send>) -> Self {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-text payload".into());
        Self::new(ErrorKind::Panic, format!("panic in {context}: {text}"))
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for PluginError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_codes() {
        use ErrorKind::*;
        for k in [Tensor, InvalidArgument, BadOptions, Panic, UnknownBlueprint, Other] {
            assert_eq!(ErrorKind::from_code(k.code()), k);
            assert_ne!(k.code(), sys::OK);
        }
        assert_eq!(ErrorKind::from_code(99), Other);
    }

    #[test]
    fn a_panic_payload_becomes_its_text() {
        let e = PluginError::from_panic("forward", Box::new("boom"));
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::Panic, "panic in forward: boom"));
        let e = PluginError::from_panic("create", Box::new(String::from("bang")));
        assert_eq!(e.message, "panic in create: bang");
    }
}
