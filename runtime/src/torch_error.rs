//! libtorch's error texts, made readable: the reason is kept, the C++ frame list
//! ("Exception raised from ...", "frame #N: ...") is dropped. The full text belongs in
//! debug logs only.

/// The reason of a libtorch error without its C++ backtrace.
pub fn summary(message: &str) -> String {
    let mut kept = Vec::new();
    for line in message.lines() {
        let t = line.trim_start();
        if t.starts_with("Exception raised from") || t.starts_with("frame #") {
            break;
        }
        kept.push(line);
    }
    kept.join("\n").trim().to_string()
}
