"""The command line and the case loop the PyTorch parity references share.

    python SCRIPT.py CASES.json IN.safetensors OUT.safetensors

CASES.json lists the cases; IN holds, for case i, `{i}.x` (the input), `{i}.g` (the
upstream gradient) and `{i}.param.NAME` (the parameters). For each case, y =
forward(case, params, x) and the gradients of sum(y * g) with respect to every parameter
go to OUT as `{i}.out` and `{i}.grad.NAME`, in float32.
"""

import json
import sys
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


def run(script, forward, dtype=None):
    """Runs `forward(case, params, x)` on every case of the command line's files. The
    parameters are fresh leaves in `dtype` (their own dtype when None); `x` is passed as
    stored, for `forward` to convert."""
    cases_path, in_path, out_path = sys.argv[1:4]
    with open(cases_path) as f:
        cases = json.load(f)
    tensors = load_file(in_path)
    out = {}
    for i, case in enumerate(cases):
        prefix = f"{i}.param."
        params = {
            k[len(prefix):]: v.to(dtype or v.dtype, copy=True).requires_grad_(True)
            for k, v in tensors.items()
            if k.startswith(prefix)
        }
        y = forward(case, params, tensors[f"{i}.x"])
        out[f"{i}.out"] = y.detach().float().contiguous()
        if params:
            (y * tensors[f"{i}.g"].to(y.dtype)).sum().backward()
            for name, p in params.items():
                out[f"{i}.grad.{name}"] = p.grad.float().contiguous()
    save_file(out, out_path)
    print(f"{script}: {len(cases)} cases, torch {torch.__version__}")
