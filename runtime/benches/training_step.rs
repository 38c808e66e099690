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
//! Then the boundary's cost against a batch-8 step, paired (the two variants alternated
//! call by call, medians; see `common`): plugin minus in-process seed forward, the one
//! crossing of the ABI a step makes (backward runs in libtorch's autograd graph either
//! way), as a share of the step, and the whole step through the plugin over in-process.
//!
//! Needs the release plugin: `cargo build --release -p esper-norm` (scripts/bench.sh).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use esper_runtime::plugin::BlueprintRegistry;
use std::time::Duration;

mod common;

const PAIRED_ROUNDS: usize = 400;
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
        let mut fixture = common::SeededStep::new(batch, SLOT);
        let seed = registry.create_seed("norm", CHANNELS, &serde_json::Value::Null, Device::Cpu).unwrap();
        let mut seed_opt = nn::Sgd::default().build(seed.vars(), 0.01).unwrap();
        let local_vs = nn::VarStore::new(Device::Cpu);
        let local = InProcessNorm::new(&local_vs);
        let mut local_opt = nn::Sgd::default().build(&local_vs, 0.01).unwrap();

        group.bench_function(BenchmarkId::new("host", batch), |b| b.iter(|| fixture.host_step()));
        group.bench_function(BenchmarkId::new("plugin", batch), |b| {
            b.iter(|| fixture.step(&|x| seed.forward(x, true).unwrap(), &mut seed_opt))
        });
        group.bench_function(BenchmarkId::new("in_process", batch), |b| {
            b.iter(|| fixture.step(&|x| local.forward(x), &mut local_opt))
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
    let (plugin_fwd, local_fwd) =
        common::paired(20 * PAIRED_ROUNDS, || drop(seed.forward(&x, false).unwrap()), || drop(local.forward(&x)));
    drop(_guard);
    boundary_share(&registry, plugin_fwd - local_fwd);
}

/// The boundary's per-call cost (`per_call_ms`) as a share of a batch-8 step, and the
/// paired step ratio (plugin / in-process).
fn boundary_share(registry: &BlueprintRegistry, per_call_ms: f64) {
    let batch = 8i64;
    let fixture = std::cell::RefCell::new(common::SeededStep::new(batch, SLOT));
    let seed = registry.create_seed("norm", CHANNELS, &serde_json::Value::Null, Device::Cpu).unwrap();
    let mut seed_opt = nn::Sgd::default().build(seed.vars(), 0.01).unwrap();
    let local_vs = nn::VarStore::new(Device::Cpu);
    let local = InProcessNorm::new(&local_vs);
    let mut local_opt = nn::Sgd::default().build(&local_vs, 0.01).unwrap();
    let (plugin_step, local_step) = common::paired(
        PAIRED_ROUNDS,
        || fixture.borrow_mut().step(&|x| seed.forward(x, true).unwrap(), &mut seed_opt),
        || fixture.borrow_mut().step(&|x| local.forward(x), &mut local_opt),
    );
    println!(
        "plugin_boundary/paired: seed forward plugin - in-process = {:.2} us per call, {:.3}% of a batch-{batch} step \
         ({:.3} ms in-process); whole step plugin / in-process = {:.3} ({PAIRED_ROUNDS} alternated steps)",
        per_call_ms * 1e3,
        100.0 * per_call_ms / local_step,
        local_step,
        plugin_step / local_step
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
