//! The host seam: the CNN host behind the `Host` trait computes what it computed
//! before the trait existed, bit for bit.
//!
//! `tests/data/cnn-host-v1` was written by [`write_cnn_host_v1`] on the code before the
//! seam (a small CNN host, a seed slot left empty, a fixed input through one eval and one
//! train forward and a backward): the weights, the input and labels, both logits and
//! every parameter's gradient. The check loads those weights by name into today's model,
//! runs the same input and compares with `equal`. Regenerate (only when the host's
//! computation is meant to change) with
//! `ESPER_WRITE_HOST_DATA=1 cargo test -p esper-tests --test all -- host_seam::write --ignored`.

use esper_runtime::{
    host::{CnnHostConfig, MemoryFormat},
    model::{MorphogeneticModel, SlotConfig},
};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cnn-host-v1")
}

/// The host of the fixture: two blocks (base 4 channels, 8x8 inputs), 5 classes, the
/// default channels-last format, a pool after the first block only.
fn config() -> CnnHostConfig {
    CnnHostConfig {
        blocks: 2,
        base_channels: 4,
        pool_layers: Some(1),
        num_classes: 5,
        memory_format: MemoryFormat::ChannelsLast,
        ..Default::default()
    }
}

fn model() -> MorphogeneticModel {
    MorphogeneticModel::new(config(), &["r1c0"], SlotConfig::default(), Device::Cpu).unwrap()
}

/// The eval logits, the train logits and each trainable host parameter's gradient
/// (by name, `host.` prefixed as in `MorphogeneticModel::state`).
fn outputs(m: &MorphogeneticModel, x: &Tensor, labels: &Tensor) -> Vec<(String, Tensor)> {
    let eval = m.forward(x, false).unwrap();
    let train = m.forward(x, true).unwrap();
    train.cross_entropy_for_logits(labels).backward();
    let mut out = vec![("logits_eval".to_string(), eval.detach()), ("logits_train".to_string(), train.detach())];
    for (name, t) in m.host_vars().variables() {
        if t.requires_grad() {
            out.push((format!("grad.host.{name}"), t.grad().detach()));
        }
    }
    out
}

fn write(name: &str, tensors: &[(String, Tensor)]) {
    let cpu: Vec<(String, Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t.contiguous())).collect();
    Tensor::write_safetensors(&cpu, data_dir().join(name)).unwrap();
}

fn read(name: &str) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(data_dir().join(name)).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Writes the fixture (see the module). Ignored: run it by hand, on purpose.
#[test]
#[ignore = "writes tests/data/cnn-host-v1; run by hand with ESPER_WRITE_HOST_DATA=1"]
fn write_cnn_host_v1() {
    assert!(std::env::var_os("ESPER_WRITE_HOST_DATA").is_some(), "set ESPER_WRITE_HOST_DATA=1 to overwrite");
    tch::manual_seed(23);
    let m = model();
    let x = Tensor::randn([3, 3, 8, 8], (Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[0i64, 3, 4]);
    std::fs::create_dir_all(data_dir()).unwrap();
    write("weights.safetensors", &m.state());
    write("input.safetensors", &[("x".into(), x.shallow_clone()), ("labels".into(), labels.shallow_clone())]);
    write("outputs.safetensors", &outputs(&m, &x, &labels));
}

#[test]
fn the_cnn_host_is_bit_identical_to_the_fixture() {
    let m = model();
    let weights = read("weights.safetensors");
    let mut state = m.state();
    state.sort_by(|a, b| a.0.cmp(&b.0));
    let names = |v: &[(String, Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&state), names(&weights), "the host's parameters and buffers, by name");
    tch::no_grad(|| {
        for ((_, var), (_, saved)) in state.iter_mut().zip(&weights) {
            var.copy_(saved);
        }
    });
    let input = read("input.safetensors");
    let (labels, x) = (&input[0].1, &input[1].1);
    let mut got = outputs(&m, x, labels);
    let mut want = read("outputs.safetensors");
    got.sort_by(|a, b| a.0.cmp(&b.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(names(&got), names(&want));
    assert!(want.len() > 2 + 4, "premise: gradients of the convolutions, BatchNorms and head: {:?}", names(&want));
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        assert_eq!((g.size(), g.kind()), (w.size(), w.kind()), "{name}");
        assert!(g.equal(w), "{name} differs: max |diff| {}", (g - w).abs().max().double_value(&[]));
    }
}
