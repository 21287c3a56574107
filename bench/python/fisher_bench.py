#!/usr/bin/env python3
"""Python/PyTorch side of bench/fisher.ts: the exact Fisher and power iteration written the way a
researcher would (a loop over the C classes with torch.autograd.grad; double-backward JVPs), on the
same architecture as FisherLens' built-in (scripts/reference/models.py), the same LibTorch, the
same thread count. Prints one JSON document.

  fisher_bench.py --arch small-cnn --input 1,28,28 --batch 128 --repeats 5 --power-iters 20
  fisher_bench.py --arch small-cnn --serve     one line per request on stdin ('fwd', 'exact',
                                               'power'), one line back: wall and process CPU milliseconds of one run
                                               (bench/fisher.ts alternates with FisherLens run by run)
"""
import argparse, json, os, sys, time
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'scripts', 'reference'))
from models import build  # noqa: E402


def exact_fisher(model, x):
    """λ_max, trace, Frobenius norm of G_x = Jᵀ M J per sample: C backward passes, K = J Jᵀ, eigh of M½ K M½."""
    x = x.clone().requires_grad_(True)
    z = model(x)
    C = z.shape[1]
    J = torch.stack([torch.autograd.grad(z[:, c].sum(), x, retain_graph=c < C - 1)[0].flatten(1) for c in range(C)], 1)
    p = torch.softmax(z.detach().double(), 1)
    Jd = J.double()
    K = Jd @ Jd.transpose(1, 2)
    M = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    s, U = torch.linalg.eigh(M)
    Mh = (U * s.clamp_min(0).sqrt().unsqueeze(1)) @ U.transpose(1, 2)
    ev = torch.linalg.eigvalsh(Mh @ K @ Mh).clamp_min(0)
    return ev[:, -1], ev.sum(1), ev.pow(2).sum(1).sqrt()


def power_iteration(model, x, iters):
    """λ_max by power iteration on G v = Jᵀ M (J v), J v by double backward through a dummy u."""
    x = x.clone().requires_grad_(True)
    z = model(x)
    p = torch.softmax(z.detach().double(), 1)
    u = torch.zeros_like(z, requires_grad=True)
    g = torch.autograd.grad(z, x, u, create_graph=True)[0]
    e = torch.zeros_like(p).scatter_(1, p.argmax(1, keepdim=True), 1.0)
    v = torch.autograd.grad(z, x, (e - p).to(z.dtype), retain_graph=True)[0].flatten(1).double()
    v = v / v.norm(dim=1, keepdim=True)
    lam = None
    for _ in range(iters):
        jv = torch.autograd.grad(g, u, v.to(x.dtype).view_as(x), retain_graph=True)[0].double()
        mjv = p * jv - p * (p * jv).sum(1, keepdim=True)
        gv = torch.autograd.grad(z, x, mjv.to(z.dtype), retain_graph=True)[0].flatten(1).double()
        lam = (v * gv).sum(1)
        v = gv / gv.norm(dim=1, keepdim=True)
    return lam


def forward_flops(model, shape):
    """Multiply-adds × 2 of convolutions and linear layers for one sample (hooks)."""
    total = [0]

    def conv_hook(m, i, o):
        total[0] += 2 * o[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, i, o):
        total[0] += 2 * m.in_features * m.out_features

    hs = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hs.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hs.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        model(torch.rand(1, *shape))
    for h in hs:
        h.remove()
    return total[0]


def best_ms(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return ts[0], ts[len(ts) // 2]


def matmul_peak(threads):
    n = 2048
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best = min(best_ms(lambda: torch.mm(a, b), 3))
    return 2 * n ** 3 / (best / 1000) / 1e9


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--arch', required=True)
    ap.add_argument('--input', default='1,28,28')
    ap.add_argument('--classes', type=int, default=10)
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--power-iters', type=int, default=20)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--methods', default='exact,power')
    ap.add_argument('--peak', action='store_true')
    ap.add_argument('--serve', action='store_true')
    ap.add_argument('--save-torchscript')
    ap.add_argument('--save-pt2', help='also torch.export the model (dynamic batch) to this .pt2 (torch >= 2.4)')
    ap.add_argument('--spec', default='{}', help='JSON merged into the model spec (e.g. {"activation": "tanh"})')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    shape = [int(s) for s in a.input.split(',')]
    model = build({'arch': a.arch, 'inChannels': shape[0], 'inputSize': shape[1], 'numClasses': a.classes,
                   **json.loads(a.spec)}).eval()
    if a.save_torchscript:
        torch.jit.save(torch.jit.script(model), a.save_torchscript)
    if a.save_pt2 and hasattr(torch, 'export') and hasattr(torch.export, 'save'):
        ep = torch.export.export(model, (torch.rand(2, *shape),), dynamic_shapes={'x': {0: torch.export.Dim('batch', min=1, max=4096)}})
        torch.export.save(ep, a.save_pt2)
    x = torch.rand(a.batch, *shape)
    out = {'arch': a.arch, 'batch': a.batch, 'threads': torch.get_num_threads(), 'torch': torch.__version__,
           'forwardFlopsPerSample': forward_flops(model, shape)}
    with torch.no_grad():
        out['forwardMs'] = best_ms(lambda: model(x), a.repeats)
    if a.serve:
        fns = {'fwd': lambda: model(x), 'exact': lambda: exact_fisher(model, x),
               'power': lambda: power_iteration(model, x, a.power_iters)}
        print(json.dumps(out), flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == 'quit':
                break
            if cmd == 'peak':
                print(matmul_peak(a.threads), flush=True)
                continue
            t, c = time.perf_counter(), time.process_time()
            if cmd == 'fwd':
                with torch.no_grad():
                    fns[cmd]()
            else:
                fns[cmd]()
            print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000, flush=True)
        sys.exit(0)
    methods = a.methods.split(',')
    if 'exact' in methods:
        out['exactMs'] = best_ms(lambda: exact_fisher(model, x), a.repeats)
    if 'power' in methods:
        out['powerMs'] = best_ms(lambda: power_iteration(model, x, a.power_iters), a.repeats)
    if a.peak:
        out['matmulPeakGflops'] = matmul_peak(a.threads)
    print(json.dumps(out))
