//! Reading text and token files, with errors that name the file and the byte offset.

use super::error::TextDataError;
use std::path::Path;

fn read(path: &Path) -> Result<Vec<u8>, TextDataError> {
    std::fs::read(path).map_err(|source| TextDataError::Io { path: path.into(), source })
}

/// A UTF-8 text file.
pub(super) fn read_text(path: &Path) -> Result<String, TextDataError> {
    String::from_utf8(read(path)?)
        .map_err(|e| TextDataError::InvalidUtf8 { path: path.into(), offset: e.utf8_error().valid_up_to() })
}

/// A nanoGPT-style token file: little-endian u16 ids, each below `vocab_size` (the
/// vocabulary of the tokenizer named `tokenizer`, for the message).
pub(super) fn read_tokens(path: &Path, vocab_size: usize, tokenizer: &str) -> Result<Vec<i64>, TextDataError> {
    let bytes = read(path)?;
    if bytes.len() % 2 != 0 {
        return Err(TextDataError::OddLength { path: path.into(), bytes: bytes.len() as u64 });
    }
    let ids: Vec<i64> = bytes.chunks_exact(2).map(|p| i64::from(u16::from_le_bytes([p[0], p[1]]))).collect();
    if let Some(i) = ids.iter().position(|&id| id as usize >= vocab_size) {
        return Err(TextDataError::TokenOutOfRange {
            path: path.into(),
            offset: 2 * i as u64,
            id: ids[i] as u32,
            vocab_size,
            tokenizer: tokenizer.to_string(),
        });
    }
    Ok(ids)
}

/// `text` cut at `1 - val_fraction` of its bytes (moved forward to a character
/// boundary): the training part and the validation part.
pub(super) fn split_text(text: &str, val_fraction: f64) -> (&str, &str) {
    let mut cut = ((text.len() as f64) * (1.0 - val_fraction)).floor() as usize;
    cut = cut.min(text.len());
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text.split_at(cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::TempDir;

    #[test]
    fn invalid_utf8_names_the_file_and_the_offset() {
        let dir = TempDir::new("text-utf8");
        let path = dir.path().join("story.txt");
        let mut bytes = "Once upon a time.\n".repeat(3).into_bytes();
        bytes.extend_from_slice(&[b'a', 0xFF, b'b']);
        std::fs::write(&path, &bytes).unwrap();
        let e = read_text(&path).unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, TextDataError::InvalidUtf8 { offset: 55, .. }), "{e:?}");
        assert!(m.contains("story.txt") && m.contains("invalid UTF-8 at byte offset 55"), "{m}");
        std::fs::write(&path, "Zoë\n").unwrap();
        assert_eq!(read_text(&path).unwrap(), "Zoë\n");
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = TempDir::new("text-missing");
        let path = dir.path().join("train.bin");
        let e = read_tokens(&path, 256, "byte").unwrap_err();
        assert!(matches!(&e, TextDataError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        let e = read_text(&dir.path().join("input.txt")).unwrap_err();
        assert!(e.to_string().contains("input.txt"), "{e}");
    }

    #[test]
    fn token_files_are_little_endian_u16_below_the_vocabulary() {
        let dir = TempDir::new("text-bin");
        let path = dir.path().join("val.bin");
        std::fs::write(&path, [1, 0, 0, 1, 255, 0]).unwrap();
        assert_eq!(read_tokens(&path, 257, "byte").unwrap(), vec![1, 256, 255]);
        let e = read_tokens(&path, 256, "byte").unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, TextDataError::TokenOutOfRange { offset: 2, id: 256, vocab_size: 256, .. }), "{e:?}");
        assert!(m.contains("val.bin") && m.contains("token id 256 at byte offset 2"), "{m}");
        assert!(m.contains("vocabulary size 256 of the byte tokenizer"), "{m}");
        std::fs::write(&path, [1, 0, 2]).unwrap();
        let m = read_tokens(&path, 256, "byte").unwrap_err().to_string();
        assert!(m.contains("val.bin") && m.contains("3 bytes is an odd length"), "{m}");
    }

    #[test]
    fn text_splits_at_a_character_boundary() {
        assert_eq!(split_text("abcdefghij", 0.2), ("abcdefgh", "ij"));
        // 'é' is 2 bytes: a cut inside it moves past it.
        let (a, b) = split_text("aéé", 0.5);
        assert_eq!((a, b), ("aé", "é"));
        let (a, b) = split_text("ab", 0.1);
        assert_eq!((a, b), ("a", "b"));
    }
}
