//! A host network of your own through the public [`Host`] trait: a tiny CNN (two 3x3
//! convolutions with ReLU, global average pool, linear head) with two injection points,
//! a `norm` seed from the built plugin germinated into one of them, and a few SGD steps
//! of host and seed on a fixed batch, the loss printed at each.
//!
//! ```text
//! cargo build -p esper-norm
//! cargo run -p esper-runtime --example custom_host -- target/debug/libesper_norm.so
//! ```
//!
//! The rules a host follows are in `esper_runtime::host::seam`: register every
//! parameter under the path the model gives, return features laid out as the topology
//! says (`(B, C, H, W)` for `cnn`), and make segments once (they are index ranges).

use esper_runtime::{
    config::OptimizerConfig,
    host::{seam::segment_between, Host, HostError, InjectionPoint, Segment, Topology},
    lifecycle::{QualityGates, SeedStage},
    model::{MorphogeneticModel, SlotConfig},
    plugin::BlueprintRegistry,
    train::{germinate, optim::Optimizer},
};
use std::{error::Error, path::Path};
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// The slot the seed grows in (after the first convolution).
pub const SLOT: &str = "early";

/// The tiny host: steps 0 and 1 are the convolutions, step 2 the head.
pub struct TinyHost {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    head: nn::Linear,
    points: Vec<InjectionPoint>,
}

impl TinyHost {
    /// Its parameters under `path` (the model's host store: checkpoints, optimizers and
    /// the gradient monitor see them there).
    pub fn new(path: &nn::Path, in_channels: i64, width: i64, classes: i64) -> Self {
        let conv = nn::ConvConfig { padding: 1, ..Default::default() };
        let point = |id: &str, order| InjectionPoint { id: id.into(), channels: width, order, position: order };
        Self {
            conv1: nn::conv2d(path / "conv1", in_channels, width, 3, conv),
            conv2: nn::conv2d(path / "conv2", width, width, 3, conv),
            head: nn::linear(path / "head", width, classes, Default::default()),
            points: vec![point(SLOT, 0), point("late", 1)],
        }
    }
}

impl Host for TinyHost {
    fn topology(&self) -> Topology {
        Topology::Cnn
    }
    fn injection_points(&self) -> &[InjectionPoint] {
        &self.points
    }
    fn segment(&self, from: Option<&str>, to: Option<&str>) -> Result<Segment, HostError> {
        segment_between(&self.points, 3, from, to)
    }
    fn prepare_input(&self, x: &Tensor) -> Tensor {
        x.shallow_clone()
    }
    fn run_segment(&self, segment: Segment, x: &Tensor, _train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for step in segment.range() {
            h = match step {
                0 => self.conv1.forward(&h).relu(),
                1 => self.conv2.forward(&h).relu(),
                _ => self.head.forward(&h.mean_dim([2i64, 3].as_slice(), false, Kind::Float)),
            };
        }
        h
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// What [`run`] did: the loss at each step, and the blueprint and stage of the seed in
/// [`SLOT`] at the end.
pub struct Outcome {
    pub losses: Vec<f64>,
    pub blueprint: Option<String>,
    pub stage: SeedStage,
}

/// Builds the model around [`TinyHost`], germinates `norm` from the plugin library at
/// `plugin` into [`SLOT`], moves it to TRAINING and takes `steps` SGD steps.
pub fn run(plugin: &Path, steps: usize) -> Result<Outcome, Box<dyn Error>> {
    tch::manual_seed(0);
    let build = |path: &nn::Path| -> Result<Box<dyn Host>, HostError> { Ok(Box::new(TinyHost::new(path, 3, 8, 4))) };
    let mut model = MorphogeneticModel::with_host(Device::Cpu, build, &[SLOT, "late"], SlotConfig::default())?;
    let mut registry = BlueprintRegistry::new();
    registry.load(plugin)?;
    germinate(&mut model, &registry, SLOT, "norm", "seed-1", &serde_json::Value::Null)?;
    model.slot_mut(SLOT)?.advance(&QualityGates::permissive())?;
    let sgd = OptimizerConfig::Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.0 };
    let mut host_opt = Optimizer::new(sgd, model.host_parameters());
    let mut seed_opt = Optimizer::new(sgd, model.seed_parameters());
    let x = Tensor::randn([16, 3, 8, 8], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(4, [16], (Kind::Int64, Device::Cpu));
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        host_opt.zero_grad()?;
        seed_opt.zero_grad()?;
        let loss = model.forward(&x, true)?.cross_entropy_for_logits(&labels);
        loss.backward();
        model.capture_gradients();
        host_opt.step()?;
        seed_opt.step()?;
        losses.push(loss.double_value(&[]));
        println!("step {step}: loss {:.4}", losses[step]);
    }
    let slot = model.slot(SLOT)?;
    Ok(Outcome { losses, blueprint: slot.seed().map(|s| s.key().to_string()), stage: slot.stage() })
}

#[allow(dead_code)] // when a test includes this file, it calls `run` itself
fn main() -> Result<(), Box<dyn Error>> {
    let plugin = std::env::args().nth(1).ok_or("usage: custom_host PATH/TO/libesper_norm.so")?;
    let outcome = run(Path::new(&plugin), 20)?;
    println!("seed in `{SLOT}`: {:?} ({})", outcome.blueprint, outcome.stage);
    Ok(())
}
