#!/usr/bin/env python3
"""State dicts of the built-in architectures as published checkpoints come, for the loadWeights
and exportWeights tests (generated at test time, never committed).

  model_weights.py write OUTDIR
      For each spec in SPECS: a seeded PyTorch model (scripts/reference/models.py) with randomised
      BatchNorm statistics, its probe batch x (<name>-x.npy) and PyTorch's logits (<name>-logits.npy),
      and its state dict in the layouts of LAYOUTS (zip, legacy, nested, DataParallel, cuda:0,
      float64/float16/bfloat16 casts, safetensors, and the published TRADES layouts written from
      the papers' descriptions). expected.json lists, per file, its spec, the logits file to match
      (a cast file has its own: the model run on the cast-and-back weights) and how it was written.

  model_weights.py logits --spec JSON --weights FILE --x X.npy --out Y.npy
      Loads FILE into models.build(spec) with load_state_dict(strict=True) — `torch.load(FILE,
      weights_only=True)` (torch >= 2; 1.13's weights_only knows no BINFLOAT, so plain torch.load
      there) or safetensors — and writes the logits of x. Exit 3 when torch is missing.
"""
import argparse
import collections
import json
import os
import struct
import sys

try:
    import numpy as np
    import torch
    import torch.nn as nn
except ImportError:
    sys.stderr.write("model_weights.py: this Python has no torch/numpy\n")
    sys.exit(3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402

SPECS = {
    "mlp": {"arch": "mlp", "inputSize": 8, "hidden": [32, 16], "activation": "tanh"},
    "small-cnn": {"arch": "small-cnn"},
    "mnist-net": {"arch": "mnist-net"},
    "lenet": {"arch": "lenet", "inChannels": 3, "inputSize": 32},
    "vgg11": {"arch": "vgg11"},
    "vgg13": {"arch": "vgg13", "activation": "identity", "pool": "avg"},
    "vgg16": {"arch": "vgg16", "inChannels": 3, "inputSize": 32, "numClasses": 100},
    "resnet20": {"arch": "resnet20", "inChannels": 3, "inputSize": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]},
    "resnet32x2": {"arch": "resnet32", "width": 2, "inChannels": 3, "inputSize": 16},
    "preact-resnet18": {"arch": "preact-resnet18", "inChannels": 3, "inputSize": 32},
    "wrn-16-4": {"arch": "wrn-16-4", "inChannels": 3, "inputSize": 32},
}
# every spec in the plain zip format; these layouts on the models named
LAYOUTS = {
    "legacy": ["mlp", "small-cnn", "resnet20", "wrn-16-4"],
    "nested": ["small-cnn", "resnet20"],            # {"epoch", "state_dict", "best_acc"}
    "model-key": ["mnist-net"],                      # {"model": state}, legacy format
    "dataparallel": ["small-cnn", "wrn-16-4"],       # nn.DataParallel(model).state_dict(): module.*
    "cuda": ["small-cnn", "lenet", "wrn-16-4"],      # storages tagged cuda:0 (zip and legacy)
    "float64": ["small-cnn", "resnet20"],
    "float16": ["small-cnn"],
    "bfloat16": ["small-cnn"],
    "safetensors": ["mlp", "small-cnn", "resnet20", "wrn-16-4"],
    "trades": ["small-cnn", "wrn-16-4"],             # TRADES' published layouts (below)
    "no-norm": ["resnet20"],                         # norm_mean/norm_std left out: they come from the spec
}


# the slow tests (FISHERLENS_SLOW=1): the published size, TRADES' layout only
SLOW_SPECS = {"wrn-34-10": {"arch": "wrn-34-10", "inChannels": 3, "inputSize": 32}}
SLOW_LAYOUTS = {k: (["wrn-34-10"] if k == "trades" else []) for k in LAYOUTS}


def randomise_bn(m: nn.Module, g: torch.Generator):
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            with torch.no_grad():
                mod.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                mod.num_batches_tracked.fill_(7)


# ------------------------------------------------ TRADES' layouts, from the published key names

class TradesSmallCNN(nn.Module):
    """TRADES' MNIST SmallCNN as its checkpoints name it: two nn.Sequential(OrderedDict) blocks,
    feature_extractor (conv1, relu1, conv2, relu2, maxpool1, conv3, relu3, conv4, relu4, maxpool2)
    and classifier (fc1, relu1, drop, fc2, relu2, fc3). No normalisation layer."""

    def __init__(self, c, k, sz):
        super().__init__()
        self.feature_extractor = nn.Sequential(collections.OrderedDict([
            ("conv1", nn.Conv2d(c, 32, 3)), ("relu1", nn.ReLU()), ("conv2", nn.Conv2d(32, 32, 3)), ("relu2", nn.ReLU()),
            ("maxpool1", nn.MaxPool2d(2, 2)), ("conv3", nn.Conv2d(32, 64, 3)), ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(64, 64, 3)), ("relu4", nn.ReLU()), ("maxpool2", nn.MaxPool2d(2, 2))]))
        self.classifier = nn.Sequential(collections.OrderedDict([
            ("fc1", nn.Linear(64 * sz * sz, 200)), ("relu1", nn.ReLU()), ("drop", nn.Dropout(0.5)),
            ("fc2", nn.Linear(200, 200)), ("relu2", nn.ReLU()), ("fc3", nn.Linear(200, k))]))

    def forward(self, x):
        return self.classifier(self.feature_extractor(x).flatten(1))


