//! Training data with no download: an embedded synthetic image set, a CIFAR-10 loader,
//! and batching; language-model data (text sources, tokenizers, token windows) in
//! [`text`].
//!
//! * [`DataConfig`]: what a run trains on (serde, embedded in the run config), and
//!   [`DataConfig::load`], which gives a [`Dataset`].
//! * [`synthetic()`]: a deterministic, learnable, 10-class set of 32x32 RGB images,
//!   generated from a seed in well under a second. Bit-identical on every machine: it is
//!   built with a self-contained generator and plain float arithmetic, never libtorch's
//!   random numbers or reductions.
//! * [`load_cifar10`]: the binary version of CIFAR-10 (`data_batch_{1..5}.bin`,
//!   `test_batch.bin`) from a folder.
//! * [`Batches`]: one epoch of `(images, labels)` batches on a device, shuffled per epoch
//!   from a seed, with optional random horizontal flips.
//!
//! Images are f32 NCHW `(N, 3, 32, 32)`, standardised per channel; labels are i64 `(N)`.

mod batches;
mod cifar;
mod error;
#[cfg(test)]
mod learnability;
mod rng;
mod run_data;
mod shard;
mod synthetic;
pub mod text;

pub use batches::Batches;
pub use cifar::{load_cifar10, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD};
pub use error::DataError;
pub use run_data::{EpochBatches, Objective, RunData};
pub use shard::Shard;
pub use synthetic::{synthetic, DEFAULT_SYNTHETIC_NOISE};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// Image side, channels and values per image of every data set here.
pub const IMAGE_SIZE: i64 = 32;
pub const CHANNELS: i64 = 3;
pub(crate) const PIXELS: usize = (IMAGE_SIZE * IMAGE_SIZE) as usize;
pub(crate) const VALUES: usize = CHANNELS as usize * PIXELS;

/// What a run trains on. In a TOML run config:
///
/// ```toml
/// [data]
/// kind = "synthetic"      # the default; train_size, val_size, seed, noise optional
/// train_size = 5000
/// augment = true          # the default for both kinds (see [`DataConfig::augmentation`])
///
/// [data]
/// kind = "cifar10"
/// path = "data/cifar-10-batches-bin"
/// limit = 10000           # optional: at most this many records per split
///
/// [data]
/// kind = "text"           # language-model text for the transformer host
/// block_size = 64         # source, tokenizer, val_fraction, seed, batches_per_epoch
/// ```
///
/// Fields left out take their defaults; unknown fields are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataConfig {
    /// The embedded synthetic set (see [`synthetic()`]).
    Synthetic {
        #[serde(default = "default_train_size")]
        train_size: usize,
        #[serde(default = "default_val_size")]
        val_size: usize,
        #[serde(default)]
        seed: u64,
        /// Standard deviation of the additive pixel noise (pixels are roughly in [0, 1]
        /// before standardisation); higher is harder.
        #[serde(default = "default_noise")]
        noise: f32,
        /// Augment the training batches (see [`DataConfig::augmentation`]).
        #[serde(default = "yes")]
        augment: bool,
    },
    /// CIFAR-10, binary version, from the folder `path` (see [`load_cifar10`]). A relative
    /// path is taken from the working directory.
    Cifar10 {
        path: PathBuf,
        /// At most this many records per split (the first ones, in file order).
        #[serde(default)]
        limit: Option<usize>,
        /// Augment the training batches (see [`DataConfig::augmentation`]).
        #[serde(default = "yes")]
        augment: bool,
    },
    /// Language-model text (see [`text::TextConfig`]): token sequences for next-token
    /// prediction, for the transformer host.
    Text(text::TextConfig),
}

fn yes() -> bool {
    true
}

/// What is done to each training batch (validation is never augmented), seeded per
/// epoch and example, so a run is reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Augmentation {
    /// Random crop out of the image padded by this many zero pixels (0: none).
    pub crop_padding: i64,
    /// Random horizontal flip.
    pub hflip: bool,
}

impl Augmentation {
    /// Applies it to an epoch's training batches.
    pub fn apply(self, batches: Batches) -> Batches {
        batches.with_crop(self.crop_padding).with_hflip(self.hflip)
    }
}

fn default_train_size() -> usize {
    5000
}

fn default_val_size() -> usize {
    1000
}

fn default_noise() -> f32 {
    DEFAULT_SYNTHETIC_NOISE
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig::Synthetic {
            train_size: default_train_size(),
            val_size: default_val_size(),
            seed: 0,
            noise: default_noise(),
            augment: true,
        }
    }
}

