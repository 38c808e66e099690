//! What a controller sees each epoch ([`Observation`]) and what it answers ([`Decision`]),
//! shared by the runtime, controller plugins and the Python package. Both cross the
//! plugin boundary as JSON text; the observation carries its [`OBSERVATION_VERSION`].
//!
//! For learning, [`Observation::features`] is a flat `f32` vector of a fixed layout (given
//! the number of slots and of blueprints, see [`feature_len`]) and
//! [`Observation::masks`] the decisions legal now, per head (operation, slot, blueprint),
//! as esper-lite masks its policy's heads. The layout is documented in the book
//! (`docs/src/guide/controllers.md`) and by the constants here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The observation's format. Fields are only ever added within a version (a controller
/// built against an older one ignores what it does not know); anything else is a new one.
pub const OBSERVATION_VERSION: u32 = 1;

/// How many epochs of history an observation keeps (the last ones, oldest first).
pub const HISTORY_LEN: usize = 8;

/// A seed's stage, as a controller sees it (the runtime's `SeedStage` by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Stage {
    Dormant,
    Germinated,
    Training,
    Blending,
    Holding,
    Fossilized,
    Pruned,
    Embargoed,
    Resetting,
}

impl Stage {
    /// Every stage, in the order of the observation vector's one-hot block.
    pub const ALL: [Stage; 9] = [
        Stage::Dormant,
        Stage::Germinated,
        Stage::Training,
        Stage::Blending,
        Stage::Holding,
        Stage::Fossilized,
        Stage::Pruned,
        Stage::Embargoed,
        Stage::Resetting,
    ];

    /// Whether a seed is in flight (germinated to holding): one an advance or a prune
    /// can act on.
    pub fn in_flight(self) -> bool {
        matches!(self, Stage::Germinated | Stage::Training | Stage::Blending | Stage::Holding)
    }
}

/// The last gate a seed was put to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateObservation {
    /// `G0` ... `G5`.
    pub gate: String,
    pub passed: bool,
    /// The checks that failed (their codes, e.g. `insufficient_training_1_of_2`).
    #[serde(default)]
    pub failed: Vec<String>,
}

/// One slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotObservation {
    pub slot: String,
    pub stage: Stage,
    /// Epochs the seed has spent in its stage (0 for an empty slot).
    pub epochs_in_stage: u32,
    pub alpha: f64,
    /// The amplitude the seed's blend aims at, its ramp's target from germination on (0 for an empty slot).
    pub alpha_target: f64,
    /// The seed's blueprint (`topology:name`), if there is a seed.
    pub blueprint: Option<String>,
    pub seed_parameters: u64,
    /// The seed's gradient norm over the host's, normalized by parameter counts (once measured).
    pub gradient_ratio: Option<f64>,
    /// The last counterfactual contribution, in points of the run's score.
    pub contribution: Option<f64>,
    pub last_gate: Option<GateObservation>,
    /// Whether a germination is possible here now (DORMANT and not embargoed).
    pub germinable: bool,
    /// Whether the seed rests at a partial alpha target (a `continue` is possible).
    pub partial_hold: bool,
    /// Whether a prune by blend-out is under way (the seed is no longer the controller's).
    pub prune_scheduled: bool,
}

/// One epoch of the run's history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochObservation {
    pub epoch: u32,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
}

/// What a controller sees after an epoch (epoch 0: before the first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// [`OBSERVATION_VERSION`] of the runtime that made it.
    pub version: u32,
    pub epoch: u32,
    /// The run's length in epochs.
    pub epochs: u32,
    /// `accuracy` (images) or `loss` (text): what the contributions are points of.
    pub objective: String,
    /// The last [`HISTORY_LEN`] epochs, oldest first.
    pub history: Vec<EpochObservation>,
    pub host_parameters: u64,
    /// All live seeds' parameters together.
    pub seed_parameters: u64,
    pub slots: Vec<SlotObservation>,
    /// The slots a germination may go to now.
    pub free_slots: Vec<String>,
    /// The loaded blueprints of the host's topology (`topology:name`), sorted.
    pub blueprints: Vec<String>,
}

