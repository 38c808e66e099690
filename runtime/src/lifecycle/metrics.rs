//! Per-seed measurements: accuracy over time, counterfactual contribution and
//! gradient activity. Accuracies are in percentage points (0-100), as the gates'
//! thresholds are.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How many accuracy samples the history keeps (oldest dropped first).
pub const ACCURACY_HISTORY_LEN: usize = 100;
/// Decay of the seed gradient-norm EMA: `ema = 0.9 * ema + 0.1 * sample` (esper-lite's:
/// the EMA smooths the seed's norm, and G2 reads the latest ratio made from it).
pub const GRADIENT_EMA_DECAY: f64 = 0.9;
/// Upper bound of the seed/host gradient ratio (outliers would dominate the gate).
pub const MAX_GRADIENT_RATIO: f64 = 10.0;
/// Host gradient norms below this make the ratio meaningless (it is then 0).
pub const GRADIENT_EPSILON: f64 = 1e-8;
/// A per-parameter gradient norm above this (10x the clip norm of 1.0), or not
/// finite, counts as exploding.
pub const EXPLODING_GRAD_NORM: f64 = 10.0;
/// A per-parameter gradient norm below this counts as vanishing.
pub const VANISHING_GRAD_NORM: f64 = 1e-7;

/// The parameter-normalised seed/host gradient ratio:
/// `(seed_norm / host_norm) * sqrt(host_params / seed_params)`, clamped to
/// [0, [`MAX_GRADIENT_RATIO`]]; 0 when `host_norm < 1e-8`; the raw ratio when either
/// parameter count is 0; +inf counts as the maximum, and NaN stays NaN (a NaN gradient
/// is a broken seed, and G2 fails on it).
pub fn normalized_gradient_ratio(seed_norm: f64, host_norm: f64, seed_params: u64, host_params: u64) -> f64 {
    if host_norm < GRADIENT_EPSILON {
        return 0.0;
    }
    let mut ratio = seed_norm / host_norm;
    if host_params > 0 && seed_params > 0 {
        ratio *= (host_params as f64 / seed_params as f64).sqrt();
    }
    clamp_ratio(ratio)
}

fn clamp_ratio(ratio: f64) -> f64 {
    if ratio.is_nan() {
        f64::NAN
    } else {
        ratio.clamp(0.0, MAX_GRADIENT_RATIO)
    }
}

/// Below this gradient health a seed is unhealthy (as is one with an exploding
/// gradient), and G5 refuses to fossilize it.
pub const MIN_HEALTHY_GRADIENT_HEALTH: f64 = 0.5;

/// Gradient health of one set of parameters, from their per-parameter L2 norms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradientHealth {
    /// `1 - 0.5 * vanishing_fraction - 0.8 * exploding_fraction`, clamped to [0, 1];
    /// 0 when the global norm is not finite; 1 when there are no gradients.
    pub health: f64,
    pub has_exploding: bool,
    pub has_vanishing: bool,
    /// Global L2 norm, `sqrt(sum of squared norms)`.
    pub global_norm: f64,
}

impl GradientHealth {
    pub fn from_param_norms(norms: &[f64]) -> Self {
        if norms.is_empty() {
            return GradientHealth { health: 1.0, has_exploding: false, has_vanishing: false, global_norm: 0.0 };
        }
        let n = norms.len() as f64;
        let exploding = norms.iter().filter(|g| !g.is_finite() || **g > EXPLODING_GRAD_NORM).count();
        let vanishing = norms.iter().filter(|g| **g < VANISHING_GRAD_NORM).count();
        let global_norm = norms.iter().map(|g| g * g).sum::<f64>().sqrt();
        let health = if global_norm.is_finite() {
            (1.0 - 0.5 * vanishing as f64 / n - 0.8 * exploding as f64 / n).clamp(0.0, 1.0)
        } else {
            0.0
        };
        GradientHealth { health, has_exploding: exploding > 0, has_vanishing: vanishing > 0, global_norm }
    }

    /// Whether a seed with these gradients is healthy: no exploding gradient and a
    /// health of at least [`MIN_HEALTHY_GRADIENT_HEALTH`].
    pub fn is_healthy(&self) -> bool {
        !self.has_exploding && self.health >= MIN_HEALTHY_GRADIENT_HEALTH
    }
}

