"""Weight files as PyTorch writes them, for the tests of FisherLens' weights readers.

    python3 scripts/reference/write_weights.py OUT_DIR [MARKER]

Writes into OUT_DIR (made if missing) the same set of tensors in every layout a published
checkpoint comes in, and `expected.json` saying what each file must read as:

  tensors-zip.pt          torch.save(state)                       (zip format, torch >= 1.6)
  tensors-legacy.pt       torch.save(state, _use_new_zipfile_serialization=False)
  tensors-nested.pt       {"epoch": 7, "state_dict": state, "best_acc": 0.5}
  tensors-model.pt        {"model": state}                              (legacy format)
  tensors-module.pt       every key prefixed "module." (DataParallel), zip format
  tensors-cuda.pt         storages tagged with location "cuda:0" (zip); -cuda-legacy.pt legacy
  tensors.safetensors     the contiguous tensors as safetensors (the safetensors package when
                          this Python has it, else written here from the format's description)
  hostile-*.pt / .pkl     pickles calling os.system / builtins.eval / an arbitrary class, which
                          would create a marker file when unpickled by plain pickle

The tensors cover every dtype a checkpoint holds (float32/64/16, bfloat16, int64
num_batches_tracked, int8/16/32, uint8, bool), a 0-d tensor, an empty one, a Parameter, and views
(a transpose and an offset slice sharing the first tensor's storage). expected.json holds, per
file, each tensor's dtype, shape and its values as the little-endian bytes of
`t.contiguous()` (base64), so a reader is checked byte for byte.

`hostile_marker` in expected.json is the path the hostile pickles would create (MARKER, default
OUT_DIR/hostile-marker; give the final path when OUT_DIR is renamed afterwards); this script
proves each payload live by unpickling a copy of it, with a different marker path, in a child
Python, and fails if that marker does not appear.
"""
import base64
import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import torch

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)

# ---------------------------------------------------------------- the tensors

def tensors():
    g = torch.Generator().manual_seed(24)
    base = torch.randn(4, 5, generator=g)
    t = collections.OrderedDict()
    t["f32"] = base
    t["f32_t"] = base.t()                      # a view: same storage, strides (1, 5)
    t["f32_slice"] = base[1:, 2:]              # a view: storage offset 7, strides (5, 1)
    t["f64"] = torch.randn(3, 2, generator=g, dtype=torch.float64)
    t["f16"] = torch.randn(5, generator=g).half()
    t["bf16"] = torch.randn(2, 3, generator=g).bfloat16()
    t["i64"] = torch.arange(-3, 3, dtype=torch.int64).view(2, 3)
    t["num_batches_tracked"] = torch.tensor(123456789012, dtype=torch.int64)  # 0-d
    t["i32"] = torch.tensor([-(2 ** 31), 2 ** 31 - 1, 5], dtype=torch.int32)
    t["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    t["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    t["u8"] = torch.tensor([0, 255, 7], dtype=torch.uint8)
    t["bool"] = torch.tensor([True, False, True])
    t["empty"] = torch.zeros(0, 3)
    t["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    return t


def raw_bytes(x):
    """Little-endian bytes of x.contiguous() (bfloat16 through its int16 bit pattern)."""
    x = x.detach().contiguous()
    if x.dtype == torch.bfloat16:
        x = x.view(torch.int16)
    return x.numpy().tobytes() if x.numel() else b""


def describe(state):
    return {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
                "b64": base64.b64encode(raw_bytes(v)).decode()} for k, v in state.items()}


# ------------------------------------------------ a storage location as if saved from a GPU

SIMULATE_CUDA = [False]


def _tag(obj):
    return "cuda:0" if SIMULATE_CUDA[0] else None


def _restore(obj, location):  # only reached when loading without map_location
    return obj if location.startswith("cuda") and SIMULATE_CUDA[0] else None


torch.serialization.register_package(0, _tag, _restore)


def save(obj, name, legacy=False, cuda=False):
    SIMULATE_CUDA[0] = cuda
    try:
        torch.save(obj, os.path.join(OUT, name), _use_new_zipfile_serialization=not legacy)
    finally:
        SIMULATE_CUDA[0] = False
    # what Python itself reads back (weights_only from torch 2: 1.13's knows no BINFLOAT)
    kw = {"map_location": "cpu"}
    if int(torch.__version__.split(".")[0]) >= 2:
        kw["weights_only"] = True
    return torch.load(os.path.join(OUT, name), **kw)


# ------------------------------------------------ safetensors, from the format's description

ST_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
             torch.uint8: "U8", torch.bool: "BOOL"}


