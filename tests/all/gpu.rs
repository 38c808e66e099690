//! CUDA tests: the BUG-013 monitor made exact on mixed CPU/CUDA models, BUG-013 with a
//! real seed, FEAT-006 (the monitor follows a model moved to CUDA), and whole-step CUDA
//! graphs (replays equal eager steps across germination and stage changes; a seed whose
//! forward cannot be captured runs eagerly, unblamed), the fused ReLU + max-pool
//! kernels (exactly libtorch's values and gradients) and the fused BatchNorm + ReLU (+
//! pool) kernels (libtorch's values to rounding), the SGD kernel (exactly libtorch's
//! `_foreach_*` steps), the first convolution's kernels and the weight-gradient kernel (a
//! float64 reference).
//!
//! Every test here is `#[ignore]`d, so a plain `cargo test` on a machine without a GPU
//! does not count them as passed; `scripts/test-gpu.sh` runs them (`--ignored`), and each
//! one FAILS when no CUDA device can be used.

use esper_runtime::{
    config::RunConfig,
    device::cuda_available,
    distributed::RankEnv,
    host::{is_channels_last, to_channels_last, CnnHostConfig, HostKernels},
    isolation::{GradientHealthMonitor, GradientSample},
    lifecycle::{LifecycleEvent, SeedStage},
    model::SlotConfig,
    train::{Silent, Trainer},
};
use esper_tests::model::{batch, model_in_stage, norm_registry, train_step};
use esper_tests::{plugin_lib, temp_dir, write_file, SmallJob};
use tch::{Device, Kind, Tensor};

/// A parameter's element count and device.
type Spec = (i64, Device);

/// The documented clamp of the gradient ratio.
const RATIO_CLAMP: f64 = 10.0;

/// The CUDA device; fails the test, saying why, when there is none.
fn gpu() -> Device {
    assert!(
        cuda_available(),
        "this test needs CUDA, and none can be used here (libtorch_cuda.so could not be loaded, or libtorch \
         sees no GPU); run it on a GPU machine with scripts/test-gpu.sh"
    );
    Device::Cuda(0)
}

/// Parameters of the given sizes on the given devices, each with a known gradient g
/// (set through backward of `sum(p * g)`, so the gradient is g exactly), returned as
/// float64 CPU copies for the reference. The gradients on CUDA depend on a large matmul
/// (contributing exactly zero), so they are still being computed when backward returns:
/// a read that does not wait for the device would see them unfinished.
fn params_with_grads(specs: &[Spec], scale: f64, delay: &Tensor) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut params = Vec::new();
    let mut grads = Vec::new();
    for &(n, device) in specs {
        let p = Tensor::zeros([n], (Kind::Float, device)).set_requires_grad(true);
        let mut g = Tensor::randn([n], (Kind::Float, device)) * scale;
        if device.is_cuda() {
            // tanh keeps the sum finite, so the product is an exact 0.
            g += delay.mm(delay).tanh().sum(Kind::Float) * 0.0;
        }
        (&p * &g).sum(Kind::Float).backward();
        params.push(p);
        grads.push(g);
    }
    (params, grads)
}

