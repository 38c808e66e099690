//! Language-model data: text sources, tokenizers, and batches of token windows.
//!
//! * [`TextConfig`]: a source ([`TextSource`]: the embedded corpus, a UTF-8 text file, or
//!   nanoGPT-style `train.bin` / `val.bin`), a tokenizer ([`TokenizerConfig`]: bytes, a
//!   BPE vocabulary trained on the training text, or a `tokenizer.json`), the block size
//!   and the validation share. [`TextConfig::load`] gives a [`TextDataset`].
//! * [`embedded_corpus`]: short children's stories from a seeded grammar, generated in a
//!   fraction of a second, bit-identical on every machine; nothing to download.
//! * [`Tokenizer`]: `encode`, `decode`, `vocab_size`; byte-level, or the Hugging Face
//!   `tokenizers` library's (pure Rust, no C dependency).
//! * [`TextBatches`]: `(inputs, targets)` i64 `(B, T)` batches, targets the inputs shifted
//!   by one token: random windows per epoch from a seed for training, consecutive
//!   windows for validation.
//!
//! Bad input is a [`TextDataError`] naming the file and, for bad contents, the byte
//! offset: invalid UTF-8, a token id outside the vocabulary, a `.bin` of odd length, a
//! split shorter than one block and its target, a missing file.

mod config;
mod corpus;
mod error;
mod tokenizer;

pub use config::{
    TextConfig, TextSource, TokenizerConfig, DEFAULT_BLOCK_SIZE, DEFAULT_BPE_VOCAB, DEFAULT_CORPUS_BYTES,
    DEFAULT_VAL_FRACTION,
};
pub use corpus::embedded_corpus;
pub use error::{TextDataError, TextSplit, TokenizerLibError};
pub use tokenizer::{Tokenizer, BYTE_VOCAB};
