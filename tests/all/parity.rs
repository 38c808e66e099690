//! Parity with PyTorch on identical weights: every shipped CNN blueprint (the CNN
//! library's seven and `norm`) at C in {16, 64, 112} and two spatial sizes, fed from a
//! channels-last host through the isolation layer, against a PyTorch reference written
//! from the catalogue (`tests/parity/reference.py`, run with the Python that
//! `scripts/setup.sh` links as `.esper-python`). The parameters (perturbed away from
//! their init, so zero-initialised layers count), the input and the upstream gradient go
//! to PyTorch in a safetensors file; outputs must agree within 1e-5 and parameter
//! gradients within 1e-4, relative to the reference's largest magnitude.

use esper_runtime::{host::to_channels_last, isolation::seed_input, plugin::BlueprintRegistry};
use esper_tests::{
    parity::{pytorch_reference, relative_error},
    plugin_lib,
};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

const BLUEPRINTS: [&str; 8] =
    ["noop", "norm", "attention", "depthwise", "bottleneck", "conv_small", "conv_light", "conv_heavy"];
const CHANNELS: [i64; 3] = [16, 64, 112];
const SIZES: [(i64, i64); 2] = [(8, 8), (5, 7)];
const OUT_TOLERANCE: f64 = 1e-5;
const GRAD_TOLERANCE: f64 = 1e-4;

struct Case {
    blueprint: &'static str,
    channels: i64,
    size: (i64, i64),
    out: Tensor,
    grads: BTreeMap<String, Tensor>,
}

/// Runs one case through the runtime and adds its tensors for the reference to `file`.
fn run_case(
    registry: &BlueprintRegistry,
    i: usize,
    case: (&'static str, i64, (i64, i64)),
    file: &mut Vec<(String, Tensor)>,
) -> Case {
    let (blueprint, channels, (h, w)) = case;
    let seed = registry.create_seed(blueprint, channels, &serde_json::Value::Null, Device::Cpu).unwrap();
    let params: BTreeMap<String, Tensor> = seed.vars().variables().into_iter().collect();
    tch::no_grad(|| {
        for p in params.values() {
            let _ = p.shallow_clone().f_add_(&(p.randn_like() * 0.1)).unwrap();
        }
    });
    let host = to_channels_last(&Tensor::randn([2, channels, h, w], (Kind::Float, Device::Cpu)));
    let x = seed_input(&host, true); // what the seed sees: contiguous, detached
    let out = seed.forward(&x, true).unwrap();
    let g = out.randn_like();
    if !params.is_empty() {
        (&out * &g).sum(Kind::Float).backward();
    }
    file.push((format!("{i}.x"), x.contiguous()));
    file.push((format!("{i}.g"), g));
    for (name, p) in &params {
        file.push((format!("{i}.param.{name}"), p.detach().contiguous()));
    }
    let grads = params.iter().map(|(n, p)| (n.clone(), p.grad().copy())).collect();
    Case { blueprint, channels, size: (h, w), out: out.detach().copy(), grads }
}

#[test]
fn every_cnn_blueprint_matches_pytorch_forward_and_backward() {
    tch::manual_seed(0);
    let mut registry = BlueprintRegistry::new();
    registry.load(&plugin_lib("esper-norm")).unwrap();
    registry.load(&plugin_lib("esper-cnn")).unwrap();
    let mut file = Vec::new();
    let mut cases = Vec::new();
    for blueprint in BLUEPRINTS {
        for channels in CHANNELS {
            for size in SIZES {
                cases.push(run_case(&registry, cases.len(), (blueprint, channels, size), &mut file));
            }
        }
    }

    let list: Vec<serde_json::Value> =
        cases.iter().map(|c| serde_json::json!({"blueprint": c.blueprint, "channels": c.channels})).collect();
    let reference = pytorch_reference("reference.py", "parity", &list.into(), &file);

    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, c) in cases.iter().enumerate() {
        let what = format!("{} C={} {}x{}", c.blueprint, c.channels, c.size.0, c.size.1);
        let err = relative_error(&c.out, &reference[&format!("{i}.out")]);
        if err > OUT_TOLERANCE {
            failures.push(format!("{what}: output differs by {err:.2e} (relative)"));
        }
        for (name, grad) in &c.grads {
            let err = relative_error(grad, &reference[&format!("{i}.grad.{name}")]);
            if err > GRAD_TOLERANCE {
                failures.push(format!("{what}: gradient of `{name}` differs by {err:.2e} (relative)"));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{} mismatch(es) with PyTorch:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(cases.len(), BLUEPRINTS.len() * CHANNELS.len() * SIZES.len());
    assert!(checked > 100, "premise: parameter gradients compared ({checked})");
}
