//! The runtime core through the real `norm` plugin: BUG-005 regressions, gradient
//! isolation, the germination probe, pruning, embargo and slot recycling, the
//! counterfactual forward, and the per-device gradient monitor (BUG-013, CPU side).

use esper_runtime::{
    blend::{BlendChoice, BlendSettings},
    host::{is_channels_last, to_channels_last, CnnHost, CnnHostConfig, MemoryFormat},
    isolation::BlendAlgorithm,
    lifecycle::{SeedStage, EMBARGO_EPOCHS_AFTER_PRUNE},
    model::{ModelError, MorphogeneticModel, SlotConfig},
    plugin::BlueprintRegistry,
    train::germinate,
};
use esper_tests::{
    model::{batch, lenient_gates, model_in_stage, norm_registry, train_step},
    plugin_lib,
};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

const SLOT: &str = "r0c1";

fn isolated() -> SlotConfig {
    SlotConfig { isolate_gradients: true, ..Default::default() }
}

// ---- BUG-005: channels_last + isolate_gradients (libtorch 2.11 segfaults without the fix)

#[test]
fn bug005_training_stage_with_channels_last_no_crash() {
    let r = norm_registry();
    let mut m = model_in_stage(&r, CnnHostConfig::default(), SLOT, isolated(), SeedStage::Training);
    let cnn = m.host().downcast_ref::<CnnHost>().expect("the built-in CNN host");
    assert_eq!(cnn.config().memory_format, MemoryFormat::ChannelsLast);
    let (x, y) = batch(4, Device::Cpu);
    let loss = train_step(&mut m, &x, &y);
    assert!(loss.is_finite());
}

#[test]
fn bug005_training_stage_with_channels_last_gradient_telemetry() {
    let r = norm_registry();
    let mut m = model_in_stage(&r, CnnHostConfig::default(), SLOT, isolated(), SeedStage::Training);
    let (x, y) = batch(4, Device::Cpu);
    train_step(&mut m, &x, &y);
    let state = m.slot(SLOT).unwrap().lifecycle().state().unwrap();
    let ratio = state.metrics().seed_gradient_norm_ratio().expect("ratio measured");
    assert!(ratio.is_finite() && ratio > 0.0, "ratio {ratio}");
}

#[test]
fn bug005_training_stage_explicit_channels_last() {
    let r = norm_registry();
    let mut m = model_in_stage(&r, CnnHostConfig::default(), SLOT, isolated(), SeedStage::Training);
    let (x, y) = batch(4, Device::Cpu);
    let x = to_channels_last(&x);
    assert!(is_channels_last(&x));
    assert!(train_step(&mut m, &x, &y).is_finite());
}

#[test]
fn bug005_training_stage_contiguous_format_still_works() {
    let r = norm_registry();
    let host = CnnHostConfig { memory_format: MemoryFormat::Contiguous, ..Default::default() };
    let mut m = model_in_stage(&r, host, SLOT, isolated(), SeedStage::Training);
    let (x, y) = batch(4, Device::Cpu);
    assert!(train_step(&mut m, &x, &y).is_finite());
}

#[test]
fn bug005_blending_stage_channels_last_with_fix() {
    let r = norm_registry();
    let mut m = model_in_stage(&r, CnnHostConfig::default(), SLOT, isolated(), SeedStage::Blending);
    m.step_epoch().unwrap();
    assert!(m.slot(SLOT).unwrap().alpha() > 0.0, "blending with a non-zero alpha");
    let (x, y) = batch(4, Device::Cpu);
    assert!(train_step(&mut m, &x, &y).is_finite());
}

#[test]
fn bug005_training_without_isolate_gradients_no_issue() {
    let r = norm_registry();
    let config = SlotConfig { isolate_gradients: false, ..Default::default() };
    let mut m = model_in_stage(&r, CnnHostConfig::default(), SLOT, config, SeedStage::Training);
    let (x, y) = batch(4, Device::Cpu);
    assert!(train_step(&mut m, &x, &y).is_finite());
}

// ---- Isolation

