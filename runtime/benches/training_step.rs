//! One training step (forward, backward, SGD) of the CNN host at batch 8 and 128:
//!
//! * `host`: the host alone;
//! * `plugin`: host + `norm` seed in TRAINING at `r0c1`, through the plugin boundary and
//!   the isolation layer (contiguous-detached input, straight-through estimator);
//! * `in_process`: the same, with the norm math written here, no plugin boundary.
//!
//! And `seed_forward`: the norm seed's forward alone on a (1, 64, 8, 8) input, through
//! the plugin and in-process, to isolate the per-call cost of the boundary.
//!
//! Needs the release plugin: `cargo build --release -p esper-norm` (scripts/bench.sh).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use esper_runtime::{
    host::{CnnHost, CnnHostConfig},
    isolation::{seed_input, straight_through},
    plugin::BlueprintRegistry,
};
use std::time::Duration;
use tch::{
    nn::{self, OptimizerConfig},
    Device, Kind, Tensor,
};

const SLOT: &str = "r0c1";
const CHANNELS: i64 = 64; // r0c1 of the default host

fn plugin_path() -> std::path::PathBuf {
    let dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let p = dir.join("libesper_norm.so");
    assert!(
        p.is_file(),
        "{} missing: run `cargo build --release -p esper-norm` first (scripts/bench.sh does)",
        p.display()
    );
    p
}

struct InProcessNorm {
    weight: Tensor,
    bias: Tensor,
    scale: Tensor,
}

impl InProcessNorm {
    /// The norm seed's parameters, initialised as the plugin's are.
    fn new(vs: &nn::VarStore) -> Self {
        let root = vs.root();
        Self {
            weight: root.var("weight", &[CHANNELS], nn::Init::Const(1.0)),
            bias: root.var("bias", &[CHANNELS], nn::Init::Const(0.0)),
            scale: root.var("scale", &[1], nn::Init::Const(0.0)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let normed = x.group_norm(4, Some(&self.weight), Some(&self.bias), 1e-5, true);
        x + self.scale.tanh() * (normed - x)
    }
}

fn bench(c: &mut Criterion) {
    tch::manual_seed(0);
    let mut registry = BlueprintRegistry::new();
    registry.load(&plugin_path()).unwrap();
    let mut group = c.benchmark_group("training_step");
    group.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(6));
    for batch in [8i64, 128] {
        let host_vs = nn::VarStore::new(Device::Cpu);
        let host = CnnHost::new(&host_vs.root(), CnnHostConfig::default()).unwrap();
        let mut host_opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&host_vs, 0.01).unwrap();
        let x = Tensor::randn([batch, 3, 32, 32], (Kind::Float, Device::Cpu));
        let labels = Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu));
        let (to_slot, from_slot) = (host.segment(None, Some(SLOT)).unwrap(), host.segment(Some(SLOT), None).unwrap());

        let seed = registry.create_seed("norm", CHANNELS, &serde_json::Value::Null, Device::Cpu).unwrap();
        let mut seed_opt = nn::Sgd::default().build(seed.vars(), 0.01).unwrap();
        let local_vs = nn::VarStore::new(Device::Cpu);
        let local = InProcessNorm::new(&local_vs);
        let mut local_opt = nn::Sgd::default().build(&local_vs, 0.01).unwrap();

        group.bench_function(BenchmarkId::new("host", batch), |b| {
            b.iter(|| {
                let loss = host.forward(&x, true).cross_entropy_for_logits(&labels);
                host_opt.backward_step(&loss);
            })
        });
        group.bench_function(BenchmarkId::new("plugin", batch), |b| {
            b.iter(|| {
                let h = host.run_segment(to_slot, &host.prepare_input(&x), true);
                let s = seed.forward(&seed_input(&h, true), true).unwrap();
                let loss =
                    host.run_segment(from_slot, &straight_through(&h, &s), true).cross_entropy_for_logits(&labels);
                host_opt.zero_grad();
                seed_opt.zero_grad();
                loss.backward();
                host_opt.step();
                seed_opt.step();
            })
        });
        group.bench_function(BenchmarkId::new("in_process", batch), |b| {
            b.iter(|| {
                let h = host.run_segment(to_slot, &host.prepare_input(&x), true);
                let s = local.forward(&seed_input(&h, true));
                let loss =
                    host.run_segment(from_slot, &straight_through(&h, &s), true).cross_entropy_for_logits(&labels);
                host_opt.zero_grad();
                local_opt.zero_grad();
                loss.backward();
                host_opt.step();
                local_opt.step();
            })
        });
    }
    group.finish();

    // The boundary alone: one seed forward (eval, no grad) on a small input, where the
    // per-call cost of crossing the ABI is not hidden by the network's work.
    let mut group = c.benchmark_group("seed_forward");
    let seed = registry.create_seed("norm", CHANNELS, &serde_json::Value::Null, Device::Cpu).unwrap();
    let local_vs = nn::VarStore::new(Device::Cpu);
    let local = InProcessNorm::new(&local_vs);
    let x = Tensor::randn([1, CHANNELS, 8, 8], (Kind::Float, Device::Cpu));
    let _guard = tch::no_grad_guard();
    group.bench_function("plugin", |b| b.iter(|| seed.forward(&x, false).unwrap()));
    group.bench_function("in_process", |b| b.iter(|| local.forward(&x)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
