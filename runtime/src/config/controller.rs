//! `[lifecycle.controller]`: the heuristic controller's settings (esper-lite's Tamiyo
//! heuristic: its defaults are esper-lite's).

use crate::host::Topology;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::{collections::BTreeMap, path::PathBuf};

/// esper-lite's rotation of CNN blueprints, the controller's default on a CNN host.
pub const DEFAULT_ROTATION: [&str; 5] = ["conv_light", "conv_heavy", "attention", "norm", "depthwise"];

/// The controller's default on a transformer host: the adapter first (LoRA, what language
/// models grow today), then the MLP, attention and norm blueprints of the catalogue.
pub const DEFAULT_TRANSFORMER_ROTATION: [&str; 4] = ["lora", "mlp_small", "attention", "norm"];

/// The default rotation for a host of `topology`.
pub fn default_rotation(topology: Topology) -> &'static [&'static str] {
    match topology {
        Topology::Cnn => &DEFAULT_ROTATION,
        Topology::Transformer => &DEFAULT_TRANSFORMER_ROTATION,
    }
}

/// The automatic controller: the built-in heuristic (the keys below), or a controller
/// plugin's (`plugin` and `name`, with `plugin_options`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// A controller plugin library (relative to the config file): its controller `name`
    /// decides instead of the built-in heuristic, whose keys then do not apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PathBuf>,
    /// The controller of `plugin` to use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The options of the plugin's controller (a table).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub plugin_options: Value,
    /// The built-in heuristic germinates (when false, it only walks seeds through the
    /// gates and the schedule's germinations happen).
    pub enabled: bool,
    /// One blueprint to germinate (with `options`): a shortcut for `blueprints = [it]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blueprint: Option<String>,
    /// The options of `blueprint`.
    pub options: Value,
    /// Blueprints germinated in turn ([`DEFAULT_ROTATION`] when neither this nor
    /// `blueprint` is set); one pruned recently is skipped while its penalty is high.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blueprints: Option<Vec<String>>,
    /// Options by blueprint name, for the blueprints of the rotation.
    pub blueprint_options: BTreeMap<String, Value>,
    /// Germinate after this many epochs in a row of plateau ...
    pub plateau_epochs: u32,
    /// ... each gaining less than this (validation accuracy points) over the one before.
    pub plateau_delta: f64,
    /// No germination before this epoch.
    pub min_epoch: u32,
    /// Prune a seed still in TRAINING after this many epochs (a stall). Must exceed the
    /// gates' `min_blending_epochs` (epochs in TRAINING that G2 needs).
    pub max_training_epochs: u32,
    /// Prune a seed in TRAINING or BLENDING whose validation accuracy dropped by more
    /// than this many points since its stage began ...
    pub prune_on_drop: f64,
    /// ... once it has been in that stage for this many epochs.
    pub drop_epochs: u32,
    /// Prune a blending or holding seed whose counterfactual contribution falls below
    /// this (points).
    pub prune_below_contribution: f64,
    /// A HOLDING seed whose counterfactual contribution reaches this (points) is put to
    /// G5 (fossilize); one below it is pruned.
    pub fossilize_at_contribution: f64,
    /// Prune a seed that has been HOLDING this long without passing G5 (at least 2: the
    /// limit is checked before G5 is tried at each epoch's end).
    pub max_holding_epochs: u32,
    /// At most this many seeds in flight at once (germinated to holding).
    pub max_live_seeds: usize,
    /// A seed the controller prunes while it affects the output (BLENDING or HOLDING)
    /// is blended out first: alpha ramps to 0 over this many epochs, then it is pruned.
    /// 0 (the default): pruned at once.
    pub prune_ramp_epochs: u32,
    /// Penalty a blueprint takes when the controller prunes one of its seeds ...
    pub penalty_on_prune: f64,
    /// ... multiplied by this every epoch (and forgotten below 0.1) ...
    pub penalty_decay: f64,
    /// ... and skipped by the rotation while at or above this.
    pub penalty_threshold: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            plugin: None,
            name: None,
            plugin_options: Value::Null,
            enabled: true,
            blueprint: None,
            options: Value::Null,
            blueprints: None,
            blueprint_options: BTreeMap::new(),
            plateau_epochs: 3,
            plateau_delta: 0.5,
            min_epoch: 5,
            // Above the strict and permissive gates' default `min_blending_epochs`
            // (10), so a seed gets two tries at G2 before it is pruned.
            max_training_epochs: DEFAULT_MAX_TRAINING_EPOCHS,
            prune_on_drop: 2.0,
            drop_epochs: 5,
            prune_below_contribution: -0.5,
            fossilize_at_contribution: 0.5,
            max_holding_epochs: 4,
            max_live_seeds: 1,
            prune_ramp_epochs: 0,
            penalty_on_prune: 2.0,
            penalty_decay: 0.5,
            penalty_threshold: 3.0,
        }
    }
}

/// The controller's default TRAINING limit (see [`ControllerConfig::max_training_epochs`]).
pub const DEFAULT_MAX_TRAINING_EPOCHS: u32 = crate::lifecycle::gates::DEFAULT_MIN_BLENDING_EPOCHS + 2;

impl ControllerConfig {
    /// The blueprints it germinates on a host of `topology`, in turn, each with its options.
    pub fn rotation(&self, topology: Topology) -> Vec<(String, Value)> {
        if let Some(b) = &self.blueprint {
            return vec![(b.clone(), self.options.clone())];
        }
        let names: Vec<String> = match &self.blueprints {
            Some(list) => list.clone(),
            None => default_rotation(topology).iter().map(|s| s.to_string()).collect(),
        };
        names.into_iter().map(|n| (n.clone(), self.blueprint_options.get(&n).cloned().unwrap_or(Value::Null))).collect()
    }

