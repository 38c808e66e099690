//! Seeds come from the trainer: it creates each one from the blueprint registry, for
//! the slot's channel count on the model's device, and hands it to the slot, which
//! probes it and runs it. The model never sees the registry.

use crate::{
    lifecycle::{BlendChoice, Lifecycle},
    model::{ModelError, MorphogeneticModel},
    plugin::{BlueprintRegistry, PluginSeed},
};
use serde_json::Value;

/// Creates a seed of `blueprint` with `options` for slot `slot` of `model` and
/// germinates it there (after the slot's probe), blending as the slot is configured.
/// On any failure the model is as it was.
pub fn germinate(
    model: &mut MorphogeneticModel,
    registry: &BlueprintRegistry,
    slot: &str,
    blueprint: &str,
    seed_id: &str,
    options: &Value,
) -> Result<(), ModelError> {
    germinate_with(model, registry, (slot, blueprint, seed_id), options, BlendChoice::default())
}

/// [`germinate`] with the seed's own blend `choice` (alpha target, tempo); `names` are
/// the slot, the blueprint and the seed id.
pub fn germinate_with(
    model: &mut MorphogeneticModel,
    registry: &BlueprintRegistry,
    (slot, blueprint, seed_id): (&str, &str, &str),
    options: &Value,
    choice: BlendChoice,
) -> Result<(), ModelError> {
    let seed = create(model, registry, slot, blueprint, options)?;
    model.germinate(slot, seed, seed_id, options, choice)
}

/// Restores slot `slot` of `model` to a checkpointed `lifecycle`, re-creating its live
/// seed (if any) from `registry`; the seed's parameters are loaded by the caller.
pub fn restore(
    model: &mut MorphogeneticModel,
    registry: &BlueprintRegistry,
    slot: &str,
    lifecycle: Lifecycle,
    options: Value,
) -> Result<(), ModelError> {
    let seed = match lifecycle.live_blueprint() {
        Some(blueprint) => Some(create(model, registry, slot, blueprint, &options)?),
        None => None,
    };
    model.restore_slot(slot, lifecycle, seed, options)
}

fn create(
    model: &MorphogeneticModel,
    registry: &BlueprintRegistry,
    slot: &str,
    blueprint: &str,
    options: &Value,
) -> Result<PluginSeed, ModelError> {
    let channels = model.slot(slot)?.channels();
    Ok(registry.create_seed(blueprint, channels, options, model.device())?)
}