fn host_grads(m: &MorphogeneticModel) -> Vec<Tensor> {
    m.host_parameters().iter().map(|p| p.grad().copy()).collect()
}

#[test]
fn host_gradients_are_exactly_the_same_with_and_without_a_training_seed() {
    let r = norm_registry();
    let with_seed = model_in_stage(&r, CnnHostConfig::default(), SLOT, isolated(), SeedStage::Training);
    let mut without = MorphogeneticModel::new(CnnHostConfig::default(), &[SLOT], isolated(), Device::Cpu).unwrap();
    without.host_vars_mut().copy(with_seed.host_vars()).unwrap();
    for p in with_seed.host_parameters().iter_mut().chain(without.host_parameters().iter_mut()) {
        p.zero_grad();
    }
    let (x, y) = batch(8, Device::Cpu);
    let out_with = with_seed.forward(&x, true).unwrap();
    let out_without = without.forward(&x, true).unwrap();
    assert!(out_with.equal(&out_without), "TRAINING forward equals the host exactly");
    out_with.cross_entropy_for_logits(&y).backward();
    out_without.cross_entropy_for_logits(&y).backward();
    let (a, b) = (host_grads(&with_seed), host_grads(&without));
    assert_eq!(a.len(), b.len());
    for (i, (ga, gb)) in a.iter().zip(&b).enumerate() {
        assert!(ga.equal(gb), "host parameter {i}: gradients differ");
    }
    // ... while the seed did learn something.
    let seed_grad_total: f64 =
        with_seed.seed_parameters().iter().map(|p| p.grad().abs().sum(Kind::Float).double_value(&[])).sum();
    assert!(seed_grad_total > 0.0);
}

#[test]
fn every_blend_runs_forward_and_backward_in_blending() {
    let r = norm_registry();
    for blend in [BlendAlgorithm::Add, BlendAlgorithm::Multiply, BlendAlgorithm::Gate] {
        let config =
            SlotConfig { blend: BlendSettings { algorithm: blend, ..Default::default() }, ..Default::default() };
        let mut m = model_in_stage(&r, CnnHostConfig::default(), SLOT, config, SeedStage::Blending);
        m.step_epoch().unwrap();
        let (x, y) = batch(4, Device::Cpu);
        assert!(train_step(&mut m, &x, &y).is_finite(), "{blend:?}");
        let gate_params = if blend == BlendAlgorithm::Gate { 4 } else { 0 };
        assert_eq!(m.seed_parameters().len(), 3 + gate_params, "{blend:?}");
    }
}

// ---- Model, germination and lifecycle through slots

#[test]
fn unknown_and_duplicate_slots_are_errors() {
    let e =
        MorphogeneticModel::new(CnnHostConfig::default(), &["r7c0"], SlotConfig::default(), Device::Cpu).err().unwrap();
    assert_eq!(e.to_string(), "unknown slot `r7c0`; valid slots: r0c0, r1c0, r0c1, r1c1, r0c2, r1c2");
    let e = MorphogeneticModel::new(CnnHostConfig::default(), &["r0c1", "r0c1"], SlotConfig::default(), Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(e, ModelError::DuplicateSlot(_)), "{e}");
}

#[test]
fn slots_run_in_execution_order_and_report() {
    let r = norm_registry();
    let mut m =
        MorphogeneticModel::new(CnnHostConfig::default(), &["r1c1", "r0c0"], SlotConfig::default(), Device::Cpu)
            .unwrap();
    let ids: Vec<_> = m.slots().iter().map(|s| (s.id().to_string(), s.channels())).collect();
    assert_eq!(ids, vec![("r0c0".to_string(), 32), ("r1c1".to_string(), 64)]);
    germinate(&mut m, &r, "r1c1", "norm", "s1", &Value::Null).unwrap();
    let report = m.report();
    assert_eq!(report[0].stage, SeedStage::Dormant);
    assert_eq!(report[1].stage, SeedStage::Germinated);
    assert_eq!(report[1].stage_number, 2);
    assert_eq!(report[1].seed_parameters, 64 + 64 + 1);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json[1]["stage"], "GERMINATED");
    assert_eq!(m.seed_parameters().len(), 3);
    assert_eq!(m.host_parameters().len(), 3 * 3 + 2, "conv + bn weight/bias per block, head");
}

