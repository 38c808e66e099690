//! The host seam: what [`MorphogeneticModel`](crate::model::MorphogeneticModel) needs
//! from a host network, and nothing else.
//!
//! A host is a fixed sequence of *steps* (its own unit: the CNN's are blocks, pools and
//! the head). Injection points sit between steps: [`InjectionPoint::position`] is the
//! step after which a point sits. A [`Segment`] is a range of steps, computed once per
//! pair of points and run for every forward; the model runs the host segment by
//! segment, a slot between each two.
//!
//! **Parameters.** The model owns the host's [`nn::VarStore`]: a host is built on the
//! path the model gives it (see
//! [`MorphogeneticModel::with_host`](crate::model::MorphogeneticModel::with_host)) and
//! must register every parameter and buffer under that path (`path / "layer"`, as
//! `tch::nn` layers do). What is registered there is what the host optimizer trains, the
//! checkpoints save (as `host.<name>`), the rollback copy restores and the gradient
//! monitor weighs a seed's gradients against; a tensor kept elsewhere is invisible to all
//! of them. Buffers (tensors that do not require a gradient, e.g. BatchNorm statistics)
//! belong there too.
//!
//! `runtime/examples/custom_host.rs` implements a host of its own.

use serde::{Deserialize, Serialize};
use std::{any::Any, fmt, str::FromStr};
use tch::Tensor;
use thiserror::Error;

/// The kind of network a host is, as blueprint plugins name it in their descriptors
/// (`cnn`, `transformer`): a blueprint fits the hosts of its topology only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// Convolutional features, `(B, C, H, W)`.
    Cnn,
    /// Token features, `(B, T, C)`.
    Transformer,
}

impl Topology {
    pub const ALL: [Topology; 2] = [Topology::Cnn, Topology::Transformer];

    /// The name blueprint descriptors use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Topology::Cnn => "cnn",
            Topology::Transformer => "transformer",
        }
    }

    /// The layout of features at this topology's injection points.
    pub fn layout(self) -> FeatureLayout {
        match self {
            Topology::Cnn => FeatureLayout::Nchw,
            Topology::Transformer => FeatureLayout::Ntc,
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A topology name that is none of [`Topology::ALL`].
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("unknown topology `{0}`; known: cnn, transformer")]
pub struct UnknownTopology(pub String);

impl FromStr for Topology {
    type Err = UnknownTopology;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topology::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownTopology(s.to_string()))
    }
}

/// How the features at an injection point are laid out (the logical dimension order;
/// the memory format is the host's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureLayout {
    /// `(B, C, H, W)`: images.
    Nchw,
    /// `(B, T, C)`: sequences.
    Ntc,
}

impl FeatureLayout {
    /// The dimension that holds the channels (what [`InjectionPoint::channels`] counts).
    pub fn channel_dim(self) -> usize {
        match self {
            FeatureLayout::Nchw => 1,
            FeatureLayout::Ntc => 2,
        }
    }

    /// The number of dimensions of a feature tensor.
    pub fn rank(self) -> usize {
        match self {
            FeatureLayout::Nchw => 4,
            FeatureLayout::Ntc => 3,
        }
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum HostError {
    #[error("invalid host config: {0}")]
    Config(String),
    #[error("unknown injection point `{name}`; valid: {}", .valid.join(", "))]
    UnknownPoint { name: String, valid: Vec<String> },
    /// Synchronising the BatchNorm statistics with the other ranks failed.
    #[error(
        "synchronising the BatchNorm statistics with the other ranks failed (another rank ended or did not \
         answer within [distributed] timeout_s = {timeout_s} s): {cause}"
    )]
    BatchNormSync { timeout_s: f64, cause: String },
    #[error("segment from `{from}` to `{to}` runs backwards (execution order: {})", .order.join(", "))]
    Backwards { from: String, to: String, order: Vec<String> },
}

/// An injection point: where a seed slot can sit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectionPoint {
    pub id: String,
    /// Channels of the features there (their size along [`FeatureLayout::channel_dim`]).
    pub channels: i64,
    /// Position among the points, in execution order (0, 1, ...).
    pub order: usize,
    /// The host step after which the point sits: steps `0..=position` run before it.
    pub position: usize,
}

/// A range of the host's steps, `start..end`: the unit of routing between slots.
/// Made by [`Host::segment`]; [`Segment::new`] lets a host of its own make them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    start: usize,
    end: usize,
}

impl Segment {
    /// Steps `start..end` (empty when `start >= end`).
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }
    pub fn start(self) -> usize {
        self.start
    }
    pub fn end(self) -> usize {
        self.end
    }
    /// The steps as a range, for indexing a host's list of steps.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start..self.end.max(self.start)
    }
}

/// A host network, as the model drives it (see the module docs for the parameters'
/// rule). `Send`, so a model can move to another thread.
pub trait Host: Send {
    /// Which blueprints fit (theirs must be the same).
    fn topology(&self) -> Topology;

