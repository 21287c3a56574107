// The gradient engine (gradient.h): input gradients through the linearisation or autograd, the
// process-wide engine setting and the per-architecture choices of "auto".
#include "gradient.h"
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include "common/errors.h"
#include "common/tensor_ops.h"
#include "models/linear_tape.h"

namespace fl {

namespace {

// The input gradient of obj at xa [B, ...] through the model's linearisation (when `tape` and the
// model has one at xa; *usedTape says whether it had) or autograd; the logits at xa in *z.
torch::Tensor objectiveGradient(Classifier& m, const torch::Tensor& xa, const Objective& obj, bool tape, bool* usedTape,
                                torch::Tensor* z) {
  torch::AutoGradMode gradOn(true);
  *usedTape = false;
  if (tape) {
    torch::Tensor zt;
    if (std::shared_ptr<LinearTape> t = m.linearize(xa.detach(), &zt)) {
      *usedTape = true;
      torch::Tensor zl = zt.detach().requires_grad_(true);
      torch::Tensor u = torch::autograd::grad({obj(zl)}, {zl})[0];
      if (z) *z = zt.detach();
      return t->vjp(u);
    }
  }
  torch::Tensor xr = xa.detach().requires_grad_(true);
  torch::Tensor zr = m.forward(xr);
  torch::Tensor g = torch::autograd::grad({obj(zr)}, {xr})[0];
  if (z) *z = zr.detach();
  return g;
}

std::atomic<int>& engineSetting() {  // 0 auto, 1 linear, 2 autograd
  static std::atomic<int> e{0};
  return e;
}

// "auto": calls 0–5 of the measurement alternate linear, autograd; 0 and 1 are warm-ups, the best
// of the next two each decides. The linearisation must be clearly faster (kLinearMargin) to
// replace autograd: on ReLU CNNs the two often measure within noise, and a choice that flips
// between processes would move sign steps at rounding level for no gain.
constexpr int kMeasureCalls = 6;
constexpr double kLinearMargin = 0.95;

// the choices: (spec, input shape + dtype + device codes) -> choice
struct ChoiceStore {
  std::mutex mu;
  std::map<std::pair<std::string, std::vector<int64_t>>, GradientChoice> byKey;
};
ChoiceStore& choiceStore() {
  static ChoiceStore s;
  return s;
}

}  // namespace

void setGradientEngine(const std::string& e) {
  FL_CHECK(e == "auto" || e == "linear" || e == "autograd", ERR_ARG, "gradient engine: expected auto, linear or autograd, got '",
           e, "'");
  engineSetting() = e == "auto" ? 0 : e == "linear" ? 1 : 2;
}

std::string gradientEngine() {
  const int e = engineSetting();
  return e == 0 ? "auto" : e == 1 ? "linear" : "autograd";
}

void setGradientChoice(const Classifier& m, const GradientChoice& c) {
  FL_CHECK(c.key.size() >= 3, ERR_ARG, "setGradientChoice: a key of the shape, dtype and device codes");
  auto& s = choiceStore();
  std::lock_guard<std::mutex> lock(s.mu);
  s.byKey.emplace(std::make_pair(m.specJson(), c.key), c);
}

std::vector<GradientChoice> gradientChoices(const Classifier& m) {
  const std::string spec = m.specJson();
  auto& s = choiceStore();
  std::lock_guard<std::mutex> lock(s.mu);
  std::vector<GradientChoice> out;
  for (const auto& [key, c] : s.byKey)
    if (key.first == spec) out.push_back(c);
  return out;
}

InputGradient::InputGradient(Classifier& m, const torch::Tensor& x) : m_(m), spec_(m.specJson()), key_(x.sizes().vec()) {
  key_.push_back(static_cast<int64_t>(x.scalar_type()));
  key_.push_back(x.is_cuda() ? 1 + x.device().index() : 0);
  const int e = engineSetting();
  if (e != 0) {
    decided_ = e == 1 ? 1 : 0;
    return;
  }
  auto& s = choiceStore();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.byKey.find({spec_, key_});
  if (it != s.byKey.end()) decided_ = it->second.linear ? 1 : 0;
}

torch::Tensor InputGradient::operator()(const torch::Tensor& xa, const Objective& obj, torch::Tensor* z) {
  bool used = false;
  if (decided_ < 0) {
    using Clock = std::chrono::steady_clock;
    GradientChoice c;
    c.key = key_;
    double best[2] = {INFINITY, INFINITY};  // [autograd, linear]
    for (int i = 0; i < kMeasureCalls; ++i) {
      const bool tape = i % 2 == 0;
      syncDevice(xa);
      const auto t0 = Clock::now();
      torch::Tensor g = objectiveGradient(m_, xa, obj, tape, &used, nullptr);
      syncDevice(g);
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      if (tape && !used) break;  // no linearisation at this input: autograd, nothing to compare
      if (i >= 2) best[tape ? 1 : 0] = std::min(best[tape ? 1 : 0], ms);
    }
    if (best[1] < INFINITY) {
      c.linearMs = best[1];
      c.autogradMs = best[0];
      c.linear = best[1] < kLinearMargin * best[0];
    }
    // a concurrent first measurement of the same key may have stored its choice meanwhile: the
    // first stored is the one every ascent takes (and gradientChoices reports)
    auto& s = choiceStore();
    std::lock_guard<std::mutex> lock(s.mu);
    decided_ = s.byKey.emplace(std::make_pair(spec_, key_), c).first->second.linear ? 1 : 0;
  }
  return objectiveGradient(m_, xa, obj, decided_ == 1, &used, z);
}

}  // namespace fl
