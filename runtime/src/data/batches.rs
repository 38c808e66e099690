//! One epoch of mini-batches over a split.

use super::rng::Rng;
use super::{Shard, Split};
use tch::{Device, Kind, Tensor};

/// Stream ids under the epoch seed, so shuffling and flipping draw independent numbers.
const SHUFFLE_STREAM: u64 = 1;
const FLIP_STREAM: u64 = 2;
const CROP_STREAM: u64 = 3;

/// An iterator over one epoch of `(images, labels)` batches of a [`Split`]: images f32
/// `(B, C, H, W)`, labels i64 `(B)`, on the target device. Every example appears exactly
/// once per epoch; all batches have `batch_size` examples except perhaps the last.
///
/// Made by [`Split::batches`]: in order, or in a permutation determined by a seed. Each batch is gathered with one `index_select` where the split
/// lives, then moved to the target device (non-blocking; a no-op when it is already
/// there). For CUDA, moving the whole data set once with [`super::Dataset::to_device`]
/// avoids host-to-device copies altogether. In-order batches of a split already on the
/// target device are views of it: do not modify them in place.
///
/// The iterator holds shallow clones of the split's tensors, so it borrows nothing.
#[derive(Debug)]
pub struct Batches {
    images: Tensor,
    labels: Tensor,
    /// The epoch's example order; `None` is `0..len` (batches are then slices).
    order: Option<Vec<i64>>,
    /// Per example (by index in the split): whether to flip it horizontally.
    flips: Option<Vec<bool>>,
    /// The crop's zero padding, and per example (by index in the split) the crop's
    /// offsets (rows, columns) into the padded image, each in `0..=2 * padding`.
    crops: Option<(i64, Vec<(i64, i64)>)>,
    seed: u64,
    /// Examples in the split (what the flips and crops are drawn for).
    split_len: usize,
    /// Examples in the epoch (the split's, or a rank's share of them).
    len: usize,
    batch_size: usize,
    device: Device,
    next: usize,
}

impl Batches {
    pub(super) fn new(split: &Split, batch_size: i64, shuffle: Option<u64>, device: Device) -> Self {
        assert!(batch_size > 0, "batch size must be at least 1, got {batch_size}");
        let batch_size = batch_size as usize;
        let len = split.len();
        let seed = shuffle.unwrap_or(0);
        let order = shuffle.map(|seed| Rng::stream(seed, &[SHUFFLE_STREAM]).permutation(len));
        Self {
            images: split.images().shallow_clone(),
            labels: split.labels().shallow_clone(),
            order,
            flips: None,
            crops: None,
            seed,
            split_len: len,
            len,
            batch_size,
            device,
            next: 0,
        }
    }

    /// Only `shard`'s share of the epoch (see [`Shard`]); augmentations drawn as for the
    /// whole epoch, so an example is cropped and flipped the same on any rank.
    pub fn shard(mut self, shard: Shard) -> Self {
        if shard.world > 1 {
            let order = self.order.take().unwrap_or_else(|| (0..self.split_len as i64).collect());
            let share = shard.take(&order);
            self.len = share.len();
            self.order = Some(share);
        }
        self
    }

    /// With `on`, flips each example horizontally with probability 1/2, decided by the
    /// shuffle seed (0 for in-order batches): the same every time for the same seed,
    /// different for another. A data augmentation for training splits; off by default.
    pub fn with_hflip(mut self, on: bool) -> Self {
        self.flips = on.then(|| {
            let mut rng = Rng::stream(self.seed, &[FLIP_STREAM]);
            (0..self.split_len).map(|_| rng.coin()).collect()
        });
        self
    }

    /// With `padding > 0`, crops each example at a random place out of the image padded
    /// with `padding` zeros on every side (the same size back: a random translation by up
    /// to `padding` pixels), decided by the shuffle seed as [`Batches::with_hflip`]. A
    /// data augmentation for training splits; off by default.
    pub fn with_crop(mut self, padding: i64) -> Self {
        self.crops = (padding > 0).then(|| {
            let mut rng = Rng::stream(self.seed, &[CROP_STREAM]);
            let span = 2 * padding as u64 + 1;
            (padding, (0..self.split_len).map(|_| (rng.below(span) as i64, rng.below(span) as i64)).collect())
        });
        self
    }

