"""PyTorch reference for the CNN blueprints, written from the catalogue (not esper-lite's
code), for tests/all/parity.rs.

    python reference.py CASES.json IN.safetensors OUT.safetensors

CASES.json lists the cases (blueprint, channels); IN holds, for case i, `{i}.x` (the
seed's input), `{i}.g` (the upstream gradient) and `{i}.param.NAME` (the seed's
parameters). For each case this computes y = blueprint(x) in float32 and the gradients
of sum(y * g) with respect to every parameter, and writes `{i}.out` and `{i}.grad.NAME`
to OUT.
"""

import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from harness import run  # noqa: E402

EPS = 1e-5


def groups(c):
    """GroupNorm groups: the first of 32..1 dividing C with C/G >= 16, else the first dividing C."""
    candidates = (32, 16, 8, 4, 2, 1)
    for g in candidates:
        if c % g == 0 and c // g >= 16:
            return g
    return next(g for g in candidates if c % g == 0)


def gn(x, p, prefix):
    return F.group_norm(x, groups(x.shape[1]), p[prefix + "_weight"], p[prefix + "_bias"], EPS)


def conv(x, w, groups=1):
    return F.conv2d(x, w, None, 1, w.shape[-1] // 2, 1, groups)


def forward(blueprint, p, x):
    if blueprint == "noop":
        return x
    if blueprint == "norm":
        normed = F.group_norm(x, groups(x.shape[1]), p["weight"], p["bias"], EPS)
        return x + torch.tanh(p["scale"]) * (normed - x)
    if blueprint == "attention":
        hidden = F.relu(F.linear(x.mean(dim=(2, 3)), p["fc_0_weight"]))
        gate = torch.sigmoid(F.linear(hidden, p["fc_2_weight"], p["fc_2_bias"]))
        return x * gate[:, :, None, None]
    if blueprint == "depthwise":
        y = conv(conv(x, p["depthwise_weight"], groups=x.shape[1]), p["pointwise_weight"])
        return x + F.relu(gn(y, p, "gn"))
    if blueprint == "bottleneck":
        y = F.relu(conv(x, p["down_weight"]))
        y = F.relu(conv(y, p["mid_weight"]))
        return x + gn(conv(y, p["up_weight"]), p, "gn")
    if blueprint == "conv_small":
        return x + F.relu(gn(conv(x, p["conv_weight"]), p, "gn"))
    if blueprint == "conv_light":
        return x + F.relu(gn(conv(x, p["enhance_conv_weight"]), p, "enhance_gn"))
    if blueprint == "conv_heavy":
        y = F.relu(gn(conv(x, p["enhance_0_conv_weight"]), p, "enhance_0_gn"))
        y = F.relu(gn(conv(y, p["enhance_1_conv_weight"]), p, "enhance_1_gn"))
        return x + y
    raise SystemExit(f"reference.py: no reference for blueprint {blueprint!r}")


def main():
    run("reference.py", lambda case, params, x: forward(case["blueprint"], params, x))


if __name__ == "__main__":
    main()
