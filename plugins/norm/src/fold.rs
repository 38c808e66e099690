//! When the `norm` blueprint folds its gate into GroupNorm (this plugin and the portable
//! one, which includes this file, so the two choose alike).

/// From how many input elements `x + gate * (groupnorm(x) - x)` runs as
/// `groupnorm(x; gate * weight, gate * bias) + (1 - gate) * x`: one full pass over the
/// activation fewer forward and one backward, for eleven more kernels on C-sized tensors.
/// The passes saved outweigh the extra kernels only on large activations; the threshold
/// and the measurements behind it are in `docs/src/performance.md` (the `norm` seed's
/// folded gate).
pub const FOLD_FROM: i64 = 1 << 22;

/// Whether an input of `shape` takes the folded form (see [`FOLD_FROM`]).
pub fn fold(shape: &[i64]) -> bool {
    shape.iter().product::<i64>() >= FOLD_FROM
}
