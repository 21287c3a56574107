"""Independent Python/PyTorch reference of APGD-CE and APGD-DLR (test/apgd-python.test.ts).

Written from Croce & Hein (ICML 2020), "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", Algorithm 1 and Section 3:
  - x(1) = P(x(0) + eta * s(grad f(x(0)))), then with alpha = 0.75
    z(k+1) = P(x(k) + eta(k) * s(grad f(x(k))))
    x(k+1) = P(x(k) + alpha (z(k+1) - x(k)) + (1 - alpha)(x(k) - x(k-1)))
    s = sign (L-inf) or g / ||g||_2 (L2); P: projection onto the eps-ball and [0, 1].
  - eta(0) = 2 eps; checkpoints w_0 = 0, w_1 = 0.22 N, intervals shrinking by 0.03 N down to 0.06 N;
    at a checkpoint the step halves (and the iterate returns to the best point, with its gradient)
    if (1) at most rho = 0.75 of the steps since the last checkpoint raised f, or (2) the step was
    not halved at the last checkpoint and the best loss has not risen since (from the second
    checkpoint on, as in the authors' code).
  - DLR(x, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), z sorted decreasingly.
It runs every sample on its own (a Python loop over samples, float64), whereas FisherLens runs the
batch in one native op; the start point comes from a file both read.

The step-size schedule is decided by comparisons of losses (a step raised f; a new best loss). Where
two compared losses lie within rounding of each other the decision, and everything after it, may
differ between two correct float64 implementations (different summation orders). That happens on
DLR's plateau: a misclassified sample whose DLR sits at 1 - 1e-12 (the denominator's 1e-12) has
consecutive losses equal to 12-13 digits. So each run also records, per sample, the smallest
relative gap between two losses it compared (minGap); the test holds exact agreement to the samples
whose decisions all had margins far above rounding. An iterate equal to the one it is compared with
(a fixed point of the projected step, common under L-inf) is not such a decision: any implementation
computes the same loss twice.

Trains the small CNN of attacks_pgd.py on 2000 Fashion-MNIST training images, converts it to
float64 and saves it as TorchScript (model64.pt); writes x.npy, y.npy (the first N test images),
init_{norm}.npy (the start points) and, for loss in {ce, dlr} and norm in {linf, l2},
xadv_{loss}_{norm}.npy (the last misclassified iterate where one was, else the best-loss point),
and result.json (per run: fooled flags, best losses, step-size halvings, decision margins).

usage: /usr/bin/python3 scripts/reference/attacks_apgd.py OUTDIR [N] [STEPS]
"""
import json, os, sys
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attacks_pgd import Net, load  # noqa: E402

EPS = {"linf": 0.1, "l2": 1.0}


def project(xa, x, norm, eps):
    """Projection onto the eps-ball around x and [0, 1] (one sample, any shape)."""
    if norm == "linf":
        return torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    d = xa - x
    n = d.norm()
    if n > eps:
        d = d * (eps / n * (1 - 1e-6))  # shrink just below eps, as FisherLens' projection does
    return (x + d).clamp(0, 1)


def loss_fn(kind, z, y):
    """One sample: logits z [K], label y (int) -> scalar loss to maximise."""
    if kind == "ce":
        return -torch.log_softmax(z, 0)[y]
    s = torch.sort(z, descending=True).values
    others = torch.cat([z[:y], z[y + 1:]])
    return -(z[y] - others.max()) / (s[0] - s[2] + 1e-12)


def value_and_grad(model, kind, xa, y):
    xa = xa.detach().clone().requires_grad_(True)
    z = model(xa.unsqueeze(0))[0]
    f = loss_fn(kind, z, y)
    (g,) = torch.autograd.grad(f, [xa])
    return f.item(), g.detach(), int(z.argmax().item())