    /// The examples of positions `start..end` of the epoch, as split indices.
    fn examples(&self, start: usize, end: usize) -> Vec<usize> {
        match &self.order {
            None => (start..end).collect(),
            Some(order) => order[start..end].iter().map(|&i| i as usize).collect(),
        }
    }

    /// Batches in the whole epoch (the iterator's `len()` is what remains).
    pub fn num_batches(&self) -> usize {
        self.len.div_ceil(self.batch_size)
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Examples in the epoch.
    pub fn num_examples(&self) -> usize {
        self.len
    }
}

impl Iterator for Batches {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.len {
            return None;
        }
        let (start, end) = (self.next, (self.next + self.batch_size).min(self.len));
        self.next = end;
        let (x, y) = match &self.order {
            None => {
                let n = (end - start) as i64;
                (self.images.narrow(0, start as i64, n), self.labels.narrow(0, start as i64, n))
            }
            Some(order) => {
                let index = Tensor::from_slice(&order[start..end]).to_device(self.images.device());
                (self.images.index_select(0, &index), self.labels.index_select(0, &index))
            }
        };
        let mut x = x.to_device_(self.device, Kind::Float, true, false);
        let y = y.to_device_(self.device, Kind::Int64, true, false);
        if let Some((padding, offsets)) = &self.crops {
            let offsets: Vec<(i64, i64)> = self.examples(start, end).into_iter().map(|i| offsets[i]).collect();
            x = crop(&x, *padding, &offsets);
        }
        if let Some(flips) = &self.flips {
            let mask: Vec<bool> = self.examples(start, end).into_iter().map(|i| flips[i]).collect();
            if mask.iter().any(|&f| f) {
                let mask = Tensor::from_slice(&mask).to_device(self.device).view([-1, 1, 1, 1]);
                x = x.flip([3i64]).where_self(&mask, &x);
            }
        }
        Some((x, y))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.len - self.next).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches {}

/// Each image `b` of `x` (B, C, H, W) cut at rows `dy..dy + H` and columns `dx..dx + W`
/// of itself padded with `padding` zeros, `(dy, dx) = offsets[b]`: two gathers for the
/// whole batch.
fn crop(x: &Tensor, padding: i64, offsets: &[(i64, i64)]) -> Tensor {
    let (b, c, h, w) = x.size4().expect("image batches are (B, C, H, W)");
    let padded = x.constant_pad_nd([padding, padding, padding, padding]);
    let device = x.device();
    let start = |pick: fn(&(i64, i64)) -> i64| {
        Tensor::from_slice(&offsets.iter().map(pick).collect::<Vec<i64>>()).to_device(device)
    };
    let rows = (start(|o| o.0).view([b, 1, 1, 1]) + Tensor::arange(h, (Kind::Int64, device)).view([1, 1, h, 1]))
        .expand([b, c, h, w + 2 * padding], false);
    let cols = (start(|o| o.1).view([b, 1, 1, 1]) + Tensor::arange(w, (Kind::Int64, device)).view([1, 1, 1, w]))
        .expand([b, c, h, w], false);
    padded.gather(2, &rows, false).gather(3, &cols, false)
}

#[cfg(test)]
mod tests {
    use super::super::epoch_seed;
    use super::*;

    /// `n` examples; example i has label i and pixel (c, h, w) = 1000 i + w.
    fn indexed_split(n: i64) -> Split {
        let w = Tensor::arange(32, (Kind::Float, Device::Cpu)).view([1, 1, 1, 32]);
        let i = Tensor::arange(n, (Kind::Float, Device::Cpu)).view([n, 1, 1, 1]) * 1000.0;
        let images = (w + i).expand([n, 3, 32, 32], false).contiguous();
        Split::new(images, Tensor::arange(n, (Kind::Int64, Device::Cpu))).unwrap()
    }

