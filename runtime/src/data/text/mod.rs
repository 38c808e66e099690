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

mod batches;
mod config;
mod corpus;
mod dataset;
mod error;
mod files;
mod tokenizer;

pub use batches::TextBatches;
pub use config::{
    TextConfig, TextSource, TokenizerConfig, DEFAULT_BLOCK_SIZE, DEFAULT_BPE_VOCAB, DEFAULT_CORPUS_BYTES,
    DEFAULT_VAL_FRACTION,
};
pub use corpus::embedded_corpus;
pub use dataset::TextDataset;
pub use error::{TextDataError, TextSplit, TokenizerLibError};
pub use tokenizer::{Tokenizer, BYTE_VOCAB};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::TempDir;
    use tch::{Device, Kind};

    fn config(source: TextSource, tokenizer: TokenizerConfig, block_size: usize) -> TextConfig {
        TextConfig { source, tokenizer, block_size, ..TextConfig::default() }
    }

    fn tokens(t: &tch::Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(t).unwrap()
    }

    #[test]
    fn the_embedded_corpus_loads_as_bytes_split_at_the_end() {
        let c = config(TextSource::Embedded { bytes: 40_000 }, TokenizerConfig::Byte, 32);
        let d = c.load().unwrap();
        let text = embedded_corpus(40_000, 0);
        let (train, val) = (tokens(&d.train), tokens(&d.val));
        assert_eq!((d.vocab_size, d.block_size, d.train.kind()), (256, 32, Kind::Int64));
        assert_eq!(train.len() + val.len(), text.len());
        assert_eq!(val.len(), text.len() - (text.len() as f64 * 0.9) as usize);
        let bytes: Vec<i64> = text.bytes().map(i64::from).collect();
        assert_eq!([train.as_slice(), val.as_slice()].concat(), bytes);
        assert!(d.source.contains("embedded corpus (seed 0"), "{}", d.source);
        let other = TextConfig { seed: 1, ..c }.load().unwrap();
        assert_ne!(tokens(&other.train), train);
    }

    #[test]
    fn a_text_file_with_a_trained_bpe() {
        let dir = TempDir::new("text-file-bpe");
        let path = dir.path().join("stories.txt");
        std::fs::write(&path, embedded_corpus(80_000, 7)).unwrap();
        let c = config(TextSource::File { path: path.clone() }, TokenizerConfig::Bpe { vocab_size: 300 }, 16);
        let d = c.load().unwrap();
        assert!(d.vocab_size <= 300 && d.vocab_size > 256, "{}", d.vocab_size);
        let text = std::fs::read_to_string(&path).unwrap();
        let (train_text, _) = files::split_text(&text, c.val_fraction);
        let train = tokens(&d.train);
        assert!(train.len() < train_text.len() && train.iter().all(|&t| t >= 0 && t < d.vocab_size));
        let ids: Vec<u32> = train.iter().map(|&t| t as u32).collect();
        assert_eq!(d.tokenizer.decode(&ids).unwrap(), train_text);
        assert_eq!(d.source, path.display().to_string());
    }

    #[test]
    fn a_bin_folder_with_a_tokenizer_json() {
        let dir = TempDir::new("text-bin-json");
        let text = embedded_corpus(30_000, 2);
        let tokenizer = Tokenizer::train_bpe(&text, 280).unwrap();
        let json = dir.path().join("tokenizer.json");
        tokenizer.save(&json).unwrap();
        let ids = tokenizer.encode(&text).unwrap();
        let write = |name: &str, ids: &[u32]| {
            let bytes: Vec<u8> = ids.iter().flat_map(|&id| (id as u16).to_le_bytes()).collect();
            std::fs::write(dir.path().join(name), bytes).unwrap();
        };
        write("train.bin", &ids[..ids.len() - 100]);
        write("val.bin", &ids[ids.len() - 100..]);
        let c = config(TextSource::Bin { path: dir.path().into() }, TokenizerConfig::File { path: json }, 64);
        let d = c.load().unwrap();
        assert_eq!(d.vocab_size as usize, tokenizer.vocab_size());
        let want: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
        assert_eq!([tokens(&d.train), tokens(&d.val)].concat(), want);
        // The byte tokenizer's vocabulary is too small for these ids: the first one over
        // 255 is named by file and offset.
        let first = ids.iter().position(|&id| id >= 256).unwrap();
        let e = config(c.source.clone(), TokenizerConfig::Byte, 64).load().unwrap_err().to_string();
        assert!(e.contains("train.bin") && e.contains(&format!("byte offset {}", 2 * first)), "{e}");
    }

    #[test]
    fn a_split_shorter_than_one_block_names_the_file_its_tokens_and_the_block_size() {
        let dir = TempDir::new("text-short");
        std::fs::write(dir.path().join("train.bin"), [7u8, 0].repeat(200)).unwrap();
        std::fs::write(dir.path().join("val.bin"), [7u8, 0, 8, 0, 9, 0]).unwrap();
        let c = config(TextSource::Bin { path: dir.path().into() }, TokenizerConfig::Byte, 3);
        let e = c.load().unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, TextDataError::TooShort { split: TextSplit::Val, tokens: 3, block_size: 3, .. }));
        assert!(m.contains("val.bin") && m.contains("holds 3 tokens") && m.contains("block_size 3 needs (4 tokens"));
        assert!(config(c.source.clone(), TokenizerConfig::Byte, 2).load().is_ok());
        let path = dir.path().join("tiny.txt");
        std::fs::write(&path, "Once upon a time there was a fox.").unwrap();
        let e = config(TextSource::File { path }, TokenizerConfig::Byte, 8).load().unwrap_err().to_string();
        assert!(e.contains("validation split of") && e.contains("tiny.txt") && e.contains("holds 4 tokens"), "{e}");
    }

    #[test]
    fn batches_from_a_dataset() {
        let c = config(TextSource::Embedded { bytes: 20_000 }, TokenizerConfig::Byte, 16);
        let d = c.load().unwrap();
        // The training tokens / (4 x 16) per batch, rounded up, cover them once.
        let per_epoch = tokens(&d.train).len().div_ceil(64);
        assert!(per_epoch > 250);
        assert_eq!(d.batches_per_epoch(4), per_epoch);
        let mut train = d.train_batches(4, 9, Device::Cpu);
        assert_eq!(train.len(), per_epoch);
        let (x, y) = train.next().unwrap();
        assert_eq!((x.size(), y.size()), (vec![4, 16], vec![4, 16]));
        let text = d.tokenizer.decode(&tokens(&x.get(0)).iter().map(|&t| t as u32).collect::<Vec<_>>()).unwrap();
        assert!(embedded_corpus(20_000, 0).contains(&text), "{text:?}");
        let fixed = TextConfig { batches_per_epoch: Some(5), ..c }.load().unwrap();
        assert_eq!(fixed.train_batches(4, 9, Device::Cpu).len(), 5);
        let val = d.val_batches(32, Device::Cpu);
        let windows = (tokens(&d.val).len() - 1) / 16;
        assert_eq!(val.num_windows(), windows);
        assert_eq!(val.map(|(x, _)| x.size()[0] as usize).sum::<usize>(), windows);
    }

    /// Cross-entropy in nats of a unigram (frequency) model of `tokens` on itself.
    fn unigram_entropy(tokens: &[i64]) -> f64 {
        let mut counts = [0u64; 256];
        tokens.iter().for_each(|&t| counts[t as usize] += 1);
        let n = tokens.len() as f64;
        counts.iter().filter(|&&c| c > 0).map(|&c| -(c as f64 / n) * (c as f64 / n).ln()).sum()
    }

    #[test]
    fn a_small_model_learns_the_embedded_corpus_below_its_unigram_entropy() {
        use tch::nn::{self, Module, OptimizerConfig};
        tch::manual_seed(0);
        let d = config(TextSource::Embedded { bytes: 100_000 }, TokenizerConfig::Byte, 32).load().unwrap();
        let unigram = unigram_entropy(&tokens(&d.val));
        // A bigram model: each byte's logits for the next one, read from a table.
        let vs = nn::VarStore::new(Device::Cpu);
        let table = nn::embedding(vs.root(), 256, 256, Default::default());
        let mut opt = nn::Adam::default().build(&vs, 0.05).unwrap();
        let loss =
            |x: &tch::Tensor, y: &tch::Tensor| table.forward(x).view([-1, 256]).cross_entropy_for_logits(&y.view([-1]));
        for (x, y) in d.train_batches(16, crate::data::epoch_seed(0, 0), Device::Cpu).take(100) {
            opt.backward_step(&loss(&x, &y));
        }
        let val: Vec<f64> =
            tch::no_grad(|| d.val_batches(64, Device::Cpu).map(|(x, y)| loss(&x, &y).double_value(&[])).collect());
        let val = val.iter().sum::<f64>() / val.len() as f64;
        eprintln!("validation loss {val:.3} nats; unigram entropy {unigram:.3} nats");
        assert!(val < unigram - 0.7, "validation loss {val} vs unigram entropy {unigram}");
    }
}
