//! What a language-model run reads: [`TextConfig`], with its source and tokenizer.

use super::error::TextDataError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the text comes from. Serde form: a table tagged by `kind`, e.g.
/// `{ kind = "embedded", bytes = 1500000 }`, `{ kind = "file", path = "input.txt" }`,
/// `{ kind = "bin", path = "data/shakespeare" }`. Relative paths are used as given (the
/// caller resolves them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TextSource {
    /// The embedded corpus of short stories, generated from [`TextConfig::seed`] (see
    /// [`super::embedded_corpus`]): about `bytes` bytes of text, both splits together.
    Embedded {
        #[serde(default = "default_corpus_bytes")]
        bytes: usize,
    },
    /// A UTF-8 text file; its last [`TextConfig::val_fraction`] is the validation split.
    File { path: PathBuf },
    /// A folder holding nanoGPT-style `train.bin` and `val.bin`: token ids, little-endian
    /// u16, already tokenized (the tokenizer then gives the vocabulary and decodes).
    Bin { path: PathBuf },
}

/// How text becomes token ids. Serde form: `{ kind = "byte" }`,
/// `{ kind = "bpe", vocab_size = 1024 }`, `{ kind = "file", path = "tokenizer.json" }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerConfig {
    /// One token per byte of UTF-8: vocabulary 256, any text round-trips exactly.
    #[default]
    Byte,
    /// A byte-level BPE vocabulary of at most `vocab_size` tokens (256 bytes and the
    /// merges) trained on the training split when the data is loaded.
    Bpe {
        #[serde(default = "default_bpe_vocab")]
        vocab_size: usize,
    },
    /// A `tokenizer.json` of the Hugging Face tokenizers library (e.g. GPT-2's).
    File { path: PathBuf },
}

/// A language-model data set: a source, a tokenizer, and how it is cut into blocks.
/// Every field has a default (see [`TextConfig::default`]); unknown fields are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextConfig {
    pub source: TextSource,
    pub tokenizer: TokenizerConfig,
    /// Tokens per training sequence (T); each window reads T + 1 tokens (inputs and the
    /// targets shifted by one).
    pub block_size: usize,
    /// The share of a text source (embedded or file) kept for validation: its end.
    pub val_fraction: f64,
    /// Generates the embedded corpus.
    pub seed: u64,
    /// Training batches per epoch; `None`: as many as cover the training tokens once in
    /// expectation (`ceil(tokens / (batch_size * block_size))`).
    pub batches_per_epoch: Option<usize>,
}

/// The defaults, in one place.
pub const DEFAULT_CORPUS_BYTES: usize = 1_500_000;
pub const DEFAULT_BPE_VOCAB: usize = 1024;
pub const DEFAULT_BLOCK_SIZE: usize = 256;
pub const DEFAULT_VAL_FRACTION: f64 = 0.1;

fn default_corpus_bytes() -> usize {
    DEFAULT_CORPUS_BYTES
}

fn default_bpe_vocab() -> usize {
    DEFAULT_BPE_VOCAB
}

impl Default for TextSource {
    fn default() -> Self {
        TextSource::Embedded { bytes: DEFAULT_CORPUS_BYTES }
    }
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            source: TextSource::default(),
            tokenizer: TokenizerConfig::default(),
            block_size: DEFAULT_BLOCK_SIZE,
            val_fraction: DEFAULT_VAL_FRACTION,
            seed: 0,
            batches_per_epoch: None,
        }
    }
}

impl TokenizerConfig {
    /// The tokenizer in words, for messages.
    pub fn describe(&self) -> String {
        match self {
            TokenizerConfig::Byte => "the byte tokenizer".into(),
            TokenizerConfig::Bpe { vocab_size } => format!("a BPE vocabulary of at most {vocab_size} tokens"),
            TokenizerConfig::File { path } => format!("the tokenizer {}", path.display()),
        }
    }
}

impl TextConfig {
    /// The most token ids the tokenizer can give, where that is known without loading
    /// anything (a tokenizer file is read when the data loads).
    pub fn known_vocab_size(&self) -> Option<usize> {
        match self.tokenizer {
            TokenizerConfig::Byte => Some(super::BYTE_VOCAB),
            TokenizerConfig::Bpe { vocab_size } => Some(vocab_size),
            TokenizerConfig::File { .. } => None,
        }
    }

