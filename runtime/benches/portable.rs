//! Portable against native `norm`, in one run, on the CPU:
//!
//! * `forward`: one seed forward (eval, no grad) on (1, 64, 8, 8): the per-call cost of
//!   the op table (five ops, each a call through it) against the native plugin's one
//!   call into code linked with its own libtorch;
//! * `step`: a batch-8 training step of the host with the seed at `r0c1` in TRAINING
//!   (isolation layer, straight-through estimator, SGD), as in `training_step`;
//! * `paired`: the same step, native and portable alternated for `PAIRED_ROUNDS` rounds
//!   and timed one by one, printed as the two medians and their ratio: on a 2-core
//!   machine criterion's separate runs of the two move by 10-15% with the machine's
//!   noise, far more than the difference it is meant to show.
//!
//! Needs the release plugins: `cargo build --release -p esper-norm -p esper-norm-portable`
//! (scripts/bench.sh does).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use esper_runtime::plugin::{BlueprintRegistry, PluginSeed};
use std::time::Duration;

mod common;
use tch::{
    nn::{self, OptimizerConfig},
    Device, Kind, Tensor,
};

const SLOT: &str = "r0c1";
const PAIRED_ROUNDS: usize = 200;
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
    let fixture = std::cell::RefCell::new(common::SeededStep::new(batch, SLOT));
    let opts: Vec<std::cell::RefCell<nn::Optimizer>> =
        seeds.iter().map(|(_, s)| std::cell::RefCell::new(nn::Sgd::default().build(s.vars(), 0.01).unwrap())).collect();
    let step = |i: usize| {
        let forward = |x: &Tensor| seeds[i].1.forward(x, true).unwrap();
        fixture.borrow_mut().step(&forward, &mut opts[i].borrow_mut());
    };
    for (i, (name, _)) in seeds.iter().enumerate() {
        group.bench_function(BenchmarkId::new(*name, batch), |b| b.iter(|| step(i)));
    }
    group.finish();

    // Paired: the two alternated, each step timed.
    let (native, portable) = common::paired(PAIRED_ROUNDS, || step(0), || step(1));
    println!(
        "portable_vs_native_step/paired/{batch}: native {native:.3} ms, portable {portable:.3} ms (medians of \
         {PAIRED_ROUNDS} alternated steps each), portable / native = {:.3}",
        portable / native
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