#[test]
fn a_slot_takes_only_a_seed_made_for_it_and_restores_only_its_own_seed() {
    let r = norm_registry();
    let mut m =
        MorphogeneticModel::new(CnnHostConfig::default(), &["r0c0", "r1c1"], SlotConfig::default(), Device::Cpu)
            .unwrap();
    // The seed comes from the caller (the trainer); one made for 64 channels does not fit r0c0 (32).
    let seed = r.create_seed("norm", 64, &Value::Null, Device::Cpu).unwrap();
    let e = m.germinate("r0c0", seed, "s1", &Value::Null, BlendChoice::default()).err().unwrap();
    assert_eq!(e.to_string(), "slot `r0c0` has 32 channels; the `cnn:norm` seed handed to it was created for 64");
    assert_eq!(m.slot("r0c0").unwrap().stage(), SeedStage::Dormant);
    let seed = r.create_seed("norm", 64, &Value::Null, Device::Cpu).unwrap();
    m.germinate("r1c1", seed, "s1", &Value::Null, BlendChoice::default()).unwrap();
    // Restoring the germinated lifecycle needs its seed back; an empty one takes none.
    let lifecycle = m.slot("r1c1").unwrap().lifecycle().clone();
    assert_eq!(lifecycle.live_blueprint(), Some("cnn:norm"));
    let e = m.restore_slot("r1c1", lifecycle.clone(), None, Value::Null).err().unwrap();
    assert_eq!(
        e.to_string(),
        "slot `r1c1`: the checkpointed lifecycle runs cnn:norm, the seed given to restore it is no seed"
    );
    let empty = m.slot("r0c0").unwrap().lifecycle().clone();
    let seed = r.create_seed("norm", 32, &Value::Null, Device::Cpu).unwrap();
    let e = m.restore_slot("r0c0", empty, Some(seed), Value::Null).err().unwrap();
    assert!(e.to_string().contains("runs no seed, the seed given to restore it is cnn:norm"), "{e}");
    // The right seed restores it.
    let seed = r.create_seed("norm", 64, &Value::Null, Device::Cpu).unwrap();
    m.restore_slot("r1c1", lifecycle, Some(seed), Value::Null).unwrap();
    assert_eq!(m.slot("r1c1").unwrap().stage(), SeedStage::Germinated);
    assert!(m.slot("r1c1").unwrap().seed().is_some());
}

#[test]
fn germination_probe_refuses_a_shape_changing_seed_and_keeps_the_slot() {
    let mut r = norm_registry();
    r.load(&plugin_lib("esper-fixture-broken")).unwrap();
    let mut m = MorphogeneticModel::new(CnnHostConfig::default(), &[SLOT], SlotConfig::default(), Device::Cpu).unwrap();
    let e = germinate(&mut m, &r, SLOT, "shape-change", "s1", &Value::Null).err().unwrap();
    assert_eq!(
        e.to_string(),
        "slot `r0c1`: blueprint `cnn:shape-change` failed the germination probe (train mode, input [2, 64, 32, 32]): \
         output shape [2, 64, 16, 16], expected exactly the input's [2, 64, 32, 32] (no broadcasting); germination \
         refused"
    );
    assert_eq!(m.slot(SLOT).unwrap().stage(), SeedStage::Dormant);
    germinate(&mut m, &r, SLOT, "norm", "s2", &Value::Null).unwrap();
    // A second germination into an occupied slot is refused.
    let e = germinate(&mut m, &r, SLOT, "norm", "s3", &Value::Null).err().unwrap();
    assert!(e.to_string().starts_with("slot `r0c1`:"), "{e}");
}