    /// Bytes the data set holds in memory while a run trains, from the config and the
    /// files' sizes (a file that cannot be listed counts as empty: loading it says why):
    /// int64 tokens, at most one per byte of text or exactly one per u16 of a `.bin`,
    /// and the text itself while it is tokenized.
    pub fn resident_bytes(&self) -> u64 {
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let token_bytes = std::mem::size_of::<i64>() as u64;
        match &self.source {
            TextSource::Embedded { bytes } => (*bytes as u64).saturating_mul(token_bytes + 1),
            TextSource::File { path } => size(path).saturating_mul(token_bytes + 1),
            TextSource::Bin { path } => {
                let u16s = (size(&path.join("train.bin")) + size(&path.join("val.bin"))) / 2;
                u16s.saturating_mul(token_bytes)
            }
        }
    }

    /// Checks the values that need no file: sizes, the validation share, and that a BPE
    /// vocabulary is trained on text.
    pub fn validate(&self) -> Result<(), TextDataError> {
        let bad = |m: String| Err(TextDataError::Config(m));
        if self.block_size == 0 {
            return bad("block_size must be at least 1".into());
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return bad(format!("val_fraction must be between 0 and 1 (exclusive), got {}", self.val_fraction));
        }
        if self.batches_per_epoch == Some(0) {
            return bad("batches_per_epoch must be at least 1".into());
        }
        if let TextSource::Embedded { bytes: 0 } = self.source {
            return bad("the embedded corpus needs bytes >= 1".into());
        }
        match (&self.source, &self.tokenizer) {
            (TextSource::Bin { .. }, TokenizerConfig::Bpe { .. }) => {
                bad("a BPE vocabulary is trained on text, but a bin source is already tokenized: \
                 use tokenizer kind = \"file\" with the tokenizer.json that wrote it, or \"byte\""
                    .into())
            }
            (_, TokenizerConfig::Bpe { vocab_size }) if *vocab_size < 256 => bad(format!(
                "a byte-level BPE vocabulary starts from the 256 byte tokens: vocab_size must be \
                 at least 256, got {vocab_size}"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<TextConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn every_field_has_a_default_and_unknown_fields_are_refused() {
        assert_eq!(parse("{}").unwrap(), TextConfig::default());
        let c = parse(r#"{"source": {"kind": "embedded"}, "tokenizer": {"kind": "bpe"}}"#).unwrap();
        assert_eq!(c.source, TextSource::Embedded { bytes: DEFAULT_CORPUS_BYTES });
        assert_eq!(c.tokenizer, TokenizerConfig::Bpe { vocab_size: DEFAULT_BPE_VOCAB });
        let c = parse(
            r#"{"source": {"kind": "bin", "path": "d"}, "tokenizer": {"kind": "file", "path": "t.json"},
                "block_size": 64, "seed": 3, "batches_per_epoch": 7}"#,
        )
        .unwrap();
        assert_eq!(c.source, TextSource::Bin { path: "d".into() });
        assert_eq!(c.tokenizer, TokenizerConfig::File { path: "t.json".into() });
        assert_eq!((c.block_size, c.seed, c.batches_per_epoch), (64, 3, Some(7)));
        let e = parse(r#"{"block": 3}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `block`"), "{e}");
        let e = parse(r#"{"source": {"kind": "file", "path": "a", "size": 1}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `size`"), "{e}");
        let e = parse(r#"{"tokenizer": {"kind": "wordpiece"}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `wordpiece`"), "{e}");
    }

    #[test]
    fn validate_refuses_what_cannot_load() {
        assert!(TextConfig::default().validate().is_ok());
        let with = |f: fn(&mut TextConfig)| {
            let mut c = TextConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(with(|c| c.block_size = 0).contains("block_size"));
        assert!(with(|c| c.val_fraction = 1.0).contains("val_fraction"));
        assert!(with(|c| c.val_fraction = f64::NAN).contains("val_fraction"));
        assert!(with(|c| c.batches_per_epoch = Some(0)).contains("batches_per_epoch"));
        assert!(with(|c| c.source = TextSource::Embedded { bytes: 0 }).contains("bytes"));
        let e = with(|c| c.tokenizer = TokenizerConfig::Bpe { vocab_size: 100 });
        assert!(e.contains("at least 256, got 100"), "{e}");
        let e = with(|c| {
            c.source = TextSource::Bin { path: "d".into() };
            c.tokenizer = TokenizerConfig::Bpe { vocab_size: 512 };
        });
        assert!(e.contains("already tokenized"), "{e}");
    }
}
