use super::*;
use tch::{nn::OptimizerConfig, Device, Kind};

/// The tests' tiny host: 4 blocks of width 32 with 4 heads, 16 positions, 2 segments.
fn tiny() -> TransformerHostConfig {
    TransformerHostConfig {
        vocab_size: 37,
        n_embd: 32,
        n_head: 4,
        n_layer: 4,
        block_size: 16,
        num_segments: 2,
        dropout: 0.0,
    }
}

fn host(config: TransformerHostConfig) -> (nn::VarStore, TransformerHost) {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let h = TransformerHost::new(&vs.root(), config).unwrap();
    (vs, h)
}

fn tokens(batch: i64, len: i64, vocab: i64) -> Tensor {
    Tensor::randint(vocab, [batch, len], (Kind::Int64, Device::Cpu))
}

fn equal(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.equal(b)
}

#[test]
fn points_are_the_segment_ends_in_order() {
    let (_vs, h) = host(TransformerHostConfig { n_layer: 6, num_segments: 3, ..tiny() });
    let points: Vec<_> =
        h.injection_points().iter().map(|p| (p.id.as_str(), p.channels, p.order, p.position)).collect();
    // Steps: 0 the embeddings, 1..=6 the blocks, 7 the head; two blocks per segment.
    assert_eq!(points, vec![("r0c0", 32, 0, 2), ("r0c1", 32, 1, 4), ("r0c2", 32, 2, 6)]);
    assert_eq!(h.segment(None, None).unwrap(), Segment::new(0, 8));
    assert_eq!(h.segment(Some("r0c2"), None).unwrap(), Segment::new(7, 8));
    let e = h.segment(Some("r0c1"), Some("r0c0")).unwrap_err().to_string();
    assert_eq!(e, "segment from `r0c1` to `r0c0` runs backwards (execution order: r0c0, r0c1, r0c2)");
    assert!(h.segment(Some("r0c1"), Some("r0c1")).is_err(), "an empty segment");
    let e = h.segment(None, Some("r1c0")).unwrap_err().to_string();
    assert_eq!(e, "unknown injection point `r1c0`; valid: r0c0, r0c1, r0c2");
}

#[test]
fn shapes_at_every_point_and_segments_compose_bit_for_bit() {
    let (_vs, h) = host(TransformerHostConfig { n_layer: 6, num_segments: 3, ..tiny() });
    let x = tokens(3, 11, 37);
    h.check_input(&x).unwrap();
    let logits = h.forward(&x, false);
    assert_eq!(logits.size(), vec![3, 11, 37]);
    let mut feats = h.prepare_input(&x);
    let mut from = None;
    for p in h.injection_points() {
        feats = h.run_segment(h.segment(from, Some(&p.id)).unwrap(), &feats, false);
        assert_eq!(feats.size(), vec![3, 11, 32], "at {}", p.id);
        from = Some(p.id.as_str());
    }
    let out = h.run_segment(h.segment(from, None).unwrap(), &feats, false);
    assert!(equal(&out, &logits), "segment by segment differs from the forward");
}

#[test]
fn inputs_are_checked_with_the_numbers() {
    let (_vs, h) = host(tiny());
    h.check_input(&tokens(2, 16, 37)).unwrap();
    let e = h.check_input(&tokens(2, 17, 37)).unwrap_err().to_string();
    assert!(e.contains("sequences of 17 tokens, longer than host.block_size (16)"), "{e}");
    let e = h.check_input(&tokens(2, 4, 37).to_kind(Kind::Float)).unwrap_err().to_string();
    assert!(e.contains("must be int64 token ids, got Float of shape [2, 4]"), "{e}");
    let e = h.check_input(&Tensor::zeros([2, 4, 32], (Kind::Int64, Device::Cpu))).unwrap_err().to_string();
    assert!(e.contains("shape (batch, sequence), got shape [2, 4, 32]"), "{e}");
    assert!(h.check_input(&tokens(0, 4, 37)).unwrap_err().to_string().contains("is empty"));
}

#[test]
fn config_refusals_name_the_numbers() {
    let vs = nn::VarStore::new(Device::Cpu);
    let e = TransformerHost::new(&vs.root(), TransformerHostConfig { n_layer: 5, ..tiny() }).unwrap_err();
    assert!(e.to_string().contains("host.n_layer (5) is not a multiple of host.num_segments (2)"), "{e}");
    let e = TransformerHost::new(&vs.root(), TransformerHostConfig { n_head: 5, ..tiny() }).unwrap_err();
    assert!(e.to_string().contains("host.n_embd (32) is not a multiple of host.n_head (5)"), "{e}");
    assert!(vs.variables().is_empty(), "nothing built for a refused config");
}

