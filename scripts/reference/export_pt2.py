#!/usr/bin/env python3
"""torch.export archives (.pt2) and what PyTorch computes with them (test/exported.test.ts).

Needs torch >= 2.4 with torch.export (scripts/torch-env.sh 2.13-cpu). For each reference
architecture (models.py, seeded, batch-norm statistics moved away from 0 / 1), exported with a
dynamic batch:
  ARCH.pt2, ARCH.state.pt   the archive and the same weights as a state dict (torch.save)
  ARCH.x.npy / ARCH.y.npy    a batch [6, C, H, W] in [0, 1] and its labels
  ARCH.logits.npy            eval-mode logits [6, K]
  ARCH.grad.npy              ∇ₓ of the mean cross-entropy, eval mode
  ARCH.fisher.json           float64 per-sample λ_max, trace and ‖G‖_F of G = Jᵀ(diag p − ppᵀ)J
                             (the full Jacobian by K autograd passes, numpy's eigvalsh; first 2
                             samples)
  ARCH.sgd/NAME.npy          every parameter and buffer after one plain SGD step (lr 0.1) on the
                             mean cross-entropy in train mode (batch-norm batch statistics and
                             running averages; mlp and resnet20, which have no dropout)
  resnet20.pgd.npy           L2 PGD without random start (ε 1, α 0.25, 10 steps, mean CE,
                             x ← Π(x + α g/‖g‖)), as FisherLens' PGD steps, on the GELU resnet20:
                             smooth everywhere, so rounding cannot send a path across a ReLU kink
                             or a max-pool tie (on small-cnn one sample's path did, by 1e-2)
  small-cnn-static.pt2       the small-cnn exported with a fixed batch of 4
  more/ARCH.pt2 (+ .x/.logits) the other reference architectures (mnist-net, lenet, vgg11,
                             wrn-16-4, preact-resnet18), dynamic batch, eval-mode logits of 2 images
  rmsnorm.pt2 (+ .x/.logits) a net using aten.rms_norm (torch >= 2.4; LibTorch 1.13 lacks it)
  hardswish.pt2 (+ .x)       a conv net with aten.hardswish, an op the linear engine does not know
  custom-op.pt2, sort.pt2, version99.pt2, pickled.pt2: archives FisherLens must refuse
  expected.json              the torch version and the list above

usage: python export_pt2.py OUTDIR
"""
import copy, io, json, os, sys, zipfile
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402

torch.set_num_threads(2)
SPECS = {
    "mlp": {"arch": "mlp", "inChannels": 1, "inputSize": 28, "numClasses": 10, "mean": [0.3], "std": [0.4]},
    "small-cnn": {"arch": "small-cnn", "inChannels": 1, "inputSize": 28, "numClasses": 10},
    "resnet20": {"arch": "resnet20", "inChannels": 3, "inputSize": 32, "numClasses": 10, "activation": "gelu",
                 "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.25, 0.3]},
}


def seeded(spec, seed):
    torch.manual_seed(seed)
    m = models.build(spec)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    return m.eval()


def export(m, x, path, dynamic=True):
    ds = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic else None
    ep = torch.export.export(m, (x,), dynamic_shapes=ds)
    torch.export.save(ep, path)
    return ep


def fisher64(m, x):
    """Per sample: λ_max, trace and Frobenius norm of G = Jᵀ(diag p − ppᵀ)J in float64."""
    m64 = copy.deepcopy(m).double().eval()
    out = {"lambdaMax": [], "trace": [], "frobenius": []}
    for i in range(x.shape[0]):
        xi = x[i:i + 1].double().clone().requires_grad_(True)
        z = m64(xi)[0]
        rows = []
        for k in range(z.shape[0]):
            g, = torch.autograd.grad(z[k], xi, retain_graph=True)
            rows.append(g.flatten())
        J = torch.stack(rows)  # [K, D]
        p = torch.softmax(z.detach(), 0)
        G = J.T @ (torch.diag(p) - torch.outer(p, p)) @ J
        ev = np.linalg.eigvalsh(G.numpy())
        out["lambdaMax"].append(float(ev[-1]))
        out["trace"].append(float(np.trace(G.numpy())))
        out["frobenius"].append(float(np.linalg.norm(G.numpy())))
    return out


def pgd_l2(m, x, y, eps, alpha, steps):
    xa = x.clone()
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(m(xa), y), [xa])
        gn = g.flatten(1).norm(2, 1).clamp_min(1e-12).view(-1, 1, 1, 1)
        xa = xa.detach() + alpha * g / gn
        d = xa - x
        n = d.flatten(1).norm(2, 1).view(-1, 1, 1, 1)
        xa = (x + d * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)).clamp(0, 1)
    return xa.detach()