/// One decision. In JSON an object tagged by `op`: `{"op": "germinate", "slot": "r0c1",
/// "blueprint": "norm"}`, `{"op": "advance", "slot": "r0c1"}`, `{"op": "wait"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decision {
    /// Do nothing this epoch. (A struct variant, so a stray field is refused as on the
    /// others.)
    Wait {},
    /// A seed of `blueprint` in the DORMANT slot `slot`, with the blueprint's `options`;
    /// `alpha_target` (0.5, 0.7 or 1.0) and `tempo` (epochs of the blend ramp) over the
    /// slot's settings; `seed_id` is made up when not given.
    Germinate {
        slot: String,
        blueprint: String,
        #[serde(default, skip_serializing_if = "Value::is_null")]
        options: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alpha_target: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tempo: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed_id: Option<String>,
    },
    /// Put the seed to the gate of its next stage (it moves only if the gate passes).
    Advance { slot: String },
    /// A seed resting at a partial alpha target goes on to full amplitude.
    Continue { slot: String },
    /// Prune the seed (blended out first when the run's `prune_ramp_epochs` says so).
    Prune {
        slot: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Decision {
    /// The slot it is for (none for [`Decision::Wait`]).
    pub fn slot(&self) -> Option<&str> {
        match self {
            Decision::Wait {} => None,
            Decision::Germinate { slot, .. }
            | Decision::Advance { slot }
            | Decision::Continue { slot }
            | Decision::Prune { slot, .. } => Some(slot),
        }
    }

    /// The operation's index in the operation head ([`Op::ALL`]).
    pub fn op(&self) -> Op {
        match self {
            Decision::Wait {} => Op::Wait,
            Decision::Germinate { .. } => Op::Germinate,
            Decision::Advance { .. } => Op::Advance,
            Decision::Continue { .. } => Op::Continue,
            Decision::Prune { .. } => Op::Prune,
        }
    }
}

/// The operation head of a policy, in mask order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Wait,
    Germinate,
    Advance,
    Continue,
    Prune,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Wait, Op::Germinate, Op::Advance, Op::Continue, Op::Prune];
}

/// The decisions legal now, per head. `slot[op][i]`: operation `op` (index in
/// [`Op::ALL`]) is legal on slot `i` of [`Observation::slots`]; `op[k]`: operation `k` is
/// legal on some slot (`wait` always); `blueprint[j]`: blueprint `j` of
/// [`Observation::blueprints`] can be germinated (every loaded one, when a slot is free).
/// An advance is legal in a stage that has a next one; its gate may still refuse it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionMasks {
    pub op: Vec<bool>,
    pub slot: Vec<Vec<bool>>,
    pub blueprint: Vec<bool>,
}

/// Per slot in the vector: the stage one-hot, then these.
pub const SLOT_SCALARS: [&str; 10] = [
    "epochs_in_stage",
    "alpha",
    "alpha_target",
    "log10(1 + seed_parameters)",
    "gradient_ratio (0 when unmeasured)",
    "gradient_ratio measured (0/1)",
    "contribution (0 when unmeasured)",
    "contribution measured (0/1)",
    "last gate passed (1), failed (-1), none (0)",
    "germinable (0/1)",
];

/// The run's block at the start of the vector: these, then the history.
pub const RUN_SCALARS: [&str; 4] = ["epoch", "epochs", "log10(1 + host_parameters)", "log10(1 + seed_parameters)"];

/// Per history epoch (the last [`HISTORY_LEN`], oldest first, zeros where the run is
/// younger): these.
pub const EPOCH_SCALARS: [&str; 4] = ["train_loss", "train_accuracy / 100", "val_loss", "val_accuracy / 100"];

/// The length of [`Observation::features`] for `slots` slots and `blueprints` blueprints:
/// the run block, then per slot the stage one-hot, the slot scalars and the blueprint
/// one-hot (in [`Observation::blueprints`] order).
pub fn feature_len(slots: usize, blueprints: usize) -> usize {
    RUN_SCALARS.len() + HISTORY_LEN * EPOCH_SCALARS.len() + slots * slot_len(blueprints)
}

