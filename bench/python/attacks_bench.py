"""Python side of bench/attacks.ts: PGD-20 (L-inf, eps 0.031, step 0.003) on one batch, timed.

Two Python loops on the same LibTorch:
  reference: TRADES' _pgd_whitebox structure (pgd_attack_cifar10.py): a fresh SGD optimiser per
             step, loss.backward() (weight gradients computed too), clamp of the difference.
  lean:      the same steps with torch.autograd.grad w.r.t. the input only and frozen weights.
Also exports the (random-weight, eval-mode) model as TorchScript so FisherLens can run the same
network. ARCH: small-cnn, resnet20 or a FisherLens spec as JSON.
usage: /usr/bin/python3 attacks_bench.py ARCH BATCH OUT.pt, then one request per line on stdin
"""
import importlib.util, json, os, sys, time
import torch
import torch.nn as nn
import torch.optim as optim
from models import build


def pgd_reference(model, X, y, epsilon=0.031, num_steps=20, step_size=0.003):
    X_pgd = X.clone().requires_grad_(True)
    for _ in range(num_steps):
        opt = optim.SGD([X_pgd], lr=1e-3)
        opt.zero_grad()
        with torch.enable_grad():
            loss = nn.CrossEntropyLoss()(model(X_pgd), y)
        loss.backward()
        eta = step_size * X_pgd.grad.data.sign()
        X_pgd = (X_pgd.data + eta).requires_grad_(True)
        eta = torch.clamp(X_pgd.data - X.data, -epsilon, epsilon)
        X_pgd = torch.clamp(X.data + eta, 0, 1.0).requires_grad_(True)
    return X_pgd.detach()


def pgd_lean(model, X, y, epsilon=0.031, num_steps=20, step_size=0.003):
    xa = X.clone()
    for _ in range(num_steps):
        xa.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xa), y)
        g, = torch.autograd.grad(loss, [xa])
        xa = xa.detach().add_(g.sign_(), alpha=step_size)
        xa = torch.min(torch.max(xa, X - epsilon), X + epsilon).clamp_(0, 1)
    return xa


def main():
    """Exports the model, then serves timing requests on stdin ('reference' | 'lean', one per
    line) so that the caller can interleave Python and FisherLens runs on a noisy machine."""
    arch, batch, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if arch.startswith('{'):  # a FisherLens spec (scripts/reference/models.py builds it as the zoo does)
        # loaded by path: the name `models` is this folder's models.py
        ref = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'scripts', 'reference', 'models.py')
        loader = importlib.util.spec_from_file_location('reference_models', ref)
        reference_models = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(reference_models)
        spec = json.loads(arch)
        model = reference_models.build(spec)
        shape = (spec.get('inChannels', 1), spec.get('inputSize', 28), spec.get('inputSize', 28))
    else:
        model, shape = build(arch)
    model.eval()
    torch.jit.script(model).save(out)
    X = torch.rand(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    fns = {"reference": (pgd_reference, False), "lean": (pgd_lean, True)}
    for name, (fn, frozen) in fns.items():  # warm-up
        for p in model.parameters():
            p.requires_grad_(not frozen)
        fn(model, X, y, num_steps=2)
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        fn, frozen = fns[name]
        for p in model.parameters():
            p.requires_grad_(not frozen)
        t0 = time.perf_counter()
        fn(model, X, y)
        print(json.dumps({name: time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
