"""Float64 reference of FisherLens' training losses (test/train-methods.test.ts), written from the
papers, not from native/train.cc:

- MART (Wang et al., ICLR 2020, eq. 8): BCE(p(x'), y) + beta * KL(p(x) || p(x')) * (1 - p_y(x)),
  BCE(p, y) = -log p_y - log(1 - max_{k != y} p_k), batch means;
- FIRE (Picot et al. 2021): CE(x) + lam * d_FR(p(x), p(x'))^2, d_FR = 2 acos(sum_k sqrt(p_k q_k)),
  the coefficient clamped to [0, 1 - 1e-6] as FisherLens documents (docs/training.md);
- Jacobian regularisation (Hoffman, Roberts & Yaida 2019): CE + lam/2 * mean_i ||J_i||_F^2, exact or
  K * ||v^T J_i||^2 averaged over the given unit projections v;
- fisher-trace: CE + lam * mean_i tr G_i, G_i = J_i^T (diag p - p p^T) J_i, exact (the trace of the
  explicit matrix) or ||J_i^T (e_yhat - p)||^2 averaged over the given classes yhat;
- fisher-lambda: CE + lam * mean_i v^T G_i v / v^T v, v from k detached power iterations on the
  explicit G_i started at J_i^T (e_yhat - p).

J_i is each sample's full input-output Jacobian [K, D] (torch.autograd.functional.jacobian with
create_graph), G_i the explicit D x D matrix: a different route from FisherLens' double-backprop
products. The model (a smooth tanh CNN, so that second derivatives exist everywhere), the batch,
x' and the draws are made here, saved as float32 (model.pt TorchScript, x.npy, y.npy, xadv.npy,
proj.npy, labels.npy), and every reference value is computed in float64 from those same float32
numbers. Writes result.json: per case the loss, the regulariser, and grad_<case>.npy, the parameter
gradient flattened in parameters() order. Also lmax.npy: each sample's exact lambda_max(G_i).

usage: /usr/bin/python3 scripts/reference/train_methods.py OUTDIR
"""
import json, os, sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

B, C, H, K = 6, 1, 10, 10
CLAMP = 1e-6


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(C, 4, 3)
        self.fc1 = nn.Linear(4 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, K)

    def forward(self, x):
        x = F.avg_pool2d(torch.tanh(self.c1(x)), 2)
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def ce(z, y):
    return F.cross_entropy(z, y)


def jacobians(model, x):
    """Per-sample Jacobians [B, K, D], differentiable in the parameters."""
    rows = []
    for i in range(x.shape[0]):
        f = lambda xi: model(xi.unsqueeze(0)).squeeze(0)
        rows.append(torch.autograd.functional.jacobian(f, x[i], create_graph=True).reshape(K, -1))
    return torch.stack(rows)


def fisher(J, p):
    """G_i = J_i^T (diag p_i - p_i p_i^T) J_i  [B, D, D]."""
    A = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    return J.transpose(1, 2) @ A @ J


