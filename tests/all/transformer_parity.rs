//! Parity with PyTorch on identical weights: the transformer host at two widths and two
//! sequence lengths, run segment by segment as the model runs it, against a reference
//! written from the architecture (`tests/parity/transformer_reference.py`, float64, the
//! attention written out). The parameters (perturbed away from their init, so zero
//! biases and unit LayerNorms count), the token ids and the upstream gradient go to
//! PyTorch in a safetensors file; the logits must agree within 1e-5 and every parameter
//! gradient (the tied token embedding's sums the embedding's and the head's) within
//! 1e-4, relative to the reference's largest magnitude.

use esper_runtime::host::{TransformerHost, TransformerHostConfig};
use esper_tests::parity::{pytorch_reference, relative_error};
use std::collections::BTreeMap;
use tch::{nn, Device, Kind, Tensor};

const WIDTHS: [(i64, i64); 2] = [(32, 4), (48, 6)];
const SEQ_LENS: [i64; 2] = [7, 16];
const OUT_TOLERANCE: f64 = 1e-5;
const GRAD_TOLERANCE: f64 = 1e-4;

fn config(n_embd: i64, n_head: i64) -> TransformerHostConfig {
    TransformerHostConfig { vocab_size: 41, n_embd, n_head, n_layer: 4, block_size: 16, num_segments: 2, dropout: 0.0 }
}

/// The logits of `ids`, run from the input through every injection point to the logits.
fn by_segments(host: &TransformerHost, ids: &Tensor) -> Tensor {
    host.check_input(ids).unwrap();
    let mut h = host.prepare_input(ids);
    let mut from = None;
    for p in host.injection_points() {
        h = host.run_segment(host.segment(from, Some(&p.id)).unwrap(), &h, true);
        from = Some(p.id.as_str());
    }
    host.run_segment(host.segment(from, None).unwrap(), &h, true)
}

struct Case {
    what: String,
    out: Tensor,
    grads: BTreeMap<String, Tensor>,
}

/// Runs one case in the runtime and adds its tensors for the reference to `file`.
fn run_case(i: usize, (n_embd, n_head): (i64, i64), len: i64, file: &mut Vec<(String, Tensor)>) -> Case {
    let vs = nn::VarStore::new(Device::Cpu);
    let host = TransformerHost::new(&vs.root(), config(n_embd, n_head)).unwrap();
    let params: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    tch::no_grad(|| {
        for p in params.values() {
            let _ = p.shallow_clone().f_add_(&(p.randn_like() * 0.1)).unwrap();
        }
    });
    let ids = Tensor::randint(41, [3, len], (Kind::Int64, Device::Cpu));
    let out = by_segments(&host, &ids);
    let g = out.randn_like();
    (&out * &g).sum(Kind::Float).backward();
    file.push((format!("{i}.x"), ids));
    file.push((format!("{i}.g"), g));
    for (name, p) in &params {
        file.push((format!("{i}.param.{name}"), p.detach().contiguous()));
    }
    let grads = params.iter().map(|(n, p)| (n.clone(), p.grad().copy())).collect();
    Case { what: format!("C={n_embd} H={n_head} T={len}"), out: out.detach().copy(), grads }
}

#[test]
fn the_transformer_host_matches_pytorch_forward_and_backward() {
    tch::manual_seed(0);
    let (mut file, mut cases, mut list) = (Vec::new(), Vec::new(), Vec::new());
    for width in WIDTHS {
        for len in SEQ_LENS {
            cases.push(run_case(cases.len(), width, len, &mut file));
            list.push(serde_json::json!({"n_embd": width.0, "n_head": width.1, "n_layer": 4}));
        }
    }
    let reference = pytorch_reference("transformer_reference.py", "transformer-parity", &list.into(), &file);

    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, c) in cases.iter().enumerate() {
        let err = relative_error(&c.out, &reference[&format!("{i}.out")]);
        if err > OUT_TOLERANCE {
            failures.push(format!("{}: logits differ by {err:.2e} (relative)", c.what));
        }
        for (name, grad) in &c.grads {
            let err = relative_error(grad, &reference[&format!("{i}.grad.{name}")]);
            if err > GRAD_TOLERANCE {
                failures.push(format!("{}: gradient of `{name}` differs by {err:.2e} (relative)", c.what));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{} mismatch(es) with PyTorch:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(checked, 4 * (2 + 4 * 12 + 2), "premise: every parameter's gradient compared");
}
