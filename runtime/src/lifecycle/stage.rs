//! Seed stages, their wire numbers and the transition table.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::LifecycleError;

/// The lifecycle stage of a seed. The numbers are part of the contract (telemetry,
/// checkpoints); 5 is deliberately unused (a removed stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum SeedStage {
    Unknown = 0,
    /// Empty slot, waiting for a seed.
    Dormant = 1,
    /// Seed attached and shape-checked, not yet training.
    Germinated = 2,
    /// Trained in isolation; the host output is unchanged.
    Training = 3,
    /// Alpha ramps the seed into the host output.
    Blending = 4,
    /// Full amplitude; the last decision point before fossilization.
    Holding = 6,
    /// Permanently part of the model (terminal success).
    Fossilized = 7,
    /// Removed (failure).
    Pruned = 8,
    /// Cool-down after removal, against thrashing.
    Embargoed = 9,
    /// Clean-up before the slot is reused.
    Resetting = 10,
}

impl SeedStage {
    /// Every stage, in number order.
    pub const ALL: [SeedStage; 10] = [
        SeedStage::Unknown,
        SeedStage::Dormant,
        SeedStage::Germinated,
        SeedStage::Training,
        SeedStage::Blending,
        SeedStage::Holding,
        SeedStage::Fossilized,
        SeedStage::Pruned,
        SeedStage::Embargoed,
        SeedStage::Resetting,
    ];

    /// The stage's wire number.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The upper-case name (as displayed and serialized).
    pub fn name(self) -> &'static str {
        match self {
            SeedStage::Unknown => "UNKNOWN",
            SeedStage::Dormant => "DORMANT",
            SeedStage::Germinated => "GERMINATED",
            SeedStage::Training => "TRAINING",
            SeedStage::Blending => "BLENDING",
            SeedStage::Holding => "HOLDING",
            SeedStage::Fossilized => "FOSSILIZED",
            SeedStage::Pruned => "PRUNED",
            SeedStage::Embargoed => "EMBARGOED",
            SeedStage::Resetting => "RESETTING",
        }
    }

    /// The stages this one may move to. The first non-failure entry is the stage
    /// `advance` aims at (HOLDING lists FOSSILIZED before BLENDING for that reason).
    pub fn successors(self) -> &'static [SeedStage] {
        use SeedStage::*;
        match self {
            Unknown => &[Dormant],
            Dormant => &[Germinated],
            Germinated => &[Training, Pruned],
            Training => &[Blending, Pruned],
            Blending => &[Holding, Pruned],
            Holding => &[Fossilized, Blending, Pruned],
            Fossilized => &[],
            Pruned => &[Embargoed],
            Embargoed => &[Resetting],
            Resetting => &[Dormant],
        }
    }

    /// The stage `advance` aims at: the first successor that is not a failure stage.
    pub fn natural_successor(self) -> Option<SeedStage> {
        self.successors().iter().copied().find(|s| !s.is_failure())
    }

    /// Whether `self -> to` is in the transition table.
    pub fn can_transition_to(self, to: SeedStage) -> bool {
        self.successors().contains(&to)
    }

    /// No transition leaves this stage (FOSSILIZED only).
    pub fn is_terminal(self) -> bool {
        self == SeedStage::Fossilized
    }

    /// The seed contributes to (or trains behind) the forward pass: TRAINING,
    /// BLENDING, HOLDING and FOSSILIZED, as esper-lite's `is_active_stage` defines it.
    /// GERMINATED is not active (the seed exists but is not yet trained).
    pub fn is_active(self) -> bool {
        matches!(self, SeedStage::Training | SeedStage::Blending | SeedStage::Holding | SeedStage::Fossilized)
    }

    /// The failure path after a prune: PRUNED, EMBARGOED, RESETTING.
    pub fn is_failure(self) -> bool {
        matches!(self, SeedStage::Pruned | SeedStage::Embargoed | SeedStage::Resetting)
    }
}

/// Whether `from -> to` is in the transition table.
pub fn can_transition(from: SeedStage, to: SeedStage) -> bool {
    from.can_transition_to(to)
}

