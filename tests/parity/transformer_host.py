"""The transformer host in PyTorch, written from the architecture: a GPT-style decoder
(token and position embeddings, pre-LayerNorm blocks of causal multi-head
self-attention and a 4x GELU MLP, a final LayerNorm, a head tied to the token
embedding), no dropout, over a dict of parameters named as the runtime names them.

Two users share it:

* the parity reference (`transformer_reference.py`, for tests/all/transformer_parity.rs):
  float64, every op written out (LayerNorm's mean and variance, GELU's erf, the
  attention's scores, causal mask and softmax), so it shares no kernel with the runtime;
* the step benchmark (`scripts/bench/step_reference.py --host transformer`): the same
  model on PyTorch's fused ops, as a PyTorch user writes it (`F.layer_norm`, `F.gelu`,
  `F.scaled_dot_product_attention` with `is_causal`).
"""

import math

import torch
import torch.nn.functional as F

EPS = 1e-5
# Standard deviation of the weights' normal init (GPT-2's, as the runtime's host).
INIT_STD = 0.02


def layer_norm(x, p, prefix, fused=False):
    weight, bias = p[prefix + ".weight"], p[prefix + ".bias"]
    if fused:
        return F.layer_norm(x, x.shape[-1:], weight, bias, EPS)
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * weight + bias


def linear(x, p, prefix):
    return F.linear(x, p[prefix + ".weight"], p[prefix + ".bias"])


def gelu(x, fused=False):
    if fused:
        return F.gelu(x)
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def attention(x, p, prefix, n_head, fused=False):
    b, t, c = x.shape
    d = c // n_head
    qkv = linear(x, p, prefix + ".c_attn")
    # Channels 0..C the queries, C..2C the keys, 2C..3C the values; head h takes
    # channels h*D..(h+1)*D of each.
    q, k, v = (qkv[..., i * c:(i + 1) * c].reshape(b, t, n_head, d).transpose(1, 2) for i in range(3))
    if fused:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(diagonal=1)
        y = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v
    return linear(y.transpose(1, 2).reshape(b, t, c), p, prefix + ".c_proj")


def point_after(case, point):
    """The block injection point `r0c{point}` follows (blocks divided evenly among
    `num_segments` runs)."""
    return (point + 1) * (case["n_layer"] // case["num_segments"]) - 1


def forward(case, p, ids, fused=False, after_block=None):
    """Logits `(B, T, vocab)` of token ids `(B, T)`. `after_block`, if given, maps a
    block's index to a function applied to the features `(B, T, C)` after that block (a
    seed at the injection point there)."""
    t = ids.shape[1]
    wte = p["tok_emb.weight"]
    h = F.embedding(ids, wte) + p["pos_emb.weight"][:t]
    for i in range(case["n_layer"]):
        pre = f"layers.{i}"
        h = h + attention(layer_norm(h, p, pre + ".ln1", fused), p, pre + ".attn", case["n_head"], fused)
        mlp = gelu(linear(layer_norm(h, p, pre + ".ln2", fused), p, pre + ".mlp.c_fc"), fused)
        h = h + linear(mlp, p, pre + ".mlp.c_proj")
        if after_block and i in after_block:
            h = after_block[i](h)
    return F.linear(layer_norm(h, p, "ln_f", fused), wte)


def init_params(case, device=None):
    """Fresh parameters as the runtime's host makes them (nanoGPT's init: weights normal
    with std 0.02, the two projections back into the residual stream with std
    0.02 / sqrt(2 n_layer), biases zero, LayerNorms one and zero), leaves that require
    grad. `case` needs `vocab_size`, `block_size`, `n_embd` and `n_layer`."""
    c, n_layer = case["n_embd"], case["n_layer"]
    proj_std = INIT_STD / math.sqrt(2 * n_layer)
    shapes = {"tok_emb.weight": ((case["vocab_size"], c), INIT_STD), "pos_emb.weight": ((case["block_size"], c), INIT_STD)}
    for i in range(n_layer):
        pre = f"layers.{i}"
        for norm in ("ln1", "ln2"):
            shapes[f"{pre}.{norm}.weight"] = ((c,), "ones")
            shapes[f"{pre}.{norm}.bias"] = ((c,), "zeros")
        for name, (out_dim, in_dim), std in [
            ("attn.c_attn", (3 * c, c), INIT_STD),
            ("attn.c_proj", (c, c), proj_std),
            ("mlp.c_fc", (4 * c, c), INIT_STD),
            ("mlp.c_proj", (c, 4 * c), proj_std),
        ]:
            shapes[f"{pre}.{name}.weight"] = ((out_dim, in_dim), std)
            shapes[f"{pre}.{name}.bias"] = ((out_dim,), "zeros")
    shapes["ln_f.weight"] = ((c,), "ones")
    shapes["ln_f.bias"] = ((c,), "zeros")

    def make(shape, init):
        if init == "ones":
            return torch.ones(shape, device=device)
        if init == "zeros":
            return torch.zeros(shape, device=device)
        return torch.randn(shape, device=device) * init

    return {name: make(*spec).requires_grad_(True) for name, spec in shapes.items()}
