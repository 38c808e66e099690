//! Batches of token windows: random windows for training, consecutive ones for
//! validation. Targets are the inputs shifted by one token.

use crate::data::{rng::Rng, Shard};
use tch::{Device, Kind, Tensor};

/// The stream id under the epoch seed for the windows' starts.
const WINDOW_STREAM: u64 = 0x7E47_0001;

/// An iterator over one epoch of `(inputs, targets)` batches of a token sequence: both
/// i64 `(B, T)` on the target device, `targets[b, t] = inputs[b, t + 1]` in the text.
///
/// Training ([`TextBatches::random`]): a fixed number of batches, each of `batch_size`
/// windows starting anywhere in the sequence, drawn from a seed alone (pass one that
/// changes every epoch, e.g. [`crate::data::epoch_seed`]`(run_seed, epoch)`).
/// Validation ([`TextBatches::sequential`]): the consecutive windows `0..T`, `T..2T`, ...
/// that fit (the last batch may be smaller), the same every time.
///
/// A batch is gathered with one index tensor (two `index_select`s on strided views of
/// the tokens, no copy of the sequence) where the tokens live, then moved to the target
/// device; sequential batches of tokens already there are views of them: do not modify
/// them in place. The iterator holds a shallow clone of the tokens, so it borrows
/// nothing.
#[derive(Debug)]
pub struct TextBatches {
    /// `(W, T)` views: every window's inputs and its targets.
    inputs: Tensor,
    targets: Tensor,
    /// The epoch's window indices (random); `None` is `0..W` in order.
    starts: Option<Vec<i64>>,
    batch_size: usize,
    num_batches: usize,
    device: Device,
    next: usize,
}

impl TextBatches {
    /// `num_batches` batches of `batch_size` windows of `block_size` tokens, at starts drawn
    /// uniformly from `seed`. `tokens` is i64 1-D with at least `block_size + 1` tokens.
    /// Panics if a size is < 1 or the tokens are too few (the loader refuses such data).
    pub fn random(
        tokens: &Tensor,
        block_size: i64,
        batch_size: i64,
        num_batches: usize,
        seed: u64,
        device: Device,
    ) -> Self {
        Self::random_share(tokens, (block_size, batch_size, num_batches), seed, Shard::WHOLE, device)
    }

    /// [`TextBatches::random`] for one rank of a multi-process run: the starts of
    /// `world` ranks' batches drawn from `seed` as one sequence, this rank taking every
    /// `world`-th (see [`Shard`]); one rank's share is the whole draw.
    pub fn random_share(
        tokens: &Tensor,
        (block_size, batch_size, num_batches): (i64, i64, usize),
        seed: u64,
        shard: Shard,
        device: Device,
    ) -> Self {
        assert!(batch_size > 0, "batch size must be at least 1, got {batch_size}");
        let (inputs, targets) = windows(tokens, block_size, 1);
        let count = inputs.size()[0] as u64;
        let mut rng = Rng::stream(seed, &[WINDOW_STREAM]);
        let draws = num_batches * batch_size as usize * shard.world.max(1);
        let all: Vec<i64> = (0..draws).map(|_| rng.below(count) as i64).collect();
        let starts = shard.take(&all);
        let batch_size = batch_size as usize;
        Self { inputs, targets, starts: Some(starts), batch_size, num_batches, device, next: 0 }
    }

    /// Every whole window `k T .. (k + 1) T` of `tokens` (targets one further), in order,
    /// in batches of `batch_size` (the last may be smaller).
    pub fn sequential(tokens: &Tensor, block_size: i64, batch_size: i64, device: Device) -> Self {
        assert!(batch_size > 0, "batch size must be at least 1, got {batch_size}");
        let (inputs, targets) = windows(tokens, block_size, block_size);
        let num_batches = (inputs.size()[0] as usize).div_ceil(batch_size as usize);
        Self { inputs, targets, starts: None, batch_size: batch_size as usize, num_batches, device, next: 0 }
    }

    /// Batches in the whole epoch (the iterator's `len()` is what remains).
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Windows in the epoch.
    pub fn num_windows(&self) -> usize {
        match &self.starts {
            Some(starts) => starts.len(),
            None => self.inputs.size()[0] as usize,
        }
    }
}

