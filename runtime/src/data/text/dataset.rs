//! [`TextConfig::load`]: a config's source read (or generated) and tokenized into a
//! [`TextDataset`].

use super::batches::TextBatches;
use super::config::{TextConfig, TextSource, TokenizerConfig};
use super::corpus::embedded_corpus;
use super::error::{TextDataError, TextSplit};
use super::files::{read_text, read_tokens, split_text};
use super::tokenizer::Tokenizer;
use std::path::Path;
use tch::{Device, Tensor};

/// A tokenized language-model data set: two token sequences, i64 1-D, on one device.
#[derive(Debug)]
pub struct TextDataset {
    pub train: Tensor,
    pub val: Tensor,
    /// Every token id is below it: the model's vocabulary (embedding rows, logits).
    pub vocab_size: i64,
    /// Tokens per sequence (T) of the batches.
    pub block_size: i64,
    /// The config's training batches per epoch (`None`: one expected pass).
    pub batches_per_epoch: Option<usize>,
    /// Encodes prompts and decodes samples.
    pub tokenizer: Tokenizer,
    /// Where the data came from, for logs: "the embedded corpus (seed 0, ...)", a path.
    pub source: String,
}

impl TextDataset {
    /// Both sequences on `device` (e.g. resident on the GPU, so that batching is
    /// device-side indexing with no host-to-device copies).
    pub fn to_device(&self, device: Device) -> TextDataset {
        TextDataset {
            train: self.train.to_device(device),
            val: self.val.to_device(device),
            tokenizer: self.tokenizer.clone(),
            source: self.source.clone(),
            ..*self
        }
    }

    /// Training batches per epoch at `batch_size`: the config's, or as many as cover the
    /// training tokens once in expectation (at least 1).
    pub fn batches_per_epoch(&self, batch_size: i64) -> usize {
        let tokens = self.train.size1().unwrap_or(0) as usize;
        let per_batch = (batch_size.max(1) * self.block_size) as usize;
        self.batches_per_epoch.unwrap_or_else(|| tokens.div_ceil(per_batch).max(1))
    }

    /// One epoch of training batches: random windows drawn from `seed` (pass
    /// [`crate::data::epoch_seed`]`(run_seed, epoch)`). Panics if `batch_size` < 1.
    pub fn train_batches(&self, batch_size: i64, seed: u64, device: Device) -> TextBatches {
        self.train_share(batch_size, seed, crate::data::Shard::WHOLE, device)
    }

    /// A rank's share of the epoch's training batches (see [`crate::data::Shard`]): each
    /// rank takes the same number of batches of `batch_size`: the configured
    /// `batches_per_epoch` (steps), or as many as cover the training tokens once in
    /// expectation with every rank's batches together.
    pub fn train_share(&self, batch_size: i64, seed: u64, shard: crate::data::Shard, device: Device) -> TextBatches {
        let n = self.batches_per_epoch(batch_size * shard.world.max(1) as i64);
        TextBatches::random_share(&self.train, (self.block_size, batch_size, n), seed, shard, device)
    }

    /// The validation pass: every whole window in order, the same every time. Panics if
    /// `batch_size` < 1.
    pub fn val_batches(&self, batch_size: i64, device: Device) -> TextBatches {
        TextBatches::sequential(&self.val, self.block_size, batch_size, device)
    }
}

impl TextConfig {
    /// Reads or generates the text, builds the tokenizer (training a BPE vocabulary on
    /// the training split) and tokenizes both splits. Tensors are on the CPU.
    pub fn load(&self) -> Result<TextDataset, TextDataError> {
        self.validate()?;
        match &self.source {
            TextSource::Embedded { bytes } => {
                let text = embedded_corpus(*bytes, self.seed);
                let origin = format!("the embedded corpus (seed {}, {} bytes)", self.seed, text.len());
                self.load_text(&text, origin)
            }
            TextSource::File { path } => self.load_text(&read_text(path)?, path.display().to_string()),
            TextSource::Bin { path } => self.load_bins(path),
        }
    }

    fn load_text(&self, text: &str, origin: String) -> Result<TextDataset, TextDataError> {
        let (train_text, val_text) = split_text(text, self.val_fraction);
        let tokenizer = match &self.tokenizer {
            TokenizerConfig::Byte => Tokenizer::byte(),
            TokenizerConfig::Bpe { vocab_size } => Tokenizer::train_bpe(train_text, *vocab_size)?,
            TokenizerConfig::File { path } => Tokenizer::from_file(path)?,
        };
        let encode = |t: &str| -> Result<Vec<i64>, TextDataError> {
            Ok(tokenizer.encode(t)?.into_iter().map(i64::from).collect())
        };
        let (train, val) = (encode(train_text)?, encode(val_text)?);
        self.check_length(&origin, TextSplit::Train, train.len())?;
        self.check_length(&origin, TextSplit::Val, val.len())?;
        Ok(self.dataset(train, val, tokenizer, origin))
    }

    fn load_bins(&self, folder: &Path) -> Result<TextDataset, TextDataError> {
        let tokenizer = match &self.tokenizer {
            TokenizerConfig::File { path } => Tokenizer::from_file(path)?,
            // `validate` refuses BPE here: there is no text to train it on.
            TokenizerConfig::Byte | TokenizerConfig::Bpe { .. } => Tokenizer::byte(),
        };
        let name = tokenizer.to_string();
        let read = |split: TextSplit, file: &str| -> Result<Vec<i64>, TextDataError> {
            let path = folder.join(file);
            let tokens = read_tokens(&path, tokenizer.vocab_size(), &name)?;
            self.check_length(&path.display().to_string(), split, tokens.len())?;
            Ok(tokens)
        };
        let (train, val) = (read(TextSplit::Train, "train.bin")?, read(TextSplit::Val, "val.bin")?);
        Ok(self.dataset(train, val, tokenizer, format!("{} (train.bin, val.bin)", folder.display())))
    }

    fn check_length(&self, origin: &str, split: TextSplit, tokens: usize) -> Result<(), TextDataError> {
        if tokens > self.block_size {
            return Ok(());
        }
        Err(TextDataError::TooShort { origin: origin.to_string(), split, tokens, block_size: self.block_size })
    }

    fn dataset(&self, train: Vec<i64>, val: Vec<i64>, tokenizer: Tokenizer, source: String) -> TextDataset {
        TextDataset {
            train: Tensor::from_slice(&train),
            val: Tensor::from_slice(&val),
            vocab_size: tokenizer.vocab_size() as i64,
            block_size: self.block_size as i64,
            batches_per_epoch: self.batches_per_epoch,
            tokenizer,
            source,
        }
    }
}
