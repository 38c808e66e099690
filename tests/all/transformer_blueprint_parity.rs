//! Parity with PyTorch on identical weights: the transformer catalogue's eight
//! blueprints (`plugins/transformer`), and `flex_attention` over a sliding window, at C in {32, 96} and sequence lengths {7, 16}, on
//! `(B, T, C)` features through the isolation layer, against a PyTorch
//! reference written from the catalogue (`tests/parity/transformer_blueprints.py`, in
//! float64 with the attention written out). The parameters are perturbed away from their
//! init (so the zero-initialised output layers count); outputs must agree within 1e-5 and
//! parameter gradients within 1e-4, relative to the reference's largest magnitude.

use esper_runtime::{isolation::seed_input, plugin::BlueprintRegistry};
use esper_tests::{
    parity::{pytorch_reference, relative_error},
    plugin_lib,
};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

const BLUEPRINTS: [&str; 8] = ["noop", "norm", "lora", "lora_large", "attention", "mlp_small", "mlp", "flex_attention"];
const CHANNELS: [i64; 2] = [32, 96];
const SEQUENCES: [i64; 2] = [7, 16];
const OUT_TOLERANCE: f64 = 1e-5;
const GRAD_TOLERANCE: f64 = 1e-4;

struct Case {
    blueprint: &'static str,
    options: serde_json::Value,
    channels: i64,
    seq: i64,
    out: Tensor,
    grads: BTreeMap<String, Tensor>,
}

/// Runs one case through the runtime and adds its tensors for the reference to `file`.
fn run_case(
    registry: &BlueprintRegistry,
    i: usize,
    case: (&'static str, &serde_json::Value, i64, i64),
    file: &mut Vec<(String, Tensor)>,
) -> Case {
    let (blueprint, options, channels, seq) = case;
    let name = format!("transformer:{blueprint}");
    let seed = registry.create_seed(&name, channels, options, Device::Cpu).unwrap();
    let params: BTreeMap<String, Tensor> = seed.vars().variables().into_iter().collect();
    tch::no_grad(|| {
        for p in params.values() {
            let _ = p.shallow_clone().f_add_(&(p.randn_like() * 0.1)).unwrap();
        }
    });
    let host = Tensor::randn([3, seq, channels], (Kind::Float, Device::Cpu));
    let x = seed_input(&host, true);
    let out = seed.forward(&x, true).unwrap();
    assert_eq!(out.size(), host.size(), "{name}: same shape out");
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
    Case { blueprint, options: options.clone(), channels, seq, out: out.detach().copy(), grads }
}

#[test]
fn every_transformer_blueprint_matches_pytorch_forward_and_backward() {
    tch::manual_seed(0);
    let mut registry = BlueprintRegistry::new();
    registry.load(&plugin_lib("esper-transformer")).unwrap();
    let mut file = Vec::new();
    let mut cases = Vec::new();
    // Esper-lite's catalogue with its defaults, and `flex_attention` over a sliding window
    // shorter than the sequences.
    let windowed = ("flex_attention", serde_json::json!({"window": 3}));
    let all = BLUEPRINTS.map(|b| (b, serde_json::Value::Null)).into_iter().chain([windowed]);
    for (blueprint, options) in all {
        for channels in CHANNELS {
            for seq in SEQUENCES {
                cases.push(run_case(&registry, cases.len(), (blueprint, &options, channels, seq), &mut file));
            }
        }
    }

    let list: Vec<serde_json::Value> =
        cases.iter().map(|c| serde_json::json!({"blueprint": c.blueprint, "channels": c.channels, "window": c.options.get("window")})).collect();
    let reference = pytorch_reference("transformer_blueprints.py", "transformer-blueprint-parity", &list.into(), &file);

    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, c) in cases.iter().enumerate() {
        let what = format!("{} {} C={} T={}", c.blueprint, c.options, c.channels, c.seq);
        let err = relative_error(&c.out, &reference[&format!("{i}.out")]);
        if err > OUT_TOLERANCE {
            failures.push(format!("{what}: output differs by {err:.2e} (relative)"));
        }
        for (name, grad) in &c.grads {
            let reference = &reference[&format!("{i}.grad.{name}")];
            // The key bias adds the same `q . b_k` to every score of a query, which the
            // softmax cancels: its gradient is zero, rounding noise on both sides.
            let err = if name == "k_bias" {
                grad.abs().max().double_value(&[]).max(reference.abs().max().double_value(&[]))
            } else {
                relative_error(grad, reference)
            };
            if err > GRAD_TOLERANCE {
                failures.push(format!("{what}: gradient of `{name}` differs by {err:.2e} (relative)"));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{} mismatch(es) with PyTorch:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(cases.len(), (BLUEPRINTS.len() + 1) * CHANNELS.len() * SEQUENCES.len());
    assert!(checked > 100, "premise: parameter gradients compared ({checked})");
}

#[test]
fn every_transformer_blueprint_is_the_identity_at_birth() {
    let mut registry = BlueprintRegistry::new();
    registry.load(&plugin_lib("esper-transformer")).unwrap();
    let x = Tensor::randn([2, 5, 32], (Kind::Float, Device::Cpu));
    for blueprint in BLUEPRINTS {
        let seed = registry
            .create_seed(&format!("transformer:{blueprint}"), 32, &serde_json::Value::Null, Device::Cpu)
            .unwrap();
        let y = seed.forward(&x, true).unwrap();
        assert_eq!((&y - &x).abs().max().double_value(&[]), 0.0, "{blueprint}: y = x at birth");
    }
}

#[test]
fn each_transformer_blueprint_marks_its_last_linear_layer_for_the_multiply_rule() {
    let mut registry = BlueprintRegistry::new();
    registry.load(&plugin_lib("esper-transformer")).unwrap();
    for (blueprint, output_layer) in [
        ("noop", vec![]),
        ("norm", vec![]),
        ("lora", vec!["up_weight"]),
        ("lora_large", vec!["up_weight"]),
        ("attention", vec!["proj_weight", "proj_bias"]),
        ("mlp_small", vec!["fc2_weight", "fc2_bias"]),
        ("mlp", vec!["fc2_weight", "fc2_bias"]),
        ("flex_attention", vec!["proj_weight", "proj_bias"]),
    ] {
        let name = format!("transformer:{blueprint}");
        let seed = registry.create_seed(&name, 64, &serde_json::Value::Null, Device::Cpu).unwrap();
        assert_eq!(seed.output_layer(), output_layer.as_slice(), "{blueprint} marks its last layer");
    }
}
