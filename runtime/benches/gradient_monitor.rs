//! The gradient monitor's reduction, as implemented (one norm per tensor, stacked and
//! summed per device), against flattening every gradient into one tensor and taking
//! a single norm (which must copy: channels-last gradients cannot be viewed flat).
//! Gradients of the default host after one backward (batch 8).

use criterion::{criterion_group, criterion_main, Criterion};
use esper_runtime::{
    host::{CnnHost, CnnHostConfig},
    isolation::GradientHealthMonitor,
};
use tch::{nn, Device, Kind, Tensor};

fn bench(c: &mut Criterion) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let host = CnnHost::new(&vs.root(), CnnHostConfig::default()).unwrap();
    let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
    host.forward(&x, true).sum(Kind::Float).backward();
    let params = vs.trainable_variables();
    let (host_params, seed_params) = params.split_at(params.len() - 2);
    let monitor = GradientHealthMonitor::new(host_params, seed_params);
    let mut group = c.benchmark_group("gradient_monitor");
    group.bench_function("per_tensor_norms_stacked", |b| b.iter(|| monitor.compute().unwrap()));
    group.bench_function("flatten_cat_single_norm", |b| {
        b.iter(|| {
            let flat =
                |ps: &[Tensor]| Tensor::cat(&ps.iter().map(|p| p.grad().reshape(-1)).collect::<Vec<_>>(), 0).norm();
            let (h, s) = (flat(host_params), flat(seed_params));
            (&s / &h).to_kind(Kind::Float)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
