// Internal to the zoo: the parsed spec and the base of every built-in architecture.
#pragma once
#include <torch/torch.h>
#include <string>
#include <vector>

namespace fl {

struct ArchSpec {
  std::string arch;
  int64_t inChannels = 1, inputSize = 28, numClasses = 10, width = 1;
  std::string activation = "relu";  // relu | identity | tanh | softplus | gelu
  std::string pool = "max";         // max | avg (VGG variants)
  std::vector<int64_t> hidden;      // mlp hidden sizes
  std::vector<float> mean, std;     // per-channel normalisation (first layer)
};

// Base of all built-in architectures: forward = normalise, then body.
struct Net : torch::nn::Module {
  // x: [B, C, H, W] in [0, 1] -> logits [B, K]
  torch::Tensor forward(torch::Tensor x);
  virtual torch::Tensor body(torch::Tensor x) = 0;
  void setNormalisation(const ArchSpec& s);
  int64_t inChannels = 1;
  bool normalise = false;
  torch::Tensor mean_, std_;
};

ArchSpec parseSpec(const std::string& text);
torch::Tensor activate(const std::string& act, const torch::Tensor& x);
// The published architectures beyond mlp / small-cnn (zoo_published.cc); ERR_ARG listing the known names.
std::shared_ptr<Net> buildPublished(const ArchSpec& s);

}  // namespace fl
