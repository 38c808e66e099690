//! Comparing blueprints on one job: the same seed schedule run once per blueprint (and
//! once without a seed, the baseline), each run's final accuracy and loss, the
//! parameters its seeds added, and the training step's time.

use super::{report::EpochRecord, Silent, TrainError, Trainer};
use crate::{config::RunConfig, lifecycle::SeedStage, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One run of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    /// The blueprint every schedule entry germinated; `None` for the baseline (no seed).
    pub blueprint: Option<String>,
    pub final_val_accuracy: f64,
    pub best_val_accuracy: f64,
    /// The validation loss at the end and the lowest of the run (what a text run is
    /// judged by); absent (0) in comparisons from before they were kept.
    #[serde(default)]
    pub final_val_loss: f64,
    #[serde(default)]
    pub best_val_loss: f64,
    /// Trainable parameters of the seeds still in the model at the end (a pruned seed's
    /// are gone).
    pub seed_parameters: i64,
    /// Each slot's stage at the end.
    pub final_stages: Vec<SeedStage>,
    /// Mean time of one training step (forward, backward, optimizer steps), ms, over
    /// the epochs after the first (warm-up) when there are several.
    pub step_ms: f64,
}

impl CompareRow {
    /// The blueprint's name, or `(none)` for the baseline.
    pub fn name(&self) -> &str {
        self.blueprint.as_deref().unwrap_or("(none)")
    }
}

/// The config of one comparison run: `config` with every schedule entry germinating
/// `blueprint` (no entry at all for `None`), the controller's own germinations off (it
/// still walks the scheduled seeds through the gates), no checkpoints.
pub fn run_config(config: &RunConfig, blueprint: Option<&str>) -> RunConfig {
    let mut c = config.clone();
    c.lifecycle.controller.enabled = false;
    match blueprint {
        Some(b) => c.lifecycle.schedule.iter_mut().for_each(|s| s.blueprint = b.to_string()),
        None => c.lifecycle.schedule.clear(),
    }
    c.output.checkpoint = false;
    c
}

/// Runs the baseline, then each of `blueprints`, calling `started` before each run.
pub fn compare(
    config: &RunConfig,
    blueprints: &[String],
    started: &mut dyn FnMut(Option<&str>),
) -> Result<Vec<CompareRow>> {
    let runs = std::iter::once(None).chain(blueprints.iter().map(|b| Some(b.as_str())));
    runs.map(|blueprint| {
        started(blueprint);
        let mut trainer = Trainer::new(run_config(config, blueprint)).map_err(|source| TrainError::Compare {
            run: blueprint.unwrap_or("the baseline").to_string(),
            source: Box::new(source),
        })?;
        trainer.run(&mut Silent)?;
        Ok(row(&trainer, blueprint))
    })
    .collect()
}

fn row(trainer: &Trainer, blueprint: Option<&str>) -> CompareRow {
    let history: &[EpochRecord] = trainer.history();
    // The first epoch pays the process's warm-up (allocator, threads): left out when
    // there are more.
    let timed = if history.len() > 1 { &history[1..] } else { history };
    let (steps, seconds) = timed.iter().fold((0u64, 0.0), |(n, s), r| (n + r.steps as u64, s + r.train_seconds));
    let slots = trainer.model().slots();
    CompareRow {
        blueprint: blueprint.map(str::to_string),
        final_val_accuracy: history.last().map_or(0.0, |r| r.val_accuracy),
        best_val_accuracy: history.iter().map(|r| r.val_accuracy).fold(0.0, f64::max),
        final_val_loss: history.last().map_or(f64::NAN, |r| r.val_loss),
        best_val_loss: history.iter().map(|r| r.val_loss).fold(f64::INFINITY, f64::min),
        seed_parameters: slots.iter().filter_map(|s| s.seed()).map(|s| s.num_parameters()).sum(),
        final_stages: slots.iter().map(|s| s.stage()).collect(),
        step_ms: if steps > 0 { 1e3 * seconds / steps as f64 } else { 0.0 },
    }
}

/// Writes `rows` as JSON to `path`.
pub fn write_json(path: &Path, rows: &[CompareRow]) -> Result<(), TrainError> {
    let bytes =
        serde_json::to_vec_pretty(rows).map_err(|source| TrainError::Encode { path: path.to_path_buf(), source })?;
    std::fs::write(path, bytes).map_err(|source| TrainError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScheduledSeed;

    #[test]
    fn each_run_schedules_its_blueprint_and_the_baseline_none() {
        let mut config: RunConfig = toml::from_str("").unwrap();
        config.output.dir = "out".into();
        config.lifecycle.schedule = vec![ScheduledSeed {
            epoch: 2,
            slot: "r0c1".into(),
            blueprint: "norm".into(),
            options: serde_json::Value::Null,
            target: None,
            tempo: None,
        }];
        let c = run_config(&config, Some("cnn:conv_light"));
        assert_eq!(c.lifecycle.schedule[0].blueprint, "cnn:conv_light");
        assert!(!c.lifecycle.controller.enabled && !c.output.checkpoint);
        let base = run_config(&config, None);
        assert!(base.lifecycle.schedule.is_empty());
    }
}
