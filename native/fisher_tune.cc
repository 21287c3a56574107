// The exact method's speed measurements (fisher.h): the autotune's timing of its candidate
// options (lib/fisher.ts picks and caches) and the per-op profile of one VJP pass.
#include <algorithm>
#include <chrono>
#include <limits>
#include "common/tensor_ops.h"
#include "fisher.h"
#include "models/linear_tape.h"

namespace fl {

namespace {
// Median of the timed passes (NaN when none)
double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}
// Rounds of the autotune: a warm-up (kernel selection, allocations) and three timed always (a
// median and a spread to tell noise from a difference); up to two more while the budget lasts
bool tuneRound(int rep, double elapsedMs, double budgetMs) { return rep < 4 || (rep < 6 && elapsedMs < budgetMs); }
}  // namespace

std::vector<ExactTuneRow> tuneExact(Classifier& m, const torch::Tensor& x0, std::vector<ExactTuneRow> cands, double budgetMs, bool autograd) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto ms = [](Clock::time_point a) { return std::chrono::duration<double, std::milli>(Clock::now() - a).count(); };
  for (auto& c : cands) c.msPerClass = std::numeric_limits<double>::quiet_NaN();
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  torch::AutoGradMode gradMode(true);
  if (!autograd) {
    // linear engine: both layouts' linearisations at once and the candidates timed in turns, so a
    // load spike on a shared machine hits every candidate alike
    FisherOptions o;
    torch::Tensor x, z;
    std::unique_ptr<LayoutGuard> lg;
    std::shared_ptr<LinearTape> nchw = linearise(m, x0, o, &x, &z, &lg);
    if (nchw) {
      const int64_t R = z.size(1) - 1;
      if (R < 1) return cands;
      std::shared_ptr<LinearTape> cl;
      std::vector<torch::Tensor> gos;
      std::vector<int64_t> ks;
      for (auto& c : cands) {
        if (c.channelsLast && !cl) cl = nchw->withLayout(at::MemoryFormat::ChannelsLast);
        ks.push_back(std::max<int64_t>(1, std::min<int64_t>(c.classesPerPass, R)));
        gos.push_back(classCotangents(z, 0, ks.back()));
      }
      for (int rep = 0; tuneRound(rep, ms(start), budgetMs); ++rep) {
        for (size_t i = 0; i < cands.size(); ++i) {
          syncDevice(z);
          auto t0 = Clock::now();
          syncDevice((cands[i].channelsLast ? cl : nchw)->vjp(gos[i], ks[i]));
          if (rep > 0) cands[i].msSamples.push_back(ms(t0) / static_cast<double>(ks[i]));
        }
      }
      for (auto& c : cands) c.msPerClass = median(c.msSamples);
      return cands;
    }
  }
  // autograd engine (or no linearisation): one layout after the other, since its graph follows
  // the parameters' layout
  for (bool cl : {false, true}) {
    bool any = false;
    for (auto& c : cands) any = any || c.channelsLast == cl;
    if (!any) continue;
    FisherOptions o;
    o.channelsLast = cl;
    o.autograd = true;
    torch::Tensor x, z;
    std::unique_ptr<LayoutGuard> layout;
    std::shared_ptr<LinearTape> tape = linearise(m, x0, o, &x, &z, &layout);
    const int64_t R = z.size(1) - 1;
    if (R < 1) return cands;
    for (auto& c : cands) {
      if (c.channelsLast != cl) continue;
      if (!tape && c.classesPerPass > 1) continue;
      const int64_t k = std::max<int64_t>(1, std::min<int64_t>(c.classesPerPass, R));
      torch::Tensor go = classCotangents(z, 0, k);
      for (int rep = 0; tuneRound(rep, ms(start), budgetMs); ++rep) {
        syncDevice(z);
        auto t0 = Clock::now();
        torch::Tensor g = tape ? tape->vjp(go, k) : torch::autograd::grad({z}, {x}, {go}, /*retain_graph=*/true)[0];
        syncDevice(g);
        if (rep > 0) c.msSamples.push_back(ms(t0) / static_cast<double>(k));
      }
      c.msPerClass = median(c.msSamples);
    }
  }
  return cands;
}

namespace {

// FLOPs of op's input gradient over n stacked rows (VjpProfileRow)
double vjpFlops(const LinearTape::Op& op, int64_t n) {
  using K = LinearTape::Kind;
  if (op.kind == K::Linear) return 2.0 * n * static_cast<double>(op.w.size(0)) * static_cast<double>(op.w.size(1));
  if (op.kind != K::Conv && op.kind != K::ConvNd) return 0;
  // out = (in + 2p − d(k − 1) − 1) / s + 1 per spatial dimension; w: [Cout, Cin/groups, k...]
  double macs = static_cast<double>(op.w.numel());
  for (int64_t d = 2; d < op.w.dim(); ++d) {
    const size_t i = static_cast<size_t>(d - 2);
    const int64_t in = op.input.size(d), kk = op.w.size(d);
    const int64_t p = i < op.padding.size() ? op.padding[i] : 0, dl = i < op.dilation.size() ? op.dilation[i] : 1,
                  st = i < op.stride.size() ? op.stride[i] : 1;
    macs *= static_cast<double>((in + 2 * p - dl * (kk - 1) - 1) / st + 1);
  }
  return 2.0 * n * macs;
}

}  // namespace

std::vector<VjpProfileRow> profileVjp(Classifier& m, const torch::Tensor& x0, bool channelsLast, int64_t k) {
  // LinearTape::Kind's order
  static const char* names[] = {"scale",    "conv",    "linear",  "relu",        "mul",    "maxpool", "avgpool",
                                "globalavg", "reshape", "add",     "shortcut",    "convnd", "maxpool", "avgpool",
                                "adaptiveavg", "reduce", "view",   "permute",     "sub",    "pad",     "slice"};
  static_assert(sizeof(names) / sizeof(names[0]) == static_cast<size_t>(LinearTape::Kind::Slice) + 1, "a name per LinearTape::Kind");
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  torch::AutoGradMode gradMode(true);
  FisherOptions o;
  o.channelsLast = channelsLast;
  torch::Tensor x, z;
  std::unique_ptr<LayoutGuard> layout;
  std::shared_ptr<LinearTape> tape = linearise(m, x0, o, &x, &z, &layout);
  std::vector<VjpProfileRow> out;
  if (!tape || z.size(1) < 2) return out;
  k = std::max<int64_t>(1, std::min<int64_t>(k, z.size(1) - 1));
  torch::Tensor go = classCotangents(z, 0, k);
  std::vector<double> t, best;
  for (int rep = 0; rep < 6; ++rep) {  // two warm-up passes, then the best of four per op
    tape->vjp(go, k, &t);
    if (rep == 2) best = t;
    if (rep > 2)
      for (size_t i = 0; i < t.size(); ++i) best[i] = std::min(best[i], t[i]);
  }
  const auto& ops = tape->ops();
  for (size_t i = 0; i < ops.size(); ++i) {
    out.push_back({names[static_cast<size_t>(ops[i].kind)], best[i], vjpFlops(ops[i], k * x.size(0))});
  }
  return out;
}

}  // namespace fl