def losses(model, x, y, xadv, proj, labels, case, beta=6.0, lam=1.0, k=3):
    z = model(x)
    if case == "mart":
        p, q = F.softmax(z, 1), F.softmax(model(xadv), 1)
        qy = q.gather(1, y[:, None]).squeeze(1)
        qwrong = q.scatter(1, y[:, None], -1.0).max(1).values
        bce = -torch.log(qy) - torch.log(1 - qwrong)
        kl = (p * (torch.log(p) - torch.log(q))).sum(1)
        reg = (kl * (1 - p.gather(1, y[:, None]).squeeze(1))).mean()
        return bce.mean() + beta * reg, reg
    if case == "fire":
        p, q = F.softmax(z, 1), F.softmax(model(xadv), 1)
        bc = torch.sqrt(p * q).sum(1)
        d = 2 * torch.acos(torch.clamp(bc, 0, 1 - CLAMP))
        reg = (d ** 2).mean()
        return ce(z, y) + lam * reg, reg
    J = jacobians(model, x)
    p = F.softmax(z, 1)
    if case == "jacobian-exact":
        reg = (J ** 2).sum((1, 2)).mean()
        return ce(z, y) + lam / 2 * reg, reg
    if case == "jacobian":
        n = proj.shape[0]
        vJ = torch.einsum("nbk,bkd->nbd", proj, J)
        reg = (K * (vJ ** 2).sum(2)).mean(0).mean()
        return ce(z, y) + lam / 2 * reg, reg
    G = fisher(J, p)
    if case == "fisher-trace-exact":
        reg = torch.diagonal(G, dim1=1, dim2=2).sum(1).mean()
        return ce(z, y) + lam * reg, reg
    if case == "fisher-trace":
        eye = torch.eye(K, dtype=z.dtype)
        s = torch.stack([torch.einsum("bk,bkd->bd", eye[labels[j]] - p, J) for j in range(labels.shape[0])])
        reg = (s ** 2).sum(2).mean(0).mean()
        return ce(z, y) + lam * reg, reg
    if case == "fisher-lambda":
        eye = torch.eye(K, dtype=z.dtype)
        v = torch.einsum("bk,bkd->bd", eye[labels[0]] - p, J).detach()
        Gd = G.detach()
        for _ in range(k):
            v = torch.einsum("bde,be->bd", Gd, v)
            v = v / v.norm(dim=1, keepdim=True)
        reg = (torch.einsum("bd,bde,be->b", v, G, v) / (v ** 2).sum(1)).mean()
        return ce(z, y) + lam * reg, reg
    raise ValueError(case)


CASES = {
    "mart": dict(beta=6.0), "fire": dict(lam=6.0),
    "jacobian": dict(lam=1.0), "jacobian-exact": dict(lam=1.0),
    "fisher-trace": dict(lam=1.0), "fisher-trace-exact": dict(lam=1.0),
    "fisher-lambda": dict(lam=1.0, k=3),
}


def main():
    out = sys.argv[1]
    torch.manual_seed(7)
    net = Net()
    with torch.no_grad():
        # a sensitive model with spread-out probabilities, so that p(x) and p(x') differ clearly
        # (FIRE's 1 - BC and MART's KL well above float32 rounding) and every term matters
        net.c1.weight.mul_(4)
        net.fc1.weight.mul_(4)
        net.fc2.weight.mul_(3)
    x = torch.rand(B, C, H, H)
    y = torch.randint(0, K, (B,))
    xadv = (x + 0.5 * (2 * torch.rand_like(x) - 1)).clamp(0, 1)
    proj = torch.randn(2, B, K)
    proj = proj / proj.norm(dim=2, keepdim=True)
    labels = torch.randint(0, K, (2, B))
    net = net.float()
    torch.jit.script(net).save(os.path.join(out, "model.pt"))
    for name, t in [("x", x), ("xadv", xadv), ("proj", proj)]:
        np.save(os.path.join(out, name + ".npy"), t.float().numpy())
    np.save(os.path.join(out, "y.npy"), y.numpy())
    np.save(os.path.join(out, "labels.npy"), labels.numpy())
    model = net.double()
    x, xadv, proj = x.float().double(), xadv.float().double(), proj.float().double()
    result = {}
    for case, kw in CASES.items():
        model.zero_grad()
        loss, reg = losses(model, x, y, xadv, proj, labels, case, **kw)
        g = torch.autograd.grad(loss, list(model.parameters()))
        np.save(os.path.join(out, f"grad_{case}.npy"), torch.cat([t.flatten() for t in g]).numpy())
        result[case] = {"loss": loss.item(), "reg": reg.item()}
    with torch.no_grad():
        J = jacobians(model, x)
        lmax = torch.linalg.eigvalsh(fisher(J, F.softmax(model(x), 1)))[:, -1]
    np.save(os.path.join(out, "lmax.npy"), lmax.numpy())
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
