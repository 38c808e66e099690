# The classifier head alone (linear 128 -> 10, forward + backward) under torch.profiler, for a
# few formulations: which cuBLAS kernels each runs and what they cost. Run on the GPU
# machine: /opt/torch/.venv/bin/python scripts/bench/head_linear.py
import torch, torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity
dev = "cuda"
torch.manual_seed(0)
for B in (128, 1024):
    x0 = torch.randn(B, 128, device=dev)
    W = torch.randn(10, 128, device=dev, requires_grad=True)
    Wt = W.detach().t().contiguous().requires_grad_(True)  # [128, 10]
    b = torch.randn(10, device=dev, requires_grad=True)
    g = torch.randn(B, 10, device=dev)
    variants = {
        "linear": lambda x: F.linear(x, W, b),
        "x@Wt+b": lambda x: torch.addmm(b, x, Wt),
        "matmul+add": lambda x: x.matmul(W.t()) + b,
        "einsum": lambda x: torch.einsum("bk,nk->bn", x, W) + b,
        "bmm-free (mul+sum)": lambda x: (x.unsqueeze(1) * W.unsqueeze(0)).sum(-1) + b,
    }
    for name, f in variants.items():
        x = x0.clone().requires_grad_(True)
        for _ in range(5):
            f(x).backward(g)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                f(x).backward(g)
            torch.cuda.synchronize()
        ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        tot = sum(e.device_time for e in ev) / 10
        print(f"B={B} {name}: {tot:.1f} us/iter over {len(ev)//10} kernels")
        seen = {}
        for e in ev:
            seen.setdefault(e.name[:90], []).append(e.device_time)
        for k, v in seen.items():
            print(f"    {sum(v)/len(v):7.1f} us x{len(v)//10}  {k}")
