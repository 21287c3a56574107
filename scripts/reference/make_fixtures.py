#!/usr/bin/env python3
"""Test fixtures for test/models.test.ts, generated at test time (never committed):
for each spec, a seeded PyTorch model (scripts/reference/models.py) with randomised BatchNorm
statistics, saved with torch.jit.script + save as <name>.pt, and <name>.json holding the spec,
the parameter count, a probe batch x and PyTorch's logits on it.

  make_fixtures.py OUTDIR [--counts-only]
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402

SPECS = {
    "mlp": {"arch": "mlp", "inputSize": 8, "hidden": [32, 16], "activation": "tanh"},
    "small-cnn": {"arch": "small-cnn"},
    "mnist-net": {"arch": "mnist-net"},
    "lenet": {"arch": "lenet", "inChannels": 3, "inputSize": 32, "pool": "avg"},
    "vgg11": {"arch": "vgg11"},
    "vgg13-pure-linear": {"arch": "vgg13", "activation": "identity", "pool": "avg"},
    "vgg13-half-linear": {"arch": "vgg13", "activation": "identity", "pool": "max"},
    "vgg16": {"arch": "vgg16", "inChannels": 3, "inputSize": 32, "numClasses": 100},
    "resnet20": {"arch": "resnet20", "mean": [0.5], "std": [0.25]},
    "resnet32x2": {"arch": "resnet32", "width": 2, "inChannels": 3, "inputSize": 16},
    "resnet44": {"arch": "resnet44", "inChannels": 3, "inputSize": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]},
    "resnet56": {"arch": "resnet56"},
    "preact-resnet18": {"arch": "preact-resnet18", "inChannels": 3, "inputSize": 32},
    "wrn-16-2": {"arch": "wrn-16-2", "inChannels": 3, "inputSize": 32},
}
# large: parameter counts only (no fixture archive)
COUNTS = {
    "wrn-34-10": {"arch": "wrn-34-10", "inChannels": 3, "inputSize": 32},
    "resnet32x10": {"arch": "resnet32", "width": 10, "inChannels": 3, "inputSize": 32},
    "vgg13-cifar": {"arch": "vgg13", "inChannels": 3, "inputSize": 32},
}


def randomise_bn(m: torch.nn.Module, g: torch.Generator):
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            with torch.no_grad():
                mod.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                mod.num_batches_tracked.fill_(7)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    counts = {}
    for name, spec in COUNTS.items():
        counts[name] = {"spec": spec, "paramCount": models.param_count(models.build(spec))}
    if "--counts-only" not in sys.argv:
        for i, (name, spec) in enumerate(SPECS.items()):
            torch.manual_seed(100 + i)
            g = torch.Generator().manual_seed(200 + i)
            m = models.build(spec)
            randomise_bn(m, g)
            m.eval()
            s = models.full_spec(spec)
            x = torch.rand(3, s["inChannels"], s["inputSize"], s["inputSize"], generator=g)
            with torch.no_grad():
                z = m(x)
            torch.jit.script(m).save(os.path.join(out, name + ".pt"))
            with open(os.path.join(out, name + ".json"), "w") as f:
                json.dump({"spec": spec, "paramCount": models.param_count(m), "shape": list(x.shape),
                           "x": x.flatten().tolist(), "logits": z.flatten().tolist()}, f)
            counts[name] = {"spec": spec, "paramCount": models.param_count(m)}
    with open(os.path.join(out, "counts.json"), "w") as f:
        json.dump(counts, f)


if __name__ == "__main__":
    main()
