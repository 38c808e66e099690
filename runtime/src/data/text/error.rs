//! Errors of the text data: each names the file (or the embedded corpus) and, where the
//! data itself is bad, the byte offset.

use std::fmt;
use std::path::PathBuf;
use thiserror::Error;

/// The error a tokenizer library returns.
pub type TokenizerLibError = Box<dyn std::error::Error + Send + Sync>;

/// A split of a text data set, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextSplit {
    Train,
    Val,
}

impl fmt::Display for TextSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TextSplit::Train => "training",
            TextSplit::Val => "validation",
        })
    }
}

#[derive(Debug, Error)]
pub enum TextDataError {
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: invalid UTF-8 at byte offset {offset}; a text source must be UTF-8 text \
         (for pre-tokenized token ids use source kind = \"bin\")",
        .path.display()
    )]
    InvalidUtf8 { path: PathBuf, offset: usize },
    #[error(
        "{}: {bytes} bytes is an odd length; a .bin file holds little-endian u16 token ids, \
         2 bytes each (nanoGPT's train.bin / val.bin)",
        .path.display()
    )]
    OddLength { path: PathBuf, bytes: u64 },
    #[error(
        "{}: token id {id} at byte offset {offset} is not below the vocabulary size {vocab_size} \
         of the {tokenizer} tokenizer; use the tokenizer that wrote the file",
        .path.display()
    )]
    TokenOutOfRange { path: PathBuf, offset: u64, id: u32, vocab_size: usize, tokenizer: String },
    #[error(
        "the {split} split of {origin} holds {tokens} tokens, fewer than one block of \
         block_size {block_size} needs ({} tokens: the inputs and the targets shifted by one); \
         use more text or a smaller block_size",
        .block_size + 1
    )]
    TooShort { origin: String, split: TextSplit, tokens: usize, block_size: usize },
    #[error("{}: not a tokenizer.json the tokenizers library can load: {source}", .path.display())]
    TokenizerFile {
        path: PathBuf,
        #[source]
        source: TokenizerLibError,
    },
    #[error("cannot {action} with the {tokenizer} tokenizer: {source}")]
    Tokenizer {
        action: &'static str,
        tokenizer: String,
        #[source]
        source: TokenizerLibError,
    },
    #[error("token id {id} is not in the vocabulary of the {tokenizer} tokenizer (size {vocab_size})")]
    UnknownId { id: u32, tokenizer: String, vocab_size: usize },
    #[error("invalid text data config: {0}")]
    Config(String),
}
