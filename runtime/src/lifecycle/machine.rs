//! The lifecycle of one slot, without tensors: germination, gated advancement,
//! the per-epoch clock (alpha ramp, scheduled prune, cool-down) and pruning.
//!
//! The slot that owns the seed module calls, once per epoch after validation,
//! [`Lifecycle::record_score`] (and the gradient/contribution recorders through
//! [`Lifecycle::metrics_mut`]), then [`Lifecycle::step_epoch`], and reads
//! [`Lifecycle::alpha`] for the forward pass. A [`StageChange`] to PRUNED is the cue to
//! drop the seed module; one to DORMANT means the slot is free again.

use serde::{Deserialize, Serialize};

use super::alpha::{AlphaController, AlphaMode, ALPHA_EPSILON};
use super::error::LifecycleError;
use super::gates::{GateLevel, GateResult, QualityGates};
use super::metrics::SeedMetrics;
use super::stage::SeedStage;
use super::state::{ScheduledPrune, SeedState};
use crate::blend::{AlphaRamp, BlendSettings};

/// Epochs a slot stays EMBARGOED after a prune before it is reset.
pub const EMBARGO_EPOCHS_AFTER_PRUNE: u32 = 5;
/// Prune reason used when a ramp to alpha 0 completes without a scheduled reason.
pub const SCHEDULED_PRUNE_REASON: &str = "scheduled_prune";

/// A stage change made by the lifecycle itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageChange {
    pub from: SeedStage,
    pub to: SeedStage,
}

/// One slot's lifecycle: empty (DORMANT) or holding one seed's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    slot_id: String,
    state: Option<SeedState>,
}

impl Lifecycle {
    /// An empty slot.
    pub fn new(slot_id: impl Into<String>) -> Self {
        Lifecycle { slot_id: slot_id.into(), state: None }
    }

    pub fn slot_id(&self) -> &str {
        &self.slot_id
    }

    /// The seed's state; `None` while the slot is empty.
    pub fn state(&self) -> Option<&SeedState> {
        self.state.as_ref()
    }

    /// The seed's stage; DORMANT while the slot is empty.
    pub fn stage(&self) -> SeedStage {
        self.state.as_ref().map_or(SeedStage::Dormant, |s| s.stage)
    }

    /// The blend amplitude in [0, 1]; 0 while the slot is empty.
    pub fn alpha(&self) -> f64 {
        self.state.as_ref().map_or(0.0, SeedState::alpha)
    }

    /// The blueprint of the seed that runs in this slot, when one does (GERMINATED
    /// through FOSSILIZED; not while empty, pruned or embargoed).
    pub fn live_blueprint(&self) -> Option<&str> {
        use SeedStage::*;
        let live = |s: &&SeedState| matches!(s.stage, Germinated | Training | Blending | Holding | Fossilized);
        self.state.as_ref().filter(live).map(SeedState::blueprint_id)
    }

    /// Whether a seed can be germinated here (the slot is empty).
    pub fn is_available(&self) -> bool {
        self.state.is_none()
    }

    /// The seed's metrics, for recording measurements; `None` while empty.
    pub fn metrics_mut(&mut self) -> Option<&mut SeedMetrics> {
        self.state.as_mut().map(|s| &mut s.metrics)
    }

    /// Record this epoch's validation accuracy (percentage points). Ignored (returns
    /// `false`) while the slot is empty or cooling down after a prune.
    pub fn record_score(&mut self, accuracy: f64) -> bool {
        match self.state.as_mut() {
            Some(s) if !s.stage.is_failure() => {
                s.metrics.record_score(accuracy);
                true
            }
            _ => false,
        }
    }

    /// Mark the seed healthy or not; `false` when there is no seed.
    pub fn set_healthy(&mut self, healthy: bool) -> bool {
        match self.state.as_mut() {
            Some(s) => {
                s.is_healthy = healthy;
                true
            }
            None => false,
        }
    }

    /// Germinate with the default blend settings' ramp ([`BlendSettings::default`]).
    pub fn germinate(
        &mut self,
        seed_id: impl Into<String>,
        blueprint_id: impl Into<String>,
    ) -> Result<(), LifecycleError> {
        self.germinate_with(seed_id, blueprint_id, BlendSettings::default().seed_ramp())
    }

