//! The state of one seed: identity, stage and its history, alpha schedule, metrics.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::alpha::AlphaController;
use super::error::LifecycleError;
use super::metrics::SeedMetrics;
use super::stage::SeedStage;
use crate::blend::AlphaRamp;

/// How many stage changes the history keeps (oldest dropped first).
pub const STAGE_HISTORY_LEN: usize = 100;

/// One entry of the stage history: the stage entered and the seed's epoch count
/// (`metrics.epochs_total`) at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: SeedStage,
    pub epoch: u32,
}

/// A prune that waits for alpha to ramp down to 0 (one controller tick per epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledPrune {
    pub reason: String,
    /// Epochs until the prune happens (the alpha controller's remaining ticks).
    pub epochs_remaining: u32,
}

/// Everything the lifecycle knows about one seed. Stage, history and alpha change
/// only through [`SeedState::transition`] and the slot logic in this module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedState {
    pub(super) seed_id: String,
    pub(super) blueprint_id: String,
    pub(super) slot_id: String,
    pub(super) stage: SeedStage,
    pub(super) previous_stage: SeedStage,
    pub(super) stage_history: VecDeque<StageRecord>,
    pub(super) alpha_controller: AlphaController,
    /// How this seed's alpha ramps in BLENDING (its slot's settings with its own choice).
    pub(super) blend: AlphaRamp,
    pub(super) metrics: SeedMetrics,
    pub(super) is_healthy: bool,
    /// Epochs spent in EMBARGOED so far (restarts on entering EMBARGOED).
    pub(super) embargo_epochs: u32,
    pub(super) scheduled_prune: Option<ScheduledPrune>,
    pub(super) prune_reason: Option<String>,
}

impl SeedState {
    /// A fresh seed in DORMANT (previous stage UNKNOWN), alpha 0, healthy.
    pub fn new(
        seed_id: impl Into<String>,
        blueprint_id: impl Into<String>,
        slot_id: impl Into<String>,
        blend: AlphaRamp,
    ) -> Self {
        SeedState {
            seed_id: seed_id.into(),
            blueprint_id: blueprint_id.into(),
            slot_id: slot_id.into(),
            stage: SeedStage::Dormant,
            previous_stage: SeedStage::Unknown,
            stage_history: VecDeque::new(),
            alpha_controller: AlphaController::new(0.0),
            blend,
            metrics: SeedMetrics::new(),
            is_healthy: true,
            embargo_epochs: 0,
            scheduled_prune: None,
            prune_reason: None,
        }
    }

    /// Move to `to` if the stage table allows it: records the previous stage and the
    /// history and restarts the metrics' stage baseline. An invalid transition changes
    /// nothing and names both stages.
    pub fn transition(&mut self, to: SeedStage) -> Result<(), LifecycleError> {
        let from = self.stage;
        if !from.can_transition_to(to) {
            return Err(LifecycleError::InvalidTransition { from, to });
        }
        self.previous_stage = from;
        self.stage = to;
        if self.stage_history.len() == STAGE_HISTORY_LEN {
            self.stage_history.pop_front();
        }
        self.stage_history.push_back(StageRecord { stage: to, epoch: self.metrics.epochs_total() });
        self.metrics.reset_stage_baseline();
        if to == SeedStage::Embargoed {
            self.embargo_epochs = 0;
        }
        tracing::debug!(
            seed_id = %self.seed_id,
            slot_id = %self.slot_id,
            from = %from,
            to = %to,
            "seed stage transition"
        );
        Ok(())
    }

    pub fn can_transition_to(&self, to: SeedStage) -> bool {
        self.stage.can_transition_to(to)
    }