    fn labels_of(batches: Batches) -> Vec<Vec<i64>> {
        batches.map(|(_, y)| Vec::<i64>::try_from(&y).unwrap()).collect()
    }

    #[test]
    fn in_order_covers_all_with_partial_last_batch() {
        let s = indexed_split(10);
        let b = s.batches(4, None, Device::Cpu);
        assert_eq!((b.num_batches(), b.len(), b.num_examples(), b.batch_size()), (3, 3, 10, 4));
        let batches: Vec<_> = b.collect();
        assert_eq!(batches.len(), 3);
        let sizes: Vec<_> = batches.iter().map(|(x, y)| (x.size(), y.size())).collect();
        assert_eq!(sizes[0], (vec![4, 3, 32, 32], vec![4]));
        assert_eq!(sizes[2], (vec![2, 3, 32, 32], vec![2]));
        let labels: Vec<i64> = batches.iter().flat_map(|(_, y)| Vec::<i64>::try_from(y).unwrap()).collect();
        assert_eq!(labels, (0..10).collect::<Vec<_>>());
        // Images travel with their labels.
        for (x, y) in &batches {
            let want = y.to_kind(Kind::Float) * 1000.0;
            assert!(x.select(3, 0).select(2, 5).select(1, 2).allclose(&want, 0.0, 0.0, false));
        }
        // Batch size larger than the split: one batch.
        assert_eq!(labels_of(s.batches(64, None, Device::Cpu)), vec![(0..10).collect::<Vec<_>>()]);
    }

