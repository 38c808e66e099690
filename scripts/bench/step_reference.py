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

`--host transformer`: the default transformer job (configs/transformer.toml, read here for
the model, the sequence length, the batch size and the learning rates) with a `lora` seed
(rank 8) in TRAINING at r0c0, through the same isolation and straight-through estimator;
the model is the parity reference's (tests/parity/transformer_host.py) on PyTorch's fused
ops, the seed the blueprint reference's (tests/parity/transformer_blueprints.py). Adam on
host and seed (`torch.optim.Adam` with its defaults, `capturable` for the CUDA graph); one
step = zero_grad, forward, next-token cross-entropy over every position, backward, both
optimizer steps, the running sums kept on the device. `--compile` times it once more with
the forward and the loss through `torch.compile` (the optimizers eager).
"""

import argparse
import json
import math
import pathlib
import statistics
import sys
import time
import tomllib

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


REPO = pathlib.Path(__file__).resolve().parents[2]
TRANSFORMER_JOB = REPO / "configs" / "transformer.toml"
# The seed of the transformer benchmark: `lora` at r0c0 (injection point 0), its default rank.
LORA_POINT = 0
LORA_RANK = 8


def transformer_job():
    with open(TRANSFORMER_JOB, "rb") as f:
        return tomllib.load(f)


def adam_lr(job, key):
    opt = job["training"][key]
    if opt["kind"] != "adam" or set(opt) - {"kind", "lr"}:
        raise SystemExit(f"{TRANSFORMER_JOB}: training.{key} is {opt}; this reference runs Adam with PyTorch's defaults")
    return opt["lr"]


def make_transformer(batch, device, seed, capturable=False, compiled=False):
    sys.path.insert(0, str(REPO / "tests" / "parity"))
    from transformer_blueprints import forward as blueprint
    from transformer_host import forward, init_params, point_after

    job = transformer_job()
    host = job["host"]
    if host.get("dropout", 0.0) != 0.0:
        raise SystemExit(f"{TRANSFORMER_JOB}: host.dropout is {host['dropout']}; this reference has no dropout")
    batch = batch or job["training"]["batch_size"]
    torch.manual_seed(0)
    params = init_params(host, device)
    tokens = torch.randint(0, host["vocab_size"], (batch, job["data"]["block_size"] + 1), device=device)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    opts = [torch.optim.Adam(params.values(), lr=adam_lr(job, "host_optimizer"), capturable=capturable)]
    after_block = None
    if seed:
        c = host["n_embd"]
        bound = 1 / math.sqrt(c)  # nn.Linear's default init; the way back up starts at zero
        lora = {
            "down_weight": torch.empty(LORA_RANK, c, device=device).uniform_(-bound, bound).requires_grad_(True),
            "up_weight": torch.zeros(c, LORA_RANK, device=device, requires_grad=True),
        }

        def seeded(h):
            s = blueprint("lora", lora, h.contiguous().detach())
            return h + (s - s.detach())

        after_block = {point_after(host, LORA_POINT): seeded}
        opts.append(torch.optim.Adam(lora.values(), lr=adam_lr(job, "seed_optimizer"), capturable=capturable))
    totals = [torch.zeros((), device=device), torch.zeros((), dtype=torch.int64, device=device)]

    def loss_and_logits():
        logits = forward(host, params, x, fused=True, after_block=after_block)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten()), logits

    if compiled:
        loss_and_logits = torch.compile(loss_and_logits)

    def step():
        for o in opts:
            o.zero_grad()
        loss, logits = loss_and_logits()
        loss.backward()
        for o in opts:
            o.step()
        totals[0] += loss.detach() * y.numel()
        totals[1] += (logits.argmax(-1) == y).sum()

    return step, batch


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
    p.add_argument("--host", choices=("cnn", "transformer"), default="cnn")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", help="cnn: default 8,128; transformer: the job's batch size")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--no-seed", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms per shape")
    p.add_argument("--profile", action="store_true", help="print each batch's kernel time table to stderr")
    p.add_argument("--compile", action="store_true", help="transformer: also time the step with torch.compile's forward and loss")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    seed = not a.no_seed
    if a.host == "transformer":
        if a.channels_last:
            raise SystemExit("--channels-last is for the cnn host")
        batches = [int(b) for b in a.batches.split(",")] if a.batches else [None]

        def build(batch, graph=False, compiled=False):
            return make_transformer(batch, device, seed, capturable=graph, compiled=compiled)
    else:
        if a.compile:
            raise SystemExit("--compile is for the transformer host")
        batches = [int(b) for b in (a.batches or "8,128").split(",")]

        def build(batch, graph=False):
            return make(batch, device, seed, a.channels_last), batch

    for batch in batches:
        step, batch = build(batch)
        row = {"host": a.host, "batch": batch, "seed": seed, "threads": torch.get_num_threads()}
        times = timed(step, a.warmup, a.steps, device)
        row["eager_median_ms"] = statistics.median(times)
        row["eager_min_ms"] = min(times)
        if a.compile:
            row["compiled_median_ms"] = statistics.median(timed(build(batch, compiled=True)[0], a.warmup, a.steps, device))
        if device.type == "cuda":
            g = graphed(build(batch, graph=True)[0], a.warmup, a.steps)
            row["graph_median_ms"] = statistics.median(g)
            row["kernels"] = kernels_per_step(build(batch)[0])
            if a.profile:
                print(f"batch {batch}:", kernel_table(build(batch)[0]), file=sys.stderr)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
