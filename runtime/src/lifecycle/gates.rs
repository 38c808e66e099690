//! Quality gates: the checks a seed must pass to enter GERMINATED (G0), TRAINING
//! (G1), BLENDING (G2), HOLDING (G3) and FOSSILIZED (G5). No gate leads to any other
//! stage: pruning and the cool-down pipeline are not gated.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::alpha::{AlphaMode, ALPHA_EPSILON};
use super::check::{join_checks, GateCheck};
use super::error::LifecycleError;
use super::stage::SeedStage;
use super::state::SeedState;

/// G2: accuracy points gained since TRAINING started.
pub const DEFAULT_MIN_TRAINING_IMPROVEMENT: f64 = 0.5;
/// G2 (epochs in TRAINING) and G3 strict (epochs in BLENDING).
pub const DEFAULT_MIN_BLENDING_EPOCHS: u32 = 10;
/// G2 strict: the latest seed/host gradient ratio (made from the smoothed seed norm).
pub const DEFAULT_MIN_SEED_GRADIENT_RATIO: f64 = 0.10;
/// G2 permissive: gradient health.
pub const DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING: f64 = 0.7;
/// G5 strict: counterfactual contribution in accuracy points.
pub const DEFAULT_MIN_FOSSILIZE_CONTRIBUTION: f64 = 1.0;

/// The gate levels; the numbers follow esper-lite (4 was a removed gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum GateLevel {
    /// DORMANT -> GERMINATED: basic sanity.
    G0 = 0,
    /// GERMINATED -> TRAINING: germination completed.
    G1 = 1,
    /// TRAINING -> BLENDING: the seed learned something and its gradients are sane.
    G2 = 2,
    /// BLENDING -> HOLDING: blended in at full amplitude.
    G3 = 3,
    /// HOLDING -> FOSSILIZED: measured causal contribution.
    G5 = 5,
}

impl GateLevel {
    /// The gate guarding entry into `target`, if any.
    pub fn for_target(target: SeedStage) -> Option<GateLevel> {
        match target {
            SeedStage::Germinated => Some(GateLevel::G0),
            SeedStage::Training => Some(GateLevel::G1),
            SeedStage::Blending => Some(GateLevel::G2),
            SeedStage::Holding => Some(GateLevel::G3),
            SeedStage::Fossilized => Some(GateLevel::G5),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for GateLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "G{}", self.number())
    }
}

/// Strict gates enforce quality thresholds; permissive gates enforce only safety
/// and structure (so a learning policy can make, and learn from, its own mistakes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    #[default]
    Strict,
    Permissive,
}

/// The outcome of one gate check; every check is listed by name under passed or
/// failed (failed names carry the measured value, e.g. `seed_gradient_low_0.05`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub gate: GateLevel,
    pub passed: bool,
    pub checks_passed: Vec<GateCheck>,
    pub checks_failed: Vec<GateCheck>,
    pub message: String,
}

impl GateResult {
    fn from_checks(gate: GateLevel, checks: Checks, message: String) -> Self {
        GateResult {
            gate,
            passed: checks.failed.is_empty(),
            checks_passed: checks.passed,
            checks_failed: checks.failed,
            message,
        }
    }

    /// Whether a failed check matches `pred` (e.g. `|c| matches!(c, GateCheck::Unhealthy)`).
    pub fn failed(&self, pred: impl Fn(&GateCheck) -> bool) -> bool {
        self.checks_failed.iter().any(pred)
    }
}

impl fmt::Display for GateResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed { "passed" } else { "FAILED" };
        write!(f, "{} {verdict}: {}", self.gate, self.message)?;
        if !self.checks_failed.is_empty() {
            write!(f, "; failed: {}", join_checks(&self.checks_failed))?;
        }
        if !self.checks_passed.is_empty() {
            write!(f, "; passed: {}", join_checks(&self.checks_passed))?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Checks {
    passed: Vec<GateCheck>,
    failed: Vec<GateCheck>,
}

impl Checks {
    fn check(&mut self, ok: bool, pass: GateCheck, fail: GateCheck) -> bool {
        if ok {
            self.passed.push(pass);
        } else {
            self.failed.push(fail);
        }
        ok
    }
}

/// Thresholds and mode of the quality gates (a config section: missing keys take the
/// strict defaults, unknown keys are refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityGates {
    pub mode: GateMode,
    pub min_training_improvement: f64,
    pub min_blending_epochs: u32,
    pub min_seed_gradient_ratio: f64,
    pub min_gradient_health_for_blending: f64,
    pub min_fossilize_contribution: f64,
}

