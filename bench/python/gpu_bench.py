#!/usr/bin/env python3
"""Python side of bench/gpu.ts: the four GPU workloads of the CUDA variant's side-by-side bench,
written the way a researcher would in PyTorch, on the architecture of FisherLens' built-in
(scripts/reference/models.py) and the same device:

  exact    the exact Fisher (fisher_bench.exact_fisher: a loop over the C classes of autograd.grad)
  power    20 power iterations (fisher_bench.power_iteration: double-backward JVPs)
  pgd      PGD-20, L∞, ε 8/255, step 2/255, input gradients only (attacks_bench.pgd_lean)
  trades   one TRADES step, 10 inner steps (train_bench.trades_step), SGD 0.1 / 0.9 / 5e-4

usage: gpu_bench.py SPEC_JSON BATCH DEVICE, then one request name per line on stdin; one JSON
line back per request: {name: seconds}, measured between torch.cuda.synchronize() calls on CUDA.
"""
import json, os, sys, time
import torch
import torch.optim as optim

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fisher_bench import exact_fisher, power_iteration  # noqa: E402  (puts scripts/reference first)
from models import build  # noqa: E402  (scripts/reference/models.py: the built-ins' architectures)
from attacks_bench import pgd_lean  # noqa: E402
from train_bench import trades_step  # noqa: E402


def main():
    spec, batch, device = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False  # FisherLens' default (docs/cuda.md)
    torch.backends.cudnn.allow_tf32 = False
    model = build(spec).to(device).eval()
    shape = (spec.get("inChannels", 1), spec.get("inputSize", 28), spec.get("inputSize", 28))
    x = torch.rand(batch, *shape, device=device)
    y = torch.randint(0, spec.get("numClasses", 10), (batch,), device=device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def frozen(fn):
        def run():
            for p in model.parameters():
                p.requires_grad_(False)
            model.eval()
            fn()
            for p in model.parameters():
                p.requires_grad_(True)
        return run

    fns = {
        "exact": frozen(lambda: exact_fisher(model, x)),
        "power": frozen(lambda: power_iteration(model, x, 20)),
        "pgd": frozen(lambda: pgd_lean(model, x, y, epsilon=8 / 255, num_steps=20, step_size=2 / 255)),
        "trades": lambda: trades_step(model, opt, x, y),
    }
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for fn in fns.values():  # warm-up (cuDNN autotuning, allocator)
        fn()
    sync()
    print(json.dumps({"ready": True, "torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        sync()
        t0 = time.perf_counter()
        fns[name]()
        sync()
        print(json.dumps({name: time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
