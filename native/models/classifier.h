// One model interface for every algorithm: built-in architectures (torch::nn, zoo.cc) and
// TorchScript modules (torchscript.cc). Inputs are pixels in [0, 1], [B, C, H, W]; the model's
// first layer normalises. forward returns logits [B, K].
#pragma once
#include <torch/torch.h>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace fl {

class LinearTape;

class Classifier {
 public:
  virtual ~Classifier() = default;
  // x: [B, C, H, W] (float, in [0, 1]) -> logits [B, K]
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  virtual std::vector<torch::Tensor> parameters() = 0;
  // Parameters and buffers by name (what a checkpoint stores)
  virtual std::vector<std::pair<std::string, torch::Tensor>> namedState() = 0;
  virtual void train(bool on) = 0;
  virtual bool isTraining() const = 0;
  virtual void to(const torch::Device& device) = 0;
  virtual torch::Device device() const = 0;
  // 'builtin' or 'torchscript'
  virtual std::string kind() const = 0;
  // The network's linearisation at x (models/linear_tape.h; eval mode), the logits [B, K] in *z;
  // nullptr where the model cannot be linearised (train mode, an op the engine does not know):
  // use autograd then. *why (when given) receives the reason, "" on success.
  virtual std::shared_ptr<LinearTape> linearize(const torch::Tensor& x, torch::Tensor* z, std::string* why = nullptr) {
    (void)x, (void)z;
    if (why) *why = "this model has no linearisation";
    return nullptr;
  }
  // The model spec as JSON text (built-ins: the architecture spec; TorchScript: the path)
  virtual std::string specJson() const = 0;
  // Writes the named parameters and buffers as a TorchScript archive of buffers ('.' -> '_'),
  // which Python's torch.jit.load reads (the first step of exporting a built-in model)
  virtual void exportState(const std::string& path) = 0;

  int64_t parameterCount() {
    int64_t n = 0;
    for (auto& p : parameters()) n += p.numel();
    return n;
  }
};

using ClassifierPtr = std::shared_ptr<Classifier>;

// What a model knows of its input [C, H, W]: a built-in's spec, a TorchScript archive's recorded
// shape (extra file fisherlens.json: {"inputShape": [C, H, W]}) or the shape of its first
// successful forward; `chw` is empty while nothing is known.
struct InputShape {
  std::vector<int64_t> chw;
  std::string source;  // where it comes from, as a message names it: "its spec: inChannels 1, inputSize 28"
};

// "[2, 1, 32, 32]"
std::string shapeText(torch::IntArrayRef s);

// Runs fn() (a forward or a linearisation of x [B, C, H, W]). When it fails and x's [C, H, W] is
// not the one `known` names, the failure becomes ERR_SHAPE "<what> expects input [B, C, H, W]
// (<source>), got [...]" with LibTorch's (or the TorchScript interpreter's) message only as the
// trailing detail; a failure on the expected shape passes through. Unknown shape: an interpreter
// failure that LibTorch words as a shape mismatch is ERR_SHAPE naming the input it got. After a
// success, an unknown shape is learnt from x.
torch::Tensor forwardNamingShape(InputShape& known, const torch::Tensor& x, const std::string& what,
                                 const std::function<torch::Tensor()>& fn);

// Restores train/eval mode and parameters' requires_grad on scope exit: algorithms that must run
// in eval mode without weight gradients (Fisher, attacks) leave the model exactly as they found it.
class ModeGuard {
 public:
  ModeGuard(Classifier& m, bool train, bool paramsRequireGrad) : m_(m), wasTraining_(m.isTraining()) {
    for (auto& p : m_.parameters()) {
      params_.push_back(p);
      flags_.push_back(p.requires_grad());
      p.requires_grad_(paramsRequireGrad);
    }
    m_.train(train);
  }
  ~ModeGuard() {
    m_.train(wasTraining_);
    for (size_t i = 0; i < params_.size(); ++i) params_[i].requires_grad_(flags_[i]);
  }
  ModeGuard(const ModeGuard&) = delete;
  ModeGuard& operator=(const ModeGuard&) = delete;

 private:
  Classifier& m_;
  bool wasTraining_;
  std::vector<torch::Tensor> params_;
  std::vector<bool> flags_;
};

// Built-in architectures from a JSON spec (zoo.cc); ERR_ARG with the allowed values otherwise.
ClassifierPtr createBuiltin(const std::string& specJson);
// TorchScript archive (torchscript.cc); ERR_IO / ERR_FORMAT with the path on failure.
ClassifierPtr loadTorchScript(const std::string& path, const torch::Device& device);

}  // namespace fl