    /// Put a new seed into the empty slot: DORMANT -> GERMINATED through G0. Refused
    /// while the slot holds a seed (including one cooling down, or fossilized). `blend`
    /// is how its alpha will ramp in BLENDING.
    pub fn germinate_with(
        &mut self,
        seed_id: impl Into<String>,
        blueprint_id: impl Into<String>,
        blend: AlphaRamp,
    ) -> Result<(), LifecycleError> {
        if let Some(s) = &self.state {
            return Err(LifecycleError::SlotOccupied { slot_id: self.slot_id.clone(), stage: s.stage });
        }
        let mut state = SeedState::new(seed_id, blueprint_id, self.slot_id.clone(), blend);
        let g0 = QualityGates::check_g0(&state);
        if !g0.passed {
            return Err(LifecycleError::GateFailed { gate: GateLevel::G0, checks_failed: g0.checks_failed });
        }
        state.transition(SeedStage::Germinated)?;
        tracing::debug!(
            slot_id = %self.slot_id,
            seed_id = %state.seed_id,
            blueprint = %state.blueprint_id,
            "seed germinated"
        );
        self.state = Some(state);
        Ok(())
    }

    /// Evaluate the gate into the next stage on the success path (GERMINATED ->
    /// TRAINING -> BLENDING -> HOLDING -> FOSSILIZED) and move there if it passes.
    /// A failed gate is `Ok` with `passed == false` and changes nothing; errors mean
    /// there is no seed or no next stage (FOSSILIZED, or the cool-down stages, which
    /// only [`Lifecycle::step_epoch`] moves). Entering BLENDING starts the alpha ramp;
    /// entering HOLDING pins alpha at 1.
    pub fn advance(&mut self, gates: &QualityGates) -> Result<GateResult, LifecycleError> {
        let state = self.state.as_mut().ok_or_else(|| LifecycleError::NoSeed { slot_id: self.slot_id.clone() })?;
        let from = state.stage;
        let target = match from.natural_successor() {
            Some(t) if !from.is_failure() => t,
            _ => return Err(LifecycleError::NoNextStage(from)),
        };
        let result = gates.check(state, target)?;
        if !result.passed {
            tracing::debug!(slot_id = %self.slot_id, %result, "gate not passed");
            return Ok(result);
        }
        state.transition(target)?;
        match (from, target) {
            (SeedStage::Training, SeedStage::Blending) => {
                let mut ctl = AlphaController::new(state.alpha());
                let ramp = state.blend;
                ctl.retarget(ramp.target.value(), ramp.tempo.ramp_steps(), ramp.curve)?;
                state.alpha_controller = ctl;
            }
            (SeedStage::Blending, SeedStage::Holding) => state.alpha_controller.snap_to(1.0),
            _ => {}
        }
        Ok(result)
    }

    /// Continues a BLENDING seed resting at a partial alpha target to full amplitude,
    /// over its tempo. Refused unless it rests (HOLD) below 1 in BLENDING.
    pub fn continue_to_full(&mut self) -> Result<(), LifecycleError> {
        let state = self.state.as_mut().ok_or_else(|| LifecycleError::NoSeed { slot_id: self.slot_id.clone() })?;
        if state.stage != SeedStage::Blending || state.alpha_controller.alpha_target() >= 1.0 - ALPHA_EPSILON {
            return Err(LifecycleError::NotPartial {
                stage: state.stage,
                target: state.alpha_controller.alpha_target(),
            });
        }
        let curve = state.alpha_controller.curve();
        state.alpha_controller.retarget(1.0, state.blend.tempo.ramp_steps(), curve)
    }

    /// Prune now: alpha drops to 0 and any scheduled prune is dropped. FOSSILIZED
    /// seeds cannot be pruned; nor can a seed that is already on the failure path.
    pub fn prune(&mut self, reason: &str) -> Result<StageChange, LifecycleError> {
        let state = self.state.as_mut().ok_or_else(|| LifecycleError::NoSeed { slot_id: self.slot_id.clone() })?;
        let from = state.stage;
        if from == SeedStage::Fossilized {
            return Err(LifecycleError::CannotPruneFossilized { seed_id: state.seed_id.clone() });
        }
        state.transition(SeedStage::Pruned)?;
        state.alpha_controller.snap_to(0.0);
        state.scheduled_prune = None;
        state.prune_reason = Some(reason.to_string());
        Ok(StageChange { from, to: SeedStage::Pruned })
    }