class TradesWideResNet(nn.Module):
    """TRADES' WideResNet as its checkpoints name it: conv1, block1, sub_block1 (a second copy of
    the first stage that forward never calls), block2, block3, bn1, fc. No normalisation layer."""

    def __init__(self, c, k, depth, widen):
        super().__init__()
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(c, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = models.NetworkBlock(n, ch[0], ch[1], 1, "relu")
        self.sub_block1 = models.NetworkBlock(n, ch[0], ch[1], 1, "relu")
        self.block2 = models.NetworkBlock(n, ch[1], ch[2], 2, "relu")
        self.block3 = models.NetworkBlock(n, ch[2], ch[3], 2, "relu")
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], k)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = torch.relu(self.bn1(x))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def trades_model(name, spec, ref, g):
    """The TRADES-layout twin of `ref` (same weights by module name) and its own logits' model."""
    s = models.full_spec(spec)
    if spec["arch"] == "small-cnn":
        sz = ((s["inputSize"] - 4) // 2 - 4) // 2
        t = TradesSmallCNN(s["inChannels"], s["numClasses"], sz)
        state = collections.OrderedDict()
        for k, v in ref.state_dict().items():
            if k.startswith("norm_"):
                continue
            state[("feature_extractor." if k.startswith("conv") else "classifier.") + k] = v
    else:
        depth, widen = map(int, spec["arch"].split("-")[1:])
        t = TradesWideResNet(s["inChannels"], s["numClasses"], depth, widen)
        randomise_bn(t.sub_block1, g)  # sub_block1 gets weights of its own: they must be ignored
        state = collections.OrderedDict((k, v) for k, v in ref.state_dict().items() if not k.startswith("norm_"))
        for k, v in t.sub_block1.state_dict().items():
            state["sub_block1." + k] = v
    t.load_state_dict(state, strict=True)
    return t.eval()


# ------------------------------------------------ saving

SIMULATE_CUDA = [False]
torch.serialization.register_package(0, lambda o: "cuda:0" if SIMULATE_CUDA[0] else None,
                                     lambda o, loc: o if SIMULATE_CUDA[0] else None)


def save(obj, path, legacy=False, cuda=False):
    SIMULATE_CUDA[0] = cuda
    try:
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    finally:
        SIMULATE_CUDA[0] = False


ST = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def save_safetensors(state, path):
    try:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, path)
        return
    except ImportError:
        pass
    header, blobs, pos = {}, [], 0
    for k, v in state.items():
        v = v.contiguous()
        b = (v.view(torch.int16) if v.dtype == torch.bfloat16 else v).numpy().tobytes()
        header[k] = {"dtype": ST[v.dtype], "shape": list(v.shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def cast_state(state, dtype):
    return collections.OrderedDict((k, v.to(dtype) if v.is_floating_point() else v) for k, v in state.items())


def write(out, specs=None, layouts=None):
    specs = SPECS if specs is None else specs
    layouts = LAYOUTS if layouts is None else layouts
    os.makedirs(out, exist_ok=True)
    files = {}
    for i, (name, spec) in enumerate(specs.items()):
        torch.manual_seed(100 + i)
        g = torch.Generator().manual_seed(200 + i)
        m = models.build(spec)
        randomise_bn(m, g)
        m.eval()
        s = models.full_spec(spec)
        x = torch.rand(3, s["inChannels"], s["inputSize"], s["inputSize"], generator=g)
        np.save(os.path.join(out, f"{name}-x.npy"), x.numpy())

        def logits(model, tag=""):
            with torch.no_grad():
                z = model(x)
            f = f"{name}{tag}-logits.npy"
            np.save(os.path.join(out, f), z.numpy())
            return f

        base = logits(m)
        sd = m.state_dict()

        def add(file, how, state_logits=base, strict=True):
            files[file] = {"spec": spec, "x": f"{name}-x.npy", "logits": state_logits, "how": how, "strict": strict}

        save(sd, os.path.join(out, f"{name}.pt"))
        add(f"{name}.pt", "zip")
        if name in layouts["legacy"]:
            save(sd, os.path.join(out, f"{name}-legacy.pt"), legacy=True)
            add(f"{name}-legacy.pt", "legacy")
        if name in layouts["nested"]:
            save({"epoch": 100, "state_dict": sd, "best_acc": 0.99}, os.path.join(out, f"{name}-nested.pt"))
            add(f"{name}-nested.pt", "{epoch, state_dict, best_acc} zip")
        if name in layouts["model-key"]:
            save({"model": sd}, os.path.join(out, f"{name}-model-key.pt"), legacy=True)
            add(f"{name}-model-key.pt", "{model} legacy")
        if name in layouts["dataparallel"]:
            save(nn.DataParallel(m).state_dict(), os.path.join(out, f"{name}-dataparallel.pt"))
            add(f"{name}-dataparallel.pt", "nn.DataParallel state_dict (module.*)")
        if name in layouts["cuda"]:
            save(sd, os.path.join(out, f"{name}-cuda.pt"), cuda=True)
            add(f"{name}-cuda.pt", "zip, storages at cuda:0")
            save({"state_dict": sd}, os.path.join(out, f"{name}-cuda-legacy.pt"), legacy=True, cuda=True)
            add(f"{name}-cuda-legacy.pt", "{state_dict} legacy, storages at cuda:0")
        for dt, tname in [(torch.float64, "float64"), (torch.float16, "float16"), (torch.bfloat16, "bfloat16")]:
            if name not in layouts[tname]:
                continue
            cs = cast_state(sd, dt)
            save(cs, os.path.join(out, f"{name}-{tname}.pt"))
            twin = models.build(spec)
            twin.load_state_dict(cast_state(cs, torch.float32))  # the weights FisherLens will hold
            twin.eval()
            add(f"{name}-{tname}.pt", f"every float tensor saved as {tname}", logits(twin, f"-{tname}"))
        if name in layouts["safetensors"]:
            save_safetensors(sd, os.path.join(out, f"{name}.safetensors"))
            add(f"{name}.safetensors", "safetensors")
        if name in layouts["trades"]:
            t = trades_model(name, spec, m, g)
            # the published layout computes the same function as the built-in (no normalisation)
            with torch.no_grad():
                assert torch.allclose(t(x), m(x), atol=1e-6), f"{name}: TRADES layout differs"
            save(t.state_dict(), os.path.join(out, f"{name}-trades.pt"), legacy=True, cuda=True)
            add(f"{name}-trades.pt", "TRADES layout, legacy format, cuda:0")
            save(nn.DataParallel(t).state_dict(), os.path.join(out, f"{name}-trades-dp.pt"))
            add(f"{name}-trades-dp.pt", "TRADES layout under DataParallel, zip")
        if name in layouts["no-norm"]:
            save(collections.OrderedDict((k, v) for k, v in sd.items() if not k.startswith("norm_")),
                 os.path.join(out, f"{name}-no-norm.pt"))
            add(f"{name}-no-norm.pt", "norm_mean/norm_std absent (from the spec)")
    # a TorchScript model, and another model's state dict for it (same architecture, other weights)
    spec = {"arch": "lenet", "inChannels": 3, "inputSize": 32}
    torch.manual_seed(7)
    torch.jit.script(models.build(spec).eval()).save(os.path.join(out, "ts-lenet.pt"))
    other = models.build(spec).eval()
    save(other.state_dict(), os.path.join(out, "ts-lenet-state.pt"), legacy=True)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    np.save(os.path.join(out, "ts-lenet-x.npy"), x.numpy())
    with torch.no_grad():
        np.save(os.path.join(out, "ts-lenet-logits.npy"), other(x).numpy())
    torchscript = {"model": "ts-lenet.pt", "weights": "ts-lenet-state.pt", "spec": spec, "x": "ts-lenet-x.npy", "logits": "ts-lenet-logits.npy"}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"torch": torch.__version__, "files": files, "torchscript": torchscript}, f, indent=1)


def logits_of(spec, weights, xfile, out):
    m = models.build(json.loads(spec))
    if weights.endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(weights)
    else:
        kw = {"weights_only": True} if int(torch.__version__.split(".")[0]) >= 2 else {}
        state = torch.load(weights, map_location="cpu", **kw)
    m.load_state_dict(state, strict=True)
    m.eval()
    with torch.no_grad():
        z = m(torch.from_numpy(np.load(xfile)))
    np.save(out, z.numpy())


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("out")
    lg = sub.add_parser("logits")
    lg.add_argument("--spec", required=True)
    lg.add_argument("--weights", required=True)
    lg.add_argument("--x", required=True)
    lg.add_argument("--out", required=True)
    ws = sub.add_parser("write-slow")
    ws.add_argument("out")
    a = ap.parse_args()
    if a.cmd == "write":
        write(a.out)
    elif a.cmd == "write-slow":
        write(a.out, SLOW_SPECS, SLOW_LAYOUTS)
    else:
        logits_of(a.spec, a.weights, a.x, a.out)


if __name__ == "__main__":
    main()