def write_safetensors(state, path, metadata=None):
    """8-byte little-endian header length N, N bytes of JSON (padded with spaces to a multiple
    of 8), then the tensors' bytes back to back; data_offsets are relative to the data start."""
    try:
        from safetensors.torch import save_file
        save_file({k: v.detach().contiguous() for k, v in state.items()}, path, metadata=metadata)
        return "safetensors package"
    except ImportError:
        pass
    header, blobs, pos = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for k, v in state.items():
        b = raw_bytes(v)
        header[k] = {"dtype": ST_DTYPES[v.dtype], "shape": list(v.shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return "written by hand"


# ------------------------------------------------ hostile pickles

MARKER = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else os.path.join(OUT, "hostile-marker")
PROOF = os.path.join(OUT, "hostile-proof-marker")


def hostile_payloads(marker):
    """name -> pickle bytes that run a command (or code) creating `marker` when unpickled."""
    cmd = f"touch {marker}".encode()
    code = f"open({marker!r}, 'w').close()".encode()
    p = {}
    # protocol 0: GLOBAL 'os system', the command, REDUCE
    p["os-system"] = b"cos\nsystem\n(V" + cmd + b"\ntR."
    # protocol 4: STACK_GLOBAL on 'posix' 'system' (how pickle writes os.system on Linux)
    body = (b"\x8c\x05posix\x94\x8c\x06system\x94\x93\x94" +
            b"\x8c" + bytes([len(cmd)]) + cmd + b"\x94\x85\x94R\x94.")
    p["posix-stack-global"] = b"\x80\x04" + body
    p["builtins-eval"] = b"\x80\x02cbuiltins\neval\nq\x00X" + struct.pack("<I", len(code)) + code + b"q\x01\x85q\x02Rq\x03."
    # an allowed container holding a disallowed call in a value: nothing may run either
    p["nested-in-ordereddict"] = (b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wq\x02"
                                  b"cos\nsystem\nq\x03X" + struct.pack("<I", len(cmd)) + cmd + b"q\x04\x85q\x05Rq\x06s.")
    return p


def hostile_zip(path, pkl):
    """A torch-like zip archive whose data.pkl is `pkl`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")


def hostile_legacy(path, pkl):
    """The legacy stream: magic, protocol, sys_info, then `pkl` where the object goes."""
    with open(path, "wb") as f:
        pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        f.write(pkl)
        pickle.dump([], f, protocol=2)


class Evil:  # an arbitrary class: pickled as GLOBAL '__main__ Evil' + REDUCE
    def __reduce__(self):
        return (Evil, ())


class SystemCall:  # pickled as GLOBAL 'posix system' + REDUCE: runs the command on a plain load
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def prove_live(name, payload):
    """Unpickles the payload with plain pickle in a child Python; its marker must appear."""
    if os.path.exists(PROOF):
        os.remove(PROOF)
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
                   input=payload, check=False, capture_output=True)
    if not os.path.exists(PROOF):
        sys.exit(f"hostile payload {name} did not create its proof marker: not a live fixture")
    os.remove(PROOF)


# ------------------------------------------------ crafted files: well-formed containers that lie

class _Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        s, o, size, stride = self.args
        return (torch._utils._rebuild_tensor_v2, (s, o, size, stride, False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    legacy = False

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):  # the legacy format adds view_metadata (None)
            return ("storage", torch.FloatStorage, obj.key, "cuda:0", obj.numel) + ((None,) if self.legacy else ())
        return None


def crafted_pickle(obj, legacy=False):
    b = io.BytesIO()
    p = _Pickler(b, protocol=2)
    p.legacy = legacy
    p.dump(obj)
    return b.getvalue()


def crafted_zip(path, obj, storages):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("crafted/data.pkl", crafted_pickle(obj))
        for key, data in storages.items():
            z.writestr(f"crafted/data/{key}", data)
        z.writestr("crafted/version", "3\n")


def crafted_legacy(path, obj, storages, declared=None):
    """declared: key -> element count to write in the storage record (default: the true one)."""
    with open(path, "wb") as f:
        pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        f.write(crafted_pickle(obj, legacy=True))
        pickle.dump(sorted(storages), f, protocol=2)
        for key in sorted(storages):
            n = (declared or {}).get(key, len(storages[key]) // 4)
            f.write(struct.pack("<q", n))
            f.write(storages[key])


def crafted():
    """name -> (a phrase the error must contain); files written into OUT."""
    four = struct.pack("<4f", 1, 2, 3, 4)
    st = _Storage("0", 4)
    cases = {}

    def both(name, obj, storages, phrase):
        crafted_zip(os.path.join(OUT, f"{name}.pt"), obj, storages)
        crafted_legacy(os.path.join(OUT, f"{name}-legacy.pt"), obj, storages)
        cases[f"{name}.pt"] = phrase
        cases[f"{name}-legacy.pt"] = phrase

    both("crafted-ok", {"w": _Tensor(st, 1, (3,), (1,))}, {"0": four}, None)
    for name in ("crafted-ok.pt", "crafted-ok-legacy.pt"):  # the crafted containers are real torch files
        assert torch.load(os.path.join(OUT, name), map_location="cpu")["w"].tolist() == [2.0, 3.0, 4.0], name
    both("crafted-offset-past-end", {"w": _Tensor(st, 8, (2,), (1,))}, {"0": four}, "past the end of its storage")
    both("crafted-huge-shape", {"w": _Tensor(st, 0, (2 ** 40, 2 ** 40), (0, 0))}, {"0": four}, "overlapping view")
    both("crafted-huge-strided", {"w": _Tensor(st, 0, (2 ** 40,), (1,))}, {"0": four}, "past the end of its storage")
    crafted_zip(os.path.join(OUT, "crafted-missing-storage.pt"), {"w": _Tensor(_Storage("7", 4), 0, (4,), (1,))}, {"0": four})
    cases["crafted-missing-storage.pt"] = "has no crafted/data/7"
    crafted_zip(os.path.join(OUT, "crafted-short-storage.pt"), {"w": _Tensor(_Storage("0", 8), 0, (4,), (1,))}, {"0": four})
    cases["crafted-short-storage.pt"] = "declares 8 float32 elements"
    crafted_legacy(os.path.join(OUT, "crafted-lying-numel-legacy.pt"), {"w": _Tensor(st, 0, (4,), (1,))}, {"0": four},
                   declared={"0": 2 ** 60})
    cases["crafted-lying-numel-legacy.pt"] = "truncated or lying header"
    return cases


# ------------------------------------------------ write everything

def main():
    state = tensors()
    expected = {"torch": torch.__version__, "files": {}}
    sd = collections.OrderedDict((k, v.detach() if k != "param" else v) for k, v in state.items())
    flat = describe(state)

    def check(name, loaded, inner):
        got = loaded
        for k in inner:
            got = got[k]
        assert describe(got) == flat, f"{name}: torch.load disagrees with what was saved"

    for name, obj, legacy, cuda, inner, prefix in [
        ("tensors-zip.pt", sd, False, False, [], ""),
        ("tensors-legacy.pt", sd, True, False, [], ""),
        ("tensors-nested.pt", {"epoch": 7, "state_dict": sd, "best_acc": 0.5}, False, False, ["state_dict"], ""),
        ("tensors-nested-legacy.pt", {"epoch": 7, "state_dict": sd}, True, False, ["state_dict"], ""),
        ("tensors-model.pt", {"model": sd}, True, False, ["model"], ""),
        ("tensors-cuda.pt", sd, False, True, [], ""),
        ("tensors-cuda-legacy.pt", sd, True, True, [], ""),
    ]:
        check(name, save(obj, name, legacy, cuda), inner)
        expected["files"][name] = {"inner": inner, "tensors": flat}
    mod = collections.OrderedDict(("module." + k, v) for k, v in sd.items())
    save(mod, "tensors-module.pt")
    expected["files"]["tensors-module.pt"] = {"inner": [], "tensors": describe(mod)}

    how = write_safetensors(sd, os.path.join(OUT, "tensors.safetensors"), {"format": "pt"})
    expected["files"]["tensors.safetensors"] = {"inner": [], "tensors": flat, "how": how}

    hostile = {}
    for name, payload in hostile_payloads(MARKER).items():
        prove_live(name, hostile_payloads(PROOF)[name])
        with open(os.path.join(OUT, f"hostile-{name}.pkl"), "wb") as f:
            f.write(payload)
        hostile_zip(os.path.join(OUT, f"hostile-{name}.pt"), payload)
        hostile_legacy(os.path.join(OUT, f"hostile-{name}-legacy.pt"), payload)
        hostile[name] = {"pkl": f"hostile-{name}.pkl", "zip": f"hostile-{name}.pt",
                         "legacy": f"hostile-{name}-legacy.pt"}
    # an arbitrary class, the way torch.save writes one (a full zip checkpoint)
    torch.save({"w": torch.ones(2), "evil": Evil()}, os.path.join(OUT, "hostile-class.pt"))
    hostile["class"] = {"zip": "hostile-class.pt"}
    torch.save({"w": torch.ones(2), "evil": SystemCall()}, os.path.join(OUT, "hostile-torch-save.pt"))
    torch.save({"w": torch.ones(2), "evil": SystemCall()}, os.path.join(OUT, "hostile-torch-save-legacy.pt"),
               _use_new_zipfile_serialization=False)
    hostile["torch-save"] = {"zip": "hostile-torch-save.pt", "legacy": "hostile-torch-save-legacy.pt"}
    expected["hostile"] = hostile
    expected["crafted"] = crafted()
    expected["hostile_marker"] = MARKER
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(json.dumps({"out": OUT, "torch": torch.__version__, "safetensors": how}))


main()