    /// Prune after ramping alpha down to 0 over `epochs` epochs (HOLDING goes back to
    /// BLENDING for the ramp). With `epochs == 0` or alpha already 0 (GERMINATED,
    /// TRAINING) it prunes at once and returns the change; otherwise `Ok(None)` and
    /// [`Lifecycle::step_epoch`] prunes when the ramp ends. Refused for FOSSILIZED and
    /// while alpha is still moving (e.g. a prune already scheduled).
    pub fn schedule_prune(&mut self, epochs: u32, reason: &str) -> Result<Option<StageChange>, LifecycleError> {
        let state = self.state.as_mut().ok_or_else(|| LifecycleError::NoSeed { slot_id: self.slot_id.clone() })?;
        if state.stage == SeedStage::Fossilized {
            return Err(LifecycleError::CannotPruneFossilized { seed_id: state.seed_id.clone() });
        }
        if epochs == 0 || state.alpha() <= 0.0 {
            return self.prune(reason).map(Some);
        }
        let mode = state.alpha_controller.mode();
        if mode != AlphaMode::Hold {
            return Err(LifecycleError::AlphaNotHolding { mode });
        }
        match state.stage {
            SeedStage::Holding => state.transition(SeedStage::Blending)?,
            SeedStage::Blending => {}
            _ => return self.prune(reason).map(Some),
        }
        let curve = state.alpha_controller.curve();
        state.alpha_controller.retarget(0.0, epochs, curve)?;
        state.scheduled_prune = Some(ScheduledPrune { reason: reason.to_string(), epochs_remaining: epochs });
        tracing::debug!(slot_id = %self.slot_id, epochs, reason, "seed prune scheduled");
        Ok(None)
    }

