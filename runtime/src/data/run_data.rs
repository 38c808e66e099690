//! What a run trains on, whatever its kind: images for the CNN host, token sequences for
//! the transformer host, and how the run judges its model on them.

use super::{text::TextBatches, text::TextDataset, Augmentation, Batches, Dataset, Shard};
use tch::{Device, Tensor};

/// Examples per validation batch of an image set (no gradients: larger than a training
/// batch). Text validates in training-sized batches: its logits are `(B, T, vocab)`.
const IMAGE_VAL_BATCH: i64 = 256;

/// What the lifecycle's controller and gates judge a run by, as a *score* in points,
/// higher better: the validation accuracy in percent for images, the validation loss for
/// text (lower is better; see [`Objective::score`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    Accuracy,
    Loss,
}

impl Objective {
    /// The score of a validation with mean loss `loss` and accuracy `accuracy` (%).
    /// Accuracy: the accuracy itself. Loss: `-100 ln(loss)`, so that one point up is the
    /// loss about 1% lower, at any scale of loss; the thresholds in points (plateau,
    /// gates, contributions) then mean the same share of the loss in every run.
    pub fn score(self, loss: f64, accuracy: f64) -> f64 {
        match self {
            Objective::Accuracy => accuracy,
            Objective::Loss => -100.0 * loss.max(f64::MIN_POSITIVE).ln(),
        }
    }

    /// The score's name, for messages ("loss score dropped 2.1 points").
    pub fn score_name(self) -> &'static str {
        match self {
            Objective::Accuracy => "accuracy",
            Objective::Loss => "loss score",
        }
    }
}

/// A loaded data set of either kind (see [`super::DataConfig::load`]).
#[derive(Debug)]
pub enum RunData {
    Images(Dataset),
    Text(TextDataset),
}

impl RunData {
    /// One epoch of training batches, shuffled (images) or drawn (text) from `seed`
    /// (pass [`super::epoch_seed`]`(run_seed, epoch)`), images augmented as given; of a
    /// multi-process run, `shard`'s share ([`Shard::WHOLE`] otherwise).
    pub fn train_batches(
        &self,
        batch_size: i64,
        seed: u64,
        (augment, shard): (Augmentation, Shard),
        device: Device,
    ) -> EpochBatches {
        match self {
            RunData::Images(d) => {
                let batches = d.train.batches(batch_size, Some(seed), device).shard(shard);
                EpochBatches::Images(augment.apply(batches))
            }
            RunData::Text(d) => EpochBatches::Text(d.train_share(batch_size, seed, shard, device)),
        }
    }

    /// The validation pass, the same every time (`train_batch_size`: the run's training
    /// batch, which text validates in).
    pub fn val_batches(&self, train_batch_size: i64, device: Device) -> EpochBatches {
        match self {
            RunData::Images(d) => EpochBatches::Images(d.val.batches(IMAGE_VAL_BATCH, None, device)),
            RunData::Text(d) => EpochBatches::Text(d.val_batches(train_batch_size, device)),
        }
    }

    /// Training and validation size for logs: images, or tokens.
    pub fn sizes(&self) -> (usize, usize, &'static str) {
        let tokens = |t: &Tensor| t.size1().unwrap_or(0) as usize;
        match self {
            RunData::Images(d) => (d.train.len(), d.val.len(), "images"),
            RunData::Text(d) => (tokens(&d.train), tokens(&d.val), "tokens"),
        }
    }

    /// The classes a model's logits must cover: the image classes, or the vocabulary.
    pub fn num_outputs(&self) -> i64 {
        match self {
            RunData::Images(d) => d.num_classes,
            RunData::Text(d) => d.vocab_size,
        }
    }

    pub fn objective(&self) -> Objective {
        match self {
            RunData::Images(_) => Objective::Accuracy,
            RunData::Text(_) => Objective::Loss,
        }
    }
}

/// One epoch of `(inputs, targets)` batches of either kind: images f32 `(B, C, H, W)`
/// with labels i64 `(B)`, or tokens i64 `(B, T)` with the next tokens i64 `(B, T)`.
#[derive(Debug)]
pub enum EpochBatches {
    Images(Batches),
    Text(TextBatches),
}

impl Iterator for EpochBatches {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            EpochBatches::Images(b) => b.next(),
            EpochBatches::Text(b) => b.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            EpochBatches::Images(b) => b.size_hint(),
            EpochBatches::Text(b) => b.size_hint(),
        }
    }
}

impl ExactSizeIterator for EpochBatches {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_point_is_about_one_percent_of_the_loss_at_any_scale() {
        let gain = |from: f64, to: f64| Objective::Loss.score(to, 0.0) - Objective::Loss.score(from, 0.0);
        for loss in [0.05, 1.0, 4.0, 10.8] {
            let one_percent = gain(loss, loss * 0.99);
            assert!((one_percent - 1.005).abs() < 0.01, "{loss}: {one_percent}");
        }
        assert!(gain(2.0, 2.5) < 0.0, "a higher loss scores lower");
        assert!(Objective::Loss.score(0.0, 0.0).is_finite());
        assert_eq!(Objective::Accuracy.score(1.7, 42.5), 42.5);
    }

    fn all_rows(batches: EpochBatches) -> (Vec<Vec<f32>>, usize) {
        let mut rows = Vec::new();
        let mut n = 0;
        for (x, _) in batches {
            n += 1;
            let x = x.to_kind(tch::Kind::Float).flatten(1, -1);
            rows.extend(Vec::<Vec<f32>>::try_from(x).unwrap());
        }
        (rows, n)
    }

    #[test]
    fn two_ranks_share_an_epoch_without_overlap_augmented_alike() {
        let images =
            super::super::DataConfig::Synthetic { train_size: 40, val_size: 8, seed: 2, noise: 0.1, augment: true };
        let augment = images.augmentation();
        let data = images.load().unwrap();
        let share = |rank| data.train_batches(8, 5, (augment, Shard { rank, world: 2 }), Device::Cpu);
        let (whole, _) = all_rows(data.train_batches(8, 5, (augment, Shard::WHOLE), Device::Cpu));
        let ((r0, n0), (r1, n1)) = (all_rows(share(0)), all_rows(share(1)));
        assert_eq!((r0.len(), r1.len(), n0, n1), (20, 20, 3, 3));
        // Together the whole epoch, each example once, cropped as in the whole epoch.
        let mut both = [r0, r1].concat();
        let mut whole = whole;
        let key = |r: &Vec<f32>| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        both.sort_by_key(key);
        whole.sort_by_key(key);
        assert!(both == whole, "the two shares are the epoch");

        let text = super::super::text::TextConfig {
            source: super::super::text::TextSource::Embedded { bytes: 5000 },
            block_size: 8,
            batches_per_epoch: Some(6),
            ..Default::default()
        };
        let data = RunData::Text(text.load().unwrap());
        let share = |rank| data.train_batches(4, 9, (Augmentation::default(), Shard { rank, world: 2 }), Device::Cpu);
        let ((t0, m0), (t1, m1)) = (all_rows(share(0)), all_rows(share(1)));
        assert_eq!((m0, m1), (6, 6), "the configured batches per epoch are steps: every rank takes them");
        assert_ne!(t0, t1);
    }
}
