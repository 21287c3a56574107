#!/usr/bin/env python3
"""Export a FisherLens built-in model to TorchScript (the second half of model.exportTorchScript).

  export_torchscript.py --spec spec.json --state state.pt --out model.pt [--probe probe.json]

state.pt is what FisherLens' exportState writes: a TorchScript archive whose buffers are the
model's parameters and buffers, named with '.' replaced by '_'. This script rebuilds the same
architecture from the spec (scripts/reference/models.py), loads the weights by name, scripts it
with torch.jit.script and saves it. With --probe (JSON {shape, x, logits} from FisherLens) it
checks that PyTorch gives the same logits (max abs diff < 1e-4) before saving.
Exit codes: 0 ok, 2 bad input, 3 torch missing, 4 logits differ.
"""
import argparse
import json
import os
import sys

try:
    import torch
except ImportError:
    sys.stderr.write("export_torchscript.py: this Python has no torch (set FISHERLENS_PYTHON)\n")
    sys.exit(3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--probe")
    a = ap.parse_args()
    with open(a.spec) as f:
        spec = json.load(f)
    model = models.build(spec)
    saved = dict(torch.jit.load(a.state, map_location="cpu").named_buffers())
    state = model.state_dict()
    missing = [k for k in state if k.replace(".", "_") not in saved]
    if missing or len(saved) != len(state):
        sys.stderr.write(f"export_torchscript.py: weights do not match {spec['arch']}: missing {missing[:5]}, "
                         f"{len(saved)} saved vs {len(state)} expected\n")
        return 2
    new_state = {}
    for k, v in state.items():
        w = saved[k.replace(".", "_")]
        if w.shape != v.shape:
            sys.stderr.write(f"export_torchscript.py: '{k}' has shape {tuple(w.shape)}, expected {tuple(v.shape)}\n")
            return 2
        new_state[k] = w
    model.load_state_dict(new_state)
    model.eval()
    scripted = torch.jit.script(model)
    if a.probe:
        with open(a.probe) as f:
            probe = json.load(f)
        x = torch.tensor(probe["x"], dtype=torch.float32).view(probe["shape"])
        want = torch.tensor(probe["logits"], dtype=torch.float32).view(x.shape[0], -1)
        with torch.no_grad():
            got = scripted(x)
        diff = (got - want).abs().max().item()
        if not diff < 1e-4:
            sys.stderr.write(f"export_torchscript.py: PyTorch logits differ from FisherLens' by {diff}\n")
            return 4
    # the input shape [C, H, W] the spec fixes (FisherLens' zoo defaults: 1 channel, 28 pixels):
    # FisherLens reads it back to name what the model expects when a forward gets another shape
    size = spec.get("inputSize", 28)
    meta = json.dumps({"inputShape": [spec.get("inChannels", 1), size, size]})
    torch.jit.save(scripted, a.out, _extra_files={"fisherlens.json": meta})
    return 0


if __name__ == "__main__":
    sys.exit(main())
