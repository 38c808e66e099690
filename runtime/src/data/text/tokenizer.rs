//! Text to token ids and back: a byte-level tokenizer, and BPE through the Hugging Face
//! `tokenizers` library (trained here, or a user's `tokenizer.json`).

use super::error::{TextDataError, TokenizerLibError};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::TokenizerBuilder;

/// Texts are encoded in pieces of about this many bytes, in parallel.
const CHUNK_BYTES: usize = 1 << 16;

/// Vocabulary of the byte tokenizer.
pub const BYTE_VOCAB: usize = 256;

/// Turns text into token ids and back. Cheap to clone (a library tokenizer is shared).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: Inner,
    vocab_size: usize,
}

#[derive(Debug, Clone)]
enum Inner {
    Byte,
    Library { tokenizer: std::sync::Arc<tokenizers::Tokenizer>, origin: Origin },
}

/// Where a library tokenizer came from, for messages.
#[derive(Debug, Clone)]
enum Origin {
    Trained,
    File(PathBuf),
}

impl fmt::Display for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Byte => f.write_str("byte"),
            Inner::Library { origin: Origin::Trained, .. } => write!(f, "BPE ({} tokens, trained)", self.vocab_size),
            Inner::Library { origin: Origin::File(path), .. } => write!(f, "{}", path.display()),
        }
    }
}

impl Tokenizer {
    /// One token per byte of UTF-8 (vocabulary 256): every text round-trips exactly.
    pub fn byte() -> Self {
        Tokenizer { inner: Inner::Byte, vocab_size: BYTE_VOCAB }
    }

    /// A byte-level BPE vocabulary (GPT-2's scheme: the 256 bytes, then merges learnt
    /// from `text`) of at most `vocab_size` tokens (>= 256). Deterministic: the same text
    /// gives the same vocabulary. Every text round-trips exactly.
    pub fn train_bpe(text: &str, vocab_size: usize) -> Result<Self, TextDataError> {
        let fail = |source: TokenizerLibError| TextDataError::Tokenizer {
            action: "train",
            tokenizer: format!("BPE ({vocab_size} tokens)"),
            source,
        };
        if vocab_size < BYTE_VOCAB {
            return Err(TextDataError::Config(format!(
                "a byte-level BPE vocabulary starts from the 256 byte tokens: vocab_size must be at least 256, \
                 got {vocab_size}"
            )));
        }
        let alphabet: HashSet<char> =
            tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
        let mut trainer =
            BpeTrainer::builder().vocab_size(vocab_size).show_progress(false).initial_alphabet(alphabet).build();
        let byte_level = ByteLevel::default().add_prefix_space(false);
        let mut tokenizer = TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
            .with_model(BPE::default())
            .with_pre_tokenizer(Some(byte_level))
            .with_post_processor(Some(byte_level))
            .with_decoder(Some(byte_level))
            .build()
            .map_err(fail)?;
        tokenizer.train(&mut trainer, chunks(text).into_iter()).map_err(fail)?;
        Ok(Self::library(tokenizers::Tokenizer::from(tokenizer), Origin::Trained))
    }

    /// A `tokenizer.json` of the tokenizers library (e.g. GPT-2's, or one [`Tokenizer::save`]
    /// wrote).
    pub fn from_file(path: &Path) -> Result<Self, TextDataError> {
        let json = std::fs::read(path).map_err(|source| TextDataError::Io { path: path.into(), source })?;
        let tokenizer = tokenizers::Tokenizer::from_bytes(json)
            .map_err(|source| TextDataError::TokenizerFile { path: path.into(), source })?;
        Ok(Self::library(tokenizer, Origin::File(path.into())))
    }

    fn library(tokenizer: tokenizers::Tokenizer, origin: Origin) -> Self {
        // The largest id plus one: a vocabulary's ids need not be dense.
        let vocab_size = tokenizer.get_vocab(true).values().max().map_or(0, |&m| m as usize + 1);
        Tokenizer { inner: Inner::Library { tokenizer: std::sync::Arc::new(tokenizer), origin }, vocab_size }
    }