impl fmt::Display for SeedStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<SeedStage> for u8 {
    fn from(stage: SeedStage) -> u8 {
        stage.number()
    }
}

impl TryFrom<u8> for SeedStage {
    type Error = LifecycleError;

    fn try_from(n: u8) -> Result<Self, Self::Error> {
        SeedStage::ALL.iter().copied().find(|s| s.number() == n).ok_or(LifecycleError::InvalidStageNumber(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SeedStage::*;

    /// The table from DESIGN.md, written out independently of `successors`.
    const VALID: &[(SeedStage, SeedStage)] = &[
        (Unknown, Dormant),
        (Dormant, Germinated),
        (Germinated, Training),
        (Germinated, Pruned),
        (Training, Blending),
        (Training, Pruned),
        (Blending, Holding),
        (Blending, Pruned),
        (Holding, Fossilized),
        (Holding, Blending),
        (Holding, Pruned),
        (Pruned, Embargoed),
        (Embargoed, Resetting),
        (Resetting, Dormant),
    ];

    #[test]
    fn numbers_match_the_contract() {
        let expected = [0u8, 1, 2, 3, 4, 6, 7, 8, 9, 10];
        let got: Vec<u8> = SeedStage::ALL.iter().map(|s| s.number()).collect();
        assert_eq!(got, expected);
        assert_eq!(Holding.number(), 6);
        assert_eq!(Resetting.number(), 10);
    }

    #[test]
    fn try_from_round_trips_and_refuses_gaps() {
        for s in SeedStage::ALL {
            assert_eq!(SeedStage::try_from(s.number()), Ok(s));
        }
        assert_eq!(SeedStage::try_from(5), Err(LifecycleError::InvalidStageNumber(5)));
        for n in 11..=u8::MAX {
            assert!(SeedStage::try_from(n).is_err(), "{n} accepted");
        }
    }

    #[test]
    fn display_and_serde_use_upper_case_names() {
        assert_eq!(Germinated.to_string(), "GERMINATED");
        assert_eq!(Fossilized.to_string(), "FOSSILIZED");
        for s in SeedStage::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
            let back: SeedStage = serde_json::from_str(&json).unwrap();
            assert_eq!(back, s);
        }
        assert!(serde_json::from_str::<SeedStage>("\"SHADOWING\"").is_err());
    }

    #[test]
    fn every_valid_transition_is_accepted() {
        for &(from, to) in VALID {
            assert!(can_transition(from, to), "{from} -> {to} refused");
        }
    }

    #[test]
    fn every_other_pair_is_refused() {
        let mut refused = 0;
        for from in SeedStage::ALL {
            for to in SeedStage::ALL {
                if VALID.contains(&(from, to)) {
                    continue;
                }
                assert!(!can_transition(from, to), "{from} -> {to} accepted");
                refused += 1;
            }
        }
        assert_eq!(refused, 100 - VALID.len());
    }

    #[test]
    fn classification() {
        let terminal: Vec<_> = SeedStage::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Fossilized]);
        let active: Vec<_> = SeedStage::ALL.into_iter().filter(|s| s.is_active()).collect();
        assert_eq!(active, [Training, Blending, Holding, Fossilized]);
        let failure: Vec<_> = SeedStage::ALL.into_iter().filter(|s| s.is_failure()).collect();
        assert_eq!(failure, [Pruned, Embargoed, Resetting]);
        // Terminal means no way out.
        for s in SeedStage::ALL {
            assert_eq!(s.is_terminal(), s.successors().is_empty(), "{s}");
        }
    }

    #[test]
    fn natural_successor_skips_failure_stages() {
        assert_eq!(Germinated.natural_successor(), Some(Training));
        assert_eq!(Training.natural_successor(), Some(Blending));
        assert_eq!(Blending.natural_successor(), Some(Holding));
        assert_eq!(Holding.natural_successor(), Some(Fossilized));
        assert_eq!(Pruned.natural_successor(), None);
        assert_eq!(Embargoed.natural_successor(), None);
        assert_eq!(Fossilized.natural_successor(), None);
    }
}
