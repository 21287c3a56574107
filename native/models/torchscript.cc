// TorchScript models exported from PyTorch (torch.jit.script / trace + save), loaded with
// torch::jit::load. They run everywhere a built-in model does, training included.
// A TorchScript archive runs code: load only archives from trusted sources.
#include "models/classifier.h"
#include "common/errors.h"
#include "models/linear_tape.h"
#include "models/torchscript_tape.h"
#include <torch/script.h>
#include <fstream>
#include <mutex>

namespace fl {
namespace {

class ScriptClassifier : public Classifier {
 public:
  ScriptClassifier(torch::jit::Module m, std::string path) : m_(std::move(m)), path_(std::move(path)) {}
  torch::Tensor forward(const torch::Tensor& x0) override {
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
    auto tape = lowering_->record(x, z, &reason);
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
  void exportState(const std::string& path) override { m_.save(path); }

 private:
  torch::jit::Module m_;
  std::string path_;
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
  try {
    m = torch::jit::load(path, device);
  } catch (const c10::Error& e) {
    throw FlError(ERR_FORMAT, str("'", path, "' is not a loadable TorchScript archive (save it with torch.jit.save): ",
                                  e.what_without_backtrace()));
  }
  FL_CHECK(m.find_method("forward").has_value(), ERR_FORMAT, "TorchScript model '", path, "' has no forward method");
  m.eval();
  return std::make_shared<ScriptClassifier>(std::move(m), path);
}

}  // namespace fl