    /// Writes it as a `tokenizer.json` that [`Tokenizer::from_file`] (or Python's
    /// `tokenizers`) loads. The byte tokenizer has no such file: an error.
    pub fn save(&self, path: &Path) -> Result<(), TextDataError> {
        let Inner::Library { tokenizer, .. } = &self.inner else {
            return Err(TextDataError::Config("the byte tokenizer has no tokenizer.json to save".into()));
        };
        let json = tokenizer.to_string(true).map_err(|source| self.failed("save", source))?;
        std::fs::write(path, json).map_err(|source| TextDataError::Write { path: path.into(), source })
    }

    /// The number of token ids: every id it gives is below it.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The token ids of `text`. Long texts are encoded in pieces in parallel, each cut
    /// just before a newline that follows a non-space character (a boundary GPT-2's
    /// pre-tokenizer always splits at, so the result is the same as in one piece).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TextDataError> {
        match &self.inner {
            Inner::Byte => Ok(text.bytes().map(u32::from).collect()),
            Inner::Library { tokenizer, .. } => {
                let encodings =
                    tokenizer.encode_batch_fast(chunks(text), false).map_err(|source| self.failed("encode", source))?;
                Ok(encodings.iter().flat_map(|e| e.get_ids().iter().copied()).collect())
            }
        }
    }

    /// The text of `ids`. An id outside the vocabulary is an error; bytes that are not
    /// valid UTF-8 (a window may start inside a character) become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TextDataError> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TextDataError::UnknownId { id, tokenizer: self.to_string(), vocab_size: self.vocab_size });
        }
        match &self.inner {
            Inner::Byte => {
                Ok(String::from_utf8_lossy(&ids.iter().map(|&id| id as u8).collect::<Vec<u8>>()).into_owned())
            }
            Inner::Library { tokenizer, .. } => {
                tokenizer.decode(ids, false).map_err(|source| self.failed("decode", source))
            }
        }
    }

    fn failed(&self, action: &'static str, source: TokenizerLibError) -> TextDataError {
        TextDataError::Tokenizer { action, tokenizer: self.to_string(), source }
    }
}

