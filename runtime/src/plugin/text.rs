//! Text a plugin hands the runtime (error messages, panic payloads, blueprint names and
//! descriptions, its handshake's names), made safe to print and to store before it
//! reaches a terminal, a log line, `events.jsonl`, `report.json` or a checkpoint.
//!
//! [`sanitize`] escapes every control character visibly (`\u{1b}`, `\n`, `\t`, ...),
//! so an ANSI escape sequence prints as text instead of steering the terminal and a
//! message is always one line, and escapes the Unicode bidirectional controls that
//! could reorder what a reader sees. It caps the result at [`MAX_TEXT_BYTES`] (cut on a
//! char boundary, never inside an escape, with a marker saying how many bytes were
//! cut). Text it changes is logged once in full at debug level (Rust's debug form, so
//! the log line is escaped too). Sanitised text comes back unchanged: applying it twice
//! is applying it once.

use esper_plugin_api::abi::{BlueprintDescriptor, ControllerDescriptor, Handshake};
use std::{borrow::Cow, fmt::Write as _};

/// The most bytes of one plugin-provided text the runtime keeps (the marker included).
pub const MAX_TEXT_BYTES: usize = 4096;

/// The most bytes of a plugin-provided name (a blueprint's name or topology, the
/// plugin's name and versions): they are repeated in every event and table row.
pub const MAX_NAME_BYTES: usize = 256;

/// Room kept at the end of a cut text for the marker `… [N bytes cut]`.
const MARKER_ROOM: usize = 40;

/// `text`, control characters and bidirectional controls escaped, at most
/// [`MAX_TEXT_BYTES`] long (see the module docs).
pub fn sanitize(text: &str) -> Cow<'_, str> {
    sanitize_to(text, MAX_TEXT_BYTES)
}

/// [`sanitize`] with a cap of `max` bytes (at least room for the marker).
pub fn sanitize_to(text: &str, max: usize) -> Cow<'_, str> {
    let max = max.max(2 * MARKER_ROOM);
    if text.len() <= max && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    tracing::debug!(bytes = text.len(), full = ?text, "plugin text escaped or cut for display (full text)");
    let budget = max - MARKER_ROOM;
    let mut out = String::with_capacity(text.len().min(max));
    // The end of the output and of the source text at the last piece that fits `budget`.
    let mut fits = (0, 0);
    for (i, c) in text.char_indices() {
        if needs_escape(c) {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() <= budget {
            fits = (out.len(), i + c.len_utf8());
        }
        if out.len() > max {
            out.truncate(fits.0);
            let _ = write!(out, "… [{} bytes cut]", text.len() - fits.1);
            return Cow::Owned(out);
        }
    }
    Cow::Owned(out)
}

/// Whether `c` is shown escaped: a control character (C0, DEL, C1) or a Unicode
/// bidirectional control (embeddings, overrides, isolates and marks).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A blueprint's descriptor as the runtime shows and keys it: name and topology
/// sanitised to [`MAX_NAME_BYTES`], the description to [`MAX_TEXT_BYTES`].
pub fn sanitize_descriptor(d: &BlueprintDescriptor) -> BlueprintDescriptor {
    BlueprintDescriptor {
        name: sanitize_to(&d.name, MAX_NAME_BYTES).as_ref().into(),
        topology: sanitize_to(&d.topology, MAX_NAME_BYTES).as_ref().into(),
        param_estimate: d.param_estimate,
        description: sanitize(&d.description).as_ref().into(),
    }
}

/// A controller's descriptor with its name and description sanitised as a blueprint's.
pub fn sanitize_controller(d: &ControllerDescriptor) -> ControllerDescriptor {
    ControllerDescriptor {
        name: sanitize_to(&d.name, MAX_NAME_BYTES).as_ref().into(),
        description: sanitize(&d.description).as_ref().into(),
    }
}

