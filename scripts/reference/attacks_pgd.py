"""Python/PyTorch reference for FisherLens' PGD (test/attacks-python.test.ts).

Trains a small CNN on the first 2000 Fashion-MNIST training images, saves it as TorchScript,
and runs PGD without random start (L-inf and L2) on the first N test images with the same steps
FisherLens takes: mean cross-entropy, x <- x + a*sign(g) (L2: a*g/||g||), then projection onto
the eps-ball and the [0, 1] box. Writes model.pt, x.npy, y.npy, xadv_linf.npy, xadv_l2.npy and
result.json into OUTDIR. result.json also holds, per sample, the margin z_y - max_{j != y} z_j at the
clean image and at each x_adv, and the L1 norm of its input gradient there: a caller whose x_adv
differs from these by d (L-inf) knows its margin differs by about d times that norm, so it can tell
the samples whose outcome rounding cannot flip.

usage: /usr/bin/python3 scripts/reference/attacks_pgd.py OUTDIR [N]
"""
import gzip, json, os, sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FMNIST = os.environ.get("FISHERLENS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


def idx(name, offset, n, item):
    with gzip.open(os.path.join(FMNIST, name)) as f:
        b = f.read()
    return np.frombuffer(b, np.uint8, count=n * item, offset=offset)


def load(split, n):
    pre = "train" if split == "train" else "t10k"
    x = idx(f"{pre}-images-idx3-ubyte.gz", 16, n, 784).reshape(n, 1, 28, 28).astype(np.float32) / 255
    y = idx(f"{pre}-labels-idx1-ubyte.gz", 8, n, 1).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3)
        self.c2 = nn.Conv2d(8, 16, 3)
        self.fc = nn.Linear(16 * 5 * 5, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


def project(xa, x, norm, eps):
    if norm == "linf":
        return torch.min(torch.max(xa, x - eps), x + eps).clamp_(0, 1)
    d = xa - x
    n = d.flatten(1).norm(2, 1)
    scale = torch.where(n > eps, eps / n.clamp_min(1e-30), torch.ones_like(n))
    scale = torch.where(n > eps, scale * (1 - 1e-6), scale)
    return (x + d * scale.view(-1, 1, 1, 1)).clamp_(0, 1)


def pgd(model, x, y, norm, eps, alpha, steps):
    xa = x.clone()
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xa), y)
        g = torch.autograd.grad(loss, [xa])[0]
        xa = xa.detach()
        if norm == "linf":
            xa.add_(g.sign_(), alpha=alpha)
        else:
            gn = g.flatten(1).norm(2, 1)
            xa.add_(g / gn.clamp_min(1e-12).view(-1, 1, 1, 1), alpha=alpha)
        xa = project(xa, x, norm, eps)
    return xa.detach()


def margins(model, x, y):
    """Per sample: the margin z_y - max_{j != y} z_j and the L1 norm of its input gradient."""
    x = x.detach().clone().requires_grad_(True)
    z = model(x)
    zy = z.gather(1, y.view(-1, 1)).squeeze(1)
    other = z.scatter(1, y.view(-1, 1), float("-inf")).max(1).values
    m = zy - other
    (g,) = torch.autograd.grad(m.sum(), [x])
    return m.detach().tolist(), g.flatten(1).abs().sum(1).tolist()


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    xt, yt = load("train", 2000)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for epoch in range(3):
        perm = torch.randperm(2000)
        for i in range(0, 2000, 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.jit.script(model).save(os.path.join(out, "model.pt"))
    x, y = load("test", n)
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "y.npy"), y.numpy())
    res = {}
    with torch.no_grad():
        res["accuracy"] = (model(x).argmax(1) == y).float().mean().item()
    res["margin_clean"], res["slack_clean"] = margins(model, x, y)
    for norm, eps, alpha in (("linf", 0.1, 0.01), ("l2", 1.0, 0.1)):
        xa = torch.cat([pgd(model, x[i:i + 128], y[i:i + 128], norm, eps, alpha, 20) for i in range(0, n, 128)])
        np.save(os.path.join(out, f"xadv_{norm}.npy"), xa.numpy())
        res[f"margin_{norm}"], res[f"slack_{norm}"] = margins(model, xa, y)
        with torch.no_grad():
            res[f"robust_{norm}"] = ((model(xa).argmax(1) == y) & (model(x).argmax(1) == y)).float().mean().item()
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