/// Changing the tokens after position `t` leaves the logits up to `t` exactly as they
/// were, in training mode too (dropout off: the masks would differ).
#[test]
fn the_logits_at_a_position_see_no_later_token() {
    let (_vs, h) = host(tiny());
    let x = tokens(2, 12, 37);
    let t = 5;
    let later = x.narrow(1, t + 1, 12 - t - 1);
    let changed = x.copy();
    changed.narrow(1, t + 1, 12 - t - 1).copy_(&(later + 1).remainder(37));
    for train in [false, true] {
        let (a, b) = (h.forward(&x, train), h.forward(&changed, train));
        assert!(equal(&a.narrow(1, 0, t + 1), &b.narrow(1, 0, t + 1)), "train {train}");
        assert!(!equal(&a.narrow(1, t + 1, 1), &b.narrow(1, t + 1, 1)), "premise: the changed positions differ");
    }
}

/// Gradients of the logits up to `t` reach no position after `t`: not the position
/// embedding's rows, not the features at a point.
#[test]
fn no_gradient_flows_from_a_position_to_a_later_one() {
    let (vs, h) = host(tiny());
    let (x, t) = (tokens(2, 12, 37), 5);
    let zero = |g: &Tensor| g.eq(0.0).all().int64_value(&[]) == 1;
    h.forward(&x, true).narrow(1, 0, t + 1).sum(Kind::Float).backward();
    let wpe = vs.variables()["pos_emb.weight"].grad();
    assert!(!zero(&wpe.narrow(0, 0, t + 1)), "premise: gradients flow");
    assert!(zero(&wpe.narrow(0, t + 1, 16 - t - 1)), "the position embedding after {t} got a gradient");
    let feats = h.run_segment(h.segment(None, Some("r0c0")).unwrap(), &x, true).detach().set_requires_grad(true);
    let logits = h.run_segment(h.segment(Some("r0c0"), None).unwrap(), &feats, true);
    logits.narrow(1, 0, t + 1).sum(Kind::Float).backward();
    assert!(!zero(&feats.grad().narrow(1, 0, t + 1)), "premise: gradients flow");
    assert!(zero(&feats.grad().narrow(1, t + 1, 12 - t - 1)), "the features at r0c0 after {t} got a gradient");
}

#[test]
fn the_head_is_the_token_embedding() {
    let (vs, h) = host(tiny());
    let vars = vs.variables();
    assert_eq!(vars.len(), 2 + 4 * 12 + 2, "embeddings, 12 tensors per block, ln_f: no head weight");
    assert!(vars.keys().all(|k| !k.contains("head")), "{:?}", vars.keys());
    assert_eq!(h.wte.data_ptr(), vars["tok_emb.weight"].data_ptr());
    // The logits move with the embedding: zero it and they are zero.
    let _ = tch::no_grad(|| vars["tok_emb.weight"].shallow_clone().zero_());
    let logits = h.forward(&tokens(2, 5, 37), false);
    assert!(logits.eq(0.0).all().int64_value(&[]) == 1);
}

#[test]
fn init_is_nanogpts() {
    let config = TransformerHostConfig { n_embd: 128, n_layer: 8, ..tiny() };
    let (vs, _h) = host(config);
    let vars = vs.variables();
    let std = |name: &str| vars[name].std(true).double_value(&[]);
    let close = |a: f64, b: f64| (a - b).abs() < 0.1 * b;
    assert!(close(std("tok_emb.weight"), 0.02) && close(std("pos_emb.weight"), 0.02));
    assert!(close(std("layers.3.attn.c_attn.weight"), 0.02) && close(std("layers.3.mlp.c_fc.weight"), 0.02));
    let proj = 0.02 / 16f64.sqrt();
    assert!(close(std("layers.3.attn.c_proj.weight"), proj), "{}", std("layers.3.attn.c_proj.weight"));
    assert!(close(std("layers.3.mlp.c_proj.weight"), proj));
    for (name, t) in &vars {
        let expect = if name.ends_with("bias") {
            Some(0.0)
        } else if name.contains("ln") {
            Some(1.0)
        } else {
            None
        };
        if let Some(v) = expect {
            assert!(t.eq(v).all().int64_value(&[]) == 1, "{name}");
        }
    }
}

