"""A gradient-masked model for the Square attack test (test/fab-square.test.ts).

Trains an MLP (784-128-10) on the first 3000 Fashion-MNIST training images and saves it as
TorchScript behind an 8-bit input quantisation, x -> round(255 x) / 255, whose gradient is zero
everywhere: gradient attacks (PGD) see no signal, a score-based attack is unaffected.

usage: /usr/bin/python3 scripts/reference/quantised_model.py OUT.pt
"""
import gzip, os, sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FMNIST = os.environ.get("FISHERLENS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


def idx(name, offset, n, item):
    with gzip.open(os.path.join(FMNIST, name)) as f:
        b = f.read(offset + n * item)
    return np.frombuffer(b, np.uint8, count=n * item, offset=offset)


class Quantised(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        q = torch.round(x * 255) / 255  # d q / d x = 0 almost everywhere
        return self.fc2(F.relu(self.fc1(q.flatten(1))))


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    n = 3000
    x = torch.from_numpy(idx("train-images-idx3-ubyte.gz", 16, n, 784).reshape(n, 1, 28, 28).astype(np.float32) / 255)
    y = torch.from_numpy(idx("train-labels-idx1-ubyte.gz", 8, n, 1).astype(np.int64))
    m = Quantised()
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    for _ in range(4):
        perm = torch.randperm(n)
        for i in range(0, n, 100):
            j = perm[i:i + 100]
            # train through the quantiser's straight-through value (its own gradient is zero)
            opt.zero_grad()
            F.cross_entropy(m.fc2(F.relu(m.fc1(x[j].flatten(1)))), y[j]).backward()
            opt.step()
    m.eval()
    torch.jit.script(m).save(out)


if __name__ == "__main__":
    main()
