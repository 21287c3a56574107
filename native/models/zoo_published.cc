// Published built-in architectures (beyond zoo.cc's mlp and small-cnn): mnist-net, lenet,
// vgg11/13/16, resnet20/32/44/56 (CIFAR, option-A shortcuts, width multiplier),
// wrn-<depth>-<widen> (wrn-34-10), preact-resnet18.
// Module names follow the PyTorch originals (scripts/reference/models.py builds the same modules
// with the same names), so weights move between FisherLens and PyTorch by name.
// Every network ends in a global average pool where the original pools to 1×1, so small inputs
// (28×28, one channel) work; pools that would shrink a 1-pixel map are skipped (VGG).
#include "models/zoo.h"
#include "common/errors.h"
#include "models/linear_tape.h"
#include <regex>

namespace fl {
namespace {

namespace nn = torch::nn;

nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad, bool bias) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(bias));
}

torch::Tensor pool2(const std::string& kind, const torch::Tensor& x) {
  return kind == "avg" ? rec::avgPool(x, 2) : rec::maxPool(x, 2);
}

// ---------- mnist-net: TRADES' quick MNIST Net (2 conv + 2 fully connected) ----------
// conv 5×5 (10) → pool → act; conv 5×5 (20) → dropout2d → pool → act; fc 50 → act → dropout; fc K
struct MnistNet : Net {
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::Dropout2d conv2_drop{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};
  nn::Dropout drop{nullptr};
  std::string act;
  MnistNet(const ArchSpec& s) : act(s.activation) {
    int64_t sz = ((s.inputSize - 4) / 2 - 4) / 2;
    FL_CHECK(s.inputSize >= 14 && sz >= 1, ERR_ARG, "mnist-net needs inputSize >= 14, got ", s.inputSize);
    conv1 = register_module("conv1", conv(s.inChannels, 10, 5, 1, 0, true));
    conv2 = register_module("conv2", conv(10, 20, 5, 1, 0, true));
    conv2_drop = register_module("conv2_drop", nn::Dropout2d(0.5));
    fc1 = register_module("fc1", nn::Linear(20 * sz * sz, 50));
    fc2 = register_module("fc2", nn::Linear(50, s.numClasses));
    drop = register_module("drop", nn::Dropout(0.5));
  }
  torch::Tensor body(torch::Tensor x) override {
    x = activate(act, rec::maxPool(rec::conv(*conv1, x), 2));
    torch::Tensor h = rec::dropout(*conv2_drop, [&](const torch::Tensor& t) { return conv2_drop->forward(t); }, rec::conv(*conv2, x));
    x = activate(act, rec::maxPool(h, 2));
    x = activate(act, rec::linear(*fc1, rec::flatten(x)));
    return rec::linear(*fc2, rec::dropout(*drop, [&](const torch::Tensor& t) { return drop->forward(t); }, x));
  }
};

// ---------- lenet: LeNet-5 (conv 6, conv 16, fc 120, 84, K), no padding ----------
struct LeNet : Net {
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
  std::string act, pool;
  LeNet(const ArchSpec& s) : act(s.activation), pool(s.pool) {
    int64_t sz = ((s.inputSize - 4) / 2 - 4) / 2;
    FL_CHECK(s.inputSize >= 14 && sz >= 1, ERR_ARG, "lenet needs inputSize >= 14, got ", s.inputSize);
    conv1 = register_module("conv1", conv(s.inChannels, 6, 5, 1, 0, true));
    conv2 = register_module("conv2", conv(6, 16, 5, 1, 0, true));
    fc1 = register_module("fc1", nn::Linear(16 * sz * sz, 120));
    fc2 = register_module("fc2", nn::Linear(120, 84));
    fc3 = register_module("fc3", nn::Linear(84, s.numClasses));
  }
  torch::Tensor body(torch::Tensor x) override {
    x = pool2(pool, activate(act, rec::conv(*conv1, x)));
    x = rec::flatten(pool2(pool, activate(act, rec::conv(*conv2, x))));
    x = activate(act, rec::linear(*fc1, x));
    x = activate(act, rec::linear(*fc2, x));
    return rec::linear(*fc3, x);
  }
};

