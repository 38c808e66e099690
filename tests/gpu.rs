//! CUDA tests: BUG-013 with the host on the CPU and the seed on CUDA, and FEAT-006 (the
//! monitor follows a model moved to CUDA). Skipped, saying so, without a CUDA device.

use esper_runtime::{
    device::cuda_available, host::CnnHostConfig, isolation::GradientHealthMonitor, lifecycle::SeedStage,
    model::SlotConfig,
};
use esper_tests::model::{batch, model_in_stage, norm_registry, train_step};
use tch::{Device, Kind, Tensor};

fn cuda() -> Option<Device> {
    if cuda_available() {
        Some(Device::Cuda(0))
    } else {
        // Written past libtest's output capture, so the skip shows in every run.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device (libtorch's CUDA backend unavailable or no GPU)");
        None
    }
}

#[test]
fn bug013_host_on_cpu_seed_on_cuda() {
    let Some(gpu) = cuda() else { return };
    let r = norm_registry();
    let seed = r.create_seed("norm", 16, &serde_json::Value::Null, gpu).unwrap();
    let host_param = Tensor::randn([16, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    (&host_param * &host_param).sum(Kind::Float).backward();
    let x = Tensor::randn([2, 16, 8, 8], (Kind::Float, gpu));
    seed.forward(&x, true).unwrap().square().sum(Kind::Float).backward();
    let monitor = GradientHealthMonitor::new(&[host_param.shallow_clone()], &seed.trainable());
    assert_eq!(monitor.devices(), (vec![Device::Cpu], vec![gpu]));
    let s = monitor.sample().expect("mixed devices are measured");
    let host_norm = (host_param.grad().norm()).double_value(&[]);
    assert!((s.host_norm - host_norm).abs() < 1e-3 * host_norm, "{s:?}");
    assert!(s.seed_norm > 0.0 && s.ratio.is_finite());
}

#[test]
fn feat006_monitor_follows_the_model_to_cuda() {
    let Some(gpu) = cuda() else { return };
    let r = norm_registry();
    let mut m = model_in_stage(&r, CnnHostConfig::default(), "r0c1", SlotConfig::default(), SeedStage::Training);
    m.set_device(gpu);
    assert_eq!(m.device(), gpu);
    let monitor = m.slot("r0c1").unwrap().monitor().unwrap();
    assert_eq!(monitor.devices(), (vec![gpu], vec![gpu]));
    let (x, y) = batch(4, gpu);
    assert!(train_step(&mut m, &x, &y).is_finite());
    let ratio = m.slot("r0c1").unwrap().lifecycle().state().unwrap().metrics().seed_gradient_norm_ratio();
    assert!(ratio.is_some_and(f64::is_finite));
    assert!(m.seed_parameters().iter().all(|p| p.device() == gpu));
}
