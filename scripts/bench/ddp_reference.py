"""PyTorch DDP reference for scripts/bench-distributed.sh: the default transformer job's
host (configs/transformer.toml; the parity reference's model, tests/parity/transformer_host.py,
on PyTorch's fused ops) trained data-parallel with `torch.nn.parallel.DistributedDataParallel`,
launched by torchrun. Each rank takes `--global-batch / WORLD_SIZE` sequences a step, Adam
with PyTorch's defaults at the job's learning rate, gradients averaged by DDP (its bucketed,
overlapped all-reduce). Gloo on the CPU, NCCL on CUDA (each rank on cuda:LOCAL_RANK).

Rank 0 prints one JSON line: ranks, global batch, median step time and samples per second.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_reference import REPO, adam_lr, transformer_job  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "parity"))
from transformer_host import forward, init_params  # noqa: E402


class Host(nn.Module):
    """The functional host's parameters as a module, so DDP can hold them."""

    def __init__(self, host, device):
        super().__init__()
        self.host = host
        params = init_params(host, device)
        self.names = list(params)
        self.p = nn.ParameterList(nn.Parameter(t.detach()) for t in params.values())

    def forward(self, ids):
        return forward(self.host, dict(zip(self.names, self.p)), ids, fused=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--global-batch", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if a.global_batch % world:
        raise SystemExit(f"--global-batch {a.global_batch} is not a multiple of {world} ranks")
    cuda = a.device == "cuda"
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    job = transformer_job()
    host = job["host"]
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(Host(host, device), device_ids=[device.index] if cuda else None)
    opt = torch.optim.Adam(model.parameters(), lr=adam_lr(job, "host_optimizer"))
    batch = a.global_batch // world
    g = torch.Generator(device="cpu").manual_seed(rank)
    tokens = torch.randint(0, host["vocab_size"], (batch, job["data"]["block_size"] + 1), generator=g).to(device)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = []
    for i in range(a.warmup + a.steps):
        sync()
        start = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - start)
    # The slowest rank sets the pace: take each step's largest time over the ranks.
    t = torch.tensor(times, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    step = statistics.median(t.tolist())
    if rank == 0:
        print(json.dumps({"ranks": world, "global_batch": a.global_batch, "step_ms": step * 1e3,
                          "samples_per_s": a.global_batch / step}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
