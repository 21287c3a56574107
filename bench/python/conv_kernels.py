#!/usr/bin/env python3
"""Single-convolution timings behind two choices of FisherLens (docs/fisher.md, "Kernel choices"
and "The process allocator"): oneDNN vs LibTorch's im2col kernels for thin (≤ 4 input channel)
convolutions, and forward vs backward-data kernels, for small-cnn's and resnet20's layer shapes,
batch 128, 2 threads. Prints min/median ms over 9 runs per kernel.

Run it twice to see the allocator's share (glibc's defaults, then FisherLens' settings):
  /usr/bin/python3 bench/python/conv_kernels.py
  MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=67108864 /usr/bin/python3 bench/python/conv_kernels.py
"""
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)


def ms(fn, n=9):
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return f"{ts[0]:.2f}/{ts[len(ts) // 2]:.2f}"


N = 128
print("Cin Cout HxW | oneDNN fwd | im2col fwd | oneDNN input-grad | im2col input-grad  (min/median ms)")
for ci, co, h in [(1, 32, 28), (32, 32, 26), (32, 64, 12), (64, 64, 10), (3, 16, 32), (16, 16, 32)]:
    w = torch.randn(co, ci, 3, 3)
    x = torch.randn(N, ci, h, h)
    g = torch.randn(N, co, h - 2, h - 2)
    print(f"{ci:3d} {co:4d} {h:2d}x{h:<2d} |",
          ms(lambda: F.conv2d(x, w)), "|",
          ms(lambda: torch._C._nn.thnn_conv2d(x, w, [3, 3], None, [1, 1], [0, 0])), "|",
          ms(lambda: torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, False, False])), "|",
          ms(lambda: torch.ops.aten._slow_conv2d_backward(g, x, w, [3, 3], [1, 1], [0, 0], [True, False, False])))
