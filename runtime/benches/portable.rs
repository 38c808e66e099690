//! Portable against native `norm`, in one run, on the CPU:
//!
//! * `forward`: one seed forward (eval, no grad) on (1, 64, 8, 8): the per-call cost of
//!   the op table (five ops, each a call through it) against the native plugin's one
//!   call into code linked with its own libtorch;
//! * `step`: a batch-8 training step of the host with the seed at `r0c1` in TRAINING
//!   (isolation layer, straight-through estimator, SGD), as in `training_step`.
//!
//! Needs the release plugins: `cargo build --release -p esper-norm -p esper-norm-portable`
//! (scripts/bench.sh does).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use esper_runtime::{
    host::{CnnHost, CnnHostConfig},
    isolation::{seed_input, straight_through},
    plugin::{BlueprintRegistry, PluginSeed},
};
use std::time::Duration;
use tch::{
    nn::{self, OptimizerConfig},
    Device, Kind, Tensor,
};

const SLOT: &str = "r0c1";
const CHANNELS: i64 = 64;

fn seed(crate_name: &str) -> PluginSeed {
    let dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let lib = dir.join(format!("lib{}.so", crate_name.replace('-', "_")));
    assert!(
        lib.is_file(),
        "{} missing: run `cargo build --release -p {crate_name}` (scripts/bench.sh does)",
        lib.display()
    );
    let mut registry = BlueprintRegistry::new();
    registry.load(&lib).unwrap();
    registry.create_seed("norm", CHANNELS, &serde_json::Value::Null, Device::Cpu).unwrap()
}

fn bench(c: &mut Criterion) {
    tch::manual_seed(0);
    let seeds = [("native", seed("esper-norm")), ("portable", seed("esper-norm-portable"))];

    let mut group = c.benchmark_group("portable_vs_native_forward");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let x = Tensor::randn([1, CHANNELS, 8, 8], (Kind::Float, Device::Cpu));
    {
        let _guard = tch::no_grad_guard();
        for (name, s) in &seeds {
            group.bench_function(*name, |b| b.iter(|| s.forward(&x, false).unwrap()));
        }
    }
    group.finish();

    let mut group = c.benchmark_group("portable_vs_native_step");
    group.sample_size(20).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(6));
    let batch = 8i64;
    let host_vs = nn::VarStore::new(Device::Cpu);
    let host = CnnHost::new(&host_vs.root(), CnnHostConfig::default()).unwrap();
    let mut host_opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&host_vs, 0.01).unwrap();
    let x = Tensor::randn([batch, 3, 32, 32], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu));
    let (to_slot, from_slot) = (host.segment(None, Some(SLOT)).unwrap(), host.segment(Some(SLOT), None).unwrap());
    for (name, s) in &seeds {
        let mut seed_opt = nn::Sgd::default().build(s.vars(), 0.01).unwrap();
        group.bench_function(BenchmarkId::new(*name, batch), |b| {
            b.iter(|| {
                let h = host.run_segment(to_slot, &host.prepare_input(&x), true);
                let y = s.forward(&seed_input(&h, true), true).unwrap();
                let loss =
                    host.run_segment(from_slot, &straight_through(&h, &y), true).cross_entropy_for_logits(&labels);
                host_opt.zero_grad();
                seed_opt.zero_grad();
                loss.backward();
                host_opt.step();
                seed_opt.step();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
