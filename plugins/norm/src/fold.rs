//! When the `norm` blueprint folds its gate into GroupNorm (this plugin and the portable
//! one, which includes this file, so the two choose alike).

/// From how many input elements `x + gate * (groupnorm(x) - x)` runs as
/// `groupnorm(x; gate * weight, gate * bias) + (1 - gate) * x`: one full pass over the
/// activation fewer forward and one backward, for eleven more kernels on C-sized tensors.
/// H200, the runtime's whole training step in a CUDA graph with the seed at r0c1 (64
/// channels, 16 x 16), folded against as written, two alternating rounds: batch 1024
/// (16.8M elements) 2.03 / 2.06 -> 1.95 / 1.95 ms in float32 and 1.82 / 1.76 -> 1.69 /
/// 1.68 in bfloat16; batch 128 (2.1M) even (0.568 / 0.570 -> 0.569 / 0.574); batch 8
/// 0.283 -> 0.284-0.290, the extra kernels' cost. On the CPU no difference stood out of
/// the noise at batch 128 or 512.
pub const FOLD_FROM: i64 = 1 << 22;

/// Whether an input of `shape` takes the folded form (see [`FOLD_FROM`]).
pub fn fold(shape: &[i64]) -> bool {
    shape.iter().product::<i64>() >= FOLD_FROM
}