    /// The per-epoch clock. BLENDING: alpha takes one step, and a finished ramp to 0
    /// prunes. PRUNED -> EMBARGOED at once; EMBARGOED for
    /// [`EMBARGO_EPOCHS_AFTER_PRUNE`] epochs -> RESETTING -> DORMANT, which empties the
    /// slot. Other stages wait for [`Lifecycle::advance`] or a prune.
    pub fn step_epoch(&mut self) -> Result<Option<StageChange>, LifecycleError> {
        let Some(state) = self.state.as_mut() else {
            return Ok(None);
        };
        let from = state.stage;
        let to = match from {
            SeedStage::Blending => {
                let ctl = &mut state.alpha_controller;
                let reached = ctl.step() || ctl.target_reached();
                let remaining = ctl.steps_remaining();
                let ramped_out = reached && ctl.alpha_target() <= ALPHA_EPSILON;
                if let Some(p) = state.scheduled_prune.as_mut() {
                    p.epochs_remaining = remaining;
                }
                if !ramped_out {
                    return Ok(None);
                }
                let reason =
                    state.scheduled_prune.take().map_or_else(|| SCHEDULED_PRUNE_REASON.to_string(), |p| p.reason);
                return self.prune(&reason).map(Some);
            }
            SeedStage::Pruned => SeedStage::Embargoed,
            SeedStage::Embargoed => {
                state.embargo_epochs += 1;
                if state.embargo_epochs < EMBARGO_EPOCHS_AFTER_PRUNE {
                    return Ok(None);
                }
                SeedStage::Resetting
            }
            SeedStage::Resetting => SeedStage::Dormant,
            _ => return Ok(None),
        };
        state.transition(to)?;
        if to == SeedStage::Dormant {
            tracing::debug!(slot_id = %self.slot_id, seed_id = %state.seed_id, "slot recycled");
            self.state = None;
        }
        Ok(Some(StageChange { from, to }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blend::{AlphaTarget, BlendTempo};
    use crate::lifecycle::alpha::AlphaCurve;
    use crate::lifecycle::GateCheck;
    use SeedStage::*;

    /// Record `n` epochs of accuracy rising by 0.2 points each.
    fn epochs(lc: &mut Lifecycle, n: u32) {
        for _ in 0..n {
            let acc = lc.state().unwrap().metrics().current_val_accuracy().max(50.0) + 0.2;
            assert!(lc.record_score(acc));
        }
    }

    fn training_seed() -> Lifecycle {
        let mut lc = Lifecycle::new("r0c0");
        lc.germinate("seed-1", "norm").unwrap();
        assert_eq!(lc.stage(), Germinated);
        let r = lc.advance(&QualityGates::strict()).unwrap();
        assert!(r.passed && r.gate == GateLevel::G1, "{r}");
        assert_eq!(lc.stage(), Training);
        lc
    }

    fn blending_seed() -> Lifecycle {
        let mut lc = training_seed();
        epochs(&mut lc, 10);
        lc.metrics_mut().unwrap().record_gradient_ratio(0.5);
        let r = lc.advance(&QualityGates::strict()).unwrap();
        assert!(r.passed && r.gate == GateLevel::G2, "{r}");
        assert_eq!(lc.stage(), Blending);
        lc
    }

    fn holding_seed() -> Lifecycle {
        let mut lc = blending_seed();
        for _ in 0..5 {
            lc.step_epoch().unwrap();
        }
        epochs(&mut lc, 10);
        let r = lc.advance(&QualityGates::strict()).unwrap();
        assert!(r.passed && r.gate == GateLevel::G3, "{r}");
        assert_eq!(lc.stage(), Holding);
        lc
    }

    #[test]
    fn full_success_path() {
        let mut lc = holding_seed();
        assert_eq!(lc.alpha(), 1.0);
        let gates = QualityGates::strict();
        // G5 needs the counterfactual contribution.
        let r = lc.advance(&gates).unwrap();
        assert!(r.failed(|c| matches!(c, GateCheck::CounterfactualNotAvailable)), "{r}");
        assert_eq!(lc.stage(), Holding);
        lc.metrics_mut().unwrap().set_counterfactual_contribution(Some(2.0));
        let r = lc.advance(&gates).unwrap();
        assert!(r.passed && r.gate == GateLevel::G5, "{r}");
        assert_eq!(lc.stage(), Fossilized);
        assert_eq!(lc.alpha(), 1.0);
        let hist: Vec<_> = lc.state().unwrap().stage_history().iter().map(|r| r.stage).collect();
        assert_eq!(hist, [Germinated, Training, Blending, Holding, Fossilized]);
        // Terminal: nothing moves it, nothing replaces it.
        assert_eq!(lc.step_epoch(), Ok(None));
        assert_eq!(lc.advance(&gates), Err(LifecycleError::NoNextStage(Fossilized)));
        assert!(matches!(lc.germinate("seed-2", "norm"), Err(LifecycleError::SlotOccupied { stage: Fossilized, .. })));
    }

    #[test]
    fn blending_ramps_alpha_along_the_schedule() {
        let mut lc = training_seed();
        epochs(&mut lc, 10);
        lc.metrics_mut().unwrap().record_gradient_ratio(0.5);
        assert_eq!(lc.alpha(), 0.0, "alpha stays 0 through TRAINING");
        lc.advance(&QualityGates::strict()).unwrap();
        let ctl = lc.state().unwrap().alpha_controller();
        assert_eq!(ctl.mode(), AlphaMode::Up);
        assert_eq!(ctl.curve(), AlphaCurve::Sigmoid);
        assert_eq!(ctl.ramp_steps(), 5);
        let mut alphas = vec![];
        for _ in 0..5 {
            assert_eq!(lc.step_epoch(), Ok(None));
            alphas.push(lc.alpha());
        }
        for (i, got) in alphas.iter().take(4).enumerate() {
            let want = AlphaCurve::Sigmoid.progress((i + 1) as f64 / 5.0);
            assert!((got - want).abs() < 1e-12, "{alphas:?}");
        }
        assert_eq!(alphas[4], 1.0);
        // Strict G3 still needs 10 epochs in BLENDING.
        let r = lc.advance(&QualityGates::strict()).unwrap();
        assert!(r.failed(|c| *c == GateCheck::BlendingIncomplete { epochs: 0, min: 10 }), "{r}");
        assert_eq!(lc.stage(), Blending);
    }

    #[test]
    fn a_partial_alpha_target_holds_below_full_until_continued() {
        let mut lc = Lifecycle::new("r1c0");
        let blend =
            AlphaRamp { curve: AlphaCurve::Linear, tempo: BlendTempo::from_epochs(2), target: AlphaTarget::Half };
        lc.germinate_with("s", "norm", blend).unwrap();
        assert!(lc.continue_to_full().is_err(), "not blending yet");
        lc.advance(&QualityGates::permissive()).unwrap();
        epochs(&mut lc, 10);
        lc.metrics_mut().unwrap().record_gradient_ratio(0.5);
        lc.metrics_mut().unwrap().record_gradient_health(1.0, false);
        assert!(lc.advance(&QualityGates::permissive()).unwrap().passed);
        for _ in 0..4 {
            lc.step_epoch().unwrap();
        }
        assert_eq!(lc.alpha(), 0.5, "rests at its target");
        assert_eq!(lc.state().unwrap().alpha_controller().mode(), AlphaMode::Hold);
        let g3 = lc.advance(&QualityGates::permissive()).unwrap();
        assert!(!g3.passed && lc.stage() == Blending, "G3 needs full amplitude: {g3}");
        lc.continue_to_full().unwrap();
        lc.step_epoch().unwrap();
        assert_eq!(lc.alpha(), 0.75, "linear, over its tempo of 2 epochs");
        lc.step_epoch().unwrap();
        assert_eq!(lc.alpha(), 1.0);
        let again = lc.continue_to_full().unwrap_err();
        assert!(again.to_string().contains("partial alpha target"), "{again}");
    }

    #[test]
    fn custom_blend_schedule() {
        let mut lc = Lifecycle::new("r1c0");
        let blend =
            AlphaRamp { curve: AlphaCurve::Linear, tempo: BlendTempo::from_epochs(2), target: AlphaTarget::Full };
        lc.germinate_with("s", "norm", blend).unwrap();
        lc.advance(&QualityGates::permissive()).unwrap();
        epochs(&mut lc, 10);
        lc.metrics_mut().unwrap().record_gradient_ratio(0.5);
        lc.metrics_mut().unwrap().record_gradient_health(1.0, false);
        assert!(lc.advance(&QualityGates::permissive()).unwrap().passed);
        lc.step_epoch().unwrap();
        assert!((lc.alpha() - 0.5).abs() < 1e-12);
        lc.step_epoch().unwrap();
        assert_eq!(lc.alpha(), 1.0);
        // Permissive G3: alpha completion only.
        assert!(lc.advance(&QualityGates::permissive()).unwrap().passed);
        assert_eq!(lc.stage(), Holding);
    }

    #[test]
    fn failed_gate_changes_nothing() {
        let mut lc = training_seed();
        let before = lc.clone();
        let r = lc.advance(&QualityGates::strict()).unwrap();
        assert!(!r.passed);
        assert_eq!(lc, before);
    }

    #[test]
    fn embargo_lasts_exactly_five_epochs_then_the_slot_is_recycled() {
        let mut lc = training_seed();
        epochs(&mut lc, 3);
        assert_eq!(lc.prune("no_improvement"), Ok(StageChange { from: Training, to: Pruned }));
        assert_eq!(lc.stage(), Pruned);
        assert_eq!(lc.state().unwrap().prune_reason(), Some("no_improvement"));
        assert!(!lc.is_available());
        assert!(!lc.record_score(60.0), "no accuracy while pruned");

        // Next epoch: PRUNED -> EMBARGOED.
        assert_eq!(lc.step_epoch(), Ok(Some(StageChange { from: Pruned, to: Embargoed })));
        let mut embargoed_epochs = 1;
        loop {
            let change = lc.step_epoch().unwrap();
            if lc.stage() != Embargoed {
                assert_eq!(change, Some(StageChange { from: Embargoed, to: Resetting }));
                break;
            }
            assert_eq!(change, None);
            embargoed_epochs += 1;
            // No germination during the embargo.
            assert!(matches!(
                lc.germinate("seed-2", "norm"),
                Err(LifecycleError::SlotOccupied { stage: Embargoed, .. })
            ));
            assert!(embargoed_epochs < 100, "embargo never ends");
        }
        assert_eq!(embargoed_epochs, EMBARGO_EPOCHS_AFTER_PRUNE);
        assert_eq!(EMBARGO_EPOCHS_AFTER_PRUNE, 5);

        assert_eq!(lc.stage(), Resetting);
        assert!(!lc.is_available());
        assert_eq!(lc.step_epoch(), Ok(Some(StageChange { from: Resetting, to: Dormant })));
        assert!(lc.is_available());
        assert!(lc.state().is_none());
        assert_eq!(lc.stage(), Dormant);
        assert_eq!(lc.step_epoch(), Ok(None));

        // The slot takes a new seed, with fresh state.
        lc.germinate("seed-2", "norm").unwrap();
        let s = lc.state().unwrap();
        assert_eq!(s.seed_id(), "seed-2");
        assert_eq!(s.stage(), Germinated);
        assert_eq!(s.metrics().epochs_total(), 0);
        assert_eq!(s.prune_reason(), None);
    }

    #[test]
    fn fossilized_cannot_be_pruned() {
        let mut lc = holding_seed();
        lc.metrics_mut().unwrap().set_counterfactual_contribution(Some(5.0));
        assert!(lc.advance(&QualityGates::strict()).unwrap().passed);
        let before = lc.clone();
        let err = lc.prune("late").unwrap_err();
        assert_eq!(err, LifecycleError::CannotPruneFossilized { seed_id: "seed-1".into() });
        assert!(err.to_string().contains("FOSSILIZED"));
        assert!(matches!(lc.schedule_prune(3, "late"), Err(LifecycleError::CannotPruneFossilized { .. })));
        assert_eq!(lc, before);
    }

    #[test]
    fn invalid_transitions_are_refused_with_a_message() {
        let mut lc = training_seed();
        lc.prune("x").unwrap();
        let err = lc.prune("again").unwrap_err();
        assert_eq!(err, LifecycleError::InvalidTransition { from: Pruned, to: Pruned });
        lc.step_epoch().unwrap();
        let err = lc.prune("again").unwrap_err();
        assert_eq!(err.to_string(), "invalid seed stage transition EMBARGOED -> PRUNED");
        assert_eq!(lc.advance(&QualityGates::strict()), Err(LifecycleError::NoNextStage(Embargoed)));

        let mut empty = Lifecycle::new("r0c1");
        assert!(matches!(empty.advance(&QualityGates::strict()), Err(LifecycleError::NoSeed { .. })));
        assert!(matches!(empty.prune("x"), Err(LifecycleError::NoSeed { .. })));
        assert!(!empty.record_score(1.0));
        assert!(!empty.set_healthy(false));
    }

    #[test]
    fn germination_needs_g0() {
        let mut lc = Lifecycle::new("r0c0");
        let err = lc.germinate("", "norm").unwrap_err();
        assert_eq!(
            err,
            LifecycleError::GateFailed { gate: GateLevel::G0, checks_failed: vec![GateCheck::SeedIdMissing] }
        );
        assert!(err.to_string().contains("seed_id_missing"));
        assert!(lc.is_available());
    }

    #[test]
    fn scheduled_prune_from_holding_counts_down() {
        let mut lc = holding_seed();
        assert_eq!(lc.schedule_prune(3, "weak"), Ok(None));
        assert_eq!(lc.stage(), Blending, "the ramp down happens in BLENDING");
        assert_eq!(lc.alpha(), 1.0);
        assert_eq!(lc.state().unwrap().scheduled_prune().unwrap().epochs_remaining, 3);
        // A second schedule while alpha moves is refused.
        assert_eq!(lc.schedule_prune(2, "again"), Err(LifecycleError::AlphaNotHolding { mode: AlphaMode::Down }));

        let mut prev = lc.alpha();
        for remaining in [2, 1] {
            assert_eq!(lc.step_epoch(), Ok(None));
            let s = lc.state().unwrap();
            assert_eq!(s.scheduled_prune().unwrap().epochs_remaining, remaining);
            assert!(lc.alpha() < prev && lc.alpha() > 0.0);
            prev = lc.alpha();
        }
        assert_eq!(lc.step_epoch(), Ok(Some(StageChange { from: Blending, to: Pruned })));
        let s = lc.state().unwrap();
        assert_eq!(lc.alpha(), 0.0);
        assert_eq!(s.prune_reason(), Some("weak"));
        assert!(s.scheduled_prune().is_none());
        assert_eq!(s.alpha_controller().mode(), AlphaMode::Hold);
    }

    #[test]
    fn scheduled_prune_without_alpha_is_immediate() {
        let mut lc = training_seed();
        assert_eq!(lc.schedule_prune(4, "idle"), Ok(Some(StageChange { from: Training, to: Pruned })));
        let mut lc = holding_seed();
        assert_eq!(lc.schedule_prune(0, "now"), Ok(Some(StageChange { from: Holding, to: Pruned })));
    }

    #[test]
    fn direct_prune_cancels_a_scheduled_one() {
        let mut lc = holding_seed();
        lc.schedule_prune(5, "slow").unwrap();
        lc.step_epoch().unwrap();
        lc.prune("fast").unwrap();
        let s = lc.state().unwrap();
        assert_eq!(s.prune_reason(), Some("fast"));
        assert!(s.scheduled_prune().is_none());
        assert_eq!(lc.alpha(), 0.0);
    }

    #[test]
    fn serde_round_trip_mid_blend() {
        let mut lc = blending_seed();
        lc.step_epoch().unwrap();
        let json = serde_json::to_string(&lc).unwrap();
        let mut back: Lifecycle = serde_json::from_str(&json).unwrap();
        assert_eq!(back, lc);
        back.step_epoch().unwrap();
        lc.step_epoch().unwrap();
        assert_eq!(back.alpha(), lc.alpha());
    }
}
