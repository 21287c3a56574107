"""Models built to have a property, for tests whose outcome must hold on any CPU (issue 22).

A trained model's outcome on a few samples (broken or robust at eps) moves with the rounding of
the CPU that trained and attacks it. These models are written down instead, with weights chosen
so that the outcome follows from a margin argument that rounding cannot touch.

  block-linear  TorchScript, float32: [B, 1, 28, 28] in [0, 1] -> logits [B, 10],
                z_c = SCALE * mean of x over block c, where block c is the flattened pixels
                78c .. 78c + 77 (pixels 780..783 are read by no class); no bias. Over the
                L-inf ball of radius eps (box inactive) z_c - z_j moves by at most 2 * SCALE * eps,
                and the input gradient of any loss of the logits is constant on each block, so
                the sign of a gradient step on block c is the sign of dLoss/dz_c.

usage: /usr/bin/python3 scripts/reference/designed_models.py block-linear OUT.pt [SCALE]
"""
import sys
import torch
import torch.nn as nn

BLOCK = 78
CLASSES = 10


class BlockLinear(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.fc = nn.Linear(784, CLASSES, bias=False)
        with torch.no_grad():
            self.fc.weight.zero_()
            for c in range(CLASSES):
                self.fc.weight[c, BLOCK * c:BLOCK * (c + 1)] = scale / BLOCK

    def forward(self, x):
        return self.fc(x.flatten(1))


def main():
    kind, out = sys.argv[1], sys.argv[2]
    if kind != "block-linear":
        raise SystemExit(f"unknown model {kind!r} (known: block-linear)")
    scale = float(sys.argv[3]) if len(sys.argv) > 3 else 40.0
    m = BlockLinear(scale).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    torch.jit.script(m).save(out)


if __name__ == "__main__":
    main()