/// `text` in pieces of at least [`CHUNK_BYTES`] (the last may be shorter), each cut just
/// before a newline whose previous character is not whitespace.
fn chunks(text: &str) -> Vec<&str> {
    let mut pieces = Vec::with_capacity(text.len() / CHUNK_BYTES + 1);
    let mut rest = text;
    while rest.len() > CHUNK_BYTES {
        let mut from = CHUNK_BYTES;
        while !rest.is_char_boundary(from) {
            from += 1;
        }
        let cut = rest[from..]
            .match_indices('\n')
            .map(|(i, _)| from + i)
            .find(|&i| rest[..i].chars().next_back().is_some_and(|c| !c.is_whitespace()));
        let Some(cut) = cut else { break };
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::TempDir;
    use crate::data::text::embedded_corpus;

    #[test]
    fn bytes_round_trip_exactly() {
        let t = Tokenizer::byte();
        let text = "Once upon a time, Zoë saw a 🦊.\n\t\"Hi!\"";
        let ids = t.encode(text).unwrap();
        assert_eq!(ids.len(), text.len());
        assert!(ids.iter().all(|&id| id < 256));
        assert_eq!(t.decode(&ids).unwrap(), text);
        assert_eq!(t.vocab_size(), 256);
        let e = t.decode(&[65, 300]).unwrap_err().to_string();
        assert!(e.contains("token id 300") && e.contains("byte"), "{e}");
    }

    #[test]
    fn chunks_cut_before_a_newline_after_a_word_and_lose_nothing() {
        let text = embedded_corpus(300_000, 2);
        let pieces = chunks(&text);
        assert!(pieces.len() >= 4, "{}", pieces.len());
        assert_eq!(pieces.concat(), text);
        for p in &pieces[1..] {
            assert!(p.starts_with('\n'), "{:?}", &p[..20]);
        }
        // A newline after whitespace is no cut: GPT-2's pre-tokenizer may join the two.
        let spaced = "x \n\n".repeat(CHUNK_BYTES / 4 + 8) + "end\nmore";
        assert_eq!(chunks(&spaced), vec![&spaced[..spaced.len() - 5], "\nmore"]);
        // No newline after the size: one piece.
        let long = "word ".repeat(CHUNK_BYTES);
        assert_eq!(chunks(&long), vec![long.as_str()]);
        // A multi-byte character across the size is not split.
        let wide = "é".repeat(CHUNK_BYTES) + "x\ny";
        assert_eq!(chunks(&wide).concat(), wide);
    }

    #[test]
    fn a_trained_bpe_has_the_asked_vocabulary_compresses_and_round_trips() {
        let text = embedded_corpus(200_000, 0);
        let t = Tokenizer::train_bpe(&text, 400).unwrap();
        assert!(t.vocab_size() <= 400 && t.vocab_size() > 300, "{}", t.vocab_size());
        let ids = t.encode(&text).unwrap();
        assert!(ids.len() * 2 < text.len(), "{} tokens for {} bytes", ids.len(), text.len());
        assert!(ids.iter().all(|&id| (id as usize) < t.vocab_size()));
        assert_eq!(t.decode(&ids).unwrap(), text);
        // Text it never saw, bytes outside the corpus included, round-trips too.
        let other = "Zoë's 🦊 — ünïcode\n\n  spaced   out\r\n";
        assert_eq!(t.decode(&t.encode(other).unwrap()).unwrap(), other);
        // Training is deterministic.
        let again = Tokenizer::train_bpe(&text, 400).unwrap();
        assert_eq!(again.encode(&text[..5000]).unwrap(), t.encode(&text[..5000]).unwrap());
        let e = Tokenizer::train_bpe(&text, 100).unwrap_err().to_string();
        assert!(e.contains("at least 256, got 100"), "{e}");
    }

    #[test]
    fn encoding_in_pieces_equals_encoding_whole() {
        let text = embedded_corpus(150_000, 3);
        let t = Tokenizer::train_bpe(&text, 300).unwrap();
        let Inner::Library { tokenizer, .. } = &t.inner else { unreachable!() };
        let whole = tokenizer.encode_fast(text.as_str(), false).unwrap().get_ids().to_vec();
        assert!(chunks(&text).len() > 1);
        assert_eq!(t.encode(&text).unwrap(), whole);
    }

    #[test]
    fn a_saved_tokenizer_json_loads_back_and_encodes_identically() {
        let dir = TempDir::new("tokenizer-json");
        let text = embedded_corpus(60_000, 5);
        let trained = Tokenizer::train_bpe(&text, 320).unwrap();
        let path = dir.path().join("tokenizer.json");
        trained.save(&path).unwrap();
        let loaded = Tokenizer::from_file(&path).unwrap();
        assert_eq!(loaded.vocab_size(), trained.vocab_size());
        assert_eq!(loaded.encode(&text).unwrap(), trained.encode(&text).unwrap());
        assert_eq!(loaded.to_string(), path.display().to_string());
        assert!(Tokenizer::byte().save(&path).is_err());
    }

    #[test]
    fn a_bad_tokenizer_file_is_named() {
        let dir = TempDir::new("tokenizer-bad");
        let missing = dir.path().join("nope.json");
        let e = Tokenizer::from_file(&missing).unwrap_err();
        assert!(matches!(e, TextDataError::Io { .. }) && e.to_string().contains("nope.json"), "{e}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"model\": 3}").unwrap();
        let e = Tokenizer::from_file(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("not a tokenizer.json"), "{e}");
    }
}
