// Built-in architectures (torch::nn) from a JSON spec: {"arch": "...", "inChannels", "inputSize",
// "numClasses", "mean": [...], "std": [...], ...arch options}. Normalisation is the first layer.
#include "models/classifier.h"
#include "models/zoo.h"
#include "common/errors.h"
#include "models/linear_tape.h"
#include <nlohmann/json.hpp>
#include <torch/script.h>
#include <algorithm>

namespace fl {
namespace {

using json = nlohmann::json;
namespace nn = torch::nn;

// ---------- building blocks ----------

// ---------- mlp: flatten -> [Linear -> act]* -> Linear (fcs.0, fcs.1, ...) ----------
struct Mlp : Net {
  std::vector<nn::Linear> layers;
  std::string act;
  Mlp(const ArchSpec& s) : act(s.activation) {
    int64_t in = s.inChannels * s.inputSize * s.inputSize;
    auto list = register_module("fcs", nn::ModuleList());
    for (int64_t h : s.hidden) {
      FL_CHECK(h > 0, ERR_ARG, "mlp: hidden sizes must be positive, got ", h);
      layers.push_back(nn::Linear(in, h));
      list->push_back(layers.back());
      in = h;
    }
    layers.push_back(nn::Linear(in, s.numClasses));
    list->push_back(layers.back());
  }
  torch::Tensor body(torch::Tensor x) override {
    x = rec::flatten(x);
    for (size_t i = 0; i + 1 < layers.size(); ++i) x = activate(act, rec::linear(*layers[i], x));
    return rec::linear(*layers.back(), x);
  }
};

// ---------- small-cnn: TRADES' MNIST SmallCNN (4 conv + 3 fully connected) ----------
struct SmallCnn : Net {
  nn::Conv2d c1{nullptr}, c2{nullptr}, c3{nullptr}, c4{nullptr};
  nn::Linear f1{nullptr}, f2{nullptr}, f3{nullptr};
  nn::Dropout drop{nullptr};
  std::string act;
  SmallCnn(const ArchSpec& s) : act(s.activation) {
    c1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(s.inChannels, 32, 3)));
    c2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(32, 32, 3)));
    c3 = register_module("conv3", nn::Conv2d(nn::Conv2dOptions(32, 64, 3)));
    c4 = register_module("conv4", nn::Conv2d(nn::Conv2dOptions(64, 64, 3)));
    int64_t sz = ((s.inputSize - 4) / 2 - 4) / 2;
    FL_CHECK(sz >= 1, ERR_ARG, "small-cnn needs inputSize >= 12, got ", s.inputSize);
    f1 = register_module("fc1", nn::Linear(64 * sz * sz, 200));
    f2 = register_module("fc2", nn::Linear(200, 200));
    f3 = register_module("fc3", nn::Linear(200, s.numClasses));
    drop = register_module("drop", nn::Dropout(0.5));
  }
  torch::Tensor body(torch::Tensor x) override {
    x = activate(act, rec::conv(*c1, x));
    x = activate(act, rec::conv(*c2, x));
    x = rec::maxPool(x, 2);
    x = activate(act, rec::conv(*c3, x));
    x = activate(act, rec::conv(*c4, x));
    x = rec::flatten(rec::maxPool(x, 2));
    x = activate(act, rec::linear(*f1, x));
    x = rec::dropout(*drop, [&](const torch::Tensor& t) { return drop->forward(t); }, x);
    x = activate(act, rec::linear(*f2, x));
    return rec::linear(*f3, x);
  }
};

std::shared_ptr<Net> build(const ArchSpec& s) {
  if (s.arch == "mlp") return std::make_shared<Mlp>(s);
  if (s.arch == "small-cnn") return std::make_shared<SmallCnn>(s);
  return buildPublished(s);
}

// ---------- the Classifier over a built-in Net ----------
class BuiltinClassifier : public Classifier {
 public:
  BuiltinClassifier(std::shared_ptr<Net> net, std::string spec, InputShape shape)
      : net_(std::move(net)), spec_(std::move(spec)), shape_(std::move(shape)) {}
  torch::Tensor forward(const torch::Tensor& x) override {
    return forwardNamingShape(shape_, x, "the model", [&]() { return net_->forward(x); });
  }
  std::vector<torch::Tensor> parameters() override { return net_->parameters(); }
  std::vector<std::pair<std::string, torch::Tensor>> namedState() override {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (auto& kv : net_->named_parameters()) out.emplace_back(kv.key(), kv.value());
    for (auto& kv : net_->named_buffers()) out.emplace_back(kv.key(), kv.value());
    return out;
  }
  void train(bool on) override { net_->train(on); }
  bool isTraining() const override { return net_->is_training(); }
  void to(const torch::Device& d) override { net_->to(d); }
  torch::Device device() const override {
    auto ps = net_->parameters();
    return ps.empty() ? torch::Device(torch::kCPU) : ps[0].device();
  }
  std::string kind() const override { return "builtin"; }
  std::shared_ptr<LinearTape> linearize(const torch::Tensor& x, torch::Tensor* z, std::string* why) override {
    if (why) *why = "";
    if (net_->is_training()) {  // dropout / batch statistics are not linearised
      if (why) *why = "the model is in train mode";
      return nullptr;
    }
    auto tape = std::make_shared<LinearTape>();
    torch::NoGradGuard ng;
    try {
      TapeRecording rec(*tape);
      tape->setInput(x);
      torch::Tensor out = forwardNamingShape(shape_, x, "the model", [&]() { return net_->forward(x); });
      tape->finish(out);
      if (z) *z = out;
    } catch (const FlError& e) {
      if (e.code == ERR_INTERNAL) {  // an op outside the tape: autograd instead
        if (why) *why = e.what();
        return nullptr;
      }
      throw;
    }
    return tape;
  }
  std::string specJson() const override { return spec_; }
  void exportState(const std::string& path) override;