    /// Injection points in execution order.
    fn injection_points(&self) -> &[InjectionPoint];

    /// The features' layout at every injection point.
    fn layout(&self) -> FeatureLayout {
        self.topology().layout()
    }

    /// The segment from point `from` (`None`: the input) to point `to` (`None`: the
    /// output). Called once per pair when the model is built, not per step.
    fn segment(&self, from: Option<&str>, to: Option<&str>) -> Result<Segment, HostError>;

    /// Puts the network input in the form the first segment takes (once per forward).
    fn prepare_input(&self, x: &Tensor) -> Tensor;

    /// Runs the steps of `segment` on `x` (prepared, when the segment starts at the
    /// input), in train mode or not.
    fn run_segment(&self, segment: Segment, x: &Tensor, train: bool) -> Tensor;

    /// Makes the host's training-mode BatchNorms use the statistics of every rank while
    /// `sync` is armed (`[distributed] sync_batchnorm = true`). A host without BatchNorm
    /// refuses, as the default does.
    fn synchronise_batch_norm(&mut self, _sync: std::sync::Arc<super::BatchNormSync>) -> Result<(), HostError> {
        Err(HostError::Config(format!(
            "[distributed] sync_batchnorm = true, but the {} host has no BatchNorm to synchronise",
            self.topology()
        )))
    }

    /// The host as [`Any`], for a caller that needs its concrete type (see
    /// [`<dyn Host>::downcast_ref`](trait.Host.html#method.downcast_ref)).
    fn as_any(&self) -> &dyn Any;

    /// The injection point `id`.
    fn point(&self, id: &str) -> Result<&InjectionPoint, HostError> {
        let points = self.injection_points();
        points.iter().find(|p| p.id == id).ok_or_else(|| HostError::UnknownPoint {
            name: id.to_string(),
            valid: points.iter().map(|p| p.id.clone()).collect(),
        })
    }
}

impl dyn Host + '_ {
    /// The host as a `T`, when it is one (e.g. the CNN host, for its config).
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.as_any().downcast_ref()
    }
}

/// The segment between two positions as [`Host::segment`] defines it for a host whose
/// points are `points`: from just after `from`'s step (or step 0) to just after `to`'s
/// step (or `steps`). Refuses a segment that runs backwards or from a point to itself.
pub fn segment_between(
    points: &[InjectionPoint],
    steps: usize,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Segment, HostError> {
    let find = |id: &str| {
        points.iter().find(|p| p.id == id).ok_or_else(|| HostError::UnknownPoint {
            name: id.to_string(),
            valid: points.iter().map(|p| p.id.clone()).collect(),
        })
    };
    let start = match from {
        None => 0,
        Some(id) => find(id)?.position + 1,
    };
    let end = match to {
        None => steps,
        Some(id) => find(id)?.position + 1,
    };
    if end < start || (from.is_some() && from == to) {
        return Err(HostError::Backwards {
            from: from.unwrap_or("input").into(),
            to: to.unwrap_or("logits").into(),
            order: points.iter().map(|p| p.id.clone()).collect(),
        });
    }
    Ok(Segment { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_names_round_trip_and_unknown_ones_are_refused() {
        for t in Topology::ALL {
            assert_eq!(t.as_str().parse::<Topology>(), Ok(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        assert_eq!("cnn".parse::<Topology>(), Ok(Topology::Cnn));
        let e = "rnn".parse::<Topology>().unwrap_err();
        assert_eq!(e.to_string(), "unknown topology `rnn`; known: cnn, transformer");
    }

    #[test]
    fn layouts_name_their_channel_dimension() {
        assert_eq!((Topology::Cnn.layout().channel_dim(), Topology::Cnn.layout().rank()), (1, 4));
        assert_eq!((Topology::Transformer.layout().channel_dim(), Topology::Transformer.layout().rank()), (2, 3));
    }

    fn points() -> Vec<InjectionPoint> {
        ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, id)| InjectionPoint { id: id.to_string(), channels: 4, order: i, position: 2 * i })
            .collect()
    }

    #[test]
    fn segments_between_points() {
        let p = points();
        assert_eq!(segment_between(&p, 4, None, Some("a")), Ok(Segment::new(0, 1)));
        assert_eq!(segment_between(&p, 4, Some("a"), Some("b")), Ok(Segment::new(1, 3)));
        assert_eq!(segment_between(&p, 4, Some("b"), None).map(Segment::range), Ok(3..4));
        assert!(matches!(segment_between(&p, 4, Some("b"), Some("a")), Err(HostError::Backwards { .. })));
        assert!(matches!(segment_between(&p, 4, Some("a"), Some("a")), Err(HostError::Backwards { .. })));
        let e = segment_between(&p, 4, Some("c"), None).unwrap_err();
        assert_eq!(e.to_string(), "unknown injection point `c`; valid: a, b");
    }
}