impl Default for QualityGates {
    fn default() -> Self {
        QualityGates::strict()
    }
}

impl QualityGates {
    /// Default thresholds, strict mode.
    pub fn strict() -> Self {
        QualityGates {
            mode: GateMode::Strict,
            min_training_improvement: DEFAULT_MIN_TRAINING_IMPROVEMENT,
            min_blending_epochs: DEFAULT_MIN_BLENDING_EPOCHS,
            min_seed_gradient_ratio: DEFAULT_MIN_SEED_GRADIENT_RATIO,
            min_gradient_health_for_blending: DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING,
            min_fossilize_contribution: DEFAULT_MIN_FOSSILIZE_CONTRIBUTION,
        }
    }

    /// Default thresholds, permissive mode.
    pub fn permissive() -> Self {
        QualityGates { mode: GateMode::Permissive, ..QualityGates::strict() }
    }

    fn permissive_mode(&self) -> bool {
        self.mode == GateMode::Permissive
    }

    /// Check the gate guarding entry into `target`. Only GERMINATED, TRAINING,
    /// BLENDING, HOLDING and FOSSILIZED have gates; any other target is an error.
    pub fn check(&self, state: &SeedState, target: SeedStage) -> Result<GateResult, LifecycleError> {
        match GateLevel::for_target(target) {
            Some(GateLevel::G0) => Ok(Self::check_g0(state)),
            Some(GateLevel::G1) => Ok(Self::check_g1(state)),
            Some(GateLevel::G2) => Ok(self.check_g2(state)),
            Some(GateLevel::G3) => Ok(self.check_g3(state)),
            Some(GateLevel::G5) => Ok(self.check_g5(state)),
            None => Err(LifecycleError::NoGate(target)),
        }
    }

    /// G0: the seed has an id and a blueprint.
    pub fn check_g0(state: &SeedState) -> GateResult {
        let mut c = Checks::default();
        c.check(!state.seed_id().is_empty(), GateCheck::SeedIdPresent, GateCheck::SeedIdMissing);
        c.check(!state.blueprint_id().is_empty(), GateCheck::BlueprintIdPresent, GateCheck::BlueprintIdMissing);
        let message = if c.failed.is_empty() { "germination gate" } else { "missing required fields" };
        GateResult::from_checks(GateLevel::G0, c, message.into())
    }

    /// G1: the seed is germinated.
    pub fn check_g1(state: &SeedState) -> GateResult {
        let mut c = Checks::default();
        let ok = c.check(state.stage() == SeedStage::Germinated, GateCheck::Germinated, GateCheck::NotGerminated);
        let message = if ok { "ready for training" } else { "not germinated" };
        GateResult::from_checks(GateLevel::G1, c, message.into())
    }

    /// G2. Strict: improvement since TRAINING started of at least
    /// `min_training_improvement`, at least `min_blending_epochs` epochs in TRAINING,
    /// the latest gradient ratio (from the smoothed seed norm) measured and at least
    /// `min_seed_gradient_ratio`.
    /// Permissive (safety only): see [`QualityGates::check_g2_safety`].
    fn check_g2(&self, state: &SeedState) -> GateResult {
        if self.permissive_mode() {
            return self.check_g2_safety(state);
        }
        let m = state.metrics();
        let mut c = Checks::default();
        let (epochs, improvement) = (m.epochs_in_current_stage(), m.improvement_since_stage_start());
        c.check(
            improvement >= self.min_training_improvement,
            GateCheck::GlobalImprovement { improvement },
            GateCheck::GlobalImprovementInsufficient { improvement },
        );
        c.check(
            epochs >= self.min_blending_epochs,
            GateCheck::SeedReady,
            GateCheck::SeedNotReady { epochs, min: self.min_blending_epochs },
        );
        match m.seed_gradient_norm_ratio() {
            None => c.failed.push(GateCheck::GradientStatsNeverMeasured),
            Some(ratio) if ratio.is_nan() => c.failed.push(GateCheck::SeedGradientRatioNan),
            Some(ratio) => {
                c.check(
                    ratio >= self.min_seed_gradient_ratio,
                    GateCheck::SeedGradientActive { ratio },
                    GateCheck::SeedGradientLow { ratio },
                );
            }
        }
        GateResult::from_checks(GateLevel::G2, c, format!("improvement: {improvement:.2}%"))
    }

