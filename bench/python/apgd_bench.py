"""Python side of bench/autoattack.ts: APGD-CE (L-inf, eps 0.031) on one batch, timed.

The loop of scripts/reference/attacks_apgd.py (written from Croce & Hein 2020) vectorised over the
batch, as a Python user would run it: per-sample step sizes, momentum 0.75, checkpoints with the
two halving conditions and restarts from the best point, frozen weights, input gradients only.
Exports the (random-weight, eval-mode) model as TorchScript so FisherLens runs the same network.
usage: /usr/bin/python3 apgd_bench.py ARCH BATCH OUT.pt, then 'apgd' per line on stdin
"""
import json, sys, time
import torch
import torch.nn.functional as F
from models import build


def apgd_ce(model, x, y, eps=0.031, n_iter=50, rho=0.75, alpha=0.75):
    b = x.shape[0]
    view = (b,) + (1,) * (x.dim() - 1)
    checkpoints, w, h = set(), 0, max(int(0.22 * n_iter), 1)
    while w + h <= n_iter:
        w += h
        checkpoints.add(w)
        h = max(h - max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1))

    def proj(xa):
        return torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)

    def fg(xa):
        xa = xa.detach().requires_grad_(True)
        z = model(xa)
        f = F.cross_entropy(z, y, reduction="none")
        g, = torch.autograd.grad(f.sum(), [xa])
        return f.detach(), g, z.detach()

    u = torch.rand_like(x) * 2 - 1
    xk = proj(x + eps * u / u.flatten(1).abs().amax(1).view(view))
    f, g, z = fg(xk)
    hist = [f]
    x_max, f_max, g_max = xk.clone(), f.clone(), g.clone()
    x_adv, fooled = xk.clone(), z.argmax(1) != y
    x_prev = xk.clone()
    eta = torch.full(view, 2 * eps)
    last_w, f_max_last, halved_last = 0, f_max.clone(), torch.ones(b, dtype=torch.bool)
    for k in range(n_iter):
        a = 1.0 if k == 0 else alpha
        with torch.no_grad():
            z1 = proj(xk + eta * g.sign())
            x_new = proj(xk + a * (z1 - xk) + (1 - a) * (xk - x_prev))
        x_prev, xk = xk, x_new
        f, g, z = fg(xk)
        hist.append(f)
        wrong = z.argmax(1) != y
        x_adv = torch.where(wrong.view(view), xk, x_adv)
        fooled |= wrong
        up = f > f_max
        x_max = torch.where(up.view(view), xk, x_max)
        g_max = torch.where(up.view(view), g, g_max)
        f_max = torch.where(up, f, f_max)
        if k + 1 in checkpoints:
            rises = sum((hist[i + 1] > hist[i]).float() for i in range(last_w, k + 1))
            halve = (rises <= rho * (k + 1 - last_w)) | (~halved_last & (f_max <= f_max_last))
            eta = torch.where(halve.view(view), eta / 2, eta)
            xk = torch.where(halve.view(view), x_max, xk)
            g = torch.where(halve.view(view), g_max, g)
            halved_last, f_max_last, last_w = halve, f_max.clone(), k + 1
    return torch.where(fooled.view(view), x_adv, x_max)


def main():
    arch, batch, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, shape = build(arch)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.jit.script(model).save(out)
    X = torch.rand(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    apgd_ce(model, X, y, n_iter=2)  # warm-up
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "apgd":
            break
        t0 = time.perf_counter()
        apgd_ce(model, X, y)
        print(json.dumps({"apgd": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