/// Views `(W, T)` of the windows of `tokens` that start every `step` tokens and have a
/// target: their inputs and their targets.
fn windows(tokens: &Tensor, block_size: i64, step: i64) -> (Tensor, Tensor) {
    assert!(block_size > 0, "block size must be at least 1, got {block_size}");
    let n = tokens.size1().unwrap_or(0);
    assert!(n > block_size, "{n} tokens are fewer than one block of {block_size} and its target");
    let inputs = tokens.narrow(0, 0, n - 1).unfold(0, block_size, step);
    let targets = tokens.narrow(0, 1, n - 1).unfold(0, block_size, step);
    (inputs, targets)
}

impl Iterator for TextBatches {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.num_batches {
            return None;
        }
        let start = self.next * self.batch_size;
        let end = (start + self.batch_size).min(self.num_windows());
        self.next += 1;
        let (x, y) = match &self.starts {
            None => {
                let n = (end - start) as i64;
                (self.inputs.narrow(0, start as i64, n), self.targets.narrow(0, start as i64, n))
            }
            Some(starts) => {
                let index = Tensor::from_slice(&starts[start..end]).to_device(self.inputs.device());
                (self.inputs.index_select(0, &index), self.targets.index_select(0, &index))
            }
        };
        let to = |t: Tensor| t.to_device_(self.device, Kind::Int64, true, false);
        Some((to(x), to(y)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.num_batches - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for TextBatches {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: i64) -> Tensor {
        Tensor::arange(n, (Kind::Int64, Device::Cpu))
    }

    fn rows(t: &Tensor) -> Vec<Vec<i64>> {
        Vec::<Vec<i64>>::try_from(t).unwrap()
    }

    #[test]
    fn random_windows_are_blocks_with_targets_shifted_by_one() {
        let t = tokens(50) * 3;
        let batches = TextBatches::random(&t, 8, 4, 5, 11, Device::Cpu);
        assert_eq!((batches.len(), batches.num_windows()), (5, 20));
        let mut firsts = Vec::new();
        for (x, y) in batches {
            assert_eq!((x.size(), y.size(), x.kind(), y.kind()), (vec![4, 8], vec![4, 8], Kind::Int64, Kind::Int64));
            assert!(x.is_contiguous() && y.is_contiguous());
            for (xr, yr) in rows(&x).iter().zip(rows(&y)) {
                // Consecutive tokens of the text, and the next token as target.
                assert!(xr.windows(2).all(|w| w[1] == w[0] + 3), "{xr:?}");
                assert_eq!(&xr[1..], &yr[..7]);
                assert_eq!(yr[7], xr[7] + 3);
                assert!(xr[0] % 3 == 0 && xr[0] / 3 <= 50 - 9, "{xr:?}");
                firsts.push(xr[0]);
            }
        }
        firsts.sort_unstable();
        firsts.dedup();
        assert!(firsts.len() > 10, "windows start at many places: {firsts:?}");
    }

    #[test]
    fn an_epoch_is_determined_by_its_seed() {
        let t = tokens(1000);
        let epoch =
            |seed| TextBatches::random(&t, 16, 8, 3, seed, Device::Cpu).map(|(x, _)| rows(&x)).collect::<Vec<_>>();
        assert_eq!(epoch(1), epoch(1));
        assert_ne!(epoch(1), epoch(2));
        // Every start, last one included, is reachable: 1000 - 16 windows.
        let all = TextBatches::random(&t, 16, 100, 50, 0, Device::Cpu);
        let max = all.map(|(x, _)| x.select(1, 0).max().int64_value(&[])).max().unwrap();
        assert_eq!(max, 1000 - 17);
    }

    #[test]
    fn validation_windows_are_consecutive_and_the_same_every_time() {
        let t = tokens(30);
        let batches: Vec<_> = TextBatches::sequential(&t, 4, 3, Device::Cpu).collect();
        // (30 - 1) / 4 = 7 windows: batches of 3, 3, 1.
        assert_eq!(batches.iter().map(|(x, _)| x.size()[0]).collect::<Vec<_>>(), vec![3, 3, 1]);
        assert_eq!(rows(&batches[0].0), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9, 10, 11]]);
        assert_eq!(rows(&batches[2].0), vec![vec![24, 25, 26, 27]]);
        assert_eq!(rows(&batches[2].1), vec![vec![25, 26, 27, 28]]);
        // A sequence of exactly one block and its target: one window.
        let one: Vec<_> = TextBatches::sequential(&tokens(5), 4, 8, Device::Cpu).collect();
        assert_eq!(rows(&one[0].1), vec![vec![1, 2, 3, 4]]);
    }
}