    /// Permissive G2 (safety only): at least `min_blending_epochs` epochs, gradients
    /// measured (ratio, not NaN, and health), no exploding gradient, health at least
    /// `min_gradient_health_for_blending`.
    fn check_g2_safety(&self, state: &SeedState) -> GateResult {
        let m = state.metrics();
        let mut c = Checks::default();
        let (epochs, min) = (m.epochs_in_current_stage(), self.min_blending_epochs);
        c.check(epochs >= min, GateCheck::TrainedEpochs { epochs }, GateCheck::InsufficientTraining { epochs, min });
        c.check(m.gradient_ratio_measured(), GateCheck::GradientRatioMeasured, GateCheck::GradientStatsNeverMeasured);
        if m.seed_gradient_norm_ratio().is_some_and(f64::is_nan) {
            c.failed.push(GateCheck::SeedGradientRatioNan);
        }
        match m.gradient_health() {
            None => c.failed.push(GateCheck::GradientHealthNotMeasured),
            // Health is moot while gradients explode.
            Some(_) if m.has_exploding_gradients() => c.failed.push(GateCheck::ExplodingGradients),
            Some(health) => {
                c.passed.push(GateCheck::NoExplodingGradients);
                let need = self.min_gradient_health_for_blending;
                c.check(
                    health >= need,
                    GateCheck::GradientHealth { health },
                    GateCheck::GradientHealthLow { health, need },
                );
            }
        }
        let verdict = if c.failed.is_empty() { "PASS" } else { "FAIL" };
        GateResult::from_checks(GateLevel::G2, c, format!("permissive G2 safety: {verdict}"))
    }

    /// G3: the alpha target is full amplitude and the controller has reached it and
    /// rests in HOLD; strict mode also needs `min_blending_epochs` epochs in BLENDING.
    fn check_g3(&self, state: &SeedState) -> GateResult {
        let ctl = state.alpha_controller();
        let mut c = Checks::default();
        let (alpha, target, mode) = (ctl.alpha(), ctl.alpha_target(), ctl.mode());
        c.check(target >= 1.0 - ALPHA_EPSILON, GateCheck::AlphaTargetFull, GateCheck::AlphaTargetNotFull { target });
        c.check(
            mode == AlphaMode::Hold && (alpha - target).abs() <= ALPHA_EPSILON,
            GateCheck::AlphaTargetReached,
            GateCheck::AlphaNotAtTarget { alpha, target, mode },
        );
        if self.permissive_mode() {
            return GateResult::from_checks(GateLevel::G3, c, "permissive G3: alpha completion only".into());
        }
        let epochs = state.metrics().epochs_in_current_stage();
        c.check(
            epochs >= self.min_blending_epochs,
            GateCheck::BlendingComplete,
            GateCheck::BlendingIncomplete { epochs, min: self.min_blending_epochs },
        );
        GateResult::from_checks(GateLevel::G3, c, format!("alpha {alpha:.2}"))
    }

