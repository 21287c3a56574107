"""PyTorch reference of FisherLens' built-in architectures (native/models/zoo*.cc).

Written independently from the C++ code, following the published originals: module names match
the originals (and so FisherLens'), so weights move between the two by name. Used by the tests
(parameter counts, logits on shared weights) and by export_torchscript.py.

build(spec) takes the same JSON spec as Model.create: {"arch", "inChannels", "inputSize",
"numClasses", "width", "activation", "pool", "hidden", "mean", "std"}.
"""
import re
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F


def act_fn(name: str):
    return {
        "relu": F.relu,
        "identity": lambda x: x,
        "tanh": torch.tanh,
        "softplus": F.softplus,
        "gelu": F.gelu,
    }[name]


class Act(nn.Module):
    """An activation by name (TorchScript-friendly)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, x):
        if self.name == "relu":
            return F.relu(x)
        if self.name == "tanh":
            return torch.tanh(x)
        if self.name == "softplus":
            return F.softplus(x)
        if self.name == "gelu":
            return F.gelu(x)
        return x


class Base(nn.Module):
    """Every architecture normalises first: (x - mean) / std per channel (FisherLens' first layer),
    with the buffers norm_mean / norm_std [1, C, 1, 1] named as in FisherLens."""

    def init_norm(self, s: dict):
        c = s["inChannels"]
        mean = s.get("mean") or [0.0] * c
        std = s.get("std") or [1.0] * c
        self.register_buffer("norm_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("norm_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def normalise(self, x):
        return (x - self.norm_mean) / self.norm_std


class Mlp(Base):
    def __init__(self, s):
        super().__init__()
        self.init_norm(s)
        d = s["inChannels"] * s["inputSize"] ** 2
        sizes = list(s.get("hidden", [256, 256]))
        layers = []
        for h in sizes + [s["numClasses"]]:
            layers.append(nn.Linear(d, h))
            d = h
        self.fcs = nn.ModuleList(layers)
        self.act = Act(s["activation"])

    def forward(self, x):
        x = self.normalise(x)
        x = x.flatten(1)
        n = len(self.fcs)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i + 1 < n:
                x = self.act(x)
        return x


class SmallCNN(Base):
    """TRADES' MNIST SmallCNN: 4 conv (32, 32, 64, 64) + fc 200, 200, K."""

    def __init__(self, s):
        super().__init__()
        self.init_norm(s)
        sz = ((s["inputSize"] - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(s["inChannels"], 32, 3)
        self.conv2 = nn.Conv2d(32, 32, 3)
        self.conv3 = nn.Conv2d(32, 64, 3)
        self.conv4 = nn.Conv2d(64, 64, 3)
        self.fc1 = nn.Linear(64 * sz * sz, 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, s["numClasses"])
        self.drop = nn.Dropout(0.5)
        self.act = Act(s["activation"])

    def forward(self, x):
        x = self.normalise(x)
        a = self.act
        x = F.max_pool2d(a(self.conv2(a(self.conv1(x)))), 2)
        x = F.max_pool2d(a(self.conv4(a(self.conv3(x)))), 2).flatten(1)
        x = self.drop(a(self.fc1(x)))
        return self.fc3(a(self.fc2(x)))


class MnistNet(Base):
    """TRADES' quick MNIST Net: conv 10@5×5, conv 20@5×5 (+Dropout2d), fc 50, fc K."""

    def __init__(self, s):
        super().__init__()
        self.init_norm(s)
        sz = ((s["inputSize"] - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(s["inChannels"], 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(20 * sz * sz, 50)
        self.fc2 = nn.Linear(50, s["numClasses"])
        self.act = Act(s["activation"])

    def forward(self, x):
        x = self.normalise(x)
        x = self.act(F.max_pool2d(self.conv1(x), 2))
        x = self.act(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = self.act(self.fc1(x.flatten(1)))
        x = F.dropout(x, training=self.training)
        return self.fc2(x)


class LeNet(Base):
    def __init__(self, s):
        super().__init__()
        self.init_norm(s)
        sz = ((s["inputSize"] - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(s["inChannels"], 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * sz * sz, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, s["numClasses"])
        self.act = Act(s["activation"])
        self.avg = s["pool"] == "avg"

    def pool(self, x):
        return F.avg_pool2d(x, 2) if self.avg else F.max_pool2d(x, 2)

    def forward(self, x):
        x = self.normalise(x)
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x))).flatten(1)
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.fc3(x)


VGG_CFG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(Base):
    """The CIFAR VGG with BatchNorm (features + classifier 512 → K); pools skip 1-pixel maps."""

    def __init__(self, s):
        super().__init__()
        self.init_norm(s)
        layers: List[nn.Module] = []
        kinds: List[int] = []  # 0 conv/bn/act (applied as is), 1 pool
        c = s["inChannels"]
        for v in VGG_CFG[s["arch"]]:
            if v == "M":
                layers.append(nn.AvgPool2d(2) if s["pool"] == "avg" else nn.MaxPool2d(2))
                kinds.append(1)
            else:
                layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.BatchNorm2d(v),
                           nn.ReLU() if s["activation"] == "relu" else Act(s["activation"])]
                kinds += [0, 0, 0]
                c = v
        self.features = nn.Sequential(*layers)
        self.kinds = kinds
        self.classifier = nn.Linear(512, s["numClasses"])

    def forward(self, x):
        x = self.normalise(x)
        i = 0
        for layer in self.features:
            if self.kinds[i] == 0 or (x.size(2) >= 2 and x.size(3) >= 2):
                x = layer(x)
            i += 1
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


class CifarBlock(nn.Module):
    """He et al. (2016) CIFAR basic block with the option-A (subsample + zero-pad) shortcut."""

    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.pad_lo = (cout - cin) // 2
        self.pad_hi = cout - cin - self.pad_lo
        self.project = stride != 1 or cin != cout
        self.act = Act(act)

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x
        if self.project:
            sc = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad_lo, self.pad_hi))
        return self.act(out + sc)


class CifarResNet(Base):
    def __init__(self, s, depth):
        super().__init__()
        self.init_norm(s)
        n = (depth - 2) // 6
        w = s.get("width", 1)
        self.conv1 = nn.Conv2d(s["inChannels"], 16 * w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16 * w)
        cin = 16 * w
        stages = []
        for stage in range(3):
            cout = (16 << stage) * w
            blocks = []
            for b in range(n):
                blocks.append(CifarBlock(cin, cout, 2 if b == 0 and stage > 0 else 1, s["activation"]))
                cin = cout
            stages.append(nn.ModuleList(blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(cin, s["numClasses"])
        self.act = Act(s["activation"])

    def forward(self, x):
        x = self.normalise(x)
        x = self.act(self.bn1(self.conv1(x)))
        for b in self.layer1:
            x = b(x)
        for b in self.layer2:
            x = b(x)
        for b in self.layer3:
            x = b(x)
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


class WideBlock(nn.Module):
    """Zagoruyko & Komodakis' pre-activation wide block (TRADES' BasicBlock, no dropout)."""

    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride=stride, padding=0, bias=False)
        self.act = Act(act)

    def forward(self, x):
        o = self.act(self.bn1(x))
        y = self.conv2(self.act(self.bn2(self.conv1(o))))
        if self.convShortcut is not None:
            return self.convShortcut(o) + y
        return x + y


class NetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride, act):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, act) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(Base):
    def __init__(self, s, depth, widen):
        super().__init__()
        self.init_norm(s)
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(s["inChannels"], ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, s["activation"])
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, s["activation"])
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, s["activation"])
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], s["numClasses"])
        self.act = Act(s["activation"])

    def forward(self, x):
        x = self.normalise(x)
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.act(self.bn1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.has_shortcut = stride != 1 or cin != cout
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False)) if self.has_shortcut else nn.Sequential()
        self.act = Act(act)

    def forward(self, x):
        o = self.act(self.bn1(x))
        sc = self.shortcut(o) if self.has_shortcut else x
        o = self.conv1(o)
        o = self.conv2(self.act(self.bn2(o)))
        return o + sc