impl DataConfig {
    /// The training-batch augmentation (`augment = false`: none). CIFAR-10: esper-lite's,
    /// a random crop with padding 4 and a horizontal flip. The synthetic set: the crop
    /// only, because its class is the orientation of a grating, which a flip mirrors
    /// into another class's.
    pub fn augmentation(&self) -> Augmentation {
        match self {
            DataConfig::Synthetic { augment: true, .. } => Augmentation { crop_padding: 4, hflip: false },
            DataConfig::Cifar10 { augment: true, .. } => Augmentation { crop_padding: 4, hflip: true },
            _ => Augmentation::default(),
        }
    }

    /// The number of classes of an image set (10 for both kinds), known without loading
    /// it; `None` for text (its vocabulary is the tokenizer's).
    pub fn num_classes(&self) -> Option<i64> {
        match self {
            DataConfig::Synthetic { .. } => Some(synthetic::NUM_CLASSES as i64),
            DataConfig::Cifar10 { .. } => Some(CIFAR10_CLASSES.len() as i64),
            DataConfig::Text(_) => None,
        }
    }

    /// The `kind` of this data set as the config writes it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            DataConfig::Synthetic { .. } => "synthetic",
            DataConfig::Cifar10 { .. } => "cifar10",
            DataConfig::Text(_) => "text",
        }
    }

    /// The number of training examples, from the config and (CIFAR-10) the training
    /// files' sizes, without reading them; None where the files cannot be listed (the
    /// load then says why).
    pub fn train_examples(&self) -> Option<usize> {
        match self {
            DataConfig::Synthetic { train_size, .. } => Some(*train_size),
            DataConfig::Cifar10 { path, limit, .. } => {
                cifar::train_records(path).map(|n| limit.map_or(n, |l| n.min(l)))
            }
            DataConfig::Text(_) => None,
        }
    }

    /// Generates or reads the data set. Tensors are on the CPU.
    pub fn load(&self) -> Result<RunData, DataError> {
        Ok(match self {
            DataConfig::Synthetic { train_size, val_size, seed, noise, .. } => {
                RunData::Images(synthetic(*train_size, *val_size, *seed, *noise)?)
            }
            DataConfig::Cifar10 { path, limit, .. } => RunData::Images(load_cifar10(path, *limit)?),
            DataConfig::Text(text) => RunData::Text(text.load()?),
        })
    }
}

/// A train and a validation split, standardised with the same per-channel statistics.
#[derive(Debug)]
pub struct Dataset {
    pub train: Split,
    pub val: Split,
    pub num_classes: i64,
    /// One name per class, for reports.
    pub class_names: Vec<String>,
    /// The per-channel mean and standard deviation the images were standardised with
    /// (`x = (raw - mean) / std`), in raw pixel units (`[0, 1]` for CIFAR-10).
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Where the data came from, for logs: "synthetic (seed 0, ...)" or "CIFAR-10 from ...".
    pub source: String,
}

impl Dataset {
    /// Both splits on `device` (e.g. to keep the whole set resident on the GPU, so that
    /// batching is device-side indexing with no host-to-device copies).
    pub fn to_device(&self, device: Device) -> Dataset {
        Dataset {
            train: self.train.to_device(device),
            val: self.val.to_device(device),
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
            mean: self.mean,
            std: self.std,
            source: self.source.clone(),
        }
    }
}

/// One split: images f32 `(N, C, H, W)` and labels i64 `(N)`, on the same device.
#[derive(Debug)]
pub struct Split {
    images: Tensor,
    labels: Tensor,
}

impl Split {
    /// Checks kinds, ranks, lengths and devices.
    pub fn new(images: Tensor, labels: Tensor) -> Result<Self, DataError> {
        let (is, ls) = (images.size(), labels.size());
        if images.kind() != Kind::Float || is.len() != 4 {
            return Err(DataError::Split(format!("images must be f32 (N, C, H, W), got {:?} {is:?}", images.kind())));
        }
        if labels.kind() != Kind::Int64 || ls.len() != 1 || ls[0] != is[0] {
            return Err(DataError::Split(format!(
                "labels must be i64 (N) with N = {} images, got {:?} {ls:?}",
                is[0],
                labels.kind()
            )));
        }
        if images.device() != labels.device() {
            return Err(DataError::Split(format!(
                "images on {:?} but labels on {:?}",
                images.device(),
                labels.device()
            )));
        }
        Ok(Self { images, labels })
    }

