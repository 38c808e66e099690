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
use esper_runtime::{
    host::{CnnHost, CnnHostConfig},
    isolation::{seed_input, straight_through},
    plugin::{BlueprintRegistry, PluginSeed},
};
use std::time::{Duration, Instant};
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
    let host_vs = nn::VarStore::new(Device::Cpu);
    let host = CnnHost::new(&host_vs.root(), CnnHostConfig::default()).unwrap();
    let mut host_opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&host_vs, 0.01).unwrap();
    let x = Tensor::randn([batch, 3, 32, 32], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu));
    let (to_slot, from_slot) = (host.segment(None, Some(SLOT)).unwrap(), host.segment(Some(SLOT), None).unwrap());
    let mut opts: Vec<nn::Optimizer> =
        seeds.iter().map(|(_, s)| nn::Sgd::default().build(s.vars(), 0.01).unwrap()).collect();
    let mut step = |i: usize| {
        let s = &seeds[i].1;
        let h = host.run_segment(to_slot, &host.prepare_input(&x), true);
        let y = s.forward(&seed_input(&h, true), true).unwrap();
        let loss = host.run_segment(from_slot, &straight_through(&h, &y), true).cross_entropy_for_logits(&labels);
        host_opt.zero_grad();
        opts[i].zero_grad();
        loss.backward();
        host_opt.step();
        opts[i].step();
    };
    for (i, (name, _)) in seeds.iter().enumerate() {
        group.bench_function(BenchmarkId::new(*name, batch), |b| b.iter(|| step(i)));
    }
    group.finish();

    // Paired: the two alternated, each step timed.
    let mut times = [Vec::with_capacity(PAIRED_ROUNDS), Vec::with_capacity(PAIRED_ROUNDS)];
    for round in 0..PAIRED_ROUNDS {
        for k in 0..2 {
            let i = (round + k) % 2; // who goes first alternates too
            let started = Instant::now();
            step(i);
            times[i].push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (native, portable) = (median(&mut times[0]), median(&mut times[1]));
    println!(
        "portable_vs_native_step/paired/{batch}: native {native:.3} ms, portable {portable:.3} ms (medians of \
         {PAIRED_ROUNDS} alternated steps each), portable / native = {:.3}",
        portable / native
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
