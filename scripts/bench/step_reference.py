"""PyTorch reference of this runtime's benchmark step (scripts/bench-vs-pytorch.sh).

The same model as the runtime's default host -- 3 blocks of conv3x3 (no bias) + BatchNorm +
ReLU, each followed by a 2x2 max pool, global average pool, linear -- with a `norm` seed at
r0c1 (after block 1, 64 channels) in TRAINING: its input is the host's activation made
contiguous and detached (the isolation layer), its output joins the host stream through a
straight-through estimator (value unchanged, gradient to the seed). SGD with momentum 0.9 on
host and seed. One step = zero_grad, forward, cross-entropy, backward, both optimizer steps,
and the running loss/accuracy sums kept on the device (as the runtime keeps them).

Written from the catalogue, as a PyTorch user would write it (eager, NCHW by default).
Prints one JSON line per batch size: eager, and the whole step in one CUDA graph where CUDA
exists.
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def num_groups(channels):
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0 and channels // g >= 16:
            return g
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class Norm(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.groups = num_groups(channels)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        normed = F.group_norm(x, self.groups, self.weight, self.bias, 1e-5)
        return x + torch.tanh(self.scale) * (normed - x)


class Host(nn.Module):
    def __init__(self, base=32, blocks=3, classes=10, seed=True):
        super().__init__()
        chans = [3] + [base << i for i in range(blocks)]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False) for i in range(blocks))
        self.bns = nn.ModuleList(nn.BatchNorm2d(chans[i + 1]) for i in range(blocks))
        self.head = nn.Linear(chans[-1], classes)
        self.seed = Norm(chans[2]) if seed else None

    def forward(self, x):
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = F.relu(bn(conv(x)))
            if i == 1 and self.seed is not None:  # r0c1
                s = self.seed(x.contiguous().detach())
                x = x + (s - s.detach())
            x = F.max_pool2d(x, 2)
        return self.head(x.mean((2, 3)))


def make(batch, device, seed, channels_last):
    torch.manual_seed(0)
    model = Host(seed=seed).to(device)
    x = torch.randn(batch, 3, 32, 32, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    host_params = [p for n, p in model.named_parameters() if not n.startswith("seed.")]
    opts = [torch.optim.SGD(host_params, lr=0.01, momentum=0.9)]
    if seed:
        opts.append(torch.optim.SGD(model.seed.parameters(), lr=0.01, momentum=0.9))
    totals = [torch.zeros((), device=device), torch.zeros((), dtype=torch.int64, device=device)]

    def step():
        for o in opts:
            o.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        for o in opts:
            o.step()
        totals[0] += loss.detach() * batch
        totals[1] += (logits.argmax(1) == y).sum()

    return step


def timed(step, warmup, steps, device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        step()
        sync()
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return times


def kernels_per_step(step):
    """GPU work items (kernels, memsets, copies) one eager step launches, as the profiler
    sees them: what a CUDA graph of the step holds as nodes."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def kernel_table(step, rows=25):
    """Where one eager step's GPU time goes, kernel by kernel (to stderr): what to fuse."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows)


def graphed(step, warmup, steps):
    """The whole step captured once in a CUDA graph, replayed."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return timed(graph.replay, warmup, steps, torch.device("cuda"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default="8,128")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--no-seed", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms per shape")
    p.add_argument("--profile", action="store_true", help="print each batch's kernel time table to stderr")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    for batch in map(int, a.batches.split(",")):
        row = {"batch": batch, "seed": not a.no_seed, "threads": torch.get_num_threads()}
        times = timed(make(batch, device, not a.no_seed, a.channels_last), a.warmup, a.steps, device)
        row["eager_median_ms"] = statistics.median(times)
        if device.type == "cuda":
            g = graphed(make(batch, device, not a.no_seed, a.channels_last), a.warmup, a.steps)
            row["graph_median_ms"] = statistics.median(g)
            row["kernels"] = kernels_per_step(make(batch, device, not a.no_seed, a.channels_last))
            if a.profile:
                print(f"batch {batch}:", kernel_table(make(batch, device, not a.no_seed, a.channels_last)), file=sys.stderr)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