fn slot_len(blueprints: usize) -> usize {
    Stage::ALL.len() + SLOT_SCALARS.len() + blueprints
}

fn log_count(n: u64) -> f32 {
    (1.0 + n as f64).log10() as f32
}

impl Observation {
    /// The flat vector of the documented layout ([`feature_len`] long).
    pub fn features(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(feature_len(self.slots.len(), self.blueprints.len()));
        v.extend([self.epoch as f32, self.epochs as f32, log_count(self.host_parameters)]);
        v.push(log_count(self.seed_parameters));
        let skip = self.history.len().saturating_sub(HISTORY_LEN);
        let recent = &self.history[skip..];
        for _ in recent.len()..HISTORY_LEN {
            v.extend([0.0; 4]);
        }
        for e in recent {
            let pct = |a: f64| (a / 100.0) as f32;
            v.extend([e.train_loss as f32, pct(e.train_accuracy), e.val_loss as f32, pct(e.val_accuracy)]);
        }
        for s in &self.slots {
            v.extend(Stage::ALL.iter().map(|&st| f32::from(u8::from(st == s.stage))));
            self.push_slot_scalars(s, &mut v);
            let bp = s.blueprint.as_deref();
            v.extend(self.blueprints.iter().map(|b| f32::from(u8::from(Some(b.as_str()) == bp))));
        }
        v
    }

    fn push_slot_scalars(&self, s: &SlotObservation, v: &mut Vec<f32>) {
        let flag = |b: bool| f32::from(u8::from(b));
        let gate = s.last_gate.as_ref().map_or(0.0, |g| if g.passed { 1.0 } else { -1.0 });
        v.extend([s.epochs_in_stage as f32, s.alpha as f32, s.alpha_target as f32, log_count(s.seed_parameters)]);
        v.extend([s.gradient_ratio.unwrap_or(0.0) as f32, flag(s.gradient_ratio.is_some())]);
        v.extend([s.contribution.unwrap_or(0.0) as f32, flag(s.contribution.is_some())]);
        v.extend([gate, flag(s.germinable)]);
    }

