// The linear engine for TorchScript models: a module's forward graph lowered into a LinearTape
// (models/linear_tape.h), so users' own models get the same JVPs/VJPs as the built-ins.
//
// The forward graph is inlined and cleaned once per module (constant propagation, dead code
// elimination; no freezing). Each linearisation then interprets that graph node by node at x:
// values that do not depend on x (parameters read through prim::GetAttr chains from the LIVE
// module, shapes, branch conditions such as self.training) are evaluated by the nodes' own
// operators; every node on x's path must map to a tape op, else the lowering stops at the first
// one that does not and names it (then callers use autograd). prim::If takes the branch its
// (input-independent) condition selects; prim::Loop is unrolled.
#pragma once
#include <torch/script.h>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace fl {

class LinearTape;

class ScriptLowering {
 public:
  explicit ScriptLowering(const torch::jit::Module& m);
  ~ScriptLowering();
  // The tape of the module's eval-mode forward at x and its logits [B, K] in *z; nullptr, with
  // the reason in *why ("aten::hardswish at model.py:12", ...), where the graph cannot be lowered.
  std::shared_ptr<LinearTape> record(const torch::Tensor& x, torch::Tensor* z, std::string* why);

 private:
  torch::jit::Module m_;
  std::shared_ptr<torch::jit::Graph> graph_;
  std::unordered_map<const torch::jit::Node*, torch::jit::Operation> ops_;  // generic evaluation, built once
  std::string setupError_;                                                  // the graph could not be prepared
  std::mutex mu_;
  std::unordered_map<std::string, std::string> failed_;  // input signature -> why the lowering failed
};

}  // namespace fl