def rewrite(src, dst, change):
    """Copies a zip archive entry by entry, `change(name, bytes)` giving each entry's new bytes."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            zo.writestr(info.filename, change(info.filename, zi.read(info.filename)))


def main(out):
    os.makedirs(out, exist_ok=True)
    files = {}
    for i, (name, spec) in enumerate(SPECS.items()):
        m = seeded(spec, 10 + i)
        c, s = spec["inChannels"], spec["inputSize"]
        g = torch.Generator().manual_seed(100 + i)
        x = torch.rand(6, c, s, s, generator=g)
        y = torch.randint(0, 10, (6,), generator=g)
        export(m, x, os.path.join(out, f"{name}.pt2"))
        torch.save(m.state_dict(), os.path.join(out, f"{name}.state.pt"))
        np.save(os.path.join(out, f"{name}.x.npy"), x.numpy())
        np.save(os.path.join(out, f"{name}.y.npy"), y.numpy())
        with torch.no_grad():
            np.save(os.path.join(out, f"{name}.logits.npy"), m(x).numpy())
        xg = x.clone().requires_grad_(True)
        gx, = torch.autograd.grad(F.cross_entropy(m(xg), y), [xg])
        np.save(os.path.join(out, f"{name}.grad.npy"), gx.numpy())
        entry = {"spec": spec}
        if name in ("mlp", "small-cnn", "resnet20"):
            with open(os.path.join(out, f"{name}.fisher.json"), "w") as f:
                json.dump(fisher64(m, x[:2]), f)
            entry["fisher"] = True
        if name in ("mlp", "resnet20"):
            mt = copy.deepcopy(m).train()
            opt = torch.optim.SGD(mt.parameters(), lr=0.1, momentum=0)
            opt.zero_grad()
            F.cross_entropy(mt(x), y).backward()
            opt.step()
            d = os.path.join(out, f"{name}.sgd")
            os.makedirs(d, exist_ok=True)
            for k, v in mt.state_dict().items():
                np.save(os.path.join(d, f"{k}.npy"), v.detach().numpy())
            entry["sgd"] = True
        if name == "small-cnn":
            export(m, x[:4], os.path.join(out, "small-cnn-static.pt2"), dynamic=False)
        if name == "resnet20":
            np.save(os.path.join(out, "resnet20.pgd.npy"), pgd_l2(m, x, y, 1.0, 0.25, 10).numpy())
        files[name] = entry

    more = {
        "mnist-net": {"arch": "mnist-net", "inChannels": 1, "inputSize": 28, "numClasses": 10},
        "lenet": {"arch": "lenet", "inChannels": 3, "inputSize": 32, "numClasses": 10, "activation": "tanh", "pool": "avg"},
        "vgg11": {"arch": "vgg11", "inChannels": 3, "inputSize": 32, "numClasses": 10},
        "wrn-16-4": {"arch": "wrn-16-4", "inChannels": 3, "inputSize": 32, "numClasses": 10},
        "preact-resnet18": {"arch": "preact-resnet18", "inChannels": 3, "inputSize": 32, "numClasses": 10},
    }
    os.makedirs(os.path.join(out, "more"), exist_ok=True)
    for i, (name, spec) in enumerate(more.items()):
        m = seeded(spec, 30 + i)
        x = torch.rand(2, spec["inChannels"], spec["inputSize"], spec["inputSize"], generator=torch.Generator().manual_seed(40 + i))
        export(m, x, os.path.join(out, "more", f"{name}.pt2"))
        np.save(os.path.join(out, "more", f"{name}.x.npy"), x.numpy())
        with torch.no_grad():
            np.save(os.path.join(out, "more", f"{name}.logits.npy"), m(x).numpy())
    files["more"] = list(more)

    # an op LibTorch 1.13 lacks (aten.rms_norm, torch >= 2.4)
    class RmsNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 12)
            self.w = nn.Parameter(torch.linspace(0.5, 1.5, 12))
            self.fc2 = nn.Linear(12, 5)

        def forward(self, x):
            h = F.rms_norm(self.fc1(x.flatten(1)), (12,), self.w, 1e-6)
            return self.fc2(torch.tanh(h))

    torch.manual_seed(7)
    rn = RmsNet().eval()
    xr = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(8))
    export(rn, xr, os.path.join(out, "rmsnorm.pt2"))
    np.save(os.path.join(out, "rmsnorm.x.npy"), xr.numpy())
    with torch.no_grad():
        np.save(os.path.join(out, "rmsnorm.logits.npy"), rn(xr).numpy())

    # an allowlisted op the linear engine does not lower
    class Hard(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 2 * 2, 5)

        def forward(self, x):
            return self.fc(F.hardswish(self.conv(x)).flatten(1))

    torch.manual_seed(9)
    export(Hard().eval(), xr, os.path.join(out, "hardswish.pt2"))

    # archives to refuse: a custom op, an ATen op outside the allowlist, another archive_version,
    # pickled weights
    @torch.library.custom_op("fltest::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    @twice.register_fake
    def _(x):
        return torch.empty_like(x)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            return self.fc(twice(x).flatten(1))

    class Sorts(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            return self.fc(torch.sort(x.flatten(1), dim=1).values)

    export(Custom().eval(), xr, os.path.join(out, "custom-op.pt2"))
    export(Sorts().eval(), xr, os.path.join(out, "sort.pt2"))
    rewrite(os.path.join(out, "sort.pt2"), os.path.join(out, "version99.pt2"),
            lambda n, b: b"99" if n.endswith("/archive_version") else b)

    def pickled(n, b):
        if n.endswith("_weights_config.json"):
            j = json.loads(b)
            for v in j["config"].values():
                v["use_pickle"] = True
            return json.dumps(j).encode()
        return b

    rewrite(os.path.join(out, "mlp.pt2"), os.path.join(out, "pickled.pt2"), pickled)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"torch": torch.__version__, "files": files}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
