//! The topologies the suite knows, and what a blueprint's inputs look like in each: the
//! checks build every input through [`Topology`], so each blueprint is checked on
//! features of its own layout.

pub use esper_runtime::host::Topology;
use esper_runtime::host::{is_channels_last, to_channels_last};
use tch::Tensor;

/// Sequence lengths of the shape check for `transformer` blueprints, from 1 to a block
/// of 64 positions (a usual length first, so a seed that changes the shape is reported
/// on it rather than on an edge case; 7 is odd, not a power of two).
pub const SEQUENCE_LENGTHS: [i64; 5] = [16, 1, 2, 7, 64];

/// What the suite's inputs look like in each topology (the runtime's [`Topology`]).
pub trait SuiteInputs: Copy {
    fn layout_text(self) -> &'static str;
    fn shape(self, batch: i64, channels: i64, extent: i64) -> Vec<i64>;
    fn sweep(self, batch: i64, channels: i64) -> Vec<Vec<i64>>;
    fn sweep_text(self) -> String;
    fn strided(self, x: &Tensor) -> Tensor;
    fn is_strided(self, x: &Tensor) -> bool;
    fn strided_name(self) -> &'static str;
}

impl SuiteInputs for Topology {
    /// The features' layout, for reports.
    fn layout_text(self) -> &'static str {
        match self {
            Topology::Cnn => "(B, C, H, W)",
            Topology::Transformer => "(B, T, C)",
        }
    }

    /// The shape of `batch` samples of `channels` channels with `extent` as the spatial
    /// size (`extent` x `extent`) or the sequence length.
    fn shape(self, batch: i64, channels: i64, extent: i64) -> Vec<i64> {
        match self {
            Topology::Cnn => vec![batch, channels, extent, extent],
            Topology::Transformer => vec![batch, extent, channels],
        }
    }

    /// The shapes of the shape check for `batch` samples of `channels` channels: every
    /// spatial size of [`SIZES`](crate::SIZES), or every length of [`SEQUENCE_LENGTHS`].
    fn sweep(self, batch: i64, channels: i64) -> Vec<Vec<i64>> {
        match self {
            Topology::Cnn => super::checks::SIZES.iter().map(|&(h, w)| vec![batch, channels, h, w]).collect(),
            Topology::Transformer => SEQUENCE_LENGTHS.iter().map(|&t| vec![batch, t, channels]).collect(),
        }
    }

    /// What the shape check sweeps, in words.
    fn sweep_text(self) -> String {
        match self {
            Topology::Cnn => format!("{} sizes from 1x1 to 64x64", super::checks::SIZES.len()),
            Topology::Transformer => format!(
                "sequence lengths {}",
                SEQUENCE_LENGTHS.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The same values in the non-contiguous layout a host of this topology may hand a
    /// seed: channels-last for `cnn`; time-major (`(T, B, C)` in memory) for
    /// `transformer`.
    fn strided(self, x: &Tensor) -> Tensor {
        match self {
            Topology::Cnn => to_channels_last(x),
            Topology::Transformer => x.transpose(0, 1).contiguous().transpose(0, 1),
        }
    }

    /// Is `x` in the layout [`strided`](Self::strided) gives?
    fn is_strided(self, x: &Tensor) -> bool {
        match self {
            Topology::Cnn => is_channels_last(x),
            Topology::Transformer => {
                let (size, stride) = (x.size(), x.stride());
                size.len() == 3 && stride == [size[2], size[0] * size[2], 1]
            }
        }
    }

    /// The strided layout's name, for reports.
    fn strided_name(self) -> &'static str {
        match self {
            Topology::Cnn => "channels-last",
            Topology::Transformer => "time-major",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn names_round_trip_and_shapes_follow_the_layout() {
        for t in Topology::ALL {
            assert_eq!(t.as_str().parse::<Topology>(), Ok(t));
        }
        assert!("rnn".parse::<Topology>().is_err());
        assert_eq!(Topology::Cnn.shape(2, 64, 8), [2, 64, 8, 8]);
        assert_eq!(Topology::Transformer.shape(2, 64, 8), [2, 8, 64]);
        let lengths: Vec<i64> = Topology::Transformer.sweep(3, 48).iter().map(|s| s[1]).collect();
        assert_eq!(lengths, SEQUENCE_LENGTHS);
        assert!(Topology::Transformer.sweep(3, 48).iter().all(|s| s[0] == 3 && s[2] == 48));
    }

    #[test]
    fn the_strided_layout_keeps_the_values_and_is_not_contiguous() {
        for t in Topology::ALL {
            let x = Tensor::randn(t.shape(2, 4, 3), (Kind::Float, Device::Cpu));
            let y = t.strided(&x);
            assert!(!y.is_contiguous() && t.is_strided(&y) && !t.is_strided(&x), "{t}: {:?}", y.stride());
            assert!(y.equal(&x), "{t}");
        }
    }
}
