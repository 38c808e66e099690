"""PyTorch reference for the transformer host (the model: `transformer_host.py`, every op
written out), for tests/all/transformer_parity.rs. No dropout.

    python transformer_reference.py CASES.json IN.safetensors OUT.safetensors

CASES.json lists the cases ({n_embd, n_head, n_layer}); IN holds, for case i, `{i}.x`
(token ids, int64, (B, T)), `{i}.g` (the upstream gradient, (B, T, vocab)) and
`{i}.param.NAME` (the host's parameters, named as the runtime names them). Everything
is computed in float64, with the attention written out (scores, causal mask, softmax)
rather than through a fused kernel; for each case this writes the logits `{i}.out` and
the gradients of sum(logits * g) with respect to every parameter, `{i}.grad.NAME`, to
OUT in float32.
"""

import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
from harness import run  # noqa: E402
from transformer_host import forward  # noqa: E402


def main():
    run("transformer_reference.py", lambda case, p, ids: forward(case, p, ids, fused=False), torch.float64)


if __name__ == "__main__":
    main()