#[test]
fn a_plugin_failure_in_forward_is_an_error_not_a_crash() {
    let mut r = BlueprintRegistry::new();
    r.load(&plugin_lib("esper-fixture-broken")).unwrap();
    let mut m = MorphogeneticModel::new(CnnHostConfig::default(), &[SLOT], SlotConfig::default(), Device::Cpu).unwrap();
    // The probe itself runs forward: the panic is contained and germination refused.
    let e = germinate(&mut m, &r, SLOT, "panic-forward", "s1", &Value::Null).err().unwrap();
    assert!(e.to_string().contains("deliberate panic in forward"), "{e}");
    assert_eq!(m.slot(SLOT).unwrap().stage(), SeedStage::Dormant);
}

#[test]
fn prune_embargo_and_slot_recycling() {
    let r = norm_registry();
    let mut m = model_in_stage(&r, CnnHostConfig::default(), SLOT, isolated(), SeedStage::Training);
    m.prune(SLOT, "test").unwrap();
    assert_eq!(m.slot(SLOT).unwrap().stage(), SeedStage::Pruned);
    assert!(m.seed_parameters().is_empty(), "a pruned seed's parameters leave the model");
    m.step_epoch().unwrap();
    assert_eq!(m.slot(SLOT).unwrap().stage(), SeedStage::Embargoed);
    let e = germinate(&mut m, &r, SLOT, "norm", "s2", &Value::Null).err().unwrap();
    assert!(e.to_string().contains("slot `r0c1`"), "embargoed slot refuses germination: {e}");
    let mut stages = Vec::new();
    for _ in 0..EMBARGO_EPOCHS_AFTER_PRUNE + 1 {
        m.step_epoch().unwrap();
        stages.push(m.slot(SLOT).unwrap().stage());
    }
    let embargoed = stages.iter().filter(|s| **s == SeedStage::Embargoed).count() as u32;
    assert_eq!(
        embargoed + 1,
        EMBARGO_EPOCHS_AFTER_PRUNE,
        "embargo lasts {EMBARGO_EPOCHS_AFTER_PRUNE} epochs: {stages:?}"
    );
    assert_eq!(stages[stages.len() - 2..], [SeedStage::Resetting, SeedStage::Dormant]);
    germinate(&mut m, &r, SLOT, "norm", "s2", &Value::Null).unwrap();
    assert_eq!(m.slot(SLOT).unwrap().stage(), SeedStage::Germinated);
}

#[test]
fn fossilized_seeds_cannot_be_pruned() {
    let r = norm_registry();
    let mut m = model_in_stage(&r, CnnHostConfig::default(), SLOT, isolated(), SeedStage::Holding);
    m.slot_mut(SLOT).unwrap().lifecycle_mut().metrics_mut().unwrap().set_counterfactual_contribution(Some(2.0));
    let result = m.slot_mut(SLOT).unwrap().advance(&lenient_gates()).unwrap();
    assert!(result.passed, "{result}");
    assert_eq!(m.slot(SLOT).unwrap().stage(), SeedStage::Fossilized);
    let e = m.prune(SLOT, "no").err().unwrap();
    assert!(e.to_string().starts_with("slot `r0c1`:"), "{e}");
    assert_eq!(m.slot(SLOT).unwrap().stage(), SeedStage::Fossilized);
}

#[test]
fn counterfactual_forward_is_the_host_alone() {
    let r = norm_registry();
    let m = model_in_stage(&r, CnnHostConfig::default(), SLOT, isolated(), SeedStage::Holding);
    // Make the seed matter: a large blend scale.
    let scale = &m.slot(SLOT).unwrap().seed().unwrap().vars().variables()["scale"];
    let _ = tch::no_grad(|| scale.shallow_clone().fill_(3.0));
    let (x, _) = batch(4, Device::Cpu);
    let full = m.forward(&x, false).unwrap();
    let counterfactual = m.forward_counterfactual(&x, SLOT).unwrap();
    let mut host_only = MorphogeneticModel::new(CnnHostConfig::default(), &[SLOT], isolated(), Device::Cpu).unwrap();
    host_only.host_vars_mut().copy(m.host_vars()).unwrap();
    let host = host_only.forward(&x, false).unwrap();
    assert!(counterfactual.equal(&host), "alpha forced to 0 is the host");
    assert!((full - &host).abs().max().double_value(&[]) > 1e-4, "the seed changes the output");
}

