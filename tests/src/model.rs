//! Building models with seeds in a given stage, through the real lifecycle gates.

use esper_runtime::{
    host::CnnHostConfig,
    lifecycle::{QualityGates, SeedStage},
    model::{MorphogeneticModel, SlotConfig},
    plugin::BlueprintRegistry,
    train::germinate,
};
use tch::{Device, Kind, Tensor};

/// Gates that let any measured seed through (for driving a slot to a stage in tests).
pub fn lenient_gates() -> QualityGates {
    QualityGates {
        min_training_improvement: f64::NEG_INFINITY,
        min_blending_epochs: 0,
        min_seed_gradient_ratio: 0.0,
        min_gradient_health_for_blending: 0.0,
        min_fossilize_contribution: f64::NEG_INFINITY,
        ..QualityGates::strict()
    }
}

pub fn norm_registry() -> BlueprintRegistry {
    let mut r = BlueprintRegistry::new();
    r.load(&crate::plugin_lib("esper-norm")).expect("load norm");
    r
}

pub fn batch(n: i64, device: Device) -> (Tensor, Tensor) {
    (Tensor::randn([n, 3, 32, 32], (Kind::Float, device)), Tensor::randint(10, [n], (Kind::Int64, device)))
}

/// One forward/backward in train mode, then the gradient capture; returns the loss.
pub fn train_step(model: &mut MorphogeneticModel, x: &Tensor, labels: &Tensor) -> f64 {
    let loss = model.forward(x, true).expect("forward").cross_entropy_for_logits(labels);
    loss.backward();
    model.capture_gradients();
    loss.double_value(&[])
}

/// A model with a `norm` seed in `slot`, driven to `stage` through the gates.
pub fn model_in_stage(
    registry: &BlueprintRegistry,
    host: CnnHostConfig,
    slot: &str,
    config: SlotConfig,
    stage: SeedStage,
) -> MorphogeneticModel {
    let device = Device::Cpu;
    let mut model = MorphogeneticModel::new(host, &[slot], config, device).expect("model");
    germinate(&mut model, registry, slot, "norm", "seed-1", &serde_json::Value::Null).expect("germinate");
    let gates = lenient_gates();
    while model.slot(slot).unwrap().stage() != stage {
        let current = model.slot(slot).unwrap().stage();
        if current == SeedStage::Training {
            let (x, y) = batch(4, device);
            train_step(&mut model, &x, &y); // G2 needs a measured gradient ratio
        }
        if current == SeedStage::Blending {
            // G3 needs the alpha ramp finished.
            while model.slot(slot).unwrap().alpha() < 1.0 {
                model.step_epoch().unwrap();
            }
        }
        let r = model.slot_mut(slot).unwrap().advance(&gates).expect("advance");
        assert!(r.passed, "gate to leave {current} failed: {r}");
    }
    model
}