    /// The settings that cannot work together, named (on a host of `topology`).
    pub fn validate(&self, topology: Topology) -> Result<(), String> {
        let key = "lifecycle.controller";
        self.validate_plugin()?;
        if self.blueprint.is_some() && self.blueprints.is_some() {
            return Err(format!("{key}: give `blueprint` (one) or `blueprints` (a rotation), not both"));
        }
        if self.blueprint.is_none() && !self.options.is_null() {
            return Err(format!(
                "{key}.options belongs to `blueprint`; give a rotation's options as {key}.blueprint_options.NAME"
            ));
        }
        if self.blueprints.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!("{key}.blueprints is empty: name at least one blueprint"));
        }
        let rotation: Vec<String> = self.rotation(topology).into_iter().map(|(n, _)| n).collect();
        if let Some(stray) = self.blueprint_options.keys().find(|k| !rotation.contains(k)) {
            return Err(format!(
                "{key}.blueprint_options.{stray}: `{stray}` is not in the rotation ({})",
                rotation.join(", ")
            ));
        }
        for (name, v) in [("plateau_delta", self.plateau_delta), ("prune_on_drop", self.prune_on_drop)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{key}.{name} = {v}: must be a finite number >= 0"));
            }
        }
        if !(self.penalty_decay >= 0.0 && self.penalty_decay < 1.0) {
            return Err(format!("{key}.penalty_decay = {}: must be in [0, 1)", self.penalty_decay));
        }
        Ok(())
    }
}

impl ControllerConfig {
    /// The plugin controller's keys: `plugin` and `name` together, and nothing of the
    /// built-in heuristic's rotation beside them.
    fn validate_plugin(&self) -> Result<(), String> {
        let key = "lifecycle.controller";
        match (&self.plugin, &self.name) {
            (Some(_), None) => Err(format!("{key}.plugin needs `name`: which of the library's controllers to use")),
            (None, Some(_)) => Err(format!("{key}.name needs `plugin`: the controller library's path")),
            (None, None) if !self.plugin_options.is_null() => {
                Err(format!("{key}.plugin_options belongs to a controller plugin: give `plugin` and `name`"))
            }
            (Some(_), Some(_)) if self.blueprint.is_some() || self.blueprints.is_some() => Err(format!(
                "{key}: `blueprint` and `blueprints` are the built-in controller's rotation; a controller plugin \
                 (`plugin`) chooses its own blueprints"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rotation_is_esper_lites_unless_one_blueprint_or_a_list_is_given() {
        let c = ControllerConfig::default();
        let names: Vec<String> = c.rotation(Topology::Cnn).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, DEFAULT_ROTATION);
        let names: Vec<String> = c.rotation(Topology::Transformer).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, DEFAULT_TRANSFORMER_ROTATION);
        let one = ControllerConfig {
            blueprint: Some("norm".into()),
            options: serde_json::json!({"a": 1}),
            ..Default::default()
        };
        assert_eq!(one.rotation(Topology::Cnn), [("norm".to_string(), serde_json::json!({"a": 1}))]);
        let list = ControllerConfig {
            blueprints: Some(vec!["attention".into(), "norm".into()]),
            blueprint_options: [("attention".to_string(), serde_json::json!({"reduction": 8}))].into(),
            ..Default::default()
        };
        assert_eq!(list.rotation(Topology::Cnn)[0].1, serde_json::json!({"reduction": 8}));
        assert_eq!(list.rotation(Topology::Cnn)[1].1, Value::Null);
        list.validate(Topology::Cnn).unwrap();
    }

    #[test]
    fn contradictory_settings_are_refused_by_name() {
        let both = ControllerConfig { blueprint: Some("a".into()), blueprints: Some(vec![]), ..Default::default() };
        assert!(both.validate(Topology::Cnn).unwrap_err().contains("not both"));
        let empty = ControllerConfig { blueprints: Some(vec![]), ..Default::default() };
        assert!(empty.validate(Topology::Cnn).unwrap_err().contains("blueprints is empty"));
        let stray = ControllerConfig {
            blueprints: Some(vec!["norm".into()]),
            blueprint_options: [("attention".to_string(), Value::Null)].into(),
            ..Default::default()
        };
        assert!(stray
            .validate(Topology::Cnn)
            .unwrap_err()
            .contains("blueprint_options.attention: `attention` is not in the rotation"));
        let options = ControllerConfig { options: serde_json::json!({"x": 1}), ..Default::default() };
        assert!(options.validate(Topology::Cnn).unwrap_err().contains("options belongs to `blueprint`"));
        let plugin = ControllerConfig { plugin: Some("libc.so".into()), ..Default::default() };
        assert!(plugin.validate(Topology::Cnn).unwrap_err().contains("plugin needs `name`"));
        let name = ControllerConfig { name: Some("greedy".into()), ..Default::default() };
        assert!(name.validate(Topology::Cnn).unwrap_err().contains("name needs `plugin`"));
        let both =
            ControllerConfig { plugin: Some("libc.so".into()), name: Some("greedy".into()), ..Default::default() };
        both.validate(Topology::Cnn).unwrap();
        let rotation = ControllerConfig { blueprint: Some("norm".into()), ..both };
        assert!(rotation.validate(Topology::Cnn).unwrap_err().contains("chooses its own blueprints"));
        let options = ControllerConfig { plugin_options: serde_json::json!({"k": 1}), ..Default::default() };
        assert!(options.validate(Topology::Cnn).unwrap_err().contains("plugin_options belongs"));
        let decay = ControllerConfig { penalty_decay: 1.5, ..Default::default() };
        assert!(decay.validate(Topology::Cnn).unwrap_err().contains("penalty_decay"));
    }
}
