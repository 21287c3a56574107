"""Python side of bench/train.ts: one natural step and one TRADES step (10 inner steps), timed.

The TRADES step has the reference's structure (yaodongyu/TRADES trades.py, the version with
model.eval() for the inner loop): x_adv = x + 0.001*N(0, I); 10 sign steps on
KLDivLoss(sum)(log_softmax(model(x_adv)), softmax(model(x))) with p(x) recomputed each step;
then model.train(), CE(model(x), y) + beta * KL(...)/B with model(x) evaluated again, backward,
SGD step. Serves timing requests ('natural' | 'trades') on stdin so that the caller can
interleave them with FisherLens runs. usage: train_bench.py ARCH BATCH
"""
import json, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from models import build


def natural_step(model, opt, x, y):
    model.train()
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def trades_step(model, opt, x_natural, y, step_size=0.007, epsilon=0.031, perturb_steps=10, beta=6.0):
    criterion_kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    batch_size = len(x_natural)
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape, device=x_natural.device).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    opt.zero_grad()
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / batch_size) * criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
    loss = loss_natural + beta * loss_robust
    loss.backward()
    opt.step()
    return loss.item()


def main():
    arch, batch = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, shape = build(arch)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    x = torch.rand(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    fns = {"natural": lambda: natural_step(model, opt, x, y),
           "trades": lambda: trades_step(model, opt, x, y)}
    natural_step(model, opt, x, y)
    trades_step(model, opt, x, y, perturb_steps=1)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        t0 = time.perf_counter()
        fns[name]()
        print(json.dumps({name: time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
