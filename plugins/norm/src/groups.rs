//! The GroupNorm group rule shared by the blueprints that normalise (this plugin, and
//! the CNN library's, which includes this file): plain integer arithmetic.

/// GroupNorm's epsilon (PyTorch's default).
pub const EPS: f64 = 1e-5;
const GROUP_CANDIDATES: [i64; 6] = [32, 16, 8, 4, 2, 1];
const MIN_CHANNELS_PER_GROUP: i64 = 16;

/// The number of GroupNorm groups for `channels` channels.
pub fn num_groups(channels: i64) -> i64 {
    let divides = |g: &&i64| channels % **g == 0;
    GROUP_CANDIDATES
        .iter()
        .filter(divides)
        .find(|&&g| channels / g >= MIN_CHANNELS_PER_GROUP)
        .or_else(|| GROUP_CANDIDATES.iter().find(divides))
        .copied()
        .unwrap_or(1)
}
