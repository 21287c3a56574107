"""Gradient-masked models for test/autoattack.test.ts (AutoAttack's sanity checks and cascade).

Trains the small CNN of attacks_pgd.py on 2000 Fashion-MNIST training images and saves three
TorchScript models of it into OUTDIR:
  base.pt    the network itself (logits);
  scaled.pt  the same logits times SCALE (default 1e4): the softmax saturates, so cross-entropy
             input gradients vanish in float32 and PGD on the cross-entropy stalls, while the
             scale-invariant DLR loss sees the same network;
  quant.pt   the network behind a 255-level input quantisation round(255 x) / 255: the same
             predictions on 8-bit images, an input gradient that is zero everywhere;
  softmax.pt the network's softmax probabilities instead of logits;
  noisy.pt   the network on x + N(0, 0.01²) noise: a randomised model (two forwards differ).

usage: /usr/bin/python3 scripts/reference/masked_models.py OUTDIR [SCALE]
"""
import os, sys
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attacks_pgd import Net, load  # noqa: E402


class Scaled(nn.Module):
    def __init__(self, net: nn.Module, scale: float):
        super().__init__()
        self.net = net
        self.scale = scale

    def forward(self, x):
        return self.net(x) * self.scale


class Quantised(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 255) / 255)


class Softmax(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(self.net(x), 1)


class Noisy(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x + 0.01 * torch.randn_like(x))


def main():
    out = sys.argv[1]
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1e4
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    xt, yt = load("train", 2000)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(3):
        perm = torch.randperm(2000)
        for i in range(0, 2000, 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(net(xt[b]), yt[b]).backward()
            opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    torch.jit.script(net).save(os.path.join(out, "base.pt"))
    torch.jit.script(Scaled(net, scale).eval()).save(os.path.join(out, "scaled.pt"))
    torch.jit.script(Quantised(net).eval()).save(os.path.join(out, "quant.pt"))
    torch.jit.script(Softmax(net).eval()).save(os.path.join(out, "softmax.pt"))
    torch.jit.script(Noisy(net).eval()).save(os.path.join(out, "noisy.pt"))


if __name__ == "__main__":
    main()