def apgd_one(model, x, y, x0, kind, norm, eps, n_iter, rho=0.75, alpha=0.75):
    """APGD on one sample x with label y from x0.
    Returns (x_out, fooled, best loss, halvings, smallest relative gap between compared losses)."""
    def s(g):
        return g.sign() if norm == "linf" else g / max(g.norm().item(), 1e-12)

    # checkpoints: w_1 = 0.22 N, then intervals shrinking by 0.03 N, never below 0.06 N
    p1, dec, pmin = max(int(0.22 * n_iter), 1), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    checkpoints, w, h = set(), 0, p1
    while w + h <= n_iter:
        w += h
        checkpoints.add(w)
        h = max(h - dec, pmin)

    eta = 2 * eps
    xk = x0.clone()
    fk, gk, pred = value_and_grad(model, kind, xk, y)
    f_hist = [fk]
    x_max, f_max, g_max = xk.clone(), fk, gk.clone()
    x_adv, fooled = xk.clone(), pred != y
    x_prev = xk.clone()
    last_w, f_max_at_last, halved_at_last, halvings = 0, fk, True, 0
    min_gap = float("inf")

    def gap(a, b):
        return abs(a - b) / max(abs(a), abs(b), 1e-300)
    for k in range(n_iter):
        a = 1.0 if k == 0 else alpha
        zk1 = project(xk + eta * s(gk), x, norm, eps)
        xk1 = project(xk + a * (zk1 - xk) + (1 - a) * (xk - x_prev), x, norm, eps)
        x_prev, xk = xk, xk1
        fk, gk, pred = value_and_grad(model, kind, xk, y)
        # "f rose", "a new best"; an iterate equal to the one compared with (a fixed point of the
        # projected step) gives equal losses in any implementation, not a decision by rounding
        if not torch.equal(xk, x_prev):
            min_gap = min(min_gap, gap(fk, f_hist[-1]))
        if not torch.equal(xk, x_max):
            min_gap = min(min_gap, gap(fk, f_max))
        f_hist.append(fk)
        if pred != y:
            x_adv, fooled = xk.clone(), True
        if fk > f_max:
            x_max, f_max, g_max = xk.clone(), fk, gk.clone()
        if k + 1 in checkpoints:
            w_j = k + 1
            rises = sum(1 for i in range(last_w, w_j) if f_hist[i + 1] > f_hist[i])
            cond1 = rises <= rho * (w_j - last_w)
            cond2 = (not halved_at_last) and f_max <= f_max_at_last
            if f_max != f_max_at_last:
                min_gap = min(min_gap, gap(f_max, f_max_at_last))
            halve = cond1 or cond2
            if halve:
                eta /= 2
                halvings += 1
                xk, gk = x_max.clone(), g_max.clone()
            halved_at_last, f_max_at_last, last_w = halve, f_max, w_j
    return (x_adv if fooled else x_max), fooled, f_max, halvings, min_gap


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    n_iter = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    xt, yt = load("train", 2000)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(2):
        perm = torch.randperm(2000)
        for i in range(0, 2000, 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    model = model.double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.jit.script(model).save(os.path.join(out, "model64.pt"))
    x, y = load("test", n)
    x = x.double()
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "y.npy"), y.numpy())
    gen = torch.Generator().manual_seed(1)
    res = {"n": n, "steps": n_iter}
    for norm, eps in EPS.items():
        # start points on the surface of the ball (the paper's random start), projected into the box
        u = torch.rand(x.shape, generator=gen, dtype=torch.float64) * 2 - 1 if norm == "linf" else torch.randn(x.shape, generator=gen, dtype=torch.float64)
        init = torch.stack([project(x[i] + eps * u[i] / (u[i].abs().max() if norm == "linf" else u[i].norm()), x[i], norm, eps) for i in range(n)])
        np.save(os.path.join(out, f"init_{norm}.npy"), init.numpy())
        for kind in ("ce", "dlr"):
            runs = [apgd_one(model, x[i], int(y[i]), init[i], kind, norm, eps, n_iter) for i in range(n)]
            np.save(os.path.join(out, f"xadv_{kind}_{norm}.npy"), torch.stack([r[0] for r in runs]).numpy())
            res[f"{kind}_{norm}"] = {"fooled": [bool(r[1]) for r in runs], "lossBest": [r[2] for r in runs], "halvings": [r[3] for r in runs],
                                   "minGap": [r[4] for r in runs]}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
