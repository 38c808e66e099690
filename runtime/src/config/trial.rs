//! The preflight's trial germination: every blueprint a run may germinate (each
//! schedule entry, each blueprint of the controller's rotation) is created once, with
//! the options it will be given, and dropped. A bad option key, a create that fails or
//! panics, or parameters over the seed's cap then fail `esper config check` and `esper
//! run` before anything is written, instead of a germination failing mid-run.
//!
//! Each is created on the CPU at the channel count of the slot it will grow in (a
//! scheduled seed: its slot; the rotation: every distinct count among the slots), so a
//! blueprint that needs a channel count to divide, or is too large for a wide slot,
//! fails here exactly as it would in the run. Nothing else of the run is allocated.

use super::{PreflightError, RunConfig};
use crate::plugin::BlueprintRegistry;
use serde_json::Value;

impl RunConfig {
    /// Creates and drops each blueprint the run may germinate (see the module docs);
    /// `points` are the host's injection points and their channel counts, `rotation`
    /// the controller's resolved rotation.
    pub(super) fn try_blueprints(
        &self,
        registry: &BlueprintRegistry,
        points: &[(String, i64)],
        rotation: &[(String, Value)],
    ) -> Result<(), PreflightError> {
        let channels_of = |slot: &str| points.iter().find(|(id, _)| id == slot).map(|p| p.1);
        for (i, s) in self.lifecycle.schedule.iter().enumerate() {
            let Some(channels) = channels_of(&s.slot) else { continue };
            registry.try_create(&s.blueprint, channels, &s.options).map_err(|source| {
                let (epoch, slot, blueprint) = (s.epoch, s.slot.clone(), s.blueprint.clone());
                PreflightError::ScheduledTrial { index: i, epoch, slot, blueprint, channels, source: Box::new(source) }
            })?;
        }
        let mut widths: Vec<(i64, &str)> =
            self.slots.iter().filter_map(|s| Some((channels_of(s)?, s.as_str()))).collect();
        widths.sort();
        widths.dedup_by_key(|w| w.0);
        for (blueprint, options) in rotation {
            for &(channels, slot) in &widths {
                registry.try_create(blueprint, channels, options).map_err(|source| {
                    let (blueprint, slot) = (blueprint.clone(), slot.to_string());
                    PreflightError::RotationTrial { blueprint, channels, slot, source: Box::new(source) }
                })?;
            }
        }
        Ok(())
    }
}
