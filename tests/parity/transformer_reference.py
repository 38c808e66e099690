"""PyTorch reference for the transformer host, written from the architecture (a GPT-style
decoder: token and position embeddings, pre-LayerNorm blocks of causal multi-head
self-attention and a 4x GELU MLP, a final LayerNorm, a head tied to the token
embedding), for tests/all/transformer_parity.rs. No dropout.

    python transformer_reference.py CASES.json IN.safetensors OUT.safetensors

CASES.json lists the cases ({n_embd, n_head, n_layer}); IN holds, for case i, `{i}.x`
(token ids, int64, (B, T)), `{i}.g` (the upstream gradient, (B, T, vocab)) and
`{i}.param.NAME` (the host's parameters, named as the runtime names them). Everything
is computed in float64, with the attention written out (scores, causal mask, softmax)
rather than through a fused kernel; for each case this writes the logits `{i}.out` and
the gradients of sum(logits * g) with respect to every parameter, `{i}.grad.NAME`, to
OUT in float32.
"""

import math
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
from harness import run  # noqa: E402

EPS = 1e-5


def layer_norm(x, p, prefix):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * p[prefix + ".weight"] + p[prefix + ".bias"]


def linear(x, p, prefix):
    return x @ p[prefix + ".weight"].T + p[prefix + ".bias"]


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def attention(x, p, prefix, n_head):
    b, t, c = x.shape
    d = c // n_head
    qkv = linear(x, p, prefix + ".c_attn")
    # Channels 0..C the queries, C..2C the keys, 2C..3C the values; head h takes
    # channels h*D..(h+1)*D of each.
    q, k, v = (qkv[..., i * c:(i + 1) * c].reshape(b, t, n_head, d).permute(0, 2, 1, 3) for i in range(3))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    future = torch.ones(t, t, dtype=torch.bool).triu(diagonal=1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    y = (weights @ v).permute(0, 2, 1, 3).reshape(b, t, c)
    return linear(y, p, prefix + ".c_proj")


def forward(case, p, ids):
    t = ids.shape[1]
    wte = p["tok_emb.weight"]
    h = wte[ids] + p["pos_emb.weight"][:t]
    for i in range(case["n_layer"]):
        pre = f"layers.{i}"
        h = h + attention(layer_norm(h, p, pre + ".ln1"), p, pre + ".attn", case["n_head"])
        mlp = gelu(linear(layer_norm(h, p, pre + ".ln2"), p, pre + ".mlp.c_fc"))
        h = h + linear(mlp, p, pre + ".mlp.c_proj")
    return layer_norm(h, p, "ln_f") @ wte.T


def main():
    run("transformer_reference.py", forward, torch.float64)


if __name__ == "__main__":
    main()