    #[test]
    fn shuffled_is_a_permutation_reproducible_and_epoch_dependent() {
        let s = indexed_split(103);
        let flat = |b: Batches| -> Vec<i64> { labels_of(b).concat() };
        let e0 = flat(s.batches(16, Some(epoch_seed(7, 0)), Device::Cpu));
        let mut sorted = e0.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..103).collect::<Vec<_>>(), "every example exactly once");
        assert_ne!(e0, (0..103).collect::<Vec<_>>(), "shuffled");
        assert_eq!(e0, flat(s.batches(16, Some(epoch_seed(7, 0)), Device::Cpu)), "reproducible");
        // The order does not depend on the batch size.
        assert_eq!(e0, flat(s.batches(5, Some(epoch_seed(7, 0)), Device::Cpu)));
        let e1 = flat(s.batches(16, Some(epoch_seed(7, 1)), Device::Cpu));
        assert_ne!(e0, e1, "differs between epochs");
        let mut sorted = e1.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..103).collect::<Vec<_>>());
        assert_ne!(e0, flat(s.batches(16, Some(epoch_seed(8, 0)), Device::Cpu)), "differs between seeds");
        let sizes: Vec<i64> = s.batches(16, Some(epoch_seed(7, 0)), Device::Cpu).map(|(_, y)| y.size()[0]).collect();
        assert_eq!(sizes, vec![16, 16, 16, 16, 16, 16, 7]);
        // Images still travel with their labels.
        for (x, y) in s.batches(16, Some(epoch_seed(7, 0)), Device::Cpu) {
            let want = y.to_kind(Kind::Float) * 1000.0 + 31.0;
            assert!(x.select(3, 31).select(2, 0).select(1, 1).allclose(&want, 0.0, 0.0, false));
        }
    }

    #[test]
    fn hflip_is_deterministic_and_keeps_labels() {
        let s = indexed_split(200);
        let flipped_ids = |epoch: u64| -> Vec<i64> {
            let mut ids = Vec::new();
            for (x, y) in s.batches(32, Some(epoch_seed(3, epoch)), Device::Cpu).with_hflip(true) {
                let y = Vec::<i64>::try_from(&y).unwrap();
                let first_col = Vec::<f32>::try_from(&x.select(1, 0).select(1, 0).select(1, 0)).unwrap();
                for (label, v) in y.iter().zip(first_col) {
                    let base = *label as f32 * 1000.0;
                    // Column 0 holds w = 0 when unflipped and w = 31 when flipped.
                    assert!(v == base || v == base + 31.0, "example {label}: {v}");
                    if v == base + 31.0 {
                        ids.push(*label);
                    }
                }
            }
            ids.sort_unstable();
            ids
        };
        let e0 = flipped_ids(0);
        assert!((60..140).contains(&e0.len()), "about half flipped: {}", e0.len());
        assert_eq!(e0, flipped_ids(0));
        assert_ne!(e0, flipped_ids(1));
        // Off: nothing flipped; and in-order batches can flip too.
        let unflipped = s.batches(50, None, Device::Cpu).with_hflip(false).all(|(x, y)| {
            x.select(3, 0).select(2, 0).select(1, 0).allclose(&(y.to_kind(Kind::Float) * 1000.0), 0.0, 0.0, false)
        });
        assert!(unflipped);
        let n: i64 = s
            .batches(50, None, Device::Cpu)
            .with_hflip(true)
            .map(|(x, _)| {
                x.select(3, 0).select(2, 0).select(1, 0).remainder(1000.0).eq(31.0).sum(Kind::Int64).int64_value(&[])
            })
            .sum();
        assert!((60..140).contains(&n), "{n}");
    }

    #[test]
    fn crop_translates_each_example_by_its_own_offsets_within_the_padding() {
        let s = indexed_split(64);
        let pixels = |x: &Tensor| Vec::<f32>::try_from(&x.flatten(0, -1)).unwrap();
        let mut shifts = std::collections::BTreeSet::new();
        for (x, y) in s.batches(16, Some(epoch_seed(5, 1)), Device::Cpu).with_crop(4) {
            assert_eq!(x.size(), [16, 3, 32, 32]);
            for (b, label) in Vec::<i64>::try_from(&y).unwrap().into_iter().enumerate() {
                // Pixel (h, w) of example i is 1000 i + w; cropped: 1000 i + w - dx inside the
                // image, 0 in the padding. Find dx from a row that is inside.
                let row = pixels(&x.get(b as i64).get(0).get(16));
                let inside: Vec<(usize, f32)> = row.iter().copied().enumerate().filter(|(_, v)| *v != 0.0).collect();
                let (w0, v0) = inside[0];
                let dx = w0 as f32 - (v0 - label as f32 * 1000.0);
                assert!((-4.0..=4.0).contains(&dx), "example {label}: shift {dx}");
                for (w, v) in &inside {
                    assert_eq!(*v, label as f32 * 1000.0 + (*w as f32 - dx), "example {label} column {w}");
                }
                shifts.insert(dx as i64);
            }
        }
        assert!(shifts.len() >= 5, "offsets vary across examples: {shifts:?}");
        // The same seed gives the same crops; padding 0 is no crop.
        let a: Vec<Tensor> = s.batches(16, Some(epoch_seed(5, 1)), Device::Cpu).with_crop(4).map(|b| b.0).collect();
        let b: Vec<Tensor> = s.batches(16, Some(epoch_seed(5, 1)), Device::Cpu).with_crop(4).map(|b| b.0).collect();
        assert!(a.iter().zip(&b).all(|(a, b)| a.equal(b)));
        let plain: Vec<Tensor> = s.batches(16, None, Device::Cpu).map(|b| b.0).collect();
        let zero: Vec<Tensor> = s.batches(16, None, Device::Cpu).with_crop(0).map(|b| b.0).collect();
        assert!(plain.iter().zip(&zero).all(|(a, b)| a.equal(b)));
    }

    #[test]
    fn empty_split_yields_nothing() {
        let s = indexed_split(0);
        let b = s.batches(8, Some(epoch_seed(0, 0)), Device::Cpu);
        assert_eq!(b.num_batches(), 0);
        assert_eq!(b.count(), 0);
    }

    #[test]
    #[should_panic(expected = "batch size must be at least 1")]
    fn zero_batch_size_panics() {
        let _ = indexed_split(3).batches(0, None, Device::Cpu);
    }
}