#[test]
fn bug013_monitor_groups_per_device_and_measures_on_cpu() {
    let r = norm_registry();
    let mut m = model_in_stage(&r, CnnHostConfig::default(), SLOT, isolated(), SeedStage::Training);
    let (x, y) = batch(4, Device::Cpu);
    train_step(&mut m, &x, &y);
    let slot = m.slot(SLOT).unwrap();
    let monitor = slot.monitor().unwrap();
    assert_eq!(monitor.devices(), (vec![Device::Cpu], vec![Device::Cpu]));
    let s = monitor.sample().unwrap();
    assert!(s.host_norm > 0.0 && s.seed_norm > 0.0);
    assert_eq!(s.seed_param_norms.len(), 3);
    let expected = (s.seed_norm / s.host_norm
        * (m.host_parameters().iter().map(|p| p.numel()).sum::<usize>() as f64 / 129.0).sqrt())
    .min(10.0);
    assert!((s.ratio - expected).abs() < 1e-4 * expected.max(1.0), "{} vs {expected}", s.ratio);
}

#[test]
fn a_gate_network_is_made_when_its_seed_enters_blending_ramps_linearly_and_is_not_the_seeds() {
    let r = norm_registry();
    let host = CnnHostConfig { base_channels: 8, ..Default::default() };
    let blend = BlendSettings { algorithm: BlendAlgorithm::Gate, ..Default::default() };
    let config = SlotConfig { blend, ..Default::default() };
    let m = model_in_stage(&r, host.clone(), SLOT, config.clone(), SeedStage::Training);
    let slot = m.slot(SLOT).unwrap();
    assert!(slot.gate_parameters().is_empty(), "no gate network while the seed trains alone");
    assert_eq!(slot.lifecycle().state().unwrap().blend().curve, esper_runtime::lifecycle::AlphaCurve::Linear);
    let m = model_in_stage(&r, host, SLOT, config, SeedStage::Blending);
    let slot = m.slot(SLOT).unwrap();
    let channels = slot.channels();
    let gate: i64 = slot.gate_parameters().iter().map(|t| t.numel() as i64).sum();
    assert_eq!(gate, channels * 8 + 8 + 8 + 1, "hidden width max(8, C/4) = 8 at C = {channels}");
    // The monitor's seed side is the seed alone (norm: 2C + 1), not its gate.
    let (_, seed_side) = slot.monitor().unwrap().param_counts();
    assert_eq!(seed_side as i64, 2 * channels + 1);
    assert_eq!(slot.seed_parameters().len(), 3 + 4, "seed and gate, for the optimizers");
}

/// The host's gradients after one step on a fixed batch, with a `norm` seed in `stage`
/// (or none), its slot configured with `isolate_gradients`.
fn host_gradients(stage: Option<SeedStage>, isolate_gradients: bool) -> Vec<Tensor> {
    let r = norm_registry();
    let host = CnnHostConfig { base_channels: 8, ..Default::default() };
    let config = SlotConfig { isolate_gradients, ..Default::default() };
    let m = match stage {
        Some(stage) => model_in_stage(&r, host, SLOT, config, stage),
        None => MorphogeneticModel::new(host, &[SLOT], config, Device::Cpu).unwrap(),
    };
    // The same host weights and batch every time, from no random generator (tests on
    // other threads draw from the global one meanwhile).
    let wave = |n: i64, phase: f64| (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + phase).sin();
    tch::no_grad(|| {
        for (i, p) in m.host_parameters().iter().enumerate() {
            p.shallow_clone().copy_(&(wave(p.numel() as i64, i as f64) * 0.2).reshape(p.size()));
        }
    });
    if let Some(seed) = m.slot(SLOT).unwrap().seed() {
        // Away from identity at birth, so that gradients through the seed differ.
        tch::no_grad(|| seed.trainable().iter().for_each(|p| drop(p.shallow_clone().fill_(0.5))));
    }
    for mut p in m.host_parameters() {
        p.zero_grad();
    }
    let x = wave(4 * 3 * 32 * 32, 0.5).reshape([4, 3, 32, 32]);
    let y = Tensor::from_slice(&[1i64, 7, 3, 0]);
    m.forward(&x, true).unwrap().cross_entropy_for_logits(&y).backward();
    m.host_parameters().iter().map(|p| p.grad().copy()).collect()
}