/// A native plugin's handshake with its names and versions sanitised to
/// [`MAX_NAME_BYTES`] (a valid version reads the same, so the comparisons are unchanged).
pub fn sanitize_handshake(h: Handshake) -> Handshake {
    let name = |s: &str| sanitize_to(s, MAX_NAME_BYTES).as_ref().into();
    Handshake {
        abi: h.abi,
        plugin_name: name(&h.plugin_name),
        plugin_version: name(&h.plugin_version),
        plugin_api: name(&h.plugin_api),
        libtorch: name(&h.libtorch),
        tch: name(&h.tch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in ["", "bad options: unknown field `widht`", "ünïcödé ✓ 日本語", &"x".repeat(MAX_TEXT_BYTES)]
        {
            assert!(matches!(sanitize(text), Cow::Borrowed(t) if t == text), "{text}");
        }
    }

    #[test]
    fn control_characters_and_bidi_controls_are_escaped_visibly() {
        assert_eq!(sanitize("\x1b[31mred\x1b[0m"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(sanitize("two\nlines\r\tand\0nul\x7f"), "two\\nlines\\r\\tand\\u{0}nul\\u{7f}");
        assert_eq!(sanitize("c1 \u{9b}31m"), "c1 \\u{9b}31m");
        assert_eq!(sanitize("abc\u{202e}fed\u{2066}x\u{200f}"), "abc\\u{202e}fed\\u{2066}x\\u{200f}");
        let s = sanitize("\x1b]0;title\x07");
        assert!(!s.chars().any(char::is_control), "{s}");
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_with_a_marker_and_the_cut_is_counted() {
        // A 1 MB message of escapes and multi-byte characters.
        let text = "é\x1b[31m✓".repeat(1 << 17);
        let s = sanitize(&text);
        assert!(s.len() <= MAX_TEXT_BYTES, "{}", s.len());
        assert!(!s.chars().any(char::is_control));
        let (kept, marker) = s.rsplit_once("… [").unwrap();
        let cut: usize = marker.strip_suffix(" bytes cut]").unwrap().parse().unwrap();
        // The kept part is whole pieces: it unescapes to a prefix of the text whose length
        // plus the cut is the original length.
        let shown = kept.replace("\\u{1b}", "\x1b");
        assert!(text.starts_with(&shown), "cut inside an escape or a character");
        assert_eq!(shown.len() + cut, text.len());
        assert!(kept.len() > MAX_TEXT_BYTES - 2 * MARKER_ROOM, "kept {} bytes", kept.len());
        // Just over the cap is cut; exactly at it is not.
        assert_eq!(sanitize(&"a".repeat(MAX_TEXT_BYTES)).len(), MAX_TEXT_BYTES);
        let over = sanitize(&"a".repeat(MAX_TEXT_BYTES + 1)).into_owned();
        assert!(over.ends_with(&format!("… [{} bytes cut]", MAX_TEXT_BYTES + 1 - (MAX_TEXT_BYTES - MARKER_ROOM))));
        // An escape that would cross the cut is left out whole.
        let edge = format!("{}{}", "a".repeat(MAX_TEXT_BYTES - MARKER_ROOM - 2), "\x1b".repeat(100));
        let s = sanitize(&edge);
        assert!(s.ends_with(&format!("a… [{} bytes cut]", 100)), "{s}");
    }

    #[test]
    fn sanitising_twice_is_sanitising_once() {
        for text in ["\x1b[1mbold", &"\u{202e}é\n".repeat(5000), &"z".repeat(MAX_TEXT_BYTES + 100)] {
            let once = sanitize(text).into_owned();
            assert!(matches!(sanitize(&once), Cow::Borrowed(_)), "{once}");
            let name = sanitize_to(text, MAX_NAME_BYTES).into_owned();
            assert!(name.len() <= MAX_NAME_BYTES && matches!(sanitize_to(&name, MAX_NAME_BYTES), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn descriptors_and_handshakes_are_sanitised_field_by_field() {
        let d = BlueprintDescriptor {
            name: "norm\x1b[2J".into(),
            topology: "cnn".into(),
            param_estimate: 7,
            description: format!("line one\nline two {}", "!".repeat(10_000)).as_str().into(),
        };
        let s = sanitize_descriptor(&d);
        assert_eq!((s.name.as_str(), s.topology.as_str(), s.param_estimate), ("norm\\u{1b}[2J", "cnn", 7));
        assert!(s.description.starts_with("line one\\nline two !!!") && s.description.len() <= MAX_TEXT_BYTES);
        let mut h = Handshake::current("evil\x1b]8;;", "0.1.0");
        h.tch = "x".repeat(1000).as_str().into();
        let s = sanitize_handshake(h.clone());
        assert_eq!((s.plugin_name.as_str(), s.plugin_version.as_str()), ("evil\\u{1b}]8;;", "0.1.0"));
        assert!(s.tch.len() <= MAX_NAME_BYTES && s.abi == h.abi && s.libtorch == h.libtorch);
    }
}
