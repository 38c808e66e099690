//! The seed-slot lifecycle: stages, transitions, gates, alpha schedule, metrics.
//!
//! Pure logic, no tensors. A seed moves along
//! DORMANT -> GERMINATED -> TRAINING -> BLENDING -> HOLDING -> FOSSILIZED, each step
//! forward guarded by a quality gate (G0, G1, G2, G3, G5). Any live stage before
//! FOSSILIZED may be pruned: PRUNED -> EMBARGOED (5 epochs) -> RESETTING -> DORMANT,
//! after which the slot takes a new seed. FOSSILIZED is terminal.
//!
//! * [`stage`]: [`SeedStage`], its numbers and the transition table.
//! * [`alpha`]: easing curves and the [`AlphaController`] (one tick per epoch).
//! * [`metrics`]: [`SeedMetrics`] (accuracy, gradient ratio and health, contribution).
//! * [`gates`]: [`QualityGates`] and [`GateResult`].
//! * [`state`]: [`SeedState`], one seed's full state.
//! * [`machine`]: [`Lifecycle`], one slot's state machine and clock: `germinate`, `advance`,
//!   `prune`, `schedule_prune`, `step_epoch`, `alpha`.
//!
//! Every refusal is a [`LifecycleError`].

pub mod alpha;
pub mod check;
mod error;
pub mod event;
pub mod gates;
pub mod machine;
pub mod metrics;
pub mod stage;
pub mod state;

pub use alpha::{AlphaController, AlphaCurve, AlphaMode, SIGMOID_STEEPNESS};
pub use check::{GateCheck, UnknownGateCheck};
pub use error::LifecycleError;
pub use event::{GerminationFailure, LifecycleEvent};
pub use gates::{GateLevel, GateMode, GateResult, QualityGates};
pub use machine::{Lifecycle, StageChange, EMBARGO_EPOCHS_AFTER_PRUNE};
pub use metrics::{normalized_gradient_ratio, GradientHealth, SeedMetrics};
pub use stage::{can_transition, SeedStage};
pub use state::{ScheduledPrune, SeedState, StageRecord};
