//! What the containment checks cost: one training step (forward, cross-entropy,
//! backward, SGD with momentum on host and seed) of the default host with a `norm` seed
//! in TRAINING at `r0c1`, side by side in one run:
//!
//! * `unchecked`: the host's segments, the plugin seed and the straight-through estimator
//!   called directly: no contract check, no finiteness flag, no copies;
//! * `checked`: the runtime's path as the trainer runs it: the model's forward (contract
//!   check of every seed output: input version, device, dtype, shape; the finiteness flag
//!   accumulated on the device), the per-step copy of the buffers a discarded step would
//!   restore, and every `GRADIENT_EVERY` steps the flag read and the copy of the whole
//!   state a non-finite seed would be rolled back to.
//!
//! And `snapshot`: that whole-state copy alone (host and seed parameters, buffers).
//!
//! Needs the release plugin: `cargo build --release -p esper-norm` (scripts/bench.sh).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use esper_runtime::{
    config::OptimizerConfig,
    host::CnnHostConfig,
    isolation::{seed_input, straight_through},
    lifecycle::QualityGates,
    model::{MorphogeneticModel, SlotConfig},
    plugin::BlueprintRegistry,
    train::{
        germinate,
        optim::{Optimizer, StateCopy},
        rollback::TensorCopy,
    },
};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

const SLOT: &str = "r0c1";
/// The default `[training] gradient_every`.
const GRADIENT_EVERY: usize = 10;

fn plugin_path() -> std::path::PathBuf {
    let dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let p = dir.join("libesper_norm.so");
    assert!(p.is_file(), "{} missing: run `cargo build --release -p esper-norm` first", p.display());
    p
}

fn bench(c: &mut Criterion) {
    tch::manual_seed(0);
    let mut registry = BlueprintRegistry::new();
    registry.load(&plugin_path()).unwrap();
    let sgd = OptimizerConfig::Sgd { lr: 0.01, momentum: 0.9, weight_decay: 0.0 };
    let mut group = c.benchmark_group("contract_checks");
    group.sample_size(20).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(8));
    for batch in [8i64, 128] {
        let mut model =
            MorphogeneticModel::new(CnnHostConfig::default(), &[SLOT], SlotConfig::default(), Device::Cpu).unwrap();
        germinate(&mut model, &registry, SLOT, "norm", "s1", &serde_json::Value::Null).unwrap();
        model.slot_mut(SLOT).unwrap().advance(&QualityGates::permissive()).unwrap(); // to TRAINING
        let mut host_opt = Optimizer::new(sgd, model.host_parameters());
        let mut seed_opt = Optimizer::new(sgd, model.seed_parameters());
        let x = Tensor::randn([batch, 3, 32, 32], (Kind::Float, Device::Cpu));
        let labels = Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu));
        let host = model.host();
        let (to_slot, from_slot) = (host.segment(None, Some(SLOT)).unwrap(), host.segment(Some(SLOT), None).unwrap());

        group.bench_function(BenchmarkId::new("unchecked", batch), |b| {
            let seed = model.slot(SLOT).unwrap().seed().unwrap();
            b.iter(|| {
                let h = host.run_segment(to_slot, &host.prepare_input(&x), true);
                let s = seed.forward(&seed_input(&h, true), true).unwrap();
                let logits = host.run_segment(from_slot, &straight_through(&h, &s).expect("same shapes"), true);
                let loss = logits.cross_entropy_for_logits(&labels);
                host_opt.zero_grad().unwrap();
                seed_opt.zero_grad().unwrap();
                loss.backward();
                host_opt.step().unwrap();
                seed_opt.step().unwrap();
            })
        });
        let mut buffers = TensorCopy::default();
        buffers.save(model.buffers()).unwrap();
        let mut good = TensorCopy::default();
        let (mut host_copy, mut seed_copy) = (StateCopy::default(), StateCopy::default());
        let mut step = 0usize;
        group.bench_function(BenchmarkId::new("checked", batch), |b| {
            b.iter(|| {
                buffers.refresh().unwrap();
                let logits = model.forward(&x, true).unwrap();
                let loss = logits.cross_entropy_for_logits(&labels);
                host_opt.zero_grad().unwrap();
                seed_opt.zero_grad().unwrap();
                loss.backward();
                if step.is_multiple_of(GRADIENT_EVERY) {
                    assert!(model.non_finite_slots().unwrap().is_empty());
                }
                host_opt.step().unwrap();
                seed_opt.step().unwrap();
                if step.is_multiple_of(GRADIENT_EVERY) {
                    good.save(model.state()).unwrap();
                    host_opt.save_into(&mut host_copy).unwrap();
                    seed_opt.save_into(&mut seed_copy).unwrap();
                }
                step += 1;
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("rollback_copy");
    let mut model =
        MorphogeneticModel::new(CnnHostConfig::default(), &[SLOT], SlotConfig::default(), Device::Cpu).unwrap();
    germinate(&mut model, &registry, SLOT, "norm", "s1", &serde_json::Value::Null).unwrap();
    // With the momentum buffers in place, as after the first step.
    let mut host_opt = Optimizer::new(sgd, model.host_parameters());
    let loss =
        model.forward(&Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu)), true).unwrap().mean(Kind::Float);
    loss.backward();
    host_opt.step().unwrap();
    let (mut good, mut host_copy) = (TensorCopy::default(), StateCopy::default());
    group.bench_function("snapshot", |b| {
        b.iter(|| {
            good.save(model.state()).unwrap();
            host_opt.save_into(&mut host_copy).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
