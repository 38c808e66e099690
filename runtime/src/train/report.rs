//! The run's record: one [`EpochRecord`] per epoch, and `report.json` (the same as JSON,
//! with each slot's final state). Drawing it (the table, the plot) is the `esper` binary's.

use super::TrainError;
use crate::lifecycle::{LifecycleEvent, SeedStage};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub slot: String,
    pub stage: SeedStage,
    pub alpha: f64,
    /// Counterfactual contribution in points of the run's objective (when measured this
    /// epoch): accuracy points, or loss points for text (see
    /// [`crate::data::Objective::score`]).
    pub contribution: Option<f64>,
    /// The slot's live seed at the epoch's end (none in a DORMANT slot, and in records
    /// from before they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedRecord>,
}

/// A slot's seed as an epoch's record keeps it: what `esper watch` shows in its slot grid
/// and the TensorBoard logs plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRecord {
    pub blueprint: String,
    /// Epochs the seed has spent in its current stage.
    pub epochs_in_stage: u32,
    /// The seed's trainable parameter count.
    pub parameters: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u32,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// `exp(val_loss)`, for text runs (next-token prediction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_perplexity: Option<f64>,
    pub seconds: f64,
    /// The training batches of the epoch and the seconds their steps took (validation
    /// and the lifecycle left out); absent (0) in reports from before they were kept.
    #[serde(default)]
    pub steps: u32,
    #[serde(default)]
    pub train_seconds: f64,
    pub slots: Vec<SlotRecord>,
    /// Lifecycle events of this epoch, in order ("r0c1: germinated norm", ...).
    pub events: Vec<LifecycleEvent>,
}

/// The `format` of `report.json`: 2 since events are tagged objects (1: plain lines).
pub const REPORT_FORMAT: u32 = 2;

/// The content of `report.json`: its format, the epochs' records and each slot's final
/// state (`final_slots`, [`crate::model::MorphogeneticModel::report`] as JSON).
pub fn to_json(history: &[EpochRecord], final_slots: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "format": REPORT_FORMAT, "epochs": history, "final_slots": final_slots })
}

/// Publishes `report.json` at `path` through tmp + rename (see
/// [`crate::run_folder::files::publish`]): a failed write leaves the previous report as
/// it was, and a symbolic link there is refused.
pub fn write_json(path: &Path, history: &[EpochRecord], final_slots: &serde_json::Value) -> Result<(), TrainError> {
    let report = to_json(history, final_slots);
    let bytes =
        serde_json::to_vec_pretty(&report).map_err(|source| TrainError::Encode { path: path.to_path_buf(), source })?;
    crate::run_folder::files::publish(path, &bytes)
        .map_err(|source| TrainError::Report { path: path.to_path_buf(), source })
}
