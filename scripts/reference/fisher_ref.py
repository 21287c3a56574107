#!/usr/bin/env python3
"""Independent float64 reference for FisherLens's Fisher engine and metrics (PyTorch + numpy).

Written the plain way, deliberately unlike the native code: the full Jacobian J [C, D] by C
autograd passes per sample, the explicit D×D matrix G = Jᵀ (diag p − p pᵀ) J and numpy's eigh of
it; CCKL, the JS mean and the bound by naive loops over all ordered different-class pairs.

  fisher_ref.py make-fixture --out DIR      scripted test nets (float32 + float64), trained on
                                            synthetic data, inputs x.npy / y.npy / v.npy
  fisher_ref.py fisher --model M --x X.npy [--v V.npy] [--probes P --seed S] --out OUT.json
                                            (--probes: also Hutchinson's estimates from the
                                            explicit G on P Rademacher probes drawn as the native
                                            op draws them: LibTorch's generator seeded S)
  fisher_ref.py cckl --logits L.npy --labels Y.npy --out OUT.json
Run with /usr/bin/python3 (torch 1.13). Inputs and outputs never leave float64 here.
"""
import argparse, copy, json, math, os, sys
import numpy as np
import torch

torch.set_num_threads(2)


class TinyNet(torch.nn.Module):
    """conv(1→6, 3) → softplus → maxpool 2 → conv(6→8, 3) → relu → linear(8·3·3 → 10). Input [B, 1, 12, 12]."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 6, 3)
        self.c2 = torch.nn.Conv2d(6, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 3 * 3, classes)

    def forward(self, x):
        x = torch.nn.functional.softplus(self.c1(x))
        x = torch.nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.bn(self.c2(x)))
        return self.fc(x.flatten(1))


def synthetic(n, patterns, gen):
    """Images [n, 1, 12, 12] in [0, 1]: a class pattern plus noise; labels [n]."""
    classes = patterns.shape[0]
    y = torch.randint(0, classes, (n,), generator=gen)
    x = (0.3 * patterns[y] + 0.7 * torch.rand(n, 1, 12, 12, generator=gen)).clamp(0, 1)
    return x, y


def make_fixture(out):
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    net = TinyNet()
    patterns = torch.rand(10, 1, 12, 12, generator=gen)
    xt, yt = synthetic(2000, patterns, gen)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for step in range(150):  # a short natural training: confident, mostly correct outputs
        idx = torch.randint(0, 2000, (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
        opt.zero_grad(); loss.backward(); opt.step()
    net.eval()
    x, y = synthetic(120, patterns, gen)
    v = torch.randn(120, 1, 12, 12, generator=gen)
    np.save(os.path.join(out, 'x.npy'), x.numpy().astype(np.float32))
    np.save(os.path.join(out, 'x64.npy'), x.double().numpy())
    np.save(os.path.join(out, 'y.npy'), y.numpy().astype(np.int64))
    np.save(os.path.join(out, 'v.npy'), v.double().numpy())
    torch.jit.save(torch.jit.script(net), os.path.join(out, 'tiny32.pt'))
    torch.jit.save(torch.jit.script(copy.deepcopy(net).double()), os.path.join(out, 'tiny64.pt'))
    with torch.no_grad():
        acc = (net(x).argmax(1) == y).double().mean().item()
        train_acc = (net(xt).argmax(1) == yt).double().mean().item()
    print(json.dumps({'trainedAccuracy': acc, 'trainAccuracy': train_acc}))


def fisher(model_path, x_path, v_path, out, probes=0, seed=0):
    m = torch.jit.load(model_path).double().eval()
    for p in m.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(np.load(x_path)).double()
    v = torch.from_numpy(np.load(v_path)).double() if v_path else None
    res = {k: [] for k in ['lambdaMax', 'trace', 'frobenius', 'spectrum', 'eigvec', 'probs', 'vGv', 'logits',
                           'hutchTrace', 'hutchTraceSe', 'hutchFrobenius', 'hutchFrobeniusSe']}
    if probes > 0:
        # one probe set for the whole batch, [P, D] of +-1: randint(2) on a generator seeded like the native op's
        R = torch.randint(0, 2, (probes, x[0].numel()), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).mul_(2).sub_(1).numpy()
    for b in range(x.shape[0]):
        xb = x[b:b + 1].clone().requires_grad_(True)
        z = m(xb)[0]
        C = z.shape[0]
        rows = [torch.autograd.grad(z[c], xb, retain_graph=True)[0].flatten() for c in range(C)]
        J = torch.stack(rows).numpy()                      # [C, D]
        p = torch.softmax(z.detach(), 0).numpy()
        M = np.diag(p) - np.outer(p, p)
        G = J.T @ M @ J                                    # [D, D]
        w, U = np.linalg.eigh(G)
        w = w[::-1]
        res['lambdaMax'].append(float(w[0]))
        res['trace'].append(float(np.trace(G)))
        res['frobenius'].append(float(np.linalg.norm(G, 'fro')))
        res['spectrum'].append([float(t) for t in w[:C]])
        res['eigvec'].append([float(t) for t in U[:, -1]])
        res['probs'].append([float(t) for t in p])
        res['logits'].append([float(t) for t in z.detach().numpy()])
        if v is not None:
            vb = v[b].flatten().numpy()
            res['vGv'].append(float(vb @ G @ vb))
        if probes > 0:
            GR = R @ G                                     # [P, D]: (G r_k)ᵀ, G symmetric
            T = (GR * R).sum(1)                            # r_kᵀ G r_k
            F = (GR * GR).sum(1)                           # ‖G r_k‖²
            f2 = F.mean()
            res['hutchTrace'].append(float(T.mean()))
            res['hutchTraceSe'].append(float(T.std(ddof=1) / math.sqrt(probes)))
            res['hutchFrobenius'].append(float(math.sqrt(max(f2, 0.0))))
            res['hutchFrobeniusSe'].append(float(F.std(ddof=1) / math.sqrt(probes) / (2 * math.sqrt(max(f2, 1e-300)))))
    with open(out, 'w') as f:
        json.dump(res, f)


def cckl(logits_path, labels_path, out):
    z = np.load(logits_path).astype(np.float64)
    y = np.load(labels_path).astype(np.int64)
    z = z - z.max(1, keepdims=True)
    l = z - np.log(np.exp(z).sum(1, keepdims=True))
    p = np.exp(l)
    N = len(y)
    kl_sum = js_sum = bound_sum = 0.0
    pairs = 0
    err = 1 - p[np.arange(N), y]
    for i in range(N):
        for j in range(N):
            if y[i] == y[j]:
                continue
            pairs += 1
            kl_sum += float(np.sum(p[i] * (l[i] - l[j])))
            m = 0.5 * (p[i] + p[j])
            js_sum += 0.5 * float(np.sum(p[i] * (l[i] - np.log(m)))) + 0.5 * float(np.sum(p[j] * (l[j] - np.log(m))))
            bound_sum += 2 * math.log(2) * max(0.0, 1 - math.sqrt(max(err[i], 0)) - math.sqrt(max(err[j], 0))) ** 2
    res = {'cckl': kl_sum / pairs, 'jsMean': js_sum / pairs, 'lowerBound': bound_sum / pairs, 'pairs': pairs,
           'accuracy': float((l.argmax(1) == y).mean()), 'crossEntropy': float(-l[np.arange(N), y].mean())}
    with open(out, 'w') as f:
        json.dump(res, f)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('cmd', choices=['make-fixture', 'fisher', 'cckl'])
    ap.add_argument('--out', required=True)
    ap.add_argument('--model'); ap.add_argument('--x'); ap.add_argument('--v')
    ap.add_argument('--logits'); ap.add_argument('--labels')
    ap.add_argument('--probes', type=int, default=0); ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    if a.cmd == 'make-fixture':
        make_fixture(a.out)
    elif a.cmd == 'fisher':
        fisher(a.model, a.x, a.v, a.out, a.probes, a.seed)
    else:
        cckl(a.logits, a.labels, a.out)
