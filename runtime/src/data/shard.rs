//! Data parallelism's share of an epoch: which examples a rank of a multi-process run
//! trains on (PyTorch's `DistributedSampler` semantics).

/// Rank `rank` of `world` processes. Every rank shuffles the epoch the same way (the same
/// seed); the order is padded by wrapping around to a multiple of `world`, and rank `r`
/// takes positions `r, r + world, r + 2 world, ...`: the shares do not overlap, together
/// cover the epoch, and have equal lengths (so every rank takes as many steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Shard {
    /// The whole epoch: a single-process run.
    pub const WHOLE: Shard = Shard { rank: 0, world: 1 };

    /// This rank's share of the epoch's `order`.
    pub fn take(self, order: &[i64]) -> Vec<i64> {
        if self.world <= 1 || order.is_empty() {
            return order.to_vec();
        }
        let padded = order.len().div_ceil(self.world) * self.world;
        (self.rank..padded).step_by(self.world).map(|i| order[i % order.len()]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_equal_disjoint_until_the_padding_and_cover_the_epoch() {
        let order: Vec<i64> = (0..10).rev().collect();
        let shares: Vec<Vec<i64>> = (0..3).map(|rank| Shard { rank, world: 3 }.take(&order)).collect();
        assert_eq!(shares, [vec![9, 6, 3, 0], vec![8, 5, 2, 9], vec![7, 4, 1, 8]]);
        let mut all: Vec<i64> = shares.concat();
        all.sort();
        all.dedup();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(Shard::WHOLE.take(&order), order);
        let two: Vec<Vec<i64>> = (0..2).map(|rank| Shard { rank, world: 2 }.take(&order)).collect();
        assert_eq!(two, [vec![9, 7, 5, 3, 1], vec![8, 6, 4, 2, 0]], "no padding when it divides");
    }
}