    /// G5: the counterfactual contribution is measured and the seed is healthy;
    /// strict mode also needs contribution >= `min_fossilize_contribution`.
    fn check_g5(&self, state: &SeedState) -> GateResult {
        let mut c = Checks::default();
        let Some(contribution) = state.metrics().counterfactual_contribution() else {
            c.failed.push(GateCheck::CounterfactualNotAvailable);
            return GateResult::from_checks(GateLevel::G5, c, "counterfactual contribution not measured".into());
        };
        c.passed.push(GateCheck::CounterfactualAvailable { contribution });
        c.check(state.is_healthy(), GateCheck::Healthy, GateCheck::Unhealthy);
        if self.permissive_mode() {
            return GateResult::from_checks(
                GateLevel::G5,
                c,
                format!("permissive G5: {contribution:.2}% contribution (no threshold)"),
            );
        }
        let need = self.min_fossilize_contribution;
        c.check(
            contribution >= need,
            GateCheck::SufficientContribution { contribution },
            GateCheck::InsufficientContribution { contribution, need },
        );
        GateResult::from_checks(GateLevel::G5, c, format!("contribution: {contribution:.2}%"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blend::BlendSettings;
    use crate::lifecycle::alpha::AlphaCurve;

    fn seed_in(stage: SeedStage) -> SeedState {
        let mut s = SeedState::new("s1", "norm", "r0c0", BlendSettings::default().ramp);
        // A baseline of 50%: every stage entered below starts from it.
        s.metrics_mut().record_score(50.0);
        let path = [SeedStage::Germinated, SeedStage::Training, SeedStage::Blending, SeedStage::Holding];
        for next in path {
            if s.stage() == stage {
                break;
            }
            s.transition(next).unwrap();
        }
        assert_eq!(s.stage(), stage);
        s
    }

    /// `epochs` accuracy samples rising linearly by `gain` in total.
    fn train(s: &mut SeedState, epochs: u32, start: f64, gain: f64) {
        for i in 1..=epochs {
            let acc = start + gain * f64::from(i) / f64::from(epochs);
            s.metrics_mut().record_score(acc);
        }
    }

    fn assert_failed(r: &GateResult, prefixes: &[&str]) {
        assert!(!r.passed, "{r}");
        for p in prefixes {
            assert!(r.failed(|c| c.to_string().starts_with(p)), "{p} missing from {r}");
        }
        assert_eq!(r.checks_failed.len(), prefixes.len(), "{r}");
    }

    #[test]
    fn gate_levels_map_targets() {
        use SeedStage::*;
        assert_eq!(GateLevel::for_target(Germinated), Some(GateLevel::G0));
        assert_eq!(GateLevel::for_target(Training), Some(GateLevel::G1));
        assert_eq!(GateLevel::for_target(Blending), Some(GateLevel::G2));
        assert_eq!(GateLevel::for_target(Holding), Some(GateLevel::G3));
        assert_eq!(GateLevel::for_target(Fossilized), Some(GateLevel::G5));
        for s in [Unknown, Dormant, Pruned, Embargoed, Resetting] {
            assert_eq!(GateLevel::for_target(s), None);
            let st = seed_in(Dormant);
            assert_eq!(QualityGates::strict().check(&st, s), Err(LifecycleError::NoGate(s)));
        }
        assert_eq!(GateLevel::G5.to_string(), "G5");
    }

    #[test]
    fn g0_passes_and_fails() {
        let ok = QualityGates::check_g0(&seed_in(SeedStage::Dormant));
        assert!(ok.passed, "{ok}");
        let bad = SeedState::new("", "", "r0c0", BlendSettings::default().ramp);
        let r = QualityGates::check_g0(&bad);
        assert_failed(&r, &["seed_id_missing", "blueprint_id_missing"]);
        let no_bp = SeedState::new("s", "", "r0c0", BlendSettings::default().ramp);
        assert_failed(&QualityGates::check_g0(&no_bp), &["blueprint_id_missing"]);
    }

    #[test]
    fn g1_passes_and_fails() {
        let g = QualityGates::strict();
        let r = g.check(&seed_in(SeedStage::Germinated), SeedStage::Training).unwrap();
        assert!(r.passed && r.gate == GateLevel::G1, "{r}");
        let r = g.check(&seed_in(SeedStage::Dormant), SeedStage::Training).unwrap();
        assert_failed(&r, &["not_germinated"]);
    }

    #[test]
    fn g2_strict_passes() {
        let mut s = seed_in(SeedStage::Training);
        train(&mut s, 10, 50.0, 0.5);
        s.metrics_mut().record_gradient_ratio(0.10);
        let r = QualityGates::strict().check(&s, SeedStage::Blending).unwrap();
        assert!(r.passed, "{r}");
        assert_eq!(r.gate, GateLevel::G2);
        assert!(r.checks_failed.is_empty());
    }

    #[test]
    fn g2_strict_needs_the_whole_half_point_of_improvement() {
        let g = QualityGates::strict();
        for (gain, passes) in [(0.49, false), (0.5, true), (0.51, true)] {
            let mut s = seed_in(SeedStage::Training);
            train(&mut s, 10, 50.0, gain);
            s.metrics_mut().record_gradient_ratio(0.5);
            let r = g.check(&s, SeedStage::Blending).unwrap();
            assert_eq!(r.passed, passes, "a gain of {gain} points: {r}");
            if !passes {
                assert_failed(&r, &["global_improvement_insufficient_0.49%"]);
            }
        }
    }

    #[test]
    fn g2_strict_fails_each_check() {
        let g = QualityGates::strict();
        // Nothing measured, no epochs.
        let s = seed_in(SeedStage::Training);
        let r = g.check(&s, SeedStage::Blending).unwrap();
        assert_failed(&r, &["global_improvement_insufficient", "seed_not_ready", "gradient_stats_never_measured"]);

        // Only the improvement is short (0.4 < 0.5).
        let mut s = seed_in(SeedStage::Training);
        train(&mut s, 10, 50.0, 0.4);
        s.metrics_mut().record_gradient_ratio(0.5);
        let r = g.check(&s, SeedStage::Blending).unwrap();
        assert_failed(&r, &["global_improvement_insufficient_0.40%"]);

        // Only the epochs are short (9 < 10).
        let mut s = seed_in(SeedStage::Training);
        train(&mut s, 9, 50.0, 2.0);
        s.metrics_mut().record_gradient_ratio(0.5);
        assert_failed(&g.check(&s, SeedStage::Blending).unwrap(), &["seed_not_ready"]);

        // Only the gradient ratio is short: the latest ratio counts, made from the
        // smoothed seed norm (0.9 * 0 + 0.1 * 0.5 = 0.05 over a host norm of 1).
        let mut s = seed_in(SeedStage::Training);
        train(&mut s, 10, 50.0, 2.0);
        s.metrics_mut().record_gradient_norms(0.0, 1.0, 1, 1);
        s.metrics_mut().record_gradient_norms(0.5, 1.0, 1, 1);
        let r = g.check(&s, SeedStage::Blending).unwrap();
        assert_failed(&r, &["seed_gradient_low_0.05"]);
        s.metrics_mut().record_gradient_ratio(0.5);
        assert!(g.check(&s, SeedStage::Blending).unwrap().passed, "the latest ratio, not an average of ratios");

        // A NaN gradient ratio fails G2 (it used to be clamped to 10 and pass).
        let mut s = seed_in(SeedStage::Training);
        train(&mut s, 10, 50.0, 2.0);
        s.metrics_mut().record_gradient_ratio(f64::NAN);
        assert_failed(&g.check(&s, SeedStage::Blending).unwrap(), &["seed_gradient_ratio_nan"]);
    }

    #[test]
    fn g2_permissive_fails_a_nan_gradient_ratio() {
        let mut s = permissive_ready();
        assert!(QualityGates::permissive().check(&s, SeedStage::Blending).unwrap().passed);
        s.metrics_mut().record_gradient_ratio(f64::NAN);
        let r = QualityGates::permissive().check(&s, SeedStage::Blending).unwrap();
        assert_failed(&r, &["seed_gradient_ratio_nan"]);
    }

    fn permissive_ready() -> SeedState {
        let mut s = seed_in(SeedStage::Training);
        // No improvement at all: permissive mode does not care.
        train(&mut s, 10, 50.0, 0.0);
        s.metrics_mut().record_gradient_ratio(0.01);
        s.metrics_mut().record_gradient_health(0.7, false);
        s
    }

    #[test]
    fn g2_permissive_passes_without_quality() {
        let s = permissive_ready();
        let r = QualityGates::permissive().check(&s, SeedStage::Blending).unwrap();
        assert!(r.passed, "{r}");
        // The same seed fails strict gates.
        assert!(!QualityGates::strict().check(&s, SeedStage::Blending).unwrap().passed);
    }

    #[test]
    fn g2_permissive_fails_each_check() {
        let g = QualityGates::permissive();
        let s = seed_in(SeedStage::Training);
        assert_failed(
            &g.check(&s, SeedStage::Blending).unwrap(),
            &["insufficient_training_0_of_10", "gradient_stats_never_measured", "gradient_health_not_measured"],
        );

        let mut s = permissive_ready();
        s.metrics_mut().record_gradient_health(0.69, false);
        assert_failed(&g.check(&s, SeedStage::Blending).unwrap(), &["gradient_health_low_0.69_need_0.70"]);

        let mut s = permissive_ready();
        s.metrics_mut().record_gradient_health(1.0, true);
        assert_failed(&g.check(&s, SeedStage::Blending).unwrap(), &["exploding_gradients"]);

        let mut s = seed_in(SeedStage::Training);
        train(&mut s, 3, 50.0, 5.0);
        s.metrics_mut().record_gradient_ratio(1.0);
        s.metrics_mut().record_gradient_health(1.0, false);
        assert_failed(&g.check(&s, SeedStage::Blending).unwrap(), &["insufficient_training_3_of_10"]);
    }

    fn blended(epochs: u32) -> SeedState {
        let mut s = seed_in(SeedStage::Blending);
        s.alpha_controller.retarget(1.0, 2, AlphaCurve::Linear).unwrap();
        while !s.alpha_controller.step() {}
        train(&mut s, epochs, 50.0, 1.0);
        s
    }

    #[test]
    fn g3_passes() {
        let s = blended(10);
        assert!(QualityGates::strict().check(&s, SeedStage::Holding).unwrap().passed);
        let s = blended(0);
        assert!(QualityGates::permissive().check(&s, SeedStage::Holding).unwrap().passed);
    }

    #[test]
    fn g3_fails_each_check() {
        let strict = QualityGates::strict();
        // Enough epochs but the ramp is still running.
        let mut s = seed_in(SeedStage::Blending);
        s.alpha_controller.retarget(1.0, 5, AlphaCurve::Linear).unwrap();
        s.alpha_controller.step();
        train(&mut s, 10, 50.0, 1.0);
        let r = strict.check(&s, SeedStage::Holding).unwrap();
        assert_failed(&r, &["alpha_not_at_target_0.20_target_1.00_mode_UP"]);
        assert!(QualityGates::permissive()
            .check(&s, SeedStage::Holding)
            .unwrap()
            .failed(|c| matches!(c, GateCheck::AlphaNotAtTarget { .. })));

        // At rest, but at a partial target.
        let mut s = seed_in(SeedStage::Blending);
        s.alpha_controller.retarget(0.5, 0, AlphaCurve::Linear).unwrap();
        train(&mut s, 10, 50.0, 1.0);
        let r = strict.check(&s, SeedStage::Holding).unwrap();
        assert_failed(&r, &["alpha_target_not_full_0.50"]);

        // Blended in, but too few epochs (strict only).
        let s = blended(4);
        let r = strict.check(&s, SeedStage::Holding).unwrap();
        assert_failed(&r, &["blending_incomplete_4_of_10"]);
    }

    fn holding(contribution: Option<f64>) -> SeedState {
        let mut s = seed_in(SeedStage::Holding);
        s.metrics_mut().set_counterfactual_contribution(contribution);
        s
    }

    #[test]
    fn g5_passes() {
        let r = QualityGates::strict().check(&holding(Some(1.0)), SeedStage::Fossilized).unwrap();
        assert!(r.passed, "{r}");
        // Permissive has no contribution threshold (esper-lite), even below zero.
        let r = QualityGates::permissive().check(&holding(Some(-0.5)), SeedStage::Fossilized).unwrap();
        assert!(r.passed, "{r}");
    }

    #[test]
    fn g5_fails_each_check() {
        for g in [QualityGates::strict(), QualityGates::permissive()] {
            let r = g.check(&holding(None), SeedStage::Fossilized).unwrap();
            assert_failed(&r, &["counterfactual_not_available"]);
            let mut s = holding(Some(5.0));
            s.set_healthy(false);
            assert_failed(&g.check(&s, SeedStage::Fossilized).unwrap(), &["unhealthy"]);
        }
        let r = QualityGates::strict().check(&holding(Some(0.99)), SeedStage::Fossilized).unwrap();
        assert_failed(&r, &["insufficient_contribution_0.99%_below_1.00%"]);
    }

    #[test]
    fn thresholds_are_configurable() {
        let mut g = QualityGates::strict();
        g.min_fossilize_contribution = 3.0;
        assert!(!g.check(&holding(Some(2.0)), SeedStage::Fossilized).unwrap().passed);
        g.min_fossilize_contribution = 1.5;
        assert!(g.check(&holding(Some(2.0)), SeedStage::Fossilized).unwrap().passed);
    }

    #[test]
    fn result_display_is_readable() {
        let bad = SeedState::new("", "norm", "r0c0", BlendSettings::default().ramp);
        let text = QualityGates::check_g0(&bad).to_string();
        assert!(text.starts_with("G0 FAILED"), "{text}");
        assert!(text.contains("seed_id_missing"), "{text}");
        assert!(text.contains("blueprint_id_present"), "{text}");
    }
}
