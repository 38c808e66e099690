//! Blend settings, in one place: how a seed's output joins the host's once it leaves
//! TRAINING, and how its amplitude alpha ramps up in BLENDING.
//!
//! * [`BlendSettings`]: the blend algorithm and the [`AlphaRamp`] every slot uses
//!   (`[slot]` keys `blend`, `alpha_curve`, `blend_tempo`, `alpha_target`), with the one
//!   default of each ([`BlendSettings::default`], [`DEFAULT_TEMPO`]).
//! * [`BlendChoice`]: a seed's own tempo and target over its slot's settings (a
//!   `[[lifecycle.schedule]]` entry's), resolved by [`BlendSettings::with_choice`].
//! * [`BlendSettings::seed_ramp`]: the ramp a germinated seed's lifecycle keeps.
//!
//! The blend operators are [`crate::isolation::Blend`]; the clock that moves alpha one
//! tick per epoch is [`crate::lifecycle::AlphaController`].

use serde::{Deserialize, Serialize};

use crate::{isolation::BlendAlgorithm, lifecycle::AlphaCurve};

/// The blend tempo: epochs of one alpha ramp (config key `blend_tempo`; 0 jumps at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlendTempo(u32);

/// The default tempo: a ramp over 5 epochs (esper-lite's tempos are 3, 5 and 8).
pub const DEFAULT_TEMPO: BlendTempo = BlendTempo(5);

impl BlendTempo {
    pub const fn from_epochs(epochs: u32) -> Self {
        BlendTempo(epochs)
    }

    pub const fn epochs(self) -> u32 {
        self.0
    }

    /// The alpha controller's steps for one ramp at this tempo: it steps once per epoch.
    pub const fn ramp_steps(self) -> u32 {
        self.0
    }
}

/// The amplitude a seed's first ramp in BLENDING aims at: esper-lite's three (0.5, 0.7,
/// full). Below full, the seed rests there (a partial hold) until it is continued to
/// full amplitude or pruned; G3 (to HOLDING) needs full amplitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub enum AlphaTarget {
    Half,
    SevenTenths,
    Full,
}

impl AlphaTarget {
    pub fn value(self) -> f64 {
        match self {
            AlphaTarget::Half => 0.5,
            AlphaTarget::SevenTenths => 0.7,
            AlphaTarget::Full => 1.0,
        }
    }
}

impl From<AlphaTarget> for f64 {
    fn from(t: AlphaTarget) -> f64 {
        t.value()
    }
}

impl TryFrom<f64> for AlphaTarget {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        [AlphaTarget::Half, AlphaTarget::SevenTenths, AlphaTarget::Full]
            .into_iter()
            .find(|t| (t.value() - v).abs() < 1e-9)
            .ok_or_else(|| format!("alpha target {v}: must be 0.5, 0.7 or 1.0"))
    }
}

/// How alpha ramps in BLENDING: along `curve`, over `tempo`, up to `target`. A seed's
/// lifecycle keeps its own (checkpoints and reports write it as `curve`, `tempo_epochs`
/// and `alpha_target`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlphaRamp {
    pub curve: AlphaCurve,
    #[serde(rename = "tempo_epochs")]
    pub tempo: BlendTempo,
    #[serde(rename = "alpha_target", default = "target_before_per_seed_targets")]
    pub target: AlphaTarget,
}

/// A checkpoint from before per-seed targets has none: every ramp then went to full.
fn target_before_per_seed_targets() -> AlphaTarget {
    AlphaTarget::Full
}

/// The blend settings of a slot (`[slot]`): the algorithm that mixes a seed's output into
/// the host's, and the ramp of its amplitude.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlendSettings {
    pub algorithm: BlendAlgorithm,
    pub ramp: AlphaRamp,
}

impl Default for BlendSettings {
    /// ADD, a sigmoid ramp over [`DEFAULT_TEMPO`] to full amplitude (esper-lite's).
    fn default() -> Self {
        BlendSettings {
            algorithm: BlendAlgorithm::Add,
            ramp: AlphaRamp { curve: AlphaCurve::Sigmoid, tempo: DEFAULT_TEMPO, target: AlphaTarget::Full },
        }
    }
}

impl BlendSettings {
    /// These settings with a seed's own `choice` of tempo and target in place of the
    /// slot's.
    pub fn with_choice(mut self, choice: BlendChoice) -> Self {
        self.ramp.tempo = choice.tempo.unwrap_or(self.ramp.tempo);
        self.ramp.target = choice.target.unwrap_or(self.ramp.target);
        self
    }

