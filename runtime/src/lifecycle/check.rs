//! The named checks of the quality gates, typed: each variant carries its measured
//! values; `Display` gives the check's name with its values (e.g.
//! `seed_gradient_low_0.05`), which is also its JSON form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::alpha::AlphaMode;

/// One gate check, passed or failed (the name says which).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GateCheck {
    // G0
    SeedIdPresent,
    SeedIdMissing,
    BlueprintIdPresent,
    BlueprintIdMissing,
    // G1
    Germinated,
    NotGerminated,
    // G2 permissive
    TrainedEpochs { epochs: u32 },
    InsufficientTraining { epochs: u32, min: u32 },
    GradientRatioMeasured,
    GradientStatsNeverMeasured,
    SeedGradientRatioNan,
    GradientHealthNotMeasured,
    NoExplodingGradients,
    ExplodingGradients,
    GradientHealth { health: f64 },
    GradientHealthLow { health: f64, need: f64 },
    // G2 strict
    GlobalImprovement { improvement: f64 },
    GlobalImprovementInsufficient { improvement: f64 },
    SeedReady,
    SeedNotReady { epochs: u32, min: u32 },
    SeedGradientActive { ratio: f64 },
    SeedGradientLow { ratio: f64 },
    // G3
    AlphaTargetFull,
    AlphaTargetNotFull { target: f64 },
    AlphaTargetReached,
    AlphaNotAtTarget { alpha: f64, target: f64, mode: AlphaMode },
    BlendingComplete,
    BlendingIncomplete { epochs: u32, min: u32 },
    // G5
    CounterfactualNotAvailable,
    CounterfactualAvailable { contribution: f64 },
    Healthy,
    Unhealthy,
    SufficientContribution { contribution: f64 },
    InsufficientContribution { contribution: f64, need: f64 },
}

impl fmt::Display for GateCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GateCheck::*;
        match self {
            SeedIdPresent => f.write_str("seed_id_present"),
            SeedIdMissing => f.write_str("seed_id_missing"),
            BlueprintIdPresent => f.write_str("blueprint_id_present"),
            BlueprintIdMissing => f.write_str("blueprint_id_missing"),
            Germinated => f.write_str("germinated"),
            NotGerminated => f.write_str("not_germinated"),
            TrainedEpochs { epochs } => write!(f, "trained_{epochs}_epochs"),
            InsufficientTraining { epochs, min } => write!(f, "insufficient_training_{epochs}_of_{min}"),
            GradientRatioMeasured => f.write_str("gradient_ratio_measured"),
            GradientStatsNeverMeasured => f.write_str("gradient_stats_never_measured"),
            SeedGradientRatioNan => f.write_str("seed_gradient_ratio_nan"),
            GradientHealthNotMeasured => f.write_str("gradient_health_not_measured"),
            NoExplodingGradients => f.write_str("no_exploding_gradients"),
            ExplodingGradients => f.write_str("exploding_gradients"),
            GradientHealth { health } => write!(f, "gradient_health_{health:.2}"),
            GradientHealthLow { health, need } => write!(f, "gradient_health_low_{health:.2}_need_{need:.2}"),
            GlobalImprovement { improvement } => write!(f, "global_improvement_{improvement:.2}%"),
            GlobalImprovementInsufficient { improvement } => {
                write!(f, "global_improvement_insufficient_{improvement:.2}%")
            }
            SeedReady => f.write_str("seed_ready"),
            SeedNotReady { epochs, min } => write!(f, "seed_not_ready_{epochs}_of_{min}_epochs"),
            SeedGradientActive { ratio } => write!(f, "seed_gradient_active_{ratio:.2}"),
            SeedGradientLow { ratio } => write!(f, "seed_gradient_low_{ratio:.2}"),
            AlphaTargetFull => f.write_str("alpha_target_full"),
            AlphaTargetNotFull { target } => write!(f, "alpha_target_not_full_{target:.2}"),
            AlphaTargetReached => f.write_str("alpha_target_reached"),
            AlphaNotAtTarget { alpha, target, mode } => {
                write!(f, "alpha_not_at_target_{alpha:.2}_target_{target:.2}_mode_{mode}")
            }
            BlendingComplete => f.write_str("blending_complete"),
            BlendingIncomplete { epochs, min } => write!(f, "blending_incomplete_{epochs}_of_{min}"),
            CounterfactualNotAvailable => f.write_str("counterfactual_not_available"),
            CounterfactualAvailable { contribution } => write!(f, "counterfactual_available_{contribution:.2}%"),
            Healthy => f.write_str("healthy"),
            Unhealthy => f.write_str("unhealthy"),
            SufficientContribution { contribution } => write!(f, "sufficient_contribution_{contribution:.2}%"),
            InsufficientContribution { contribution, need } => {
                write!(f, "insufficient_contribution_{contribution:.2}%_below_{need:.2}%")
            }
        }
    }
}

