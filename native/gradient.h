// The gradient engine: input gradients ∂obj(z(x))/∂x of a scalar objective of a model's logits,
// through the model's linearisation (models/linear_tape.h) or through autograd, and the choice
// between the two (process-wide setting, per-architecture measurements). Every attack's ascent
// (attacks.cc, apgd.cc), ρ (metrics.cc) and training's inner maximisation take their input
// gradients here; binding/backend.cc sets the engine, binding/model.cc reads and seeds the choices.
#pragma once
#include <torch/torch.h>
#include <cmath>
#include <functional>
#include <string>
#include <vector>
#include "models/classifier.h"

namespace fl {

// The sum over the batch of a per-sample objective to ascend; z: logits [B, K] -> scalar
using Objective = std::function<torch::Tensor(const torch::Tensor& z)>;

// How attacks and training's inner maximisation compute input gradients (lib/options.ts
// GRADIENT_ENGINES, set process-wide by lib/backend.ts setGradientEngine):
//   "linear"   through the model's linearisation (models/linear_tape.h: one recording forward and
//              one input-only backward) where the model has one, else autograd;
//   "autograd" a forward and a backward through autograd;
//   "auto"     per model architecture and input shape, both engines measured once on the first
//              ascent's first point (InputGradient); the linearisation is kept when it measured at
//              least 5 % faster, else autograd.
// The gradients agree to float rounding (a sign step can differ where a component is ~0).
void setGradientEngine(const std::string& engine);  // ERR_ARG for another value
std::string gradientEngine();

// What "auto" chose for one model architecture (its spec) and input batch shape: whether the
// linearisation won, and the best measured ms of one gradient on each engine (linearMs NaN: the
// model has no linearisation at that input)
struct GradientChoice {
  std::vector<int64_t> key;  // the input batch's shape, then its dtype and device codes
  bool linear = false;
  double linearMs = NAN, autogradMs = NAN;
};
// The choices made so far for models with m's spec (in-process; every model object of one
// architecture shares them, so a resumed run takes the same engine as the run it continues)
std::vector<GradientChoice> gradientChoices(const Classifier& m);
// Adds a choice measured earlier (lib/tuning-store.ts reads it from the cache folder, so every
// process on a machine takes the same engine); an existing choice for that key stays
void setGradientChoice(const Classifier& m, const GradientChoice& c);

// The input gradients of one ascent (or of one attack's steps). Under "auto" the first call for a
// model architecture and input shape first measures both engines on that call's point and
// objective (two warm-ups and the best of two each, the results discarded), then every call of
// every ascent uses the choice: an attack is a deterministic function of its inputs and seed.
// (lib/tuning-store.ts stores the choices and hands them to later processes: setGradientChoice.)
class InputGradient {
 public:
  InputGradient(Classifier& m, const torch::Tensor& x);  // x: the ascent's points (their shape is the key)
  // ∂obj(z(xa))/∂xa, shaped like xa; *z (if given) receives the logits at xa
  torch::Tensor operator()(const torch::Tensor& xa, const Objective& obj, torch::Tensor* z = nullptr);

 private:
  Classifier& m_;
  std::string spec_;          // the architecture (Classifier::specJson)
  std::vector<int64_t> key_;  // the input batch's shape, then its dtype and device codes
  int decided_ = -1;  // -1 not yet (auto), 0 autograd, 1 linear
};

}  // namespace fl