    /// From NCHW pixel values of 3x32x32 images and their labels (CPU tensors).
    pub(crate) fn from_vecs(pixels: &[f32], labels: &[i64]) -> Self {
        debug_assert_eq!(pixels.len(), labels.len() * VALUES);
        let n = labels.len() as i64;
        Self {
            images: Tensor::from_slice(pixels).view([n, CHANNELS, IMAGE_SIZE, IMAGE_SIZE]),
            labels: Tensor::from_slice(labels),
        }
    }

    pub fn images(&self) -> &Tensor {
        &self.images
    }

    pub fn labels(&self) -> &Tensor {
        &self.labels
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn device(&self) -> Device {
        self.images.device()
    }

    /// The split on `device` (shares storage when it is already there).
    pub fn to_device(&self, device: Device) -> Split {
        Split { images: self.images.to_device(device), labels: self.labels.to_device(device) }
    }

    /// A view sharing the same storage.
    pub fn shallow_clone(&self) -> Split {
        Split { images: self.images.shallow_clone(), labels: self.labels.shallow_clone() }
    }

    /// One epoch of batches of `batch_size` (the last one may be smaller), delivered on
    /// `device`. `shuffle`: `None` keeps the split's order (evaluation); `Some(seed)` uses
    /// a permutation determined by that seed alone (training: pass a seed that changes
    /// every epoch, e.g. [`epoch_seed`]`(run_seed, epoch)`). Panics if `batch_size` < 1.
    pub fn batches(&self, batch_size: i64, shuffle: Option<u64>, device: Device) -> Batches {
        Batches::new(self, batch_size, shuffle, device)
    }
}

/// A per-epoch shuffling seed from a run seed and an epoch number: distinct for every
/// (seed, epoch) pair in practice (unlike `seed + epoch`).
pub fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    rng::Rng::stream(seed, &[epoch]).next_u64()
}

/// Per-channel mean and (population) standard deviation of NCHW 3-channel images,
/// accumulated in f64 in a fixed order (deterministic).
pub(crate) fn channel_stats(pixels: &[f32]) -> ([f32; 3], [f32; 3]) {
    let n = pixels.len() / VALUES;
    let count = (n * PIXELS).max(1) as f64;
    let mut mean = [0f64; 3];
    let mut var = [0f64; 3];
    for image in pixels.chunks_exact(VALUES) {
        for (c, plane) in image.chunks_exact(PIXELS).enumerate() {
            mean[c] += plane.iter().map(|&v| v as f64).sum::<f64>();
        }
    }
    mean.iter_mut().for_each(|m| *m /= count);
    for image in pixels.chunks_exact(VALUES) {
        for (c, plane) in image.chunks_exact(PIXELS).enumerate() {
            var[c] += plane.iter().map(|&v| (v as f64 - mean[c]).powi(2)).sum::<f64>();
        }
    }
    let std = var.map(|v| ((v / count).sqrt() as f32).max(1e-6));
    (mean.map(|m| m as f32), std)
}