    /// The decisions legal now (see [`ActionMasks`]).
    pub fn masks(&self) -> ActionMasks {
        let legal = |op: Op, s: &SlotObservation| match op {
            Op::Wait => false,
            Op::Germinate => s.germinable && !self.blueprints.is_empty(),
            Op::Advance => s.stage.in_flight() && !s.prune_scheduled,
            Op::Continue => s.partial_hold && !s.prune_scheduled,
            Op::Prune => s.stage.in_flight() && !s.prune_scheduled,
        };
        let slot: Vec<Vec<bool>> =
            Op::ALL.iter().map(|&op| self.slots.iter().map(|s| legal(op, s)).collect()).collect();
        let op = Op::ALL.iter().zip(&slot).map(|(&o, row)| o == Op::Wait || row.iter().any(|&b| b)).collect();
        let any_free = slot[1].iter().any(|&b| b);
        ActionMasks { op, slot, blueprint: vec![any_free; self.blueprints.len()] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn slot(id: &str, stage: Stage) -> SlotObservation {
        SlotObservation {
            slot: id.into(),
            stage,
            epochs_in_stage: 0,
            alpha: 0.0,
            alpha_target: 0.0,
            blueprint: None,
            seed_parameters: 0,
            gradient_ratio: None,
            contribution: None,
            last_gate: None,
            germinable: stage == Stage::Dormant,
            partial_hold: false,
            prune_scheduled: false,
        }
    }

    fn observation(slots: Vec<SlotObservation>) -> Observation {
        Observation {
            version: OBSERVATION_VERSION,
            epoch: 3,
            epochs: 10,
            objective: "accuracy".into(),
            history: vec![],
            host_parameters: 999,
            seed_parameters: 0,
            free_slots: slots.iter().filter(|s| s.germinable).map(|s| s.slot.clone()).collect(),
            slots,
            blueprints: vec!["cnn:a".into(), "cnn:b".into()],
        }
    }

    #[test]
    fn decisions_read_as_documented_and_unknown_keys_are_refused() {
        let d: Decision = serde_json::from_str(r#"{"op": "germinate", "slot": "r0c1", "blueprint": "norm"}"#).unwrap();
        assert_eq!(d.slot(), Some("r0c1"));
        assert!(matches!(d, Decision::Germinate { ref options, .. } if options.is_null()));
        assert_eq!(serde_json::from_str::<Decision>(r#"{"op": "wait"}"#).unwrap(), Decision::Wait {});
        assert_eq!(serde_json::to_string(&Decision::Wait {}).unwrap(), r#"{"op":"wait"}"#);
        let stray = serde_json::from_str::<Decision>(r#"{"op": "wait", "x": 1}"#).unwrap_err().to_string();
        assert!(stray.contains("unknown field `x`"), "{stray}");
        let e = serde_json::from_str::<Decision>(r#"{"op": "advance", "slot": "a", "slto": 1}"#).unwrap_err();
        assert!(e.to_string().contains("slto"), "{e}");
        assert!(serde_json::from_str::<Decision>(r#"{"op": "grow"}"#).is_err());
        let back = serde_json::to_string(&Decision::Prune { slot: "s".into(), reason: None }).unwrap();
        assert_eq!(back, r#"{"op":"prune","slot":"s"}"#);
    }

    #[test]
    fn the_vector_has_the_documented_length_and_places() {
        let mut training = slot("r1c1", Stage::Training);
        training.blueprint = Some("cnn:b".into());
        training.contribution = Some(-2.0);
        let mut o = observation(vec![slot("r0c1", Stage::Dormant), training]);
        o.history = (1..=10)
            .map(|e| EpochObservation {
                epoch: e,
                train_loss: 1.0,
                train_accuracy: 50.0,
                val_loss: e as f64,
                val_accuracy: 40.0,
            })
            .collect();
        let v = o.features();
        assert_eq!(v.len(), feature_len(2, 2));
        assert_eq!(v.len(), 4 + 8 * 4 + 2 * (9 + 10 + 2));
        assert_eq!(v[..2], [3.0, 10.0]);
        // The history keeps the last 8: val_loss of epochs 3..=10.
        assert_eq!(v[4 + 2], 3.0, "the oldest kept epoch is 3");
        assert_eq!(v[4 + 7 * 4 + 2], 10.0);
        assert_eq!(v[4 + 7 * 4 + 3], 0.4, "accuracy as a fraction");
        let second = 4 + 32 + 21;
        assert_eq!(v[second + 2], 1.0, "TRAINING is the third stage of the one-hot");
        assert_eq!(v[second + 9 + 6..second + 9 + 8], [-2.0, 1.0], "contribution and its flag");
        assert_eq!(v[second + 19..], [0.0, 1.0], "blueprint cnn:b");
    }

    #[test]
    fn masks_allow_only_the_legal_decisions() {
        let mut embargoed = slot("r0c0", Stage::Embargoed);
        embargoed.germinable = false;
        let mut blending = slot("r1c1", Stage::Blending);
        blending.partial_hold = true;
        let m =
            observation(vec![slot("r0c1", Stage::Dormant), embargoed, blending, slot("x", Stage::Fossilized)]).masks();
        assert_eq!(m.op, [true, true, true, true, true]);
        assert_eq!(m.slot[1], [true, false, false, false], "germinate: the dormant slot only");
        assert_eq!(m.slot[2], [false, false, true, false], "advance: the seed in flight");
        assert_eq!(m.slot[3], [false, false, true, false], "continue: the partial hold");
        assert_eq!(m.slot[4], [false, false, true, false], "prune: not a fossilized seed");
        assert_eq!(m.blueprint, [true, true]);
        let none = observation(vec![embargoed_only()]).masks();
        assert_eq!(none.op, [true, false, false, false, false], "only wait");
        assert_eq!(none.blueprint, [false, false]);
    }

    fn embargoed_only() -> SlotObservation {
        SlotObservation { germinable: false, ..slot("r0c1", Stage::Embargoed) }
    }
}
