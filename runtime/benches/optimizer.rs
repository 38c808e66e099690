//! The optimizer step alone, over the parameters of the default host plus a `norm`
//! seed's (14 tensors, about 94k elements), SGD with momentum 0.9 and weight decay
//! 5e-4: the per-parameter loop this runtime used before (three or four ops per
//! parameter, each a kernel launch on CUDA) against the fused step (`Optimizer::step`:
//! libtorch's `_foreach_*` kernels through the C++ shim). On the CPU, and on CUDA when
//! there is one.

use criterion::{criterion_group, criterion_main, Criterion};
use esper_runtime::{
    config::OptimizerConfig,
    host::{CnnHost, CnnHostConfig},
    train::optim::Optimizer,
};
use std::time::Duration;
use tch::{nn, Device, Kind, Tensor};

const LR: f64 = 0.01;
const MOMENTUM: f64 = 0.9;
const WEIGHT_DECAY: f64 = 5e-4;

/// The previous implementation: one parameter at a time.
fn per_parameter_step(params: &[Tensor], bufs: &mut [Tensor]) {
    tch::no_grad(|| {
        for (p, buf) in params.iter().zip(bufs.iter_mut()) {
            let g = p.grad();
            let g = &g + p * WEIGHT_DECAY;
            let _ = buf.g_mul_scalar_(MOMENTUM).g_add_(&g);
            let _ = p.shallow_clone().g_sub_(&(&*buf * LR));
        }
    });
}

fn parameters(device: Device) -> (nn::VarStore, Vec<Tensor>) {
    let vs = nn::VarStore::new(device);
    let _host = CnnHost::new(&vs.root(), CnnHostConfig::default()).unwrap();
    let seed = vs.root() / "seed";
    let _ = (seed.ones("weight", &[64]), seed.zeros("bias", &[64]), seed.zeros("scale", &[1]));
    let params = vs.trainable_variables();
    // Gradients: a backward of sum(p * noise) leaves noise in every p.grad.
    let loss = params.iter().map(|p| (p * Tensor::randn_like(p)).sum(Kind::Float)).reduce(|a, b| a + b).unwrap();
    loss.backward();
    (vs, params)
}

fn bench(c: &mut Criterion) {
    let mut devices = vec![Device::Cpu];
    if esper_runtime::device::cuda_available() {
        devices.push(Device::Cuda(0));
    }
    for device in devices {
        let name = if device == Device::Cpu { "cpu" } else { "cuda" };
        let (_vs, params) = parameters(device);
        let sync = || {
            if let Device::Cuda(i) = device {
                tch::Cuda::synchronize(i as i64);
            }
        };
        let mut group = c.benchmark_group(format!("optimizer_step_{name}"));
        group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        let mut bufs: Vec<Tensor> = params.iter().map(|p| p.zeros_like()).collect();
        group.bench_function("per_parameter", |b| {
            b.iter(|| {
                per_parameter_step(&params, &mut bufs);
                sync();
            })
        });
        let config = OptimizerConfig::Sgd { lr: LR, momentum: MOMENTUM, weight_decay: WEIGHT_DECAY };
        let mut fused = Optimizer::new(config, params.iter().map(Tensor::shallow_clone).collect());
        group.bench_function("fused", |b| {
            b.iter(|| {
                fused.step().unwrap();
                sync();
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