/// `x = (x - mean) / std` per channel, in place, for NCHW 3-channel images.
pub(crate) fn standardise(pixels: &mut [f32], mean: [f32; 3], std: [f32; 3]) {
    for image in pixels.chunks_exact_mut(VALUES) {
        for (c, plane) in image.chunks_exact_mut(PIXELS).enumerate() {
            plane.iter_mut().for_each(|v| *v = (*v - mean[c]) / std[c]);
        }
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh folder under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("esper-data-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_batches_are_augmented_by_default_and_the_synthetic_set_is_never_flipped() {
        let synthetic: DataConfig = serde_json::from_str(r#"{"kind": "synthetic"}"#).unwrap();
        assert_eq!(synthetic.augmentation(), Augmentation { crop_padding: 4, hflip: false });
        let cifar: DataConfig = serde_json::from_str(r#"{"kind": "cifar10", "path": "/d"}"#).unwrap();
        assert_eq!(cifar.augmentation(), Augmentation { crop_padding: 4, hflip: true });
        let off: DataConfig = serde_json::from_str(r#"{"kind": "cifar10", "path": "/d", "augment": false}"#).unwrap();
        assert_eq!(off.augmentation(), Augmentation::default());
    }

    fn synthetic_config(train_size: usize, seed: u64) -> DataConfig {
        DataConfig::Synthetic { train_size, val_size: 1000, seed, noise: DEFAULT_SYNTHETIC_NOISE, augment: true }
    }

    #[test]
    fn config_default_and_serde() {
        assert_eq!(DataConfig::default(), synthetic_config(5000, 0));
        let c: DataConfig = serde_json::from_str(r#"{"kind": "synthetic"}"#).unwrap();
        assert_eq!(c, DataConfig::default());
        let c: DataConfig = serde_json::from_str(r#"{"kind": "synthetic", "train_size": 20, "seed": 3}"#).unwrap();
        assert_eq!(c, synthetic_config(20, 3));
        let c: DataConfig = serde_json::from_str(r#"{"kind": "cifar10", "path": "/d", "limit": 5}"#).unwrap();
        assert_eq!(c, DataConfig::Cifar10 { path: "/d".into(), limit: Some(5), augment: true });
        let c: DataConfig = serde_json::from_str(r#"{"kind": "cifar10", "path": "/d"}"#).unwrap();
        assert_eq!(c, DataConfig::Cifar10 { path: "/d".into(), limit: None, augment: true });
        // Round trip.
        for c in [c, DataConfig::default()] {
            let s = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<DataConfig>(&s).unwrap(), c);
        }
        // Errors: unknown kind, unknown field, missing path.
        let e = serde_json::from_str::<DataConfig>(r#"{"kind": "mnist"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown variant `mnist`"), "{e}");
        let e = serde_json::from_str::<DataConfig>(r#"{"kind": "synthetic", "trian_size": 5}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `trian_size`"), "{e}");
        let e = serde_json::from_str::<DataConfig>(r#"{"kind": "cifar10", "path": "/d", "x": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
        let e = serde_json::from_str::<DataConfig>(r#"{"kind": "cifar10"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `path`"), "{e}");
    }

    #[test]
    fn load_dispatches() {
        let d =
            DataConfig::Synthetic { train_size: 30, val_size: 20, seed: 1, noise: 0.1, augment: false }.load().unwrap();
        assert_eq!(d.sizes(), (30, 20, "images"));
        let e = DataConfig::Cifar10 { path: "/definitely/not/here".into(), limit: None, augment: false }
            .load()
            .unwrap_err();
        assert!(matches!(e, DataError::MissingFolder { .. }));
    }

    #[test]
    fn default_set_sizes_and_generation_time() {
        let started = std::time::Instant::now();
        let d = DataConfig::default().load().unwrap();
        let elapsed = started.elapsed();
        eprintln!("default synthetic set generated in {elapsed:?}");
        assert_eq!((d.sizes(), d.num_outputs()), ((5000, 1000, "images"), 10));
        assert!(elapsed.as_secs_f64() < 10.0, "{elapsed:?}");
    }

    #[test]
    fn epoch_seeds_differ() {
        let seeds: std::collections::HashSet<u64> =
            (0..20).flat_map(|s| (0..20).map(move |e| epoch_seed(s, e))).collect();
        assert_eq!(seeds.len(), 400);
        assert_eq!(epoch_seed(3, 4), epoch_seed(3, 4));
    }

    #[test]
    fn split_new_checks() {
        let ok = Split::new(
            Tensor::zeros([4, 3, 8, 8], (Kind::Float, Device::Cpu)),
            Tensor::zeros([4], (Kind::Int64, Device::Cpu)),
        );
        assert_eq!(ok.unwrap().len(), 4);
        let e = Split::new(
            Tensor::zeros([4, 3, 8, 8], (Kind::Float, Device::Cpu)),
            Tensor::zeros([5], (Kind::Int64, Device::Cpu)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("N = 4"), "{e}");
        let e = Split::new(
            Tensor::zeros([4, 8, 8], (Kind::Float, Device::Cpu)),
            Tensor::zeros([4], (Kind::Int64, Device::Cpu)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("images must be"), "{e}");
    }

    #[test]
    fn stats_and_standardise() {
        // Two images; channel c has constant value c + image index.
        let mut px = vec![0f32; 2 * VALUES];
        for (i, image) in px.chunks_exact_mut(VALUES).enumerate() {
            for (c, plane) in image.chunks_exact_mut(PIXELS).enumerate() {
                plane.fill((c + i) as f32);
            }
        }
        let (mean, std) = channel_stats(&px);
        assert_eq!(mean, [0.5, 1.5, 2.5]);
        assert_eq!(std, [0.5, 0.5, 0.5]);
        standardise(&mut px, mean, std);
        assert_eq!(px[0], -1.0);
        assert_eq!(px[VALUES + 2 * PIXELS], 1.0);
    }
}