class PreActResNet18(Base):
    def __init__(self, s):
        super().__init__()
        self.init_norm(s)
        w = s.get("width", 1)
        self.conv1 = nn.Conv2d(s["inChannels"], 64 * w, 3, stride=1, padding=1, bias=False)
        cin = 64 * w
        layers = []
        for g in range(4):
            cout = (64 << g) * w
            blocks = []
            for i in range(2):
                blocks.append(PreActBlock(cin, cout, 2 if i == 0 and g > 0 else 1, s["activation"]))
                cin = cout
            layers.append(nn.ModuleList(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, s["numClasses"])
        self.act = Act(s["activation"])

    def forward(self, x):
        x = self.normalise(x)
        x = self.conv1(x)
        for b in self.layer1:
            x = b(x)
        for b in self.layer2:
            x = b(x)
        for b in self.layer3:
            x = b(x)
        for b in self.layer4:
            x = b(x)
        x = self.act(self.bn(x))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


def full_spec(spec: dict) -> dict:
    s = {"inChannels": 1, "inputSize": 28, "numClasses": 10, "width": 1, "activation": "relu", "pool": "max"}
    s.update(spec)
    return s


def body(s: dict) -> nn.Module:
    a = s["arch"]
    if a == "mlp":
        return Mlp(s)
    if a == "small-cnn":
        return SmallCNN(s)
    if a == "mnist-net":
        return MnistNet(s)
    if a == "lenet":
        return LeNet(s)
    if a in VGG_CFG:
        return VGG(s)
    m = re.fullmatch(r"resnet(20|32|44|56)", a)
    if m:
        return CifarResNet(s, int(m.group(1)))
    m = re.fullmatch(r"wrn-(\d+)-(\d+)", a)
    if m:
        return WideResNet(s, int(m.group(1)), int(m.group(2)))
    if a == "preact-resnet18":
        return PreActResNet18(s)
    raise ValueError(f"unknown arch {a}")


def build(spec: dict) -> nn.Module:
    """The architecture of `spec`, its parameters and buffers named as in FisherLens."""
    return body(full_spec(spec))


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