/// A check name that is not one of [`GateCheck`]'s.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown gate check {0:?}")]
pub struct UnknownGateCheck(pub String);

/// The text between `prefix` and `suffix`, split at `sep` into exactly `n` parts.
fn fields<'a>(s: &'a str, prefix: &str, suffix: &str, sep: &str, n: usize) -> Option<Vec<&'a str>> {
    let inner = s.strip_prefix(prefix)?.strip_suffix(suffix)?;
    let parts: Vec<&str> = inner.split(sep).collect();
    (parts.len() == n).then_some(parts)
}

fn num<T: FromStr>(s: &str) -> Option<T> {
    s.parse().ok()
}

fn parse_mode(s: &str) -> Option<AlphaMode> {
    match s {
        "HOLD" => Some(AlphaMode::Hold),
        "UP" => Some(AlphaMode::Up),
        "DOWN" => Some(AlphaMode::Down),
        _ => None,
    }
}

fn one_f64(s: &str, prefix: &str, suffix: &str) -> Option<f64> {
    num(s.strip_prefix(prefix)?.strip_suffix(suffix)?)
}

fn two_u32(s: &str, prefix: &str, suffix: &str) -> Option<(u32, u32)> {
    let p = fields(s, prefix, suffix, "_of_", 2)?;
    Some((num(p[0])?, num(p[1])?))
}

/// A check with one number: its prefix, its suffix and how to make it.
type Valued = (&'static str, &'static str, fn(f64) -> GateCheck);

fn parse_valued(s: &str) -> Option<GateCheck> {
    use GateCheck::*;
    if let Some(p) = fields(s, "gradient_health_low_", "", "_need_", 2) {
        return Some(GradientHealthLow { health: num(p[0])?, need: num(p[1])? });
    }
    if let Some(p) = fields(s, "insufficient_contribution_", "%", "%_below_", 2) {
        return Some(InsufficientContribution { contribution: num(p[0])?, need: num(p[1])? });
    }
    if let Some(rest) = s.strip_prefix("alpha_not_at_target_") {
        let (alpha, rest) = rest.split_once("_target_")?;
        let (target, mode) = rest.split_once("_mode_")?;
        return Some(AlphaNotAtTarget { alpha: num(alpha)?, target: num(target)?, mode: parse_mode(mode)? });
    }
    if let Some((epochs, min)) = two_u32(s, "insufficient_training_", "") {
        return Some(InsufficientTraining { epochs, min });
    }
    if let Some((epochs, min)) = two_u32(s, "seed_not_ready_", "_epochs") {
        return Some(SeedNotReady { epochs, min });
    }
    if let Some((epochs, min)) = two_u32(s, "blending_incomplete_", "") {
        return Some(BlendingIncomplete { epochs, min });
    }
    if let Some(epochs) = s.strip_prefix("trained_").and_then(|r| r.strip_suffix("_epochs")).and_then(num) {
        return Some(TrainedEpochs { epochs });
    }
    let single: [Valued; 8] = [
        ("gradient_health_", "", |health| GradientHealth { health }),
        ("global_improvement_insufficient_", "%", |improvement| GlobalImprovementInsufficient { improvement }),
        ("global_improvement_", "%", |improvement| GlobalImprovement { improvement }),
        ("seed_gradient_active_", "", |ratio| SeedGradientActive { ratio }),
        ("seed_gradient_low_", "", |ratio| SeedGradientLow { ratio }),
        ("alpha_target_not_full_", "", |target| AlphaTargetNotFull { target }),
        ("counterfactual_available_", "%", |contribution| CounterfactualAvailable { contribution }),
        ("sufficient_contribution_", "%", |contribution| SufficientContribution { contribution }),
    ];
    single.iter().find_map(|(prefix, suffix, make)| one_f64(s, prefix, suffix).map(make))
}

