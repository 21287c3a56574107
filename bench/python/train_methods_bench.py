"""Python side of bench/train-methods.ts: one training step of each method on small-cnn, timed.

Plain PyTorch written from the papers (the same losses as scripts/reference/train_methods.py, but
with batched double backprop instead of explicit per-sample Jacobians, as a PyTorch user would write
them for speed), SGD 0.01 momentum 0.9. Inner maximisations in eval mode, L-inf sign steps from
x + 0.001 N(0, I), clipped to the ball and [0, 1]:
- natural, trades: bench/python/train_bench.py's steps (the TRADES code's structure);
- mart (Wang et al. 2020): PGD on CE; BCE(p(x'), y) + beta KL(p(x) || p(x')) (1 - p_y(x));
- fire (Picot et al. 2021): ascent on -sum sqrt(p q); CE + lam (2 acos(clamp(BC, 0, 1 - 1e-6)))^2;
- jacobian (Hoffman et al. 2019): CE + lam/2 K ||v^T J||^2, one projection v uniform on the sphere;
- fisher-trace: CE + lam ||grad_x log p_yhat||^2, yhat ~ p(.|x), one draw;
- fisher-lambda: CE + lam v^T G v / v^T v, v from k detached power iterations (G v through a
  double-backward JVP and a VJP) started at grad_x log p_yhat.
Serves requests "METHOD" or "fisher-lambda:K" on stdin and answers the step's process CPU seconds
(time.process_time) and wall seconds, so that the caller can interleave them with FisherLens.
usage: train_methods_bench.py BATCH THREADS
"""
import json, sys, time
import torch
import torch.nn.functional as F
import torch.optim as optim
from models import build
from train_bench import natural_step, trades_step
from fisher_bench import forward_flops

EPS, STEP, STEPS, BETA = 0.031, 0.007, 10, 6.0


def inner(model, x, loss_fn):
    model.eval()
    xa = x.detach() + 0.001 * torch.randn_like(x)
    for _ in range(STEPS):
        xa.requires_grad_()
        g = torch.autograd.grad(loss_fn(model(xa)), [xa])[0]
        xa = torch.min(torch.max(xa.detach() + STEP * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    model.train()
    return xa.detach()


def mart_step(model, opt, x, y, beta=BETA):
    xa = inner(model, x, lambda z: F.cross_entropy(z, y))
    opt.zero_grad()
    z, za = model(x), model(xa)
    p, q = F.softmax(z, 1), F.softmax(za, 1)
    qy = q.gather(1, y[:, None]).squeeze(1)
    qwrong = q.scatter(1, y[:, None], -1.0).max(1).values
    bce = -torch.log(qy + 1e-12) - torch.log(1 - qwrong + 1e-12)
    kl = (p * (F.log_softmax(z, 1) - F.log_softmax(za, 1))).sum(1)
    loss = bce.mean() + beta * (kl * (1 - p.gather(1, y[:, None]).squeeze(1))).mean()
    loss.backward()
    opt.step()


def fire_step(model, opt, x, y, lam=6.0):
    with torch.no_grad():
        model.eval()
        lp = F.log_softmax(model(x), 1)
    xa = inner(model, x, lambda z: -torch.exp((lp + F.log_softmax(z, 1)) / 2).sum())
    opt.zero_grad()
    z, za = model(x), model(xa)
    bc = torch.exp((F.log_softmax(z, 1) + F.log_softmax(za, 1)) / 2).sum(1)
    d = 2 * torch.acos(bc.clamp(0, 1 - 1e-6))
    loss = F.cross_entropy(z, y) + lam * (d ** 2).mean()
    loss.backward()
    opt.step()


def jacobian_step(model, opt, x, y, lam=0.01):
    opt.zero_grad()
    x = x.detach().requires_grad_()
    z = model(x)
    K = z.shape[1]
    v = torch.randn_like(z)
    v = v / v.norm(dim=1, keepdim=True)
    g = torch.autograd.grad((z * v).sum(), [x], create_graph=True)[0]
    loss = F.cross_entropy(z, y) + lam / 2 * K * (g ** 2).flatten(1).sum(1).mean()
    loss.backward()
    opt.step()


def fisher_trace_step(model, opt, x, y, lam=0.01):
    opt.zero_grad()
    x = x.detach().requires_grad_()
    z = model(x)
    lp = F.log_softmax(z, 1)
    yhat = torch.multinomial(lp.exp().detach(), 1)
    g = torch.autograd.grad(lp.gather(1, yhat).sum(), [x], create_graph=True)[0]
    loss = F.cross_entropy(z, y) + lam * (g ** 2).flatten(1).sum(1).mean()
    loss.backward()
    opt.step()


def gv(model, x, v):
    """G_x v per sample, detached: w = J v by the double-backward trick, then J^T (diag p - p p^T) w."""
    x = x.detach().requires_grad_()
    z = model(x)
    p = F.softmax(z, 1).detach()
    u = torch.zeros_like(z, requires_grad=True)
    jt = torch.autograd.grad(z, [x], u, create_graph=True)[0]
    w = torch.autograd.grad(jt, [u], v)[0]                      # J v  [B, K]
    a = p * w - p * (p * w).sum(1, keepdim=True)                 # (diag p - p p^T) J v
    return torch.autograd.grad(z, [x], a)[0]                     # J^T a  [B, D]


def fisher_lambda_step(model, opt, x, y, lam=0.01, k=3):
    x0 = x.detach().requires_grad_()
    lp = F.log_softmax(model(x0), 1)
    yhat = torch.multinomial(lp.exp().detach(), 1)
    v = torch.autograd.grad(lp.gather(1, yhat).sum(), [x0])[0]
    for _ in range(k):
        v = gv(model, x, v)
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (v.dim() - 1))
    v = v.detach()
    opt.zero_grad()
    xg = x.detach().requires_grad_()
    z = model(xg)
    p = F.softmax(z, 1)
    u = torch.zeros_like(z, requires_grad=True)
    jt = torch.autograd.grad(z, [xg], u, create_graph=True)[0]
    jv = torch.autograd.grad(jt, [u], v, create_graph=True)[0]  # J v, differentiable in theta
    quad = (p * jv ** 2).sum(1) - ((p * jv).sum(1)) ** 2         # v^T G v (|v| = 1)
    loss = F.cross_entropy(z, y) + lam * quad.mean()
    loss.backward()
    opt.step()


def main():
    batch, threads = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, shape = build("small-cnn")
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    fns = {
        "natural": lambda: natural_step(model, opt, x, y),
        "trades": lambda: trades_step(model, opt, x, y, STEP, EPS, STEPS, BETA),
        "mart": lambda: mart_step(model, opt, x, y),
        "fire": lambda: fire_step(model, opt, x, y),
        "jacobian": lambda: jacobian_step(model, opt, x, y),
        "fisher-trace": lambda: fisher_trace_step(model, opt, x, y),
    }
    for f in fns.values():
        f()
    fisher_lambda_step(model, opt, x, y, k=1)
    print(json.dumps({"ready": True, "forwardFlopsPerSample": forward_flops(model, shape)}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        c0, t0 = time.process_time(), time.perf_counter()
        if name.startswith("fisher-lambda"):
            fisher_lambda_step(model, opt, x, y, k=int(name.split(":")[1]))
        else:
            fns[name]()
        print(json.dumps({name: time.process_time() - c0, "wall": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