    /// The ramp a seed germinated with these settings follows: the configured one, except
    /// that GATE always ramps along a linear curve (as esper-lite does).
    pub fn seed_ramp(&self) -> AlphaRamp {
        match self.algorithm {
            BlendAlgorithm::Gate => AlphaRamp { curve: AlphaCurve::Linear, ..self.ramp },
            BlendAlgorithm::Add | BlendAlgorithm::Multiply => self.ramp,
        }
    }
}

/// A seed's own choice of how it blends in, over its slot's [`BlendSettings`]: each
/// field given replaces the slot's (a `[[lifecycle.schedule]]` entry can give them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlendChoice {
    pub target: Option<AlphaTarget>,
    pub tempo: Option<BlendTempo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_esper_lites() {
        let d = BlendSettings::default();
        assert_eq!(d.algorithm, BlendAlgorithm::Add);
        assert_eq!((d.ramp.curve, d.ramp.tempo.epochs(), d.ramp.target), (AlphaCurve::Sigmoid, 5, AlphaTarget::Full));
        assert_eq!(d.ramp.tempo, DEFAULT_TEMPO);
        assert_eq!(d.seed_ramp(), d.ramp, "ADD keeps the configured ramp");
    }

    #[test]
    fn a_seeds_choice_replaces_only_what_it_gives() {
        let slot = BlendSettings::default();
        assert_eq!(slot.with_choice(BlendChoice::default()), slot);
        let tempo = BlendTempo::from_epochs(3);
        let chosen = slot.with_choice(BlendChoice { target: Some(AlphaTarget::Half), tempo: Some(tempo) });
        assert_eq!(chosen.ramp, AlphaRamp { curve: AlphaCurve::Sigmoid, tempo, target: AlphaTarget::Half });
        assert_eq!(chosen.algorithm, slot.algorithm);
        let only_tempo = slot.with_choice(BlendChoice { tempo: Some(tempo), ..Default::default() });
        assert_eq!((only_tempo.ramp.tempo, only_tempo.ramp.target), (tempo, AlphaTarget::Full));
    }

    #[test]
    fn gate_ramps_linearly_whatever_the_curve() {
        for curve in [AlphaCurve::Linear, AlphaCurve::Cosine, AlphaCurve::Sigmoid] {
            let mut s = BlendSettings { algorithm: BlendAlgorithm::Gate, ..Default::default() };
            s.ramp.curve = curve;
            assert_eq!(s.seed_ramp(), AlphaRamp { curve: AlphaCurve::Linear, ..s.ramp });
            s.algorithm = BlendAlgorithm::Multiply;
            assert_eq!(s.seed_ramp(), s.ramp);
        }
    }

    #[test]
    fn tempo_is_epochs_and_the_controller_steps_once_per_epoch() {
        for n in [0, 1, 5, 8] {
            let t = BlendTempo::from_epochs(n);
            assert_eq!((t.epochs(), t.ramp_steps()), (n, n));
        }
        assert_eq!(serde_json::to_value(DEFAULT_TEMPO).unwrap(), serde_json::json!(5));
    }

    #[test]
    fn alpha_targets_are_esper_lites_three() {
        for (v, t) in [(0.5, AlphaTarget::Half), (0.7, AlphaTarget::SevenTenths), (1.0, AlphaTarget::Full)] {
            assert_eq!(AlphaTarget::try_from(v), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(v));
        }
        let e = serde_json::from_value::<AlphaTarget>(serde_json::json!(0.6)).unwrap_err();
        assert!(e.to_string().contains("must be 0.5, 0.7 or 1.0"), "{e}");
    }

    #[test]
    fn a_ramp_reads_and_writes_the_lifecycle_json_of_earlier_versions() {
        let ramp =
            AlphaRamp { curve: AlphaCurve::Cosine, tempo: BlendTempo::from_epochs(3), target: AlphaTarget::Half };
        let json = serde_json::json!({"curve": "cosine", "tempo_epochs": 3, "alpha_target": 0.5});
        assert_eq!(serde_json::to_value(ramp).unwrap(), json);
        assert_eq!(serde_json::from_value::<AlphaRamp>(json).unwrap(), ramp);
        // From before per-seed targets (tests/data/checkpoint-v1): full amplitude.
        let old: AlphaRamp =
            serde_json::from_value(serde_json::json!({"curve": "sigmoid", "tempo_epochs": 2})).unwrap();
        assert_eq!(old.target, AlphaTarget::Full);
    }
}