 private:
  std::shared_ptr<Net> net_;
  std::string spec_;
  InputShape shape_;  // the spec's [inChannels, inputSize, inputSize]: every architecture takes it
};

// The C++ frontend cannot script a torch::nn::Module, so a built-in model's TorchScript export
// goes through Python: this writes its named tensors as buffers of a TorchScript archive
// (torch.jit.load reads it), and scripts/export_torchscript.py rebuilds the same architecture
// from the spec, loads the weights and scripts it.
void BuiltinClassifier::exportState(const std::string& path) {
  torch::jit::Module m("fisherlens_state");
  for (auto& kv : namedState()) {
    std::string name = kv.first;
    std::replace(name.begin(), name.end(), '.', '_');
    m.register_buffer(name, kv.second.detach().to(torch::kCPU));
  }
  m.save(path);
}

}  // namespace

// Activation by name: relu | identity | tanh | softplus | gelu
torch::Tensor activate(const std::string& act, const torch::Tensor& x) { return rec::activation(act, x); }

torch::Tensor Net::forward(torch::Tensor x) {
  FL_CHECK(x.dim() == 4, ERR_SHAPE, "expected input [B, C, H, W], got ", x.dim(), " dimensions");
  FL_CHECK(x.size(1) == inChannels, ERR_SHAPE, "expected ", inChannels, " input channels, got ", x.size(1));
  if (normalise) x = rec::normalise(x, mean_, std_);
  return body(x);
}

void Net::setNormalisation(const ArchSpec& s) {
  inChannels = s.inChannels;
  std::vector<float> m = s.mean, d = s.std;
  if (m.empty()) m.assign(s.inChannels, 0.f);
  if (d.empty()) d.assign(s.inChannels, 1.f);
  FL_CHECK((int64_t)m.size() == s.inChannels && (int64_t)d.size() == s.inChannels, ERR_ARG,
           "mean and std must have one value per input channel (", s.inChannels, ")");
  for (float v : d) FL_CHECK(v > 0, ERR_ARG, "std values must be > 0");
  normalise = !(std::all_of(m.begin(), m.end(), [](float v) { return v == 0.f; }) &&
                std::all_of(d.begin(), d.end(), [](float v) { return v == 1.f; }));
  mean_ = register_buffer("norm_mean", torch::tensor(m).view({1, -1, 1, 1}));
  std_ = register_buffer("norm_std", torch::tensor(d).view({1, -1, 1, 1}));
}

ArchSpec parseSpec(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    throw FlError(ERR_FORMAT, str("model spec is not valid JSON: ", e.what()));
  }
  FL_CHECK(j.is_object() && j.contains("arch") && j["arch"].is_string(), ERR_ARG,
           "model spec needs \"arch\" (a string)");
  ArchSpec s;
  auto num = [&](const char* k, int64_t def) -> int64_t {
    if (!j.contains(k)) return def;
    FL_CHECK(j[k].is_number_integer() && j[k].get<int64_t>() > 0, ERR_ARG, "model spec: \"", k,
             "\" must be a positive integer");
    return j[k].get<int64_t>();
  };
  auto strv = [&](const char* k, const std::string& def) -> std::string {
    if (!j.contains(k)) return def;
    FL_CHECK(j[k].is_string(), ERR_ARG, "model spec: \"", k, "\" must be a string");
    return j[k].get<std::string>();
  };
  auto floats = [&](const char* k) -> std::vector<float> {
    if (!j.contains(k)) return {};
    FL_CHECK(j[k].is_array(), ERR_ARG, "model spec: \"", k, "\" must be an array of numbers");
    return j[k].get<std::vector<float>>();
  };
  s.arch = j["arch"].get<std::string>();
  s.inChannels = num("inChannels", 1);
  s.inputSize = num("inputSize", 28);
  s.numClasses = num("numClasses", 10);
  s.width = num("width", 1);
  s.activation = strv("activation", "relu");
  s.pool = strv("pool", "max");
  s.mean = floats("mean");
  s.std = floats("std");
  if (j.contains("hidden")) {
    FL_CHECK(j["hidden"].is_array(), ERR_ARG, "model spec: \"hidden\" must be an array of positive integers");
    s.hidden = j["hidden"].get<std::vector<int64_t>>();
  } else {
    s.hidden = {256, 256};
  }
  activate(s.activation, torch::zeros({1}));  // validates the name with a clear error
  FL_CHECK(s.pool == "max" || s.pool == "avg", ERR_ARG, "model spec: unknown pool '", s.pool, "'; expected max or avg");
  return s;
}

ClassifierPtr createBuiltin(const std::string& specJson) {
  ArchSpec s = parseSpec(specJson);
  std::shared_ptr<Net> net = build(s);
  net->setNormalisation(s);
  net->eval();
  InputShape shape{{s.inChannels, s.inputSize, s.inputSize}, str(s.arch, "'s spec: inChannels ", s.inChannels, ", inputSize ", s.inputSize)};
  return std::make_shared<BuiltinClassifier>(net, specJson, std::move(shape));
}

}  // namespace fl