    pub fn seed_id(&self) -> &str {
        &self.seed_id
    }
    pub fn blueprint_id(&self) -> &str {
        &self.blueprint_id
    }
    pub fn slot_id(&self) -> &str {
        &self.slot_id
    }
    pub fn stage(&self) -> SeedStage {
        self.stage
    }
    pub fn previous_stage(&self) -> SeedStage {
        self.previous_stage
    }
    /// Stages entered, oldest first (at most [`STAGE_HISTORY_LEN`]).
    pub fn stage_history(&self) -> &VecDeque<StageRecord> {
        &self.stage_history
    }
    /// The blend amplitude in [0, 1].
    pub fn alpha(&self) -> f64 {
        self.alpha_controller.alpha()
    }
    pub fn alpha_controller(&self) -> &AlphaController {
        &self.alpha_controller
    }
    /// How this seed's alpha ramps in BLENDING.
    pub fn blend(&self) -> AlphaRamp {
        self.blend
    }
    pub fn metrics(&self) -> &SeedMetrics {
        &self.metrics
    }
    /// For recording measurements (accuracy, gradients, contribution).
    pub fn metrics_mut(&mut self) -> &mut SeedMetrics {
        &mut self.metrics
    }
    pub fn is_healthy(&self) -> bool {
        self.is_healthy
    }
    /// Mark the seed healthy or not (G5 never fossilizes an unhealthy seed).
    pub fn set_healthy(&mut self, healthy: bool) {
        self.is_healthy = healthy;
    }
    /// Epochs spent in EMBARGOED so far.
    pub fn embargo_epochs(&self) -> u32 {
        self.embargo_epochs
    }
    pub fn scheduled_prune(&self) -> Option<&ScheduledPrune> {
        self.scheduled_prune.as_ref()
    }
    /// Why the seed was pruned, once it has been.
    pub fn prune_reason(&self) -> Option<&str> {
        self.prune_reason.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blend::BlendSettings;
    use SeedStage::*;

    fn seed() -> SeedState {
        SeedState::new("s1", "norm", "r0c0", BlendSettings::default().ramp)
    }

    #[test]
    fn starts_dormant() {
        let s = seed();
        assert_eq!(s.stage(), Dormant);
        assert_eq!(s.previous_stage(), Unknown);
        assert_eq!(s.alpha(), 0.0);
        assert!(s.is_healthy());
        assert!(s.stage_history().is_empty());
        assert_eq!((s.seed_id(), s.blueprint_id(), s.slot_id()), ("s1", "norm", "r0c0"));
    }

    #[test]
    fn transition_records_history_and_resets_baseline() {
        let mut s = seed();
        s.transition(Germinated).unwrap();
        s.metrics_mut().record_score(50.0);
        s.metrics_mut().record_score(52.0);
        assert_eq!(s.metrics().improvement_since_stage_start(), 2.0);
        s.transition(Training).unwrap();
        assert_eq!(s.stage(), Training);
        assert_eq!(s.previous_stage(), Germinated);
        assert_eq!(s.metrics().epochs_in_current_stage(), 0);
        assert_eq!(s.metrics().improvement_since_stage_start(), 0.0);
        assert_eq!(s.metrics().accuracy_at_stage_start(), 52.0);
        let hist: Vec<_> = s.stage_history().iter().copied().collect();
        assert_eq!(hist, [StageRecord { stage: Germinated, epoch: 0 }, StageRecord { stage: Training, epoch: 2 }]);
    }

    #[test]
    fn invalid_transition_is_refused_with_both_stages_named() {
        let mut s = seed();
        let before = s.clone();
        let err = s.transition(Blending).unwrap_err();
        assert_eq!(err, LifecycleError::InvalidTransition { from: Dormant, to: Blending });
        let msg = err.to_string();
        assert!(msg.contains("DORMANT") && msg.contains("BLENDING"), "{msg}");
        assert_eq!(s, before, "a refused transition changes nothing");
    }

    #[test]
    fn history_is_bounded() {
        let mut s = seed();
        s.transition(Germinated).unwrap();
        s.transition(Training).unwrap();
        s.transition(Blending).unwrap();
        // HOLDING <-> BLENDING can repeat without bound.
        for _ in 0..STAGE_HISTORY_LEN {
            s.transition(Holding).unwrap();
            s.transition(Blending).unwrap();
        }
        assert_eq!(s.stage_history().len(), STAGE_HISTORY_LEN);
        assert_eq!(s.stage_history().back().unwrap().stage, Blending);
    }

    #[test]
    fn serde_round_trip() {
        let mut s = seed();
        s.transition(Germinated).unwrap();
        s.metrics_mut().record_score(10.0);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"GERMINATED\""), "{json}");
        let back: SeedState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
