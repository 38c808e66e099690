//! What a blueprint's process tells `esper conformance` on its stdout: one line per
//! event, `esper-conformance {json}`, written and flushed the moment it happens. The
//! prefix tells these lines from anything the plugin prints itself.

use super::report::{Check, CheckResult, Status};
use serde::{Deserialize, Serialize};

/// Starts each line of the protocol.
pub const PREFIX: &str = "esper-conformance ";

/// One event of a blueprint's process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Line {
    /// The process is ready to run the checks, with its memory cap (bytes of address
    /// space), or the reason it has none.
    Ready { memory_cap: Option<u64>, note: Option<String> },
    /// `check` starts.
    Started { check: Check },
    /// `check` finished.
    Finished { check: Check, status: Status, reason: String },
    /// Every check the blueprint gets has been reported.
    Done,
}

impl Line {
    pub fn finished(result: &CheckResult) -> Self {
        Line::Finished { check: result.check, status: result.status, reason: result.reason.clone() }
    }

    /// The line as written, without its newline.
    pub fn to_text(&self) -> String {
        // Serializing these plain types cannot fail; an empty object keeps the line parseable.
        format!("{PREFIX}{}", serde_json::to_string(self).unwrap_or_else(|_| "{}".into()))
    }

    /// The event of a line of the process's stdout; `None` for any other output.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text.trim_end().strip_prefix(PREFIX)?).ok()
    }
}

/// Does `text` (a check's reason, or what a process wrote before it died) say that an
/// allocation failed for want of memory? libtorch's CPU allocator, Rust's
/// `handle_alloc_error`, C++'s `std::bad_alloc` and the C library each say it their way.
pub fn is_allocation_failure(text: &str) -> bool {
    const MARKERS: [&str; 5] =
        ["can't allocate memory", "memory allocation of", "bad_alloc", "Cannot allocate memory", "out of memory"];
    MARKERS.iter().any(|m| text.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_other_output_is_not_a_line() {
        let lines = [
            Line::Ready { memory_cap: Some(1 << 31), note: None },
            Line::Started { check: Check::Create },
            Line::finished(&CheckResult::fail(Check::FiniteOutputs, "3 values are NaN")),
            Line::Done,
        ];
        for line in lines {
            let text = line.to_text();
            assert!(text.starts_with(PREFIX) && !text.contains('\n'), "{text}");
            assert_eq!(Line::parse(&format!("{text}\n")), Some(line));
        }
        assert_eq!(Line::parse("hello from the plugin"), None);
        assert_eq!(Line::parse(r#"{"event":"started","check":"create"}"#), None, "no prefix, no line");
        assert_eq!(Line::parse(&format!(r#"{PREFIX}{{"event":"started","check":"nonsense"}}"#)), None);
    }

    #[test]
    fn allocation_failures_are_recognised() {
        let torch =
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 17179869184 bytes. Error code 12";
        assert!(is_allocation_failure(torch));
        assert!(is_allocation_failure("memory allocation of 1048576 bytes failed"));
        assert!(is_allocation_failure("terminate called after throwing an instance of 'std::bad_alloc'"));
        assert!(!is_allocation_failure("shapes cannot be multiplied (2x3 and 4x5)"));
    }
}