/// `||g||` over all of `grads`, in float64 on the CPU.
fn norm64(grads: &[Tensor]) -> f64 {
    grads
        .iter()
        .map(|g| g.to_device(Device::Cpu).to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt()
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(f64::MIN_POSITIVE)
}

/// What the monitor should report, computed on the CPU in float64 from the gradients.
fn reference(host: &[Spec], host_g: &[Tensor], seed: &[Spec], seed_g: &[Tensor]) -> GradientSample {
    let (h, s) = (norm64(host_g), norm64(seed_g));
    let numel = |specs: &[Spec]| specs.iter().map(|(n, _)| *n).sum::<i64>() as f64;
    let ratio = if h < 1e-8 { 0.0 } else { ((s / h) * (numel(host) / numel(seed)).sqrt()).min(RATIO_CLAMP) };
    GradientSample {
        host_norm: h,
        seed_norm: s,
        ratio,
        seed_param_norms: seed_g.iter().map(|g| norm64(std::slice::from_ref(g))).collect(),
    }
}

/// 200 rounds of fresh random gradients (scales spread over 4 decades, so the ratio is
/// clamped in some rounds); every value within 1e-5 relative of the float64 reference.
/// Also counts how often a non-blocking device→host copy read at once (the old monitor's
/// pattern) gave a wrong seed norm, to show the rounds do leave work in flight.
fn monitor_is_exact(host: &[Spec], seed: &[Spec]) {
    const ROUNDS: usize = 200;
    const TOL: f64 = 1e-5;
    let cuda = gpu();
    tch::manual_seed(13);
    let delay = Tensor::randn([2048, 2048], (Kind::Float, cuda));
    let mut racy_wrong = 0;
    let mut clamped = 0;
    for round in 0..ROUNDS {
        let scales = Tensor::rand([2], (Kind::Double, Device::Cpu)) * 4.0 - 3.0; // log10 in [-3, 1)
        let (host_scale, seed_scale) = (10f64.powf(scales.double_value(&[0])), 10f64.powf(scales.double_value(&[1])));
        let (host_p, host_g) = params_with_grads(host, host_scale, &delay);
        let (seed_p, seed_g) = params_with_grads(seed, seed_scale, &delay);
        let monitor = GradientHealthMonitor::new(&host_p, &seed_p);

        // The racy pattern, for comparison only: one CUDA gradient's norm copied with
        // non_blocking = true into pinned memory and read at once.
        let racy = seed_p.iter().chain(&host_p).find(|p| p.device().is_cuda()).map(|p| {
            let n = p.grad().norm().to_device_(Device::Cpu, Kind::Float, true, false).double_value(&[]);
            (n, norm64(&[p.grad()]))
        });

        let got = monitor.sample().expect("both sides have gradients");
        let want = reference(host, &host_g, seed, &seed_g);
        if let Some((n, exact)) = racy {
            racy_wrong += usize::from(rel(n, exact) > TOL);
        }
        clamped += usize::from(want.ratio == RATIO_CLAMP);
        let ctx = || format!("round {round}: monitor {got:?}\nreference {want:?}");
        assert!(rel(got.host_norm, want.host_norm) < TOL, "host_norm: {}", ctx());
        assert!(rel(got.seed_norm, want.seed_norm) < TOL, "seed_norm: {}", ctx());
        assert!(rel(got.ratio, want.ratio) < TOL, "ratio: {}", ctx());
        assert_eq!(got.seed_param_norms.len(), want.seed_param_norms.len(), "{}", ctx());
        for (i, (g, w)) in got.seed_param_norms.iter().zip(&want.seed_param_norms).enumerate() {
            assert!(rel(*g, *w) < TOL, "seed parameter {i}: {}", ctx());
        }
    }
    eprintln!(
        "monitor exact in {ROUNDS}/{ROUNDS} rounds (host on {:?}, seed on {:?}; {clamped} with the ratio clamped); \
         for comparison, a non-blocking copy read at once was wrong in {racy_wrong}/{ROUNDS}",
        host.iter().map(|(_, d)| *d).collect::<Vec<_>>(),
        seed.iter().map(|(_, d)| *d).collect::<Vec<_>>(),
    );
    assert!(clamped < ROUNDS, "the rounds must exercise the unclamped ratio too");
}

/// Host-like and seed-like parameter sizes (a large tensor, a bias, a conv kernel, a
/// scalar) all on `host` and `seed` devices respectively.
fn layout(host: Device, seed: Device) -> (Vec<Spec>, Vec<Spec>) {
    (
        vec![(1 << 20, host), (4097, host), (64 * 3 * 3 * 3, host), (1, host)],
        vec![(1 << 21, seed), (64, seed), (3, seed), (1, seed)],
    )
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn bug013_monitor_is_exact_host_on_cpu_seed_on_cuda() {
    let (host, seed) = layout(Device::Cpu, gpu());
    monitor_is_exact(&host, &seed);
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn bug013_monitor_is_exact_host_on_cuda_seed_on_cpu() {
    let (host, seed) = layout(gpu(), Device::Cpu);
    monitor_is_exact(&host, &seed);
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn bug013_monitor_is_exact_with_devices_interleaved() {
    // Both sides split over CPU and CUDA: per-parameter norms must come back in
    // parameter order although they are reduced per device.
    let cuda = gpu();
    let (mut host, mut seed) = layout(Device::Cpu, Device::Cpu);
    host.iter_mut().step_by(2).for_each(|(_, d)| *d = cuda);
    seed.iter_mut().skip(1).step_by(2).for_each(|(_, d)| *d = cuda);
    monitor_is_exact(&host, &seed);
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn monitor_is_exact_all_on_cuda() {
    let cuda = gpu();
    let (host, seed) = layout(cuda, cuda);
    monitor_is_exact(&host, &seed);
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn bug013_host_on_cpu_seed_on_cuda() {
    let gpu = gpu();
    let r = norm_registry();
    let seed = r.create_seed("norm", 16, &serde_json::Value::Null, gpu).unwrap();
    let host_param = Tensor::randn([16, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    (&host_param * &host_param).sum(Kind::Float).backward();
    let x = Tensor::randn([2, 16, 8, 8], (Kind::Float, gpu));
    seed.forward(&x, true).unwrap().square().sum(Kind::Float).backward();
    let trainable = seed.trainable();
    let monitor = GradientHealthMonitor::new(&[host_param.shallow_clone()], &trainable);
    assert_eq!(monitor.devices(), (vec![Device::Cpu], vec![gpu]));
    let s = monitor.sample().expect("mixed devices are measured");
    let seed_grads: Vec<Tensor> = trainable.iter().map(Tensor::grad).filter(Tensor::defined).collect();
    assert!(rel(s.host_norm, norm64(&[host_param.grad()])) < 1e-5, "{s:?}");
    assert!(rel(s.seed_norm, norm64(&seed_grads)) < 1e-5, "{s:?}");
    assert!(s.seed_norm > 0.0 && s.ratio.is_finite(), "{s:?}");
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn feat006_monitor_follows_the_model_to_cuda() {
    let gpu = gpu();
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

/// The small job of `tests/src` on CUDA with `cuda_graph = mode`: a `blueprint` seed from
/// `plugin` germinated before epoch 1, permissive gates and a 2-epoch ramp, so over
/// `epochs` epochs the seed goes GERMINATED, TRAINING, BLENDING (alpha moving), HOLDING:
/// a topology change at every epoch boundary but the ramp's.
fn graph_job(name: &str, plugin: &std::path::Path, blueprint: &str, mode: &str, epochs: u32) -> Trainer {
    graph_job_with(name, plugin, blueprint, mode, epochs, "")
}

/// [`graph_job`] with more `[training]` lines.
fn graph_job_with(
    name: &str,
    plugin: &std::path::Path,
    blueprint: &str,
    mode: &str,
    epochs: u32,
    training: &str,
) -> Trainer {
    let config = graph_config(name, plugin, blueprint, mode, epochs, training, "");
    let mut t = Trainer::new(config).unwrap();
    t.run(&mut Silent).unwrap();
    t
}

/// [`graph_job_with`]'s config, with the sections `more` added.
fn graph_config(
    name: &str,
    plugin: &std::path::Path,
    blueprint: &str,
    mode: &str,
    epochs: u32,
    training: &str,
    more: &str,
) -> RunConfig {
    let dir = temp_dir(name);
    let sections = format!(
        "[slot]\nblend_tempo = 2\n\n[lifecycle.gates]\nmode = \"permissive\"\nmin_blending_epochs = 1\n\
         min_gradient_health_for_blending = 0.0\n{more}"
    );
    let sections = sections.as_str();
    let job = SmallJob {
        plugin,
        epochs,
        batch_size: 32,
        memory_format: "channels_last",
        blueprint: Some(blueprint),
        sections,
    };
    let text = job
        .text()
        .replace("device = \"cpu\"", "device = \"cuda\"")
        .replace("train_size = 256", "train_size = 512")
        .replace("gradient_every = 2", &format!("gradient_every = 4\ncuda_graph = \"{mode}\"\n{training}"));
    RunConfig::load(&write_file(&dir, "run.toml", &text)).unwrap()
}

/// Every lifecycle event of the run, in order.
fn events(t: &Trainer) -> Vec<&LifecycleEvent> {
    t.history().iter().flat_map(|r| r.events.iter()).collect()
}

fn state(t: &Trainer) -> Vec<Tensor> {
    let mut p = t.model().host_parameters();
    p.extend(t.model().seed_parameters());
    p.extend(t.model().buffers().into_iter().map(|(_, b)| b));
    p.iter().map(|t| t.to_device(Device::Cpu)).collect()
}

fn max_abs_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.to_kind(Kind::Double) - y.to_kind(Kind::Double)).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// A libtorch setting (one of the shim's setters, which return the previous value) held
/// at a value while alive; the previous value back on drop.
struct Held {
    set: fn(bool) -> bool,
    previous: bool,
}

impl Held {
    fn at(set: fn(bool) -> bool, value: bool) -> Self {
        Self { set, previous: set(value) }
    }

    /// cuDNN's deterministic algorithms.
    fn deterministic_cudnn() -> Self {
        Self::at(esper_torch_shim::set_deterministic_cudnn, true)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        (self.set)(self.previous);
    }
}

/// `t` rounded to TF32 in place (10-bit mantissa, to nearest, ties away from zero: the
/// rounding of the first convolution's tensor-core operands), through the CPU.
fn round_to_tf32(t: &Tensor) {
    let v: Vec<f32> = Vec::try_from(t.to_device(Device::Cpu).contiguous().view(-1)).unwrap();
    let r: Vec<f32> = v.iter().map(|x| f32::from_bits((x.to_bits() + 0x1000) & 0xffff_e000)).collect();
    let rounded = Tensor::from_slice(&r).view(t.size().as_slice()).to_device(t.device());
    tch::no_grad(|| t.shallow_clone().copy_(&rounded));
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn cuda_graph_replays_match_eager_steps_across_germination_and_stage_changes() {
    gpu();
    // cuDNN's deterministic algorithms: eager steps then repeat bit for bit, and so must
    // the replays (otherwise cuDNN's atomics make two eager runs drift apart, and a
    // lifecycle decision near its threshold can go either way).
    let _deterministic = Held::deterministic_cudnn();
    let norm = plugin_lib("esper-norm");
    let epochs = 5;
    let eager = graph_job("graph-eager", &norm, "norm", "off", epochs);
    let again = graph_job("graph-eager-again", &norm, "norm", "off", epochs);
    let graphed = graph_job("graph-auto", &norm, "norm", "auto", epochs);
    let stats = graphed.graph_stats();
    eprintln!("graph stats: {stats:?}, last refusal: {:?}", graphed.last_graph_refusal());
    assert_eq!(eager.graph_stats().replays, 0, "cuda_graph = \"off\" replays nothing");
    assert!(eager.graphs_off().is_some_and(|why| why.contains("off in the config")));
    assert_eq!(graphed.graphs_off(), None);
    assert_eq!(stats.refusals, 0, "{stats:?}");
    // One capture per topology: the seed's stages change at the epoch boundaries.
    assert!(stats.captures >= 3, "{stats:?}");
    assert!(stats.replays > stats.eager_steps, "{stats:?}");
    let stages = |t: &Trainer| t.history().iter().map(|r| r.slots[0].stage).collect::<Vec<_>>();
    assert_eq!(stages(&graphed), stages(&eager));
    assert!(stages(&eager).contains(&SeedStage::Blending), "{:?}", stages(&eager));
    // The same kernels in the same order: replays give the eager results. When eager
    // itself is not bit-reproducible here (cuDNN's atomics), within what eager differs by.
    let (e, a, g) = (state(&eager), state(&again), state(&graphed));
    let eager_noise = max_abs_diff(&e, &a);
    let graph_diff = max_abs_diff(&e, &g);
    eprintln!("max |eager - eager| = {eager_noise:e}, max |eager - graph| = {graph_diff:e}");
    if eager_noise == 0.0 {
        assert_eq!(graph_diff, 0.0, "eager is bit-reproducible here, so graph replays must be too");
    } else {
        assert!(graph_diff <= 10.0 * eager_noise.max(1e-6), "{graph_diff:e} vs eager noise {eager_noise:e}");
    }
    let acc = |t: &Trainer| t.history().iter().map(|r| r.val_accuracy).collect::<Vec<_>>();
    eprintln!("val accuracy: eager {:?}, graph {:?}", acc(&eager), acc(&graphed));
}

/// [`graph_job`]'s run as the one rank of a data-parallel run over NCCL (a world of one,
/// on the one GPU), its BatchNorms synchronised where `sync_batchnorm`.
fn rank_of_one_job(name: &str, mode: &str, epochs: u32, sync_batchnorm: bool) -> Trainer {
    let norm = plugin_lib("esper-norm");
    let more = format!("\n[distributed]\nbackend = \"nccl\"\nsync_batchnorm = {sync_batchnorm}\n");
    let config = graph_config(name, &norm, "norm", mode, epochs, "", &more);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env = RankEnv {
        rank: 0,
        world_size: 1,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
    };
    let mut t = Trainer::for_rank(config, Some(env)).unwrap();
    t.run(&mut Silent).unwrap();
    t
}

/// On ranks over NCCL the whole data-parallel step is captured: the gradient buckets'
/// allreduces (started by the backward's hooks) and the synchronised BatchNorms'
/// exchanges run inside the graph at each replay. A world of one rank (all one GPU
/// allows) runs every collective, each leaving its values as they were: the run is the
/// single process's, and with synchronised BatchNorms the replays are that rank's eager
/// steps (cuDNN deterministic, as above).
#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn data_parallel_steps_over_nccl_are_captured_in_cuda_graphs() {
    gpu();
    let _deterministic = Held::deterministic_cudnn();
    let norm = plugin_lib("esper-norm");
    let epochs = 4;
    let single = graph_job("graph-single", &norm, "norm", "auto", epochs);
    let ranked = rank_of_one_job("graph-rank", "auto", epochs, false);
    let synced = rank_of_one_job("graph-rank-sync", "auto", epochs, true);
    let synced_eager = rank_of_one_job("graph-rank-sync-eager", "off", epochs, true);
    let stages = |t: &Trainer| t.history().iter().map(|r| r.slots[0].stage).collect::<Vec<_>>();
    assert!(stages(&single).contains(&SeedStage::Blending), "{:?}", stages(&single));
    for (what, t) in [("ranked", &ranked), ("synchronised", &synced)] {
        let stats = t.graph_stats();
        eprintln!("{what}: graph stats {stats:?}, last refusal: {:?}", t.last_graph_refusal());
        assert_eq!(t.graphs_off(), None, "{what}");
        assert_eq!(stats.refusals, 0, "{what}: {stats:?}");
        // One capture per topology, as the single process.
        assert_eq!(stats.captures, single.graph_stats().captures, "{what}: {stats:?}");
        assert!(stats.captures >= 2 && stats.replays > stats.eager_steps, "{what}: {stats:?}");
        assert_eq!(stages(t), stages(&single), "{what}");
    }
    assert!(
        ranked.graph_stats().last_graph_nodes > single.graph_stats().last_graph_nodes,
        "the collectives and the buckets' copies are in the graph: {} nodes against {}",
        ranked.graph_stats().last_graph_nodes,
        single.graph_stats().last_graph_nodes
    );
    let ranked_diff = max_abs_diff(&state(&single), &state(&ranked));
    let synced_diff = max_abs_diff(&state(&synced_eager), &state(&synced));
    eprintln!("max |single - rank of one| = {ranked_diff:e}, max |sync eager - sync graph| = {synced_diff:e}");
    assert!(ranked_diff <= 1e-5, "{ranked_diff:e}");
    assert!(synced_diff <= 1e-5, "{synced_diff:e}");
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn a_seed_that_syncs_with_the_host_runs_eagerly_and_is_not_blamed() {
    gpu();
    let lib = plugin_lib("esper-fixture-misbehaving");
    let t = graph_job("graph-host-sync", &lib, "host-sync", "auto", 3);
    let stats = t.graph_stats();
    eprintln!("graph stats: {stats:?}, last refusal: {:?}", t.last_graph_refusal());
    assert!(stats.refusals >= 1, "the capture of a host-syncing seed is refused: {stats:?}");
    assert!(stats.eager_steps > 0, "{stats:?}");
    let events = events(&t);
    assert!(!events.iter().any(|e| matches!(e, LifecycleEvent::Pruned { .. })), "not pruned: {events:?}");
    assert!(t.model().slots()[0].seed().is_some(), "the seed is still there");
    assert!(t.history().iter().all(|r| r.train_loss.is_finite()));
    // The abandoned captures left the device usable: random numbers on it (which a
    // generator left in capture mode refuses) and the eager steps above ran.
    assert!(Tensor::randn([4], (Kind::Float, Device::Cuda(0))).isfinite().all().int64_value(&[]) == 1);
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn a_seed_going_non_finite_inside_a_graph_is_rolled_back_and_pruned() {
    gpu();
    // `nan-after-n-steps` behaves for its first train-mode forwards (the probe, the two
    // eager warm-up steps of its first TRAINING epoch) and returns NaN from the next on:
    // that forward is the one captured, so the replays produce NaN.
    let lib = plugin_lib("esper-fixture-misbehaving");
    let t = graph_job("graph-nan", &lib, "nan-after-n-steps", "auto", 3);
    let stats = t.graph_stats();
    eprintln!("graph stats: {stats:?}, last refusal: {:?}", t.last_graph_refusal());
    assert!(stats.replays > 0 && stats.refusals == 0, "{stats:?}");
    let events = events(&t);
    assert!(events.iter().any(|e| matches!(e, LifecycleEvent::Pruned { .. })), "pruned: {events:?}");
    // The spoiled steps were rolled back and not counted: the epoch sums stay finite.
    for r in t.history() {
        assert!(r.train_loss.is_finite() && r.val_loss.is_finite(), "{r:?}");
    }
    assert!(state(&t).iter().all(|p| p.isfinite().all().int64_value(&[]) == 1), "every parameter finite");
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn bf16_autocast_runs_the_seed_in_cuda_graphs_through_its_lifecycle() {
    gpu();
    // On CUDA autocast keeps group_norm in float32: the `norm` seed returns float32 for
    // a bfloat16 input, which the isolation layer casts back (not a contract breach).
    let norm = plugin_lib("esper-norm");
    let fp32 = graph_job("graph-fp32", &norm, "norm", "auto", 5);
    let bf16 = graph_job_with("graph-bf16", &norm, "norm", "auto", 5, "precision = \"bf16\"");
    let stats = bf16.graph_stats();
    eprintln!("bf16 graph stats: {stats:?}, last refusal: {:?}", bf16.last_graph_refusal());
    assert!(stats.captures >= 3 && stats.refusals == 0 && stats.replays > 0, "{stats:?}");
    let events = events(&bf16);
    eprintln!("bf16 events: {events:?}");
    assert!(!events.iter().any(|e| matches!(e, LifecycleEvent::SeedFault { .. })), "{events:?}");
    let stages = |t: &Trainer| t.history().iter().map(|r| r.slots[0].stage).collect::<Vec<_>>();
    eprintln!("stages: fp32 {:?}, bf16 {:?}", stages(&fp32), stages(&bf16));
    assert!(stages(&bf16).contains(&SeedStage::Blending), "the seed blends under bf16");
    let acc = |t: &Trainer| t.history().iter().map(|r| r.val_accuracy).collect::<Vec<_>>();
    eprintln!("val accuracy: fp32 {:?}, bf16 {:?}", acc(&fp32), acc(&bf16));
    assert!(bf16.history().iter().all(|r| r.train_loss.is_finite()));
    // The host's parameters (the seed may end pruned in one run and fossilized in the other).
    let host = |t: &Trainer| t.model().host_parameters().iter().map(|p| p.to_device(Device::Cpu)).collect::<Vec<_>>();
    assert!(max_abs_diff(&host(&fp32), &host(&bf16)) > 0.0, "bf16 ran");
}

/// A language-model job on CUDA (see [`esper_tests::TextJob`]): `lora` scheduled into
/// r0c1, the step in CUDA graphs per `mode`, more `[training]` lines in `training`.
fn text_graph_job(name: &str, mode: &str, epochs: u32, training: &str) -> Trainer {
    let dir = temp_dir(name);
    let plugin = plugin_lib("esper-transformer");
    let sections = "[slot]\nblend = \"gate\"\nblend_tempo = 2\n\n[lifecycle.gates]\nmode = \"permissive\"\n\
                    min_blending_epochs = 1\nmin_gradient_health_for_blending = 0.0\n";
    let job = esper_tests::TextJob {
        plugin: &plugin,
        epochs,
        blueprint: Some("lora"),
        sections,
        controller: "enabled = false",
    };
    let text = job
        .text()
        .replace("device = \"cpu\"", "device = \"cuda\"")
        .replace("gradient_every = 2", &format!("gradient_every = 4\ncuda_graph = \"{mode}\"\n{training}"));
    let mut t = Trainer::new(RunConfig::load(&write_file(&dir, "run.toml", &text)).unwrap()).unwrap();
    t.run(&mut Silent).unwrap();
    t
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn a_language_model_trains_in_cuda_graphs_in_fp32_and_bf16() {
    gpu();
    let epochs = 5;
    let eager = text_graph_job("text-graph-eager", "off", epochs, "");
    let again = text_graph_job("text-graph-eager-again", "off", epochs, "");
    let graphed = text_graph_job("text-graph-auto", "auto", epochs, "");
    let stats = graphed.graph_stats();
    eprintln!("transformer graph stats: {stats:?}, last refusal: {:?}", graphed.last_graph_refusal());
    assert_eq!(stats.refusals, 0, "{stats:?}");
    assert!(stats.captures >= 3 && stats.replays > stats.eager_steps, "one capture per topology: {stats:?}");
    let stages = |t: &Trainer| t.history().iter().map(|r| r.slots[1].stage).collect::<Vec<_>>();
    assert_eq!(stages(&graphed), stages(&eager));
    assert!(stages(&eager).contains(&SeedStage::Blending), "{:?}", stages(&eager));
    let (e, a, g) = (state(&eager), state(&again), state(&graphed));
    let (eager_noise, graph_diff) = (max_abs_diff(&e, &a), max_abs_diff(&e, &g));
    eprintln!("max |eager - eager| = {eager_noise:e}, max |eager - graph| = {graph_diff:e}");
    assert!(graph_diff <= 10.0 * eager_noise.max(1e-5), "{graph_diff:e} vs eager noise {eager_noise:e}");

    let bf16 = text_graph_job("text-graph-bf16", "auto", epochs, "precision = \"bf16\"");
    let stats = bf16.graph_stats();
    eprintln!("transformer bf16 graph stats: {stats:?}, last refusal: {:?}", bf16.last_graph_refusal());
    assert!(stats.captures >= 3 && stats.refusals == 0 && stats.replays > 0, "{stats:?}");
    let loss = |t: &Trainer| t.history().iter().map(|r| r.val_loss).collect::<Vec<_>>();
    eprintln!("val loss: fp32 {:?}, bf16 {:?}", loss(&graphed), loss(&bf16));
    let l = loss(&bf16);
    assert!(l.iter().all(|v| v.is_finite()) && l[l.len() - 1] < l[0], "{l:?}");
    let events = events(&bf16);
    assert!(!events.iter().any(|e| matches!(e, LifecycleEvent::SeedFault { .. })), "{events:?}");
}

/// Values and input gradient of `f` at `x`, with distinct upstream gradients (so one
/// routed to the wrong element shows).
fn value_and_grad(x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
    let leaf = x.detach().set_requires_grad(true);
    let y = f(&leaf);
    let g = (Tensor::arange(y.numel() as i64, (Kind::Float, y.device())) + 1.0).reshape(y.size()).to_kind(y.kind());
    (&y * &g).sum(y.kind()).backward();
    (y.detach(), leaf.grad())
}

/// Equal element for element, NaN where the other has NaN.
fn same(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size()
        && a.kind() == b.kind()
        && a.isnan().equal(&b.isnan())
        && a.nan_to_num(0.0, None, None).equal(&b.nan_to_num(0.0, None, None))
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn fused_relu_max_pool_is_libtorchs_relu_and_max_pool_exactly() {
    let dev = gpu();
    esper_torch_shim::rtc::available().expect("the fused kernels compile with NVRTC here");
    tch::manual_seed(5);
    for kind in [Kind::Float, Kind::BFloat16] {
        // Rounded values: ties inside windows, negatives, all-negative windows; a NaN.
        let x = (Tensor::randn([4, 32, 16, 12], (Kind::Float, dev)) * 2.0).round();
        let _ = x.get(1).get(3).get(5).get(7).fill_(f64::NAN);
        let x = to_channels_last(&x.to_kind(kind));
        for relu in [true, false] {
            let stock = |t: &Tensor| if relu { t.relu() } else { t.shallow_clone() }.max_pool2d_default(2);
            let fused = |t: &Tensor| esper_torch_shim::rtc::relu_max_pool2x2(t, relu).unwrap();
            let (y0, g0) = value_and_grad(&x, stock);
            let (y1, g1) = value_and_grad(&x, fused);
            assert!(same(&y0, &y1), "{kind:?} relu={relu}: values");
            assert!(same(&g0, &g1), "{kind:?} relu={relu}: gradients");
            assert!(is_channels_last(&y1) && is_channels_last(&g1), "channels-last in, channels-last out");
            assert!(y1.isnan().any().int64_value(&[]) == 1, "the NaN propagates");
        }
    }
    // Inputs the kernels do not take (NCHW, odd sizes) go through libtorch's ops.
    for x in [
        Tensor::randn([2, 8, 6, 6], (Kind::Float, dev)),
        to_channels_last(&Tensor::randn([2, 8, 7, 6], (Kind::Float, dev))),
    ] {
        let (y0, g0) = value_and_grad(&x, |t| t.relu().max_pool2d_default(2));
        let (y1, g1) = value_and_grad(&x, |t| esper_torch_shim::rtc::relu_max_pool2x2(t, true).unwrap());
        assert!(same(&y0, &y1) && same(&g0, &g1));
    }
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn the_nchw_copy_kernel_is_contiguous_exactly() {
    let dev = gpu();
    esper_torch_shim::rtc::available().expect("the kernels compile with NVRTC here");
    // Sizes that fill the 32 x 32 tiles and sizes that do not.
    for (shape, kind) in
        [([4, 64, 16, 16], Kind::Float), ([3, 37, 5, 7], Kind::Float), ([2, 70, 9, 11], Kind::BFloat16)]
    {
        let x = to_channels_last(&Tensor::randn(shape, (Kind::Float, dev)).to_kind(kind)).set_requires_grad(true);
        let copy = esper_torch_shim::rtc::nchw_copy(&x).unwrap();
        assert!(copy.is_contiguous() && !copy.requires_grad(), "{shape:?}");
        assert!(copy.equal(&x.contiguous()), "{shape:?} {kind:?}");
    }
    // The widening variant, through the straight-through estimator's backward: a
    // bfloat16 channels-last gradient handed to a float32 NCHW seed output.
    for shape in [[4, 64, 16, 16], [3, 37, 5, 7]] {
        let host = to_channels_last(&Tensor::randn(shape, (Kind::Float, dev)).to_kind(Kind::BFloat16));
        let seed_out = Tensor::randn(shape, (Kind::Float, dev)).set_requires_grad(true);
        let y = esper_torch_shim::straight_through(&host, &seed_out).unwrap();
        let g = to_channels_last(&Tensor::randn(shape, (Kind::Float, dev)).to_kind(Kind::BFloat16));
        (&y * &g).sum(Kind::Float).backward(); // y's gradient: g itself, channels-last
        let got = seed_out.grad();
        assert!(got.kind() == Kind::Float && got.is_contiguous(), "{shape:?}");
        assert!(got.equal(&g.to_kind(Kind::Float)), "{shape:?}: bfloat16 widens exactly");
    }
}

/// max |got - want| over max |want|, both as float64 on the CPU.
fn rel_error(got: &Tensor, want: &Tensor) -> f64 {
    let (got, want) = (got.to_kind(Kind::Double).to(Device::Cpu), want.to_kind(Kind::Double).to(Device::Cpu));
    assert_eq!(got.size(), want.size());
    let scale = want.abs().max().double_value(&[]).max(1e-30);
    (got - &want).abs().max().double_value(&[]) / scale
}

/// One BatchNorm + ReLU (+ pool) step through `f`: the output, the gradients of x,
/// weight and bias for a fixed upstream gradient, and the running statistics after it.
fn bn_step(
    x: &Tensor,
    params: [&Tensor; 4],
    f: impl Fn(&Tensor, &Tensor, &Tensor, &Tensor, &Tensor) -> Tensor,
) -> [Tensor; 6] {
    let [w, b, rm, rv] = params;
    let (x, w, b) =
        (x.detach().set_requires_grad(true), w.copy().set_requires_grad(true), b.copy().set_requires_grad(true));
    let (rm, rv) = (rm.copy(), rv.copy());
    let y = f(&x, &w, &b, &rm, &rv);
    tch::manual_seed(11); // the same upstream gradient for every `f`
    let g = Tensor::randn(y.size(), (Kind::Float, y.device()));
    (&y * g.to_kind(y.kind())).sum(Kind::Float).backward();
    [y.detach(), x.grad(), w.grad(), b.grad(), rm, rv]
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn fused_batchnorm_relu_pool_matches_libtorch() {
    use esper_torch_shim::rtc::{bn_relu, BatchNormParams};
    let dev = gpu();
    esper_torch_shim::rtc::available().expect("the kernels compile with NVRTC here");
    let f32 = (Kind::Float, dev);
    let fused = |pool: bool| {
        move |x: &Tensor, w: &Tensor, b: &Tensor, rm: &Tensor, rv: &Tensor| {
            let params =
                BatchNormParams { weight: w, bias: b, running_mean: rm, running_var: rv, momentum: 0.1, eps: 1e-5 };
            bn_relu(x, &params, pool).unwrap().expect("these inputs suit the kernels")
        }
    };
    let stock = |pool: bool| {
        move |x: &Tensor, w: &Tensor, b: &Tensor, rm: &Tensor, rv: &Tensor| {
            let y = x.batch_norm(Some(w), Some(b), Some(rm), Some(rv), true, 0.1, 1e-5, true);
            if pool {
                y.max_pool2d_default(2).relu()
            } else {
                y.relu()
            }
        }
    };
    // bfloat16 against libtorch in float32 on the same (rounded) input: the fused kernels
    // compute in float32 and round once; libtorch's bfloat16 BatchNorm rounds before the
    // pool compares, so a window's choice could differ.
    for (kind, tol) in [(Kind::Float, 2e-5), (Kind::BFloat16, 1e-2)] {
        for (shape, pool) in
            [([6, 32, 10, 12], true), ([5, 64, 8, 8], false), ([3, 128, 4, 6], true), ([2, 4, 2, 2], true)]
        {
            tch::manual_seed(7);
            let c = shape[1];
            // A mean far from zero (the sums are shifted by the running mean), a negative weight.
            let x = to_channels_last(&(Tensor::randn(shape, f32) * 3.0 + 5.0).to_kind(kind));
            let w = Tensor::rand([c], f32) + 0.5;
            let _ = w.get(0).fill_(-0.7);
            let b = Tensor::randn([c], f32) * 0.1;
            let (rm, rv) = (Tensor::randn([c], f32) * 0.5 + 4.0, Tensor::rand([c], f32) + 0.5);
            let params = [&w, &b, &rm, &rv];
            let got = bn_step(&x, params, fused(pool));
            let want = bn_step(&x.to_kind(Kind::Float), params, stock(pool));
            let names = ["output", "x gradient", "weight gradient", "bias gradient", "running mean", "running var"];
            for ((name, g), w) in names.iter().zip(&got).zip(&want) {
                let e = rel_error(g, w);
                assert!(e <= tol, "{kind:?} {shape:?} pool={pool}: {name} off by {e:e} (tolerance {tol:e})");
            }
            assert_eq!(got[0].kind(), kind, "the output keeps the input's dtype");
            assert!(is_channels_last(&got[0]) && is_channels_last(&got[1]), "channels-last in, channels-last out");
        }
    }
    // A non-finite running mean (the sums' shift) does not reach the batch statistics,
    // which libtorch computes without it.
    tch::manual_seed(8);
    let x = to_channels_last(&(Tensor::randn([4, 16, 6, 6], f32) * 2.0 + 3.0));
    let (w, b, rv) = (Tensor::ones([16], f32), Tensor::zeros([16], f32), Tensor::ones([16], f32));
    let rm = Tensor::zeros([16], f32);
    let _ = rm.get(0).fill_(f64::NAN);
    let _ = rm.get(1).fill_(f64::INFINITY);
    let got = bn_step(&x, [&w, &b, &rm, &rv], fused(true));
    let want = bn_step(&x, [&w, &b, &rm, &rv], stock(true));
    for (i, name) in ["output", "x gradient", "weight gradient", "bias gradient"].iter().enumerate() {
        let e = rel_error(&got[i], &want[i]);
        assert!(e <= 2e-5, "non-finite running mean: {name} off by {e:e}");
    }
    // Inputs the kernels do not take are handed back (the host then runs libtorch's ops):
    // NCHW, channels not a power of two, an odd size before a pool, the CPU.
    let (w, b, rm, rv) =
        (Tensor::ones([48], f32), Tensor::zeros([48], f32), Tensor::zeros([48], f32), Tensor::ones([48], f32));
    let params =
        BatchNormParams { weight: &w, bias: &b, running_mean: &rm, running_var: &rv, momentum: 0.1, eps: 1e-5 };
    for (x, pool) in
        [(Tensor::randn([2, 48, 6, 6], f32), true), (to_channels_last(&Tensor::randn([2, 48, 6, 6], f32)), false)]
    {
        assert!(bn_relu(&x, &params, pool).unwrap().is_none());
    }
    let (w, b, rm, rv) =
        (Tensor::ones([32], f32), Tensor::zeros([32], f32), Tensor::zeros([32], f32), Tensor::ones([32], f32));
    let params =
        BatchNormParams { weight: &w, bias: &b, running_mean: &rm, running_var: &rv, momentum: 0.1, eps: 1e-5 };
    let odd = to_channels_last(&Tensor::randn([2, 32, 7, 6], f32));
    assert!(bn_relu(&odd, &params, true).unwrap().is_none(), "odd height before a pool");
    assert!(bn_relu(&odd, &params, false).unwrap().is_some(), "odd height without a pool");
    assert!(bn_relu(&odd.to(Device::Cpu), &params, false).unwrap().is_none(), "the CPU");
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn the_host_with_its_fused_kernels_trains_as_with_libtorchs_ops() {
    use esper_runtime::host::CnnHost;
    use tch::nn;
    let dev = gpu();
    // Equal inputs give equal results, and cuDNN's float32 convolutions multiply in full
    // float32: a difference of rounding then stays of rounding size instead of growing
    // through TF32 products into a max-pool window choosing another element.
    let _deterministic = Held::deterministic_cudnn();
    let _no_tf32 = Held::at(esper_torch_shim::set_cudnn_tf32, false);
    // One training step of the host alone: logits, every parameter's gradient and the
    // running statistics, for a configuration of the fused kernels. The input and the
    // first convolution's weight are rounded to TF32, so that the first convolution's
    // kernels (TF32 operands) multiply exactly what cuDNN multiplies.
    let step = |pool: bool, batchnorm: bool, first_conv: bool| {
        tch::manual_seed(21);
        let vs = nn::VarStore::new(dev);
        let kernels = HostKernels { pool, batchnorm, first_conv, ..Default::default() };
        let config = CnnHostConfig { kernels, ..Default::default() };
        let host = CnnHost::new(&vs.root(), config).unwrap();
        round_to_tf32(&vs.variables()["block0.conv.weight"]);
        let x = Tensor::randn([16, 3, 32, 32], (Kind::Float, dev));
        round_to_tf32(&x);
        let logits = host.forward(&x, true);
        (&logits * Tensor::randn(logits.size(), (Kind::Float, dev))).sum(Kind::Float).backward();
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = vec![("logits".to_string(), logits.detach())];
        for (name, t) in named {
            if t.requires_grad() {
                out.push((format!("{name}.grad"), t.grad()));
            } else {
                out.push((name, t.detach())); // the running statistics
            }
        }
        out
    };
    let stock = step(false, false, false);
    // Every combination, the fused BatchNorm with and without the runtime's pool. The
    // fused pool is exact; the fused BatchNorm is libtorch's to rounding (its sums run in
    // another order), the first convolution too, and its weight gradient multiplies the
    // incoming gradient rounded to TF32 (2^-11): the bound is 5e-3, where a gradient sent
    // to the wrong element, a wrong statistic or a wrong tap would be off by order 1.
    for (pool, bn, conv, tol) in
        [(true, false, false, 0.0), (false, true, false, 5e-3), (true, true, false, 5e-3), (true, true, true, 5e-3)]
    {
        let got = step(pool, bn, conv);
        assert_eq!(got.len(), stock.len());
        let errors: Vec<(&str, f64)> =
            got.iter().zip(&stock).map(|((name, g), (_, w))| (name.as_str(), rel_error(g, w))).collect();
        let worst = errors.iter().map(|e| e.1).fold(0.0, f64::max);
        assert!(worst <= tol, "pool={pool} batchnorm={bn} first_conv={conv}: off by {errors:?}");
    }
}

fn refs(v: &[Tensor]) -> Vec<&Tensor> {
    v.iter().collect()
}

/// A group's SGD steps with the shim's kernel and with libtorch's `_foreach_*` ops,
/// from the same parameters and gradients: `(params, momentum buffers)` of each.
fn sgd_both_ways(params: &[Tensor], momentum: f64, weight_decay: f64) -> [(Vec<Tensor>, Vec<Tensor>); 2] {
    use esper_torch_shim as shim;
    let copies = || -> (Vec<Tensor>, Vec<Tensor>) {
        (params.iter().map(Tensor::copy).collect(), params.iter().map(Tensor::zeros_like).collect())
    };
    let ((pa, ba), (pb, bb)) = (copies(), copies());
    let settings = shim::Sgd { lr: 0.05, momentum, weight_decay };
    for step in 0..4 {
        tch::manual_seed(100 + step);
        let grads: Vec<Tensor> = params.iter().map(Tensor::randn_like).collect();
        let ran = shim::sgd(&refs(&pa), &refs(&grads), &refs(&ba), settings).unwrap();
        assert!(ran, "momentum {momentum}, weight decay {weight_decay}: the kernel did not run");
        shim::sgd_foreach(&refs(&pb), &refs(&grads), &refs(&bb), settings).unwrap();
    }
    [(pa, ba), (pb, bb)]
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn the_sgd_kernel_steps_exactly_as_libtorchs_foreach_ops() {
    use esper_torch_shim as shim;
    let dev = gpu();
    esper_torch_shim::rtc::available().expect("the kernels compile with NVRTC here");
    tch::manual_seed(9);
    // 30 tensors (two launches of 24): odd sizes, an empty one, a channels-last one, one
    // large enough for many blocks.
    let mut params: Vec<Tensor> = (0..27).map(|i| Tensor::randn([i * 37 + 1], (Kind::Float, dev))).collect();
    params.push(Tensor::randn([0], (Kind::Float, dev)));
    params.push(to_channels_last(&Tensor::randn([64, 32, 3, 3], (Kind::Float, dev))));
    params.push(Tensor::randn([300_001], (Kind::Float, dev)));
    for (momentum, weight_decay) in [(0.9, 0.0), (0.9, 5e-4), (0.0, 1e-3), (0.0, 0.0)] {
        let [(pa, ba), (pb, bb)] = sgd_both_ways(&params, momentum, weight_decay);
        for (i, (a, b)) in pa.iter().zip(&pb).chain(ba.iter().zip(&bb)).enumerate() {
            assert!(a.equal(b), "momentum {momentum}, weight decay {weight_decay}: tensor {i} differs");
        }
        assert!(!pa[29].equal(&params[29]), "the step moved the parameters");
    }
    // What the kernel does not take goes to the ops, and is still SGD: a gradient in
    // another layout than its parameter, and float64.
    let plain = shim::Sgd { lr: 0.5, momentum: 0.0, weight_decay: 0.0 };
    let p = to_channels_last(&Tensor::randn([8, 4, 3, 3], (Kind::Float, dev)));
    let g = Tensor::randn([8, 4, 3, 3], (Kind::Float, dev));
    let want = &p - &g * 0.5;
    assert!(!shim::sgd(&[&p], &[&g], &[], plain).unwrap(), "strides differ: the ops");
    assert!(rel_error(&p, &want) < 1e-6);
    let p = Tensor::randn([10], (Kind::Double, dev));
    let g = Tensor::randn([10], (Kind::Double, dev));
    let want = &p - &g * 0.5;
    assert!(!shim::sgd(&[&p], &[&g], &[], plain).unwrap(), "float64: the ops");
    assert!(rel_error(&p, &want) < 1e-12);
}

/// `conv2d(x, w, padding 1)` and its weight gradient for the upstream gradient `g`, in
/// float64 on the CPU.
fn conv_reference(x: &Tensor, w: &Tensor, g: &Tensor) -> (Tensor, Tensor) {
    let d = (Kind::Double, Device::Cpu);
    let w64 = w.detach().to_device(d.1).to_kind(d.0).set_requires_grad(true);
    let x64 = x.detach().to_device(d.1).to_kind(d.0);
    let y = x64.conv2d(&w64, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
    (&y * g.to_device(d.1).to_kind(d.0)).sum(d.0).backward();
    (y.detach(), w64.grad())
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn the_first_convolution_kernels_match_a_float64_reference() {
    use esper_torch_shim::{autocast::Bf16Autocast, rtc::first_conv};
    let dev = gpu();
    esper_torch_shim::rtc::available().expect("the kernels compile with NVRTC here");
    tch::manual_seed(31);
    // 16, 32 and 64 channels, pixel counts that fill the kernels' tiles and that do not,
    // tiny images (every pixel at an edge).
    for (n, h, w, c) in [(4, 32, 32, 32), (3, 7, 9, 16), (2, 16, 16, 64), (1, 8, 8, 16), (5, 3, 3, 64)] {
        let x32 = to_channels_last(&Tensor::randn([n, 3, h, w], (Kind::Float, dev)));
        let weight = to_channels_last(&(Tensor::randn([c, 3, 3, 3], (Kind::Float, dev)) * 0.3)).set_requires_grad(true);
        // float32, float32 under bfloat16 autocast, a bfloat16 input.
        for (x, autocast) in
            [(x32.shallow_clone(), false), (x32.shallow_clone(), true), (x32.to_kind(Kind::BFloat16), false)]
        {
            let case = format!("{n}x{h}x{w}, {c} channels, {:?} input, autocast {autocast}", x.kind());
            let _ = weight.grad().defined().then(|| weight.grad().zero_());
            let y = {
                let _autocast = autocast.then(|| Bf16Autocast::enter(true).unwrap());
                first_conv(&x, &weight).unwrap().expect("these tensors suit the kernels")
            };
            let bf16 = autocast || x.kind() == Kind::BFloat16;
            assert_eq!(y.kind(), if bf16 { Kind::BFloat16 } else { Kind::Float }, "{case}: the dtype conv2d gives");
            assert!(is_channels_last(&y) && y.size() == [n, c, h, w], "{case}");
            let g = Tensor::randn(y.size(), (Kind::Float, dev)).to_kind(y.kind());
            (&y * &g).sum(Kind::Float).backward();
            let (want_y, want_dw) = conv_reference(&x, &weight, &g);
            // TF32 operands (2^-11 relative each), float32 sums; bfloat16 out: one more
            // rounding (2^-9). A wrong tap, channel or pixel would be off by order 1.
            let (ey, edw) = (rel_error(&y, &want_y), rel_error(&weight.grad(), &want_dw));
            assert!(ey < if bf16 { 6e-3 } else { 2e-3 }, "{case}: output off by {ey:e}");
            assert!(edw < 2e-3, "{case}: weight gradient off by {edw:e}");
            assert_eq!(weight.grad().stride(), weight.stride(), "{case}: the gradient in the weight's layout");
        }
    }
    // An input that wants its gradient gets libtorch's.
    let x = to_channels_last(&Tensor::randn([2, 3, 6, 6], (Kind::Float, dev))).set_requires_grad(true);
    let weight = to_channels_last(&Tensor::randn([16, 3, 3, 3], (Kind::Float, dev)));
    let y = first_conv(&x, &weight).unwrap().unwrap();
    y.sum(Kind::Float).backward();
    let x2 = x.detach().set_requires_grad(true);
    x2.conv2d(&weight, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1).sum(Kind::Float).backward();
    assert!(rel_error(&x.grad(), &x2.grad()) < 1e-3, "the input gradient");
    // What the kernels do not take: NCHW input, 4 input channels, 8, 128 or 24 output
    // channels.
    let w16 = Tensor::randn([16, 3, 3, 3], (Kind::Float, dev));
    assert!(first_conv(&Tensor::randn([2, 3, 6, 6], (Kind::Float, dev)), &w16).unwrap().is_none());
    let x4 = to_channels_last(&Tensor::randn([2, 4, 6, 6], (Kind::Float, dev)));
    assert!(first_conv(&x4, &Tensor::randn([16, 4, 3, 3], (Kind::Float, dev))).unwrap().is_none());
    let x3 = to_channels_last(&Tensor::randn([2, 3, 6, 6], (Kind::Float, dev)));
    for c in [8, 128, 24] {
        assert!(first_conv(&x3, &Tensor::randn([c, 3, 3, 3], (Kind::Float, dev))).unwrap().is_none(), "{c}");
    }
}

#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn the_weight_gradient_kernel_matches_a_float64_reference() {
    use esper_torch_shim::{autocast::Bf16Autocast, rtc::conv3x3};
    let dev = gpu();
    esper_torch_shim::rtc::available().expect("the kernels compile with NVRTC here");
    tch::manual_seed(41);
    let weight = to_channels_last(&(Tensor::randn([64, 32, 3, 3], (Kind::Float, dev)) * 0.1)).set_requires_grad(true);
    // The default host's second convolution (16 x 16), other bands (8 x 8, 32 x 32, 12 x 4),
    // fewer bands than thread blocks, every pixel at an edge; bfloat16 under autocast and
    // float32.
    for (n, h, w) in [(4, 16, 16), (3, 8, 8), (2, 32, 32), (2, 12, 4), (1, 4, 4), (600, 16, 16)] {
        for kind in [Kind::BFloat16, Kind::Float] {
            let case = format!("{n}x{h}x{w} {kind:?}");
            let bf16 = kind == Kind::BFloat16;
            let autocast = || bf16.then(|| Bf16Autocast::enter(true).unwrap());
            let x = to_channels_last(&Tensor::randn([n, 32, h, w], (kind, dev))).set_requires_grad(true);
            let _ = weight.grad().defined().then(|| weight.grad().zero_());
            let y = {
                let _autocast = autocast();
                conv3x3(&x, &weight).unwrap().expect("these tensors suit the kernel")
            };
            assert_eq!(y.kind(), kind, "{case}: the dtype conv2d gives");
            assert!(is_channels_last(&y) && y.size() == [n, 64, h, w], "{case}");
            let g = Tensor::randn(y.size(), (kind, dev));
            (&y * &g).sum(Kind::Float).backward();
            let (want_y, want_dw) = conv_reference(&x, &weight.to_kind(kind), &g);
            // The forward is cuDNN's (bfloat16: one rounding out, 2^-9; float32: TF32
            // products, 2^-11 each). The weight gradient sums products of bfloat16 values
            // exactly in float32, or of TF32-rounded float32 values: a wrong tap, channel,
            // pixel or band would be off by order 1.
            let (ey, edw) = (rel_error(&y, &want_y), rel_error(&weight.grad(), &want_dw));
            assert!(ey < if bf16 { 6e-3 } else { 2e-3 }, "{case}: output off by {ey:e}");
            assert!(edw < if bf16 { 1e-4 } else { 2e-3 }, "{case}: weight gradient off by {edw:e}");
            assert_eq!(weight.grad().stride(), weight.stride(), "{case}: the gradient in the weight's layout");
            // Forward and input gradient are libtorch's conv2d's (cuDNN's, same operands).
            let x2 = x.detach().set_requires_grad(true);
            let w2 = weight.detach().set_requires_grad(true);
            let y2 = {
                let _autocast = autocast();
                x2.conv2d(&w2, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
            };
            (&y2 * &g).sum(Kind::Float).backward();
            assert!(rel_error(&y, &y2) < 1e-6, "{case}: the forward is conv2d's");
            assert!(rel_error(&x.grad(), &x2.grad()) < 1e-2, "{case}: the input gradient");
            // libtorch's weight gradient: bfloat16-rounded (2^-9), or TF32 in another order.
            assert!(rel_error(&weight.grad(), &w2.grad()) < 1e-2, "{case}: libtorch's weight gradient");
        }
    }
    // What the kernel does not take: a bfloat16 input without autocast, a float32 one under
    // it, float32 with TF32 off, 16 input or 32 output channels, images that do not tile
    // (6 x 6: no band of a multiple of 16 pixels), the CPU.
    let x = to_channels_last(&Tensor::randn([2, 32, 8, 8], (Kind::BFloat16, dev)));
    let x32 = x.to_kind(Kind::Float);
    assert!(conv3x3(&x, &weight).unwrap().is_none(), "bfloat16 without autocast");
    {
        let _no_tf32 = Held::at(esper_torch_shim::set_cudnn_tf32, false);
        assert!(conv3x3(&x32, &weight).unwrap().is_none(), "TF32 off");
    }
    let x16 = to_channels_last(&Tensor::randn([2, 16, 8, 8], (Kind::Float, dev)));
    assert!(conv3x3(&x16, &Tensor::randn([64, 16, 3, 3], (Kind::Float, dev))).unwrap().is_none(), "16 in");
    assert!(conv3x3(&x32, &Tensor::randn([32, 32, 3, 3], (Kind::Float, dev))).unwrap().is_none(), "32 out");
    let x6 = to_channels_last(&Tensor::randn([2, 32, 6, 6], (Kind::Float, dev)));
    assert!(conv3x3(&x6, &weight).unwrap().is_none(), "6 x 6");
    assert!(conv3x3(&x32.to(Device::Cpu), &weight.to(Device::Cpu)).unwrap().is_none(), "the CPU");
    let _autocast = Bf16Autocast::enter(true).unwrap();
    assert!(conv3x3(&x32, &weight).unwrap().is_none(), "float32 under autocast");
}

/// The transformer host on CUDA: the CPU's logits and gradients on the same weights
/// (float32), bfloat16 logits under autocast, and causality (the fused attention kernels
/// included): changing the tokens after position `t` leaves the logits up to `t`
/// exactly as they were, in float32 and under autocast.
#[test]
#[ignore = "needs CUDA: run scripts/test-gpu.sh"]
fn transformer_host_on_cuda_matches_the_cpu_and_stays_causal() {
    use esper_runtime::host::{TransformerHost, TransformerHostConfig};
    use esper_torch_shim::autocast::Bf16Autocast;
    let dev = gpu();
    tch::manual_seed(51);
    let config = TransformerHostConfig {
        vocab_size: 97,
        n_embd: 64,
        n_head: 4,
        n_layer: 4,
        block_size: 64,
        num_segments: 2,
        dropout: 0.0,
    };
    let (cpu_vs, mut cuda_vs) = (tch::nn::VarStore::new(Device::Cpu), tch::nn::VarStore::new(dev));
    let cpu = TransformerHost::new(&cpu_vs.root(), config.clone()).unwrap();
    let cuda = TransformerHost::new(&cuda_vs.root(), config).unwrap();
    cuda_vs.copy(&cpu_vs).unwrap();
    let (x, t) = (Tensor::randint(97, [4, 64], (Kind::Int64, Device::Cpu)), 20);
    let changed = x.copy();
    let _ = changed.narrow(1, t + 1, 64 - t - 1).fill_(3);
    let (want, got) = (cpu.forward(&x, true), cuda.forward(&x.to(dev), true));
    assert!(rel_error(&got, &want) < 1e-3, "CUDA logits against the CPU's");
    want.sum(Kind::Float).backward();
    got.sum(Kind::Float).backward();
    for (name, p) in cuda_vs.variables() {
        assert!(rel_error(&p.grad(), &cpu_vs.variables()[&name].grad()) < 1e-3, "the gradient of {name}");
    }
    for autocast in [false, true] {
        let _autocast = autocast.then(|| Bf16Autocast::enter(true).unwrap());
        let (a, b) = (cuda.forward(&x.to(dev), false), cuda.forward(&changed.to(dev), false));
        assert_eq!(a.kind(), if autocast { Kind::BFloat16 } else { Kind::Float });
        assert!(a.narrow(1, 0, t + 1).equal(&b.narrow(1, 0, t + 1)), "causal (autocast {autocast})");
        assert!(!a.narrow(1, t + 1, 1).equal(&b.narrow(1, t + 1, 1)), "premise: the changed positions differ");
        assert!(rel_error(&a, &want) < 0.05, "autocast {autocast}: logits near float32's");
    }
}
