//! libtorch's error texts, made readable: the reason is kept, the C++ frame list
//! ("Exception raised from ...", "frame #N: ...") is dropped. The full text belongs in
//! debug logs only ([`summarize`] logs it there).
//!
//! A libtorch error (tch's `TchError::Torch`) reads
//!
//! ```text
//! Internal torch error: mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)
//! Exception raised from meta at /pytorch/aten/src/ATen/native/LinearAlgebra.cpp:193 (most recent call first):
//! frame #0: c10::Error::Error(...) + 0x98 (0x7f... in libc10.so)
//! frame #1: ...
//! ```
//!
//! and every place a user reads an error (CLI, conformance report, events, log lines)
//! shows only the first line(s), the reason.

/// Whether `line` starts libtorch's C++ backtrace.
fn starts_backtrace(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("Exception raised from") || t.starts_with("frame #")
}

/// The reason of a libtorch error without its C++ backtrace: every line before the
/// first "Exception raised from ..." or "frame #N: ..." line, trimmed. Text without a
/// backtrace comes back trimmed and otherwise unchanged; text that is nothing but a
/// backtrace keeps its first line (an empty reason would say nothing).
///
/// The same holds for the escaped form a panic message carries (tch's panicking ops
/// unwrap, so the text reads `... Torch("reason\nException raised from ...\nframe #0
/// ...")` on one line, with `\n` escaped): it is cut before the escaped backtrace and the
/// `Torch("...")` is closed again.
pub fn summary(message: &str) -> String {
    let kept: Vec<&str> = message.lines().take_while(|l| !starts_backtrace(l)).collect();
    let mut reason = kept.join("\n").trim().to_string();
    if reason.is_empty() {
        reason = message.trim().lines().next().unwrap_or_default().trim().to_string();
    }
    match escaped_backtrace_at(&reason) {
        Some(i) => {
            let head = reason[..i].trim_end();
            let close = if head.rfind("(\"").is_some_and(|open| !head[open..].contains("\")")) { "\")" } else { "" };
            format!("{head}{close}")
        }
        None => reason,
    }
}

/// Where an escaped backtrace (`\nException raised from`, `\nframe #`) starts in `text`.
fn escaped_backtrace_at(text: &str) -> Option<usize> {
    ["\\nException raised from", "\\nframe #"].iter().filter_map(|m| text.find(m)).min()
}

/// Whether `message` carries a C++ backtrace that [`summary`] would drop.
pub fn has_backtrace(message: &str) -> bool {
    message.lines().any(starts_backtrace) || escaped_backtrace_at(message).is_some()
}

/// [`summary`], logging the full text at debug level (target `esper_runtime::torch_error`)
/// when something was dropped, with `context` saying where the error came from.
pub fn summarize(context: &str, message: &str) -> String {
    if has_backtrace(message) {
        tracing::debug!(context, full = %message, "libtorch error (full text, C++ backtrace included)");
    }
    summary(message)
}

/// A real libtorch error (mismatched matmul), as tch reports it: for the tests that show
/// its C++ frames are dropped (here and in the crates built on this one).
#[doc(hidden)]
pub fn matmul_error() -> String {
    use tch::{Device, Kind, Tensor};
    let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
    let b = Tensor::zeros([4, 5], (Kind::Float, Device::Cpu));
    match a.f_matmul(&b) {
        Ok(_) => panic!("mismatched shapes must fail"),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn a_real_libtorch_error_keeps_its_reason_and_loses_its_frames() {
        let full = matmul_error();
        // The premise: libtorch's text does carry the frame list.
        assert!(has_backtrace(&full), "expected a C++ backtrace in: {full}");
        assert!(full.lines().count() > 2, "{full}");
        let s = summary(&full);
        assert!(s.contains("shapes cannot be multiplied"), "reason lost: {s}");
        assert!(s.contains("2x3") && s.contains("4x5"), "{s}");
        assert!(!s.contains("frame #") && !s.contains("Exception raised from"), "frames kept: {s}");
        assert!(!has_backtrace(&s));
        assert_eq!(summarize("test", &full), s);
    }

    #[test]
    fn a_libtorch_panic_message_keeps_its_reason_and_loses_its_frames() {
        let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let b = Tensor::zeros([4, 5], (Kind::Float, Device::Cpu));
        let payload = std::panic::catch_unwind(|| a.matmul(&b)).expect_err("tch's matmul panics on mismatched shapes");
        let full = payload.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(has_backtrace(&full), "expected an escaped backtrace in: {full}");
        let s = summary(&full);
        assert!(s.contains("shapes cannot be multiplied (2x3 and 4x5)"), "reason lost: {s}");
        assert!(!s.contains("frame #") && !s.contains("Exception raised from"), "frames kept: {s}");
        assert!(s.ends_with("\")"), "the Torch(\"...\") is closed again: {s}");
        assert!(s.len() < 200, "{s}");
    }

    #[test]
    fn text_without_a_backtrace_is_only_trimmed() {
        assert_eq!(summary("  plain reason\nsecond line \n"), "plain reason\nsecond line");
        assert_eq!(summary(""), "");
        assert!(!has_backtrace("a frame is not a frame #"));
    }

    #[test]
    fn multi_line_reasons_are_kept_up_to_the_backtrace() {
        let text = "reason one\nreason two\nException raised from f at x.cpp:1 (most recent call first):\nframe #0: g";
        assert_eq!(summary(text), "reason one\nreason two");
        assert_eq!(summary("  frame #0: only frames\nframe #1: more"), "frame #0: only frames");
    }
}