// ---------- vgg11/13/16: the CIFAR VGG with BatchNorm (features.N, classifier) ----------
// features: [conv 3×3 pad 1 → BN → act]… with 2×2 pools ('M'); then global average pool and a
// linear classifier 512 → K. activation identity + avg pool = the paper's "pure linear" VGG.
const std::vector<int64_t>& vggConfig(const std::string& arch) {
  static const std::vector<int64_t> v11{64, -1, 128, -1, 256, 256, -1, 512, 512, -1, 512, 512, -1};
  static const std::vector<int64_t> v13{64, 64, -1, 128, 128, -1, 256, 256, -1, 512, 512, -1, 512, 512, -1};
  static const std::vector<int64_t> v16{64, 64, -1, 128, 128, -1, 256, 256, 256, -1, 512, 512, 512, -1, 512, 512, 512, -1};
  return arch == "vgg11" ? v11 : arch == "vgg13" ? v13 : v16;
}

struct Vgg : Net {
  nn::Sequential features{nullptr};
  nn::Linear classifier{nullptr};
  // per features entry: 'c' conv, 'b' batchnorm, 'a' activation, 'p' pool
  std::string kinds;
  std::vector<std::shared_ptr<nn::Module>> mods;
  std::string act, pool;
  Vgg(const ArchSpec& s) : act(s.activation), pool(s.pool) {
    features = register_module("features", nn::Sequential());
    int64_t in = s.inChannels;
    for (int64_t v : vggConfig(s.arch)) {
      if (v < 0) {
        if (pool == "avg") features->push_back(nn::AvgPool2d(nn::AvgPool2dOptions(2)));
        else features->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2)));
        kinds += 'p';
        continue;
      }
      features->push_back(conv(in, v, 3, 1, 1, true));
      features->push_back(nn::BatchNorm2d(v));
      features->push_back(nn::Identity());  // the activation's slot (nn.ReLU / nn.Identity in PyTorch)
      kinds += "cba";
      in = v;
    }
    classifier = register_module("classifier", nn::Linear(512, s.numClasses));
  }
  torch::Tensor body(torch::Tensor x) override {
    for (size_t i = 0; i < kinds.size(); ++i) {
      switch (kinds[i]) {
        case 'c': x = rec::conv(*features[i]->as<nn::Conv2d>(), x); break;
        case 'b': x = rec::batchNorm(*features[i]->as<nn::BatchNorm2d>(), x); break;
        case 'a': x = activate(act, x); break;
        case 'p':
          if (x.size(2) >= 2 && x.size(3) >= 2) x = pool2(pool, x);
          break;
      }
    }
    x = rec::flatten(rec::globalAvgPool(x));
    return rec::linear(*classifier, x);
  }
};

// ---------- resnet20/32/44/56: He et al.'s CIFAR ResNets, option-A (parameter-free) shortcuts ----------
struct CifarBlock : nn::Module {
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  int64_t in, out, stride;
  std::string act;
  CifarBlock(int64_t in_, int64_t out_, int64_t stride_, const std::string& act_) : in(in_), out(out_), stride(stride_), act(act_) {
    conv1 = register_module("conv1", conv(in, out, 3, stride, 1, false));
    bn1 = register_module("bn1", nn::BatchNorm2d(out));
    conv2 = register_module("conv2", conv(out, out, 3, 1, 1, false));
    bn2 = register_module("bn2", nn::BatchNorm2d(out));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor o = activate(act, rec::batchNorm(*bn1, rec::conv(*conv1, x)));
    o = rec::batchNorm(*bn2, rec::conv(*conv2, o));
    torch::Tensor sc = x;
    if (stride != 1 || in != out) {
      // option A: subsample by the stride, zero-pad the new channels (half before, half after)
      int64_t lo = (out - in) / 2, hi = out - in - lo;
      sc = rec::shortcutA(x, stride, lo, hi);
    }
    return activate(act, rec::add(o, sc));
  }
};

