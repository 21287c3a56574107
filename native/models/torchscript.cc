// TorchScript models exported from PyTorch (torch.jit.script / trace + save), loaded with
// torch::jit::load. They run everywhere a built-in model does, training included.
// A TorchScript archive runs code: load only archives from trusted sources.
#include "models/classifier.h"
#include "common/errors.h"
#include "models/linear_tape.h"
#include "models/torchscript_tape.h"
#include <torch/script.h>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <fstream>
#include <mutex>

namespace fl {
namespace {

using json = nlohmann::json;
constexpr const char* kRecorded = "recorded in its archive";

class ScriptClassifier : public Classifier {
 public:
  ScriptClassifier(torch::jit::Module m, std::string path, InputShape shape)
      : m_(std::move(m)), path_(std::move(path)), shape_(std::move(shape)) {}
  torch::Tensor forward(const torch::Tensor& x0) override {
    return forwardNamingShape(shape_, x0, "the TorchScript model", [&]() { return run(x0); });
  }
  torch::Tensor run(const torch::Tensor& x0) {
    // images arrive in the caller's float type; the module computes in its parameters' type
    // (a float64 batch to a float32 module would fail inside the TorchScript graph)
    torch::Tensor x = x0;
    for (const auto& p : m_.parameters()) {
      if (p.is_floating_point() && x0.is_floating_point() && p.scalar_type() != x0.scalar_type()) x = x0.to(p.scalar_type());
      break;
    }
    torch::jit::IValue out = m_.forward({x});
    TORCH_CHECK(out.isTensor(), "the TorchScript model's forward must return a Tensor of logits [B, K], got ",
                out.tagKind());
    torch::Tensor z = out.toTensor();
    TORCH_CHECK(z.dim() == 2 && z.size(0) == x.size(0), "the TorchScript model's forward must return logits [B, K] for B = ",
                x.size(0), ", got a tensor with ", z.dim(), " dimensions");
    return z;
  }
  // The module's graph lowered into the linear engine (torchscript_tape.h), prepared on first use
  std::shared_ptr<LinearTape> linearize(const torch::Tensor& x, torch::Tensor* z, std::string* why) override {
    if (why) *why = "";
    if (m_.is_training()) {
      if (why) *why = "the model is in train mode";
      return nullptr;
    }
    std::call_once(loweringOnce_, [this]() { lowering_ = std::make_unique<ScriptLowering>(m_); });
    std::string reason;
    std::shared_ptr<LinearTape> tape;
    forwardNamingShape(shape_, x, "the TorchScript model", [&]() {
      tape = lowering_->record(x, z, &reason);
      return torch::Tensor();
    });
    if (why) *why = reason;
    return tape;
  }
  std::vector<torch::Tensor> parameters() override {
    std::vector<torch::Tensor> out;
    for (const auto& p : m_.parameters()) out.push_back(p);
    return out;
  }
  std::vector<std::pair<std::string, torch::Tensor>> namedState() override {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& p : m_.named_parameters()) out.emplace_back(p.name, p.value);
    for (const auto& b : m_.named_buffers()) out.emplace_back(b.name, b.value);
    return out;
  }
  void train(bool on) override { m_.train(on); }
  bool isTraining() const override { return m_.is_training(); }
  void to(const torch::Device& d) override { m_.to(d); }
  torch::Device device() const override {
    for (const auto& p : m_.parameters()) return p.device();
    return torch::Device(torch::kCPU);
  }
  std::string kind() const override { return "torchscript"; }
  std::string specJson() const override {
    std::string esc;
    for (char c : path_) {
      if (c == '"' || c == '\\') esc += '\\';
      esc += c;
    }
    return "{\"arch\":\"torchscript\",\"path\":\"" + esc + "\"}";
  }
  // a recorded input shape goes with the archive
  void exportState(const std::string& path) override {
    if (shape_.source == kRecorded) {
      m_.save(path, {{"fisherlens.json", str("{\"inputShape\": [", shape_.chw[0], ", ", shape_.chw[1], ", ", shape_.chw[2], "]}")}});
    } else {
      m_.save(path);
    }
  }

 private:
  torch::jit::Module m_;
  std::string path_;
  InputShape shape_;
  std::once_flag loweringOnce_;
  std::unique_ptr<ScriptLowering> lowering_;
};

}  // namespace

ClassifierPtr loadTorchScript(const std::string& path, const torch::Device& device) {
  {
    std::ifstream f(path, std::ios::binary);
    FL_CHECK(f.good(), ERR_IO, "cannot open TorchScript model '", path, "': no such file or not readable");
  }
  torch::jit::Module m;
  // an archive may record its input shape: torch.jit.save(m, f, _extra_files={'fisherlens.json':
  // '{"inputShape": [C, H, W]}'}) (model.exportTorchScript writes it)
  torch::jit::ExtraFilesMap extra{{"fisherlens.json", ""}};
  try {
    m = torch::jit::load(path, device, extra);
  } catch (const c10::Error& e) {
    throw FlError(ERR_FORMAT, str("'", path, "' is not a loadable TorchScript archive (save it with torch.jit.save): ",
                                  e.what_without_backtrace()));
  }
  FL_CHECK(m.find_method("forward").has_value(), ERR_FORMAT, "TorchScript model '", path, "' has no forward method");
  m.eval();
  InputShape shape;
  const std::string& meta = extra["fisherlens.json"];
  if (!meta.empty()) {
    json j = json::parse(meta, nullptr, /*allow_exceptions=*/false);
    const bool ok = j.is_object() && j.contains("inputShape") && j["inputShape"].is_array() && j["inputShape"].size() == 3 &&
                    std::all_of(j["inputShape"].begin(), j["inputShape"].end(), [](const json& v) { return v.is_number_integer() && v.get<int64_t>() > 0; });
    FL_CHECK(ok, ERR_FORMAT, "TorchScript model '", path, "': its fisherlens.json must be {\"inputShape\": [C, H, W]} with positive integers, got ", meta);
    shape.chw = j["inputShape"].get<std::vector<int64_t>>();
    shape.source = kRecorded;
  }
  return std::make_shared<ScriptClassifier>(std::move(m), path, std::move(shape));
}

}  // namespace fl
