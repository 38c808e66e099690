//! Seeds come from the trainer: it creates each one from the blueprint registry, for
//! the slot's channel count on the model's device, and hands it to the slot, which
//! probes it and runs it. The model never sees the registry.

use super::controller::Action;
use crate::{
    blend::BlendChoice,
    lifecycle::{GerminationFailure, Lifecycle, LifecycleEvent},
    model::{ModelError, MorphogeneticModel},
    plugin::{BlueprintRegistry, LoadError, PluginSeed},
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
    let (key, descriptor) = registry.resolve(blueprint)?;
    let host_topology = model.host().topology();
    if descriptor.topology.as_str() != host_topology.as_str() {
        return Err(ModelError::TopologyMismatch {
            slot: slot.to_string(),
            blueprint: key.to_string(),
            blueprint_topology: descriptor.topology.to_string(),
            host_topology,
        });
    }
    Ok(registry.create_seed(blueprint, channels, options, model.device())?)
}

/// The event of a controller `action` that failed with `error`: for a germination, the
/// slot, the blueprint, its library and why (the slot stays DORMANT); for any other
/// action, its slot and the error.
pub(super) fn failure_event(registry: &BlueprintRegistry, action: &Action, error: &ModelError) -> LifecycleEvent {
    match action {
        Action::Germinate { slot, blueprint, .. } => LifecycleEvent::GerminationFailed {
            slot: slot.clone(),
            blueprint: registry.resolve(blueprint).map_or_else(|_| blueprint.clone(), |(key, _)| key.to_string()),
            plugin: registry.plugin_of(blueprint).map(|p| p.display().to_string()),
            cause: germination_failure(error),
            reason: crate::error::chain(error),
        },
        other => LifecycleEvent::ActionFailed { slot: other.slot().to_string(), error: crate::error::chain(error) },
    }
}

/// Why a germination failed with `error`.
fn germination_failure(error: &ModelError) -> GerminationFailure {
    use GerminationFailure as F;
    match error {
        ModelError::Plugin(e) => match e {
            LoadError::UnknownBlueprint { .. } | LoadError::Ambiguous { .. } => F::UnknownBlueprint,
            LoadError::BadOptions { .. } => F::BadOptions,
            LoadError::Panicked { .. } => F::CreatePanicked,
            LoadError::BadParameter { .. } => F::ParameterRefused,
            _ => F::CreateFailed,
        },
        ModelError::ProbeRefused { .. } | ModelError::Seed(_) => F::ProbeRefused,
        ModelError::Lifecycle { .. }
        | ModelError::UnknownSlot { .. }
        | ModelError::DuplicateSlot(_)
        | ModelError::SeedMismatch { .. }
        | ModelError::TopologyMismatch { .. }
        | ModelError::RestoreMismatch { .. } => F::SlotRefused,
        ModelError::Host(_) | ModelError::Torch(_) | ModelError::Shim(_) => F::RuntimeFailed,
    }
}