struct CifarResNet : Net {
  nn::Conv2d conv1{nullptr};
  nn::BatchNorm2d bn1{nullptr};
  std::vector<std::vector<std::shared_ptr<CifarBlock>>> layers;
  nn::Linear linear{nullptr};
  std::string act;
  CifarResNet(const ArchSpec& s, int64_t depth) : act(s.activation) {
    const int64_t n = (depth - 2) / 6, w = s.width;
    conv1 = register_module("conv1", conv(s.inChannels, 16 * w, 3, 1, 1, false));
    bn1 = register_module("bn1", nn::BatchNorm2d(16 * w));
    int64_t in = 16 * w;
    for (int64_t stage = 0; stage < 3; ++stage) {
      int64_t out = (16 << stage) * w;
      auto list = register_module("layer" + std::to_string(stage + 1), nn::ModuleList());
      std::vector<std::shared_ptr<CifarBlock>> blocks;
      for (int64_t b = 0; b < n; ++b) {
        auto blk = std::make_shared<CifarBlock>(in, out, b == 0 && stage > 0 ? 2 : 1, act);
        list->push_back(blk);
        blocks.push_back(blk);
        in = out;
      }
      layers.push_back(blocks);
    }
    linear = register_module("linear", nn::Linear(in, s.numClasses));
  }
  torch::Tensor body(torch::Tensor x) override {
    x = activate(act, rec::batchNorm(*bn1, rec::conv(*conv1, x)));
    for (auto& stage : layers)
      for (auto& b : stage) x = b->forward(x);
    return rec::linear(*linear, rec::flatten(rec::globalAvgPool(x)));
  }
};

// ---------- wrn-<depth>-<widen>: Zagoruyko & Komodakis' WideResNet as in TRADES / RobustBench ----------
struct WideBlock : nn::Module {
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, convShortcut{nullptr};
  bool equalInOut;
  std::string act;
  WideBlock(int64_t in, int64_t out, int64_t stride, const std::string& act_) : equalInOut(in == out), act(act_) {
    bn1 = register_module("bn1", nn::BatchNorm2d(in));
    conv1 = register_module("conv1", conv(in, out, 3, stride, 1, false));
    bn2 = register_module("bn2", nn::BatchNorm2d(out));
    conv2 = register_module("conv2", conv(out, out, 3, 1, 1, false));
    if (!equalInOut) convShortcut = register_module("convShortcut", conv(in, out, 1, stride, 0, false));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor pre = activate(act, rec::batchNorm(*bn1, x));
    torch::Tensor o = activate(act, rec::batchNorm(*bn2, rec::conv(*conv1, pre)));
    o = rec::conv(*conv2, o);
    return rec::add(equalInOut ? x : rec::conv(*convShortcut, pre), o);
  }
};

struct WideResNet : Net {
  nn::Conv2d conv1{nullptr};
  std::vector<std::shared_ptr<WideBlock>> blocks;
  nn::BatchNorm2d bn1{nullptr};
  nn::Linear fc{nullptr};
  std::string act;
  WideResNet(const ArchSpec& s, int64_t depth, int64_t widen) : act(s.activation) {
    FL_CHECK((depth - 4) % 6 == 0 && depth >= 10, ERR_ARG, "wrn-<depth>-<widen>: depth must be 6n + 4, got ", depth);
    const int64_t n = (depth - 4) / 6;
    const int64_t ch[4] = {16, 16 * widen, 32 * widen, 64 * widen};
    conv1 = register_module("conv1", conv(s.inChannels, ch[0], 3, 1, 1, false));
    for (int g = 0; g < 3; ++g) {
      auto holder = register_module("block" + std::to_string(g + 1), std::make_shared<nn::Module>());
      auto list = holder->register_module("layer", nn::ModuleList());
      for (int64_t i = 0; i < n; ++i) {
        auto b = std::make_shared<WideBlock>(i == 0 ? ch[g] : ch[g + 1], ch[g + 1], i == 0 && g > 0 ? 2 : 1, act);
        list->push_back(b);
        blocks.push_back(b);
      }
    }
    bn1 = register_module("bn1", nn::BatchNorm2d(ch[3]));
    fc = register_module("fc", nn::Linear(ch[3], s.numClasses));
  }
  torch::Tensor body(torch::Tensor x) override {
    x = rec::conv(*conv1, x);
    for (auto& b : blocks) x = b->forward(x);
    x = activate(act, rec::batchNorm(*bn1, x));
    return rec::linear(*fc, rec::flatten(rec::globalAvgPool(x)));
  }
};