#[test]
fn isolation_is_forced_in_training_and_configurable_from_blending_on() {
    let alone = host_gradients(None, false);
    let same = |a: &[Tensor], b: &[Tensor]| a.iter().zip(b).all(|(x, y)| x.allclose(y, 1e-6, 1e-7, false));
    // TRAINING with isolate_gradients = false: the seed's input is detached anyway, so
    // the host's gradients are those without the seed.
    assert!(same(&host_gradients(Some(SeedStage::Training), false), &alone));
    // BLENDING with isolate_gradients = false: the config is honoured, gradients flow back
    // through the seed into the host (alpha > 0 once the ramp has started).
    assert!(!same(&host_gradients(Some(SeedStage::Holding), false), &alone));
}

fn cnn_registry() -> BlueprintRegistry {
    let mut r = BlueprintRegistry::new();
    r.load(&plugin_lib("esper-cnn")).expect("load cnn");
    r
}

#[test]
fn the_multiply_rule_zeroes_a_seeds_output_layer_so_the_blend_starts_neutral() {
    let registry = cnn_registry();
    let x = Tensor::randn([2, 64, 8, 8], (Kind::Float, Device::Cpu));
    for (blueprint, output_layer) in [
        ("conv_light", vec!["enhance_conv_weight"]),
        ("conv_heavy", vec!["enhance_1_conv_weight"]),
        ("attention", vec!["fc_2_weight", "fc_2_bias"]),
        ("depthwise", vec!["pointwise_weight"]),
    ] {
        let seed = registry.create_seed(blueprint, 64, &serde_json::Value::Null, Device::Cpu).unwrap();
        assert_eq!(seed.output_layer(), output_layer.as_slice(), "{blueprint} marks its last layer");
        for blend in [BlendAlgorithm::Add, BlendAlgorithm::Multiply] {
            let config =
                SlotConfig { blend: BlendSettings { algorithm: blend, ..Default::default() }, ..Default::default() };
            let mut model = MorphogeneticModel::new(CnnHostConfig::default(), &["r0c1"], config, Device::Cpu).unwrap();
            germinate(&mut model, &registry, "r0c1", blueprint, "s1", &serde_json::Value::Null).unwrap();
            let seed = model.slot("r0c1").unwrap().seed().expect("a live seed");
            let zeroed = seed
                .vars()
                .variables()
                .iter()
                .filter(|(n, _)| output_layer.contains(&n.as_str()))
                .all(|(_, t)| t.abs().sum(Kind::Float).double_value(&[]) == 0.0);
            let y = tch::no_grad(|| seed.forward(&x, false).unwrap());
            let neutral = (&y - &x).abs().max().double_value(&[]) == 0.0;
            match (blueprint, blend) {
                (_, BlendAlgorithm::Multiply) => {
                    assert!(zeroed, "{blueprint} under MULTIPLY: its output layer is zeroed");
                    if blueprint != "attention" {
                        assert!(neutral, "{blueprint} under MULTIPLY: output equals input at birth");
                    } else {
                        // The gate is sigmoid(0) = 0.5 for every channel: y = x / 2.
                        assert!((&y - &x * 0.5).abs().max().double_value(&[]) < 1e-6, "attention: y = x / 2");
                    }
                }
                ("attention", _) => assert!(!zeroed, "attention under ADD keeps its gate bias 3"),
                (_, _) => assert!(!zeroed && !neutral, "{blueprint} under ADD keeps its init"),
            }
        }
    }
}
