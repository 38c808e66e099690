"""PyTorch reference for the transformer blueprints, written from the catalogue (not
esper-lite's code), for tests/all/transformer_blueprint_parity.rs.

    python transformer_blueprints.py CASES.json IN.safetensors OUT.safetensors

CASES.json lists the cases (blueprint, channels, window: null or flex_attention's sliding window); IN holds, for case i, `{i}.x` (the
seed's (B, T, C) input), `{i}.g` (the upstream gradient) and `{i}.param.NAME` (the
seed's parameters). For each case this computes y = blueprint(x) and the gradients of
sum(y * g) with respect to every parameter, and writes `{i}.out` and `{i}.grad.NAME` to
OUT (float32). The math runs in float64, the attention written out (scores, causal mask,
softmax), so the reference shares no kernel with the runtime.
"""

import math
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

EPS = 1e-5
N_HEAD = 4


def causal_attention(x, p, window=None):
    b, t, c = x.shape
    d = c // N_HEAD

    def heads(name):
        return F.linear(x, p[name + "_weight"], p[name + "_bias"]).view(b, t, N_HEAD, d).transpose(1, 2)

    q, k, v = heads("q"), heads("k"), heads("v")
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    hidden = j > i  # the future
    if window is not None:
        hidden = hidden | (i - j >= window)  # beyond the window
    weights = scores.masked_fill(hidden, float("-inf")).softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, t, c)
    return x + F.linear(out, p["proj_weight"], p["proj_bias"])


def forward(blueprint, p, x, window=None):
    if blueprint == "noop":
        return x
    if blueprint == "norm":
        normed = F.layer_norm(x, (x.shape[-1],), p["norm_weight"], p["norm_bias"], EPS)
        return x + torch.tanh(p["scale"]) * (normed - x)
    if blueprint in ("lora", "lora_large"):
        return x + F.linear(F.linear(x, p["down_weight"]), p["up_weight"])
    if blueprint in ("attention", "flex_attention"):
        return causal_attention(x, p, window)
    if blueprint in ("mlp_small", "mlp"):
        hidden = F.gelu(F.linear(x, p["fc1_weight"], p["fc1_bias"]))
        return x + F.linear(hidden, p["fc2_weight"], p["fc2_bias"])
    raise SystemExit(f"transformer_blueprints.py: no reference for blueprint {blueprint!r}")


def main():
    # Here rather than at the top: the step benchmark imports `forward` without the
    # harness (and its safetensors).
    from harness import run

    run(
        "transformer_blueprints.py",
        lambda case, params, x: forward(case["blueprint"], params, x.double(), case.get("window")),
        torch.float64,
    )


if __name__ == "__main__":
    main()