// ---------- preact-resnet18: He et al.'s pre-activation ResNet-18 (Madry / Rice et al. CIFAR) ----------
struct PreActBlock : nn::Module {
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::Sequential shortcut{nullptr};
  std::string act;
  PreActBlock(int64_t in, int64_t out, int64_t stride, const std::string& act_) : act(act_) {
    bn1 = register_module("bn1", nn::BatchNorm2d(in));
    conv1 = register_module("conv1", conv(in, out, 3, stride, 1, false));
    bn2 = register_module("bn2", nn::BatchNorm2d(out));
    conv2 = register_module("conv2", conv(out, out, 3, 1, 1, false));
    if (stride != 1 || in != out) shortcut = register_module("shortcut", nn::Sequential(conv(in, out, 1, stride, 0, false)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor o = activate(act, rec::batchNorm(*bn1, x));
    torch::Tensor sc = shortcut ? rec::conv(*shortcut[0]->as<nn::Conv2d>(), o) : x;
    o = rec::conv(*conv1, o);
    o = rec::conv(*conv2, activate(act, rec::batchNorm(*bn2, o)));
    return rec::add(o, sc);
  }
};

struct PreActResNet18 : Net {
  nn::Conv2d conv1{nullptr};
  std::vector<std::shared_ptr<PreActBlock>> blocks;
  nn::BatchNorm2d bn{nullptr};
  nn::Linear linear{nullptr};
  std::string act;
  PreActResNet18(const ArchSpec& s) : act(s.activation) {
    const int64_t w = s.width;
    conv1 = register_module("conv1", conv(s.inChannels, 64 * w, 3, 1, 1, false));
    int64_t in = 64 * w;
    for (int g = 0; g < 4; ++g) {
      int64_t out = (64 << g) * w;
      auto list = register_module("layer" + std::to_string(g + 1), nn::ModuleList());
      for (int i = 0; i < 2; ++i) {
        auto b = std::make_shared<PreActBlock>(in, out, i == 0 && g > 0 ? 2 : 1, act);
        list->push_back(b);
        blocks.push_back(b);
        in = out;
      }
    }
    bn = register_module("bn", nn::BatchNorm2d(in));
    linear = register_module("linear", nn::Linear(in, s.numClasses));
  }
  torch::Tensor body(torch::Tensor x) override {
    x = rec::conv(*conv1, x);
    for (auto& b : blocks) x = b->forward(x);
    x = activate(act, rec::batchNorm(*bn, x));
    return rec::linear(*linear, rec::flatten(rec::globalAvgPool(x)));
  }
};

}  // namespace

std::shared_ptr<Net> buildPublished(const ArchSpec& s) {
  if (s.arch == "mnist-net") return std::make_shared<MnistNet>(s);
  if (s.arch == "lenet") return std::make_shared<LeNet>(s);
  if (s.arch == "vgg11" || s.arch == "vgg13" || s.arch == "vgg16") return std::make_shared<Vgg>(s);
  if (s.arch == "resnet20") return std::make_shared<CifarResNet>(s, 20);
  if (s.arch == "resnet32") return std::make_shared<CifarResNet>(s, 32);
  if (s.arch == "resnet44") return std::make_shared<CifarResNet>(s, 44);
  if (s.arch == "resnet56") return std::make_shared<CifarResNet>(s, 56);
  if (s.arch == "preact-resnet18") return std::make_shared<PreActResNet18>(s);
  std::smatch m;
  static const std::regex wrn("wrn-(\\d{1,3})-(\\d{1,2})");
  if (std::regex_match(s.arch, m, wrn)) return std::make_shared<WideResNet>(s, std::stoll(m[1]), std::stoll(m[2]));
  throw FlError(ERR_ARG, fl::str("unknown architecture '", s.arch,
                                 "'; expected mlp, small-cnn, mnist-net, lenet, vgg11, vgg13, vgg16, resnet20, resnet32, "
                                 "resnet44, resnet56, wrn-34-10 (wrn-<depth>-<widen>) or preact-resnet18"));
}

}  // namespace fl
