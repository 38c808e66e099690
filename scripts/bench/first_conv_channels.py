"""The first convolution alone (3 -> 32 channels, 3x3, channels-last, forward + weight
gradient), with its 3 input channels and padded to 4 and 8: whether padding the input
would let cuDNN pick faster kernels (docs/src/performance.md, "Tried and dropped").

    python scripts/bench/first_conv_channels.py      # needs CUDA
"""

import torch


def bench(cin, batch, benchmark=False):
    torch.backends.cudnn.benchmark = benchmark
    x = torch.randn(batch, cin, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(cin, 32, 3, padding=1, bias=False).cuda().to(memory_format=torch.channels_last)
    g = torch.randn(batch, 32, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)

    def step():
        conv(x).backward(g)

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(50):
        step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 50


for batch in (128, 1024):
    for cin in (3, 4, 8):
        print(f"batch {batch}, {cin} input channels: {bench(cin, batch):.3f} ms, cudnn.benchmark {bench(cin, batch, True):.3f} ms")
