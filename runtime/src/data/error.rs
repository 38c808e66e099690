//! Errors of the data module.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
    #[error("CIFAR-10 folder {} does not exist", .path.display())]
    MissingFolder { path: PathBuf },
    #[error("CIFAR-10 path {} is not a folder", .path.display())]
    NotAFolder { path: PathBuf },
    #[error(
        "CIFAR-10 folder {} has no training batches (expected data_batch_1.bin .. data_batch_5.bin, \
         the binary version of CIFAR-10)",
        .path.display()
    )]
    NoTrainBatches { path: PathBuf },
    #[error("CIFAR-10 folder {} has no test_batch.bin (the validation split)", .path.display())]
    MissingTestBatch { path: PathBuf },
    #[error(
        "{}: size {size} bytes is not a multiple of the 3073-byte CIFAR-10 record \
         (1 label byte + 3072 pixel bytes); is this the binary version of CIFAR-10?",
        .path.display()
    )]
    BadFileSize { path: PathBuf, size: u64 },
    #[error("{}: record {index} has label {label}; CIFAR-10 labels are 0 to 9", .path.display())]
    BadLabel { path: PathBuf, index: usize, label: u8 },
    #[error("the {split} split of {} holds no records", .path.display())]
    EmptySplit { path: PathBuf, split: &'static str },
    #[error("cannot read {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid data config: {0}")]
    Config(String),
    #[error("invalid split: {0}")]
    Split(String),
    #[error(transparent)]
    Text(#[from] super::text::TextDataError),
}