impl FromStr for GateCheck {
    type Err = UnknownGateCheck;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use GateCheck::*;
        let plain = match s {
            "seed_id_present" => Some(SeedIdPresent),
            "seed_id_missing" => Some(SeedIdMissing),
            "blueprint_id_present" => Some(BlueprintIdPresent),
            "blueprint_id_missing" => Some(BlueprintIdMissing),
            "germinated" => Some(Germinated),
            "not_germinated" => Some(NotGerminated),
            "gradient_ratio_measured" => Some(GradientRatioMeasured),
            "gradient_stats_never_measured" => Some(GradientStatsNeverMeasured),
            "seed_gradient_ratio_nan" => Some(SeedGradientRatioNan),
            "gradient_health_not_measured" => Some(GradientHealthNotMeasured),
            "no_exploding_gradients" => Some(NoExplodingGradients),
            "exploding_gradients" => Some(ExplodingGradients),
            "seed_ready" => Some(SeedReady),
            "alpha_target_full" => Some(AlphaTargetFull),
            "alpha_target_reached" => Some(AlphaTargetReached),
            "blending_complete" => Some(BlendingComplete),
            "counterfactual_not_available" => Some(CounterfactualNotAvailable),
            "healthy" => Some(Healthy),
            "unhealthy" => Some(Unhealthy),
            _ => None,
        };
        plain.or_else(|| parse_valued(s)).ok_or_else(|| UnknownGateCheck(s.to_string()))
    }
}

impl Serialize for GateCheck {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GateCheck {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `checks` joined by `", "`, as the gate messages list them.
pub fn join_checks(checks: &[GateCheck]) -> String {
    checks.iter().map(GateCheck::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use GateCheck::*;

    #[test]
    fn every_check_round_trips_through_its_name_and_json() {
        let all = [
            SeedIdPresent,
            SeedIdMissing,
            BlueprintIdPresent,
            BlueprintIdMissing,
            Germinated,
            NotGerminated,
            TrainedEpochs { epochs: 12 },
            InsufficientTraining { epochs: 3, min: 10 },
            GradientRatioMeasured,
            GradientStatsNeverMeasured,
            SeedGradientRatioNan,
            GradientHealthNotMeasured,
            NoExplodingGradients,
            ExplodingGradients,
            GradientHealth { health: 0.75 },
            GradientHealthLow { health: 0.69, need: 0.7 },
            GlobalImprovement { improvement: 1.25 },
            GlobalImprovementInsufficient { improvement: -0.4 },
            SeedReady,
            SeedNotReady { epochs: 2, min: 10 },
            SeedGradientActive { ratio: 0.5 },
            SeedGradientLow { ratio: 0.05 },
            AlphaTargetFull,
            AlphaTargetNotFull { target: 0.5 },
            AlphaTargetReached,
            AlphaNotAtTarget { alpha: 0.2, target: 1.0, mode: AlphaMode::Up },
            BlendingComplete,
            BlendingIncomplete { epochs: 4, min: 10 },
            CounterfactualNotAvailable,
            CounterfactualAvailable { contribution: 2.5 },
            Healthy,
            Unhealthy,
            SufficientContribution { contribution: 1.5 },
            InsufficientContribution { contribution: 0.99, need: 1.0 },
        ];
        for check in all {
            let name = check.to_string();
            assert_eq!(name.parse::<GateCheck>(), Ok(check), "{name}");
            let json = serde_json::to_string(&check).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<GateCheck>(&json).unwrap(), check, "{json}");
        }
    }

    #[test]
    fn names_are_today_s() {
        assert_eq!(SeedGradientLow { ratio: 0.0512 }.to_string(), "seed_gradient_low_0.05");
        assert_eq!(
            InsufficientContribution { contribution: 0.99, need: 1.0 }.to_string(),
            "insufficient_contribution_0.99%_below_1.00%"
        );
        assert_eq!(
            AlphaNotAtTarget { alpha: 0.2, target: 1.0, mode: AlphaMode::Up }.to_string(),
            "alpha_not_at_target_0.20_target_1.00_mode_UP"
        );
        assert!("seed_gradient_low_x".parse::<GateCheck>().is_err());
        assert!("bogus".parse::<GateCheck>().is_err());
    }
}