#[test]
fn dropout_acts_in_training_only() {
    let (vs, h) = host(TransformerHostConfig { dropout: 0.5, ..tiny() });
    let x = tokens(2, 8, 37);
    assert!(equal(&h.forward(&x, false), &h.forward(&x, false)), "eval is deterministic");
    assert!(!equal(&h.forward(&x, true), &h.forward(&x, true)), "training draws masks");
    let (mut plain_vs, plain) = host(TransformerHostConfig { dropout: 0.0, ..tiny() });
    plain_vs.copy(&vs).unwrap();
    assert!(equal(&h.forward(&x, false), &plain.forward(&x, false)), "eval ignores the dropout");
}

/// Next-token cross-entropy of `logits` `(B, T, V)` against `x` `(B, T)`.
fn next_token_loss(logits: &Tensor, x: &Tensor) -> Tensor {
    let (b, t) = (x.size()[0], x.size()[1]);
    let v = logits.size()[2];
    let pred = logits.narrow(1, 0, t - 1).reshape([b * (t - 1), v]);
    pred.cross_entropy_for_logits(&x.narrow(1, 1, t - 1).reshape([b * (t - 1)]))
}

#[test]
fn a_few_sgd_steps_lower_the_loss_on_a_repeated_sequence() {
    let (vs, h) = host(tiny());
    let x = Tensor::arange(8, (Kind::Int64, Device::Cpu)).repeat([4, 2]);
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 0.05).unwrap();
    let first = next_token_loss(&h.forward(&x, true), &x).double_value(&[]);
    for _ in 0..30 {
        opt.backward_step(&next_token_loss(&h.forward(&x, true), &x));
    }
    let last = next_token_loss(&h.forward(&x, false), &x).double_value(&[]);
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}

/// Under bfloat16 autocast (on the CPU here; CUDA in tests/all/gpu.rs) the host runs with
/// no dtype of its own: bfloat16 logits close to float32's, gradients finite, causality
/// kept.
#[test]
fn runs_under_bf16_autocast() {
    let (vs, h) = host(tiny());
    let x = tokens(2, 12, 37);
    let reference = h.forward(&x, false);
    let autocast = esper_torch_shim::autocast::Bf16Autocast::enter(false).unwrap();
    let logits = h.forward(&x, true);
    let changed = x.copy();
    let _ = changed.narrow(1, 6, 6).fill_(0);
    let other = h.forward(&changed, false);
    drop(autocast);
    assert_eq!(logits.kind(), Kind::BFloat16);
    let err = (logits.to_kind(Kind::Float) - &reference).abs().max().double_value(&[]);
    assert!(err < 0.05 * reference.abs().max().double_value(&[]), "bf16 logits off by {err}");
    assert!(equal(&logits.detach().narrow(1, 0, 6), &other.narrow(1, 0, 6)), "causal under autocast");
    logits.to_kind(Kind::Float).sum(Kind::Float).backward();
    for (name, p) in vs.variables() {
        assert_eq!(p.grad().kind(), Kind::Float, "{name}");
        assert!(p.grad().isfinite().all().int64_value(&[]) == 1, "{name}");
    }
}

#[test]
fn a_model_drives_the_transformer_host_through_the_seam_with_empty_slots() {
    use crate::model::{MorphogeneticModel, SlotConfig};
    tch::manual_seed(7);
    let model = MorphogeneticModel::with_host(
        Device::Cpu,
        |path| Ok(Box::new(TransformerHost::new(path, tiny())?)),
        &["r0c1", "r0c0"],
        SlotConfig::default(),
    )
    .unwrap();
    let host = model.host();
    assert_eq!((host.topology(), host.layout()), (Topology::Transformer, FeatureLayout::Ntc));
    let ids: Vec<&str> = model.slots().iter().map(|s| s.id()).collect();
    assert_eq!(ids, ["r0c0", "r0c1"], "slots run in the host's order");
    let x = tokens(3, 9, 37);
    let logits = model.forward(&x, false).unwrap();
    let direct = host.downcast_ref::<TransformerHost>().unwrap().forward(&x, false);
    assert!(equal(&logits, &direct), "empty slots pass the features through");
    assert_eq!(logits.size(), [3, 9, 37]);
}