/// Measurements of one seed across its life.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SeedMetrics {
    epochs_total: u32,
    epochs_in_current_stage: u32,
    initial_val_accuracy: f64,
    current_val_accuracy: f64,
    best_val_accuracy: f64,
    accuracy_at_stage_start: f64,
    accuracy_history: VecDeque<f64>,
    counterfactual_contribution: Option<f64>,
    /// The latest ratio, clamped: what G2 reads.
    seed_gradient_norm_ratio: Option<f64>,
    /// EMA of the seed's gradient norm (the first checkpoint format's ratio EMA, if
    /// present in an old checkpoint, is not read).
    #[serde(default)]
    seed_gradient_norm_ema: Option<f64>,
    gradient_health: Option<f64>,
    has_exploding_gradients: bool,
}

impl SeedMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record one validation score (once per epoch): the accuracy in percent, or a text
    /// run's loss score (see [`crate::data::Objective::score`]); the fields keep the
    /// accuracy's names. The first one is also the initial score and the first stage
    /// baseline.
    pub fn record_score(&mut self, accuracy: f64) {
        if self.epochs_total == 0 {
            self.initial_val_accuracy = accuracy;
            self.accuracy_at_stage_start = accuracy;
        }
        self.current_val_accuracy = accuracy;
        self.best_val_accuracy = self.best_val_accuracy.max(accuracy);
        if self.accuracy_history.len() == ACCURACY_HISTORY_LEN {
            self.accuracy_history.pop_front();
        }
        self.accuracy_history.push_back(accuracy);
        self.epochs_total += 1;
        self.epochs_in_current_stage += 1;
    }

    /// Start a new stage: the baseline becomes the current accuracy and the stage
    /// epoch count restarts.
    pub fn reset_stage_baseline(&mut self) {
        self.accuracy_at_stage_start = self.current_val_accuracy;
        self.epochs_in_current_stage = 0;
    }

    /// Record one gradient measurement: the seed's norm goes into its EMA (the first
    /// sample sets it), and the ratio G2 reads is made from that EMA and the host's norm
    /// ([`normalized_gradient_ratio`], scaled by `sqrt(host_params / seed_params)`).
    pub fn record_gradient_norms(&mut self, seed_norm: f64, host_norm: f64, seed_params: u64, host_params: u64) {
        let ema = match self.seed_gradient_norm_ema {
            None => seed_norm,
            Some(prev) => GRADIENT_EMA_DECAY * prev + (1.0 - GRADIENT_EMA_DECAY) * seed_norm,
        };
        self.seed_gradient_norm_ema = Some(ema);
        self.record_gradient_ratio(normalized_gradient_ratio(ema, host_norm, seed_params, host_params));
    }

    /// Record a seed/host gradient ratio as the latest (see [`normalized_gradient_ratio`]),
    /// clamped to [0, 10]. A NaN stays NaN, and G2 refuses it.
    pub fn record_gradient_ratio(&mut self, ratio: f64) {
        self.seed_gradient_norm_ratio = Some(clamp_ratio(ratio));
    }

    /// Record the latest gradient health (clamped to [0, 1]; NaN counts as 0) and
    /// whether any seed gradient was exploding.
    pub fn record_gradient_health(&mut self, health: f64, has_exploding: bool) {
        let health = if health.is_nan() { 0.0 } else { health.clamp(0.0, 1.0) };
        self.gradient_health = Some(health);
        self.has_exploding_gradients = has_exploding;
    }

    /// Record a [`GradientHealth`] summary.
    pub fn record_gradient_health_summary(&mut self, summary: &GradientHealth) {
        self.record_gradient_health(summary.health, summary.has_exploding);
    }

    /// The causal contribution in accuracy points (accuracy with the seed minus
    /// accuracy with alpha forced to 0); `None` until measured.
    pub fn set_counterfactual_contribution(&mut self, contribution: Option<f64>) {
        self.counterfactual_contribution = contribution;
    }

    pub fn improvement_since_stage_start(&self) -> f64 {
        self.current_val_accuracy - self.accuracy_at_stage_start
    }
    pub fn total_improvement(&self) -> f64 {
        self.current_val_accuracy - self.initial_val_accuracy
    }
    pub fn epochs_total(&self) -> u32 {
        self.epochs_total
    }
    pub fn epochs_in_current_stage(&self) -> u32 {
        self.epochs_in_current_stage
    }
    pub fn initial_val_accuracy(&self) -> f64 {
        self.initial_val_accuracy
    }
    pub fn current_val_accuracy(&self) -> f64 {
        self.current_val_accuracy
    }
    pub fn best_val_accuracy(&self) -> f64 {
        self.best_val_accuracy
    }
    pub fn accuracy_at_stage_start(&self) -> f64 {
        self.accuracy_at_stage_start
    }
    /// The last [`ACCURACY_HISTORY_LEN`] accuracies, oldest first.
    pub fn accuracy_history(&self) -> &VecDeque<f64> {
        &self.accuracy_history
    }
    pub fn counterfactual_contribution(&self) -> Option<f64> {
        self.counterfactual_contribution
    }
    /// The latest gradient ratio (from the smoothed seed norm, clamped), which the G2
    /// gate reads; `None` = never measured.
    pub fn seed_gradient_norm_ratio(&self) -> Option<f64> {
        self.seed_gradient_norm_ratio
    }
    /// The EMA of the seed's gradient norm; `None` = never measured.
    pub fn seed_gradient_norm_ema(&self) -> Option<f64> {
        self.seed_gradient_norm_ema
    }
    /// Whether a gradient ratio has ever been recorded.
    pub fn gradient_ratio_measured(&self) -> bool {
        self.seed_gradient_norm_ratio.is_some()
    }
    /// Latest gradient health in [0, 1]; `None` = never measured.
    pub fn gradient_health(&self) -> Option<f64> {
        self.gradient_health
    }
    pub fn has_exploding_gradients(&self) -> bool {
        self.has_exploding_gradients
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_bookkeeping() {
        let mut m = SeedMetrics::new();
        m.record_score(40.0);
        assert_eq!(m.initial_val_accuracy(), 40.0);
        assert_eq!(m.accuracy_at_stage_start(), 40.0);
        m.record_score(45.0);
        m.record_score(43.0);
        assert_eq!(m.current_val_accuracy(), 43.0);
        assert_eq!(m.best_val_accuracy(), 45.0);
        assert_eq!(m.total_improvement(), 3.0);
        assert_eq!(m.improvement_since_stage_start(), 3.0);
        assert_eq!((m.epochs_total(), m.epochs_in_current_stage()), (3, 3));

        m.reset_stage_baseline();
        assert_eq!(m.epochs_in_current_stage(), 0);
        assert_eq!(m.improvement_since_stage_start(), 0.0);
        m.record_score(44.5);
        assert_eq!(m.improvement_since_stage_start(), 1.5);
        assert_eq!(m.total_improvement(), 4.5);
        assert_eq!((m.epochs_total(), m.epochs_in_current_stage()), (4, 1));
        assert_eq!(m.initial_val_accuracy(), 40.0, "initial is set once");
    }

    #[test]
    fn history_is_bounded_and_keeps_the_newest() {
        let mut m = SeedMetrics::new();
        for i in 0..(ACCURACY_HISTORY_LEN + 7) {
            m.record_score(i as f64);
        }
        let h = m.accuracy_history();
        assert_eq!(h.len(), ACCURACY_HISTORY_LEN);
        assert_eq!(h.front(), Some(&7.0));
        assert_eq!(h.back(), Some(&((ACCURACY_HISTORY_LEN + 6) as f64)));
    }

    #[test]
    fn the_ratio_is_made_from_the_smoothed_seed_norm_and_clamped() {
        let mut m = SeedMetrics::new();
        assert!(!m.gradient_ratio_measured());
        assert_eq!(m.seed_gradient_norm_ratio(), None);
        // Equal parameter counts: ratio = seed / host.
        m.record_gradient_norms(0.5, 1.0, 100, 100);
        assert!(m.gradient_ratio_measured());
        assert_eq!(m.seed_gradient_norm_ema(), Some(0.5), "the first sample sets the EMA");
        assert_eq!(m.seed_gradient_norm_ratio(), Some(0.5));
        m.record_gradient_norms(1.5, 1.0, 100, 100);
        let ema = 0.9 * 0.5 + 0.1 * 1.5;
        assert!((m.seed_gradient_norm_ema().unwrap() - ema).abs() < 1e-12);
        assert!((m.seed_gradient_norm_ratio().unwrap() - ema).abs() < 1e-12, "the latest ratio, from the EMA");
        // sqrt(host / seed) scaling, then the clamp.
        m.record_gradient_norms(ema, 1.0, 1, 10_000);
        assert_eq!(m.seed_gradient_norm_ratio(), Some(MAX_GRADIENT_RATIO));
        m.record_gradient_ratio(-1.0);
        assert_eq!(m.seed_gradient_norm_ratio(), Some(0.0));
        // NaN is not clamped into a passing value.
        m.record_gradient_norms(f64::NAN, 1.0, 1, 1);
        assert!(m.seed_gradient_norm_ratio().is_some_and(f64::is_nan));
    }

    #[test]
    fn normalized_ratio_formula() {
        // (2 / 4) * sqrt(400 / 100) = 1.0
        assert!((normalized_gradient_ratio(2.0, 4.0, 100, 400) - 1.0).abs() < 1e-12);
        // Raw ratio without parameter counts.
        assert!((normalized_gradient_ratio(2.0, 4.0, 0, 400) - 0.5).abs() < 1e-12);
        assert_eq!(normalized_gradient_ratio(5.0, 1e-9, 100, 400), 0.0);
        assert_eq!(normalized_gradient_ratio(1e6, 1.0, 1, 1), MAX_GRADIENT_RATIO);
        assert_eq!(normalized_gradient_ratio(f64::INFINITY, 1.0, 1, 1), MAX_GRADIENT_RATIO);
    }

    #[test]
    fn gradient_health_from_norms() {
        let empty = GradientHealth::from_param_norms(&[]);
        assert_eq!(empty.health, 1.0);
        assert!(!empty.has_exploding);

        let fine = GradientHealth::from_param_norms(&[0.1, 0.5, 1.0, 2.0]);
        assert_eq!(fine.health, 1.0);
        assert!(!fine.has_exploding && !fine.has_vanishing);

        // One of four exploding: 1 - 0.8/4 = 0.8.
        let one_big = GradientHealth::from_param_norms(&[0.1, 0.5, 1.0, 11.0]);
        assert!(one_big.has_exploding);
        assert!((one_big.health - 0.8).abs() < 1e-12);

        // One of two vanishing: 1 - 0.5/2 = 0.75.
        let tiny = GradientHealth::from_param_norms(&[0.0, 1.0]);
        assert!(tiny.has_vanishing && !tiny.has_exploding);
        assert!((tiny.health - 0.75).abs() < 1e-12);

        // Non-finite: exploding and health 0.
        let nan = GradientHealth::from_param_norms(&[1.0, f64::NAN]);
        assert!(nan.has_exploding);
        assert_eq!(nan.health, 0.0);

        // Exactly at the bound is not exploding.
        assert!(!GradientHealth::from_param_norms(&[EXPLODING_GRAD_NORM]).has_exploding);
    }

    #[test]
    fn healthy_means_no_explosion_and_health_at_least_the_minimum() {
        assert!(GradientHealth::from_param_norms(&[]).is_healthy());
        assert!(GradientHealth::from_param_norms(&[0.1, 1.0]).is_healthy());
        // One of four exploding: health 0.8, but exploding.
        assert!(!GradientHealth::from_param_norms(&[0.1, 0.5, 1.0, 11.0]).is_healthy());
        assert!(!GradientHealth::from_param_norms(&[1.0, f64::NAN]).is_healthy());
        // All vanishing: health 0.5, at the minimum; below it is unhealthy.
        assert!(GradientHealth::from_param_norms(&[0.0, 0.0]).is_healthy());
        let low =
            GradientHealth { health: MIN_HEALTHY_GRADIENT_HEALTH - 0.01, ..GradientHealth::from_param_norms(&[]) };
        assert!(!low.is_healthy());
    }

    #[test]
    fn gradient_health_is_clamped() {
        let mut m = SeedMetrics::new();
        assert_eq!(m.gradient_health(), None);
        m.record_gradient_health(1.7, false);
        assert_eq!(m.gradient_health(), Some(1.0));
        m.record_gradient_health(-0.2, true);
        assert_eq!(m.gradient_health(), Some(0.0));
        assert!(m.has_exploding_gradients());
        m.record_gradient_health(f64::NAN, false);
        assert_eq!(m.gradient_health(), Some(0.0));
    }

    #[test]
    fn serde_round_trip() {
        let mut m = SeedMetrics::new();
        m.record_score(50.0);
        m.record_gradient_ratio(0.3);
        m.record_gradient_health(0.9, false);
        m.set_counterfactual_contribution(Some(1.25));
        let back: SeedMetrics = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
