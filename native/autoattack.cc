// The AutoAttack cascade on one batch (Croce & Hein 2020): each attack runs, through runAttack,
// only on the samples still classified correctly; per sample it records which stage broke it and
// checks that every adversarial example lies in the ε-ball and the [0, 1] box. Also the sanity
// checks the reference implementation is known for (probability outputs, vanishing or non-finite
// input gradients, randomness). lib/autoattack.ts streams the batches and aggregates;
// binding/autoattack.cc reads the stages.
#include "autoattack.h"
#include <algorithm>
#include <chrono>
#include <cmath>
#include "common/checks.h"
#include "common/errors.h"
#include "common/op_context.h"

namespace fl {

namespace {

// Input gradient of the summed cross-entropy at x per sample: counts of rows whose gradient is
// exactly zero / not finite. The model is in eval mode with frozen weights.
void gradientHealth(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, int64_t& zero, int64_t& nonFinite) {
  torch::AutoGradMode on(true);
  torch::Tensor xr = x.detach().requires_grad_(true);
  torch::Tensor l = torch::nn::functional::cross_entropy(m.forward(xr), y,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  torch::Tensor g = torch::autograd::grad({l}, {xr})[0].flatten(1);
  torch::NoGradGuard ng;
  torch::Tensor finite = torch::isfinite(g).all(1);
  nonFinite = (~finite).sum().item<int64_t>();
  zero = (finite & g.abs().amax(1).eq(0)).sum().item<int64_t>();
}

}  // namespace

void checkStage(const std::vector<AttackOptions>& stages, size_t i) {
  const AttackOptions& s = stages[i];
  FL_CHECK(!s.targeted, ERR_ARG, "autoAttack: stage ", i, " (", s.kind, ") is targeted; robust accuracy needs untargeted attacks");
  FL_CHECK(s.norm == stages[0].norm && s.epsilon == stages[0].epsilon, ERR_ARG,
           "autoAttack: every stage must use the same norm and epsilon (stage ", i, ": ", s.kind, ")");
  FL_CHECK(std::isfinite(s.epsilon), ERR_ARG, "autoAttack: epsilon must be finite");
}

AutoAttackResult autoAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y,
                            const std::vector<AttackOptions>& stages, bool checks, const OpContext* ctx) {
  checkImages(x, "autoAttack(x)");
  checkLabels(y, x.size(0), 0, "autoAttack(y)");
  torch::Device dev = m.device();
  torch::Tensor xd = x.to(dev), yd = y.to(dev);
  FL_CHECK(xd.min().item<double>() >= 0 && xd.max().item<double>() <= 1, ERR_VALUE,
           "autoAttack(x): images must lie in [0, 1] (normalisation belongs in the model)");
  const int64_t B = xd.size(0);
  const Norm norm = stages[0].norm;
  const double eps = stages[0].epsilon;
  AutoAttackResult res;
  torch::Tensor& brokenBy = res.brokenBy;
  torch::Tensor& xAdv = res.xAdv;
  AutoAttackChecks& c = res.checks;
  brokenBy = torch::full({B}, -1.0, torch::kFloat64);
  xAdv = xd.clone();
  {
    ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
    torch::Tensor z1, z2;
    {
      torch::NoGradGuard ng;
      z1 = m.forward(xd);
      if (checks) z2 = m.forward(xd);
    }
    checkLogits(z1, "autoAttack");
    c.classes = static_cast<double>(z1.size(1));
    checkLabels(yd, B, z1.size(1), "autoAttack(y)");
    torch::Tensor correct = z1.argmax(1).eq(yd).cpu();
    brokenBy.masked_fill_(~correct, -2.0);
    if (checks) {
      torch::NoGradGuard ng;
      torch::Tensor zd = z1.to(torch::kFloat64);
      // rows that look like probabilities: entries in [0, 1] summing to 1
      torch::Tensor prob = (zd.ge(0) & zd.le(1)).all(1) & (zd.sum(1) - 1).abs().lt(1e-4);
      c.probabilityRows = static_cast<double>(prob.sum().item<int64_t>());
      c.forwardDifference = (z2.to(torch::kFloat64) - zd).abs().max().item<double>() / std::max(1.0, zd.abs().max().item<double>());
      int64_t zg = 0, nf = 0;
      gradientHealth(m, xd, yd, zg, nf);
      c.zeroGradient = static_cast<double>(zg);
      c.nonFiniteGradient = static_cast<double>(nf);
    }
  }
  std::vector<double> seconds(stages.size(), 0.0);
  for (size_t s = 0; s < stages.size(); ++s) {
    torch::Tensor idx = brokenBy.eq(-1).nonzero().squeeze(1);
    if (ctx) {
      ctx->checkAbort();
      ctx->report(str("{\"stage\":", s, ",\"stages\":", stages.size(), ",\"kind\":\"", stages[s].kind,
                   "\",\"remaining\":", idx.numel(), "}"));
    }
    if (idx.numel() == 0) continue;
    auto t0 = std::chrono::steady_clock::now();
    torch::Tensor idxd = idx.to(dev);
    torch::Tensor xs = xd.index_select(0, idxd), ys = yd.index_select(0, idxd);
    AttackOptions o = stages[s];
    if (o.init.defined()) o.init = o.init.to(dev).index_select(0, idxd);
    AttackResult r = runAttack(m, xs, ys, torch::Tensor(), o, ctx);
    torch::Tensor succ = r.success.to(torch::kCPU).to(torch::kBool);
    // every adversarial example must lie in the ε-ball and the box (a broken attack is a bug)
    torch::Tensor d = (r.xAdv - xs).flatten(1).to(torch::kFloat64);
    torch::Tensor dn = norm == Norm::Linf ? d.abs().amax(1) : d.norm(2, 1);
    const double tol = 1e-6 * std::max(1.0, eps);
    FL_CHECK(dn.le(eps + tol).all().item<bool>(), ERR_INTERNAL, "autoAttack: ", o.kind, " left the ε-ball (‖δ‖ = ",
             dn.max().item<double>(), " > ε = ", eps, ")");
    FL_CHECK(r.xAdv.min().item<double>() >= 0 && r.xAdv.max().item<double>() <= 1, ERR_INTERNAL, "autoAttack: ", o.kind,
             " left the [0, 1] box");
    torch::Tensor hit = idx.masked_select(succ);
    if (hit.numel() > 0) brokenBy.index_fill_(0, hit, static_cast<double>(s));
    // every attacked sample takes this stage's attempt: a sample it broke is never attacked again
    // (it keeps the breaking example); one still robust is overwritten by the next stage, so it ends
    // with the last stage's attempt (the samples misclassified clean keep x)
    xAdv.index_copy_(0, idxd, r.xAdv.to(xAdv.scalar_type()));
    seconds[s] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  torch::Tensor d = (xAdv - xd).flatten(1).to(torch::kFloat64);
  // ‖δ‖ of the breaking example; 0 where no stage broke the sample (its attempt is not a finding)
  res.norm = (norm == Norm::Linf ? d.abs().amax(1) : d.norm(2, 1)).cpu().masked_fill(brokenBy.lt(0), 0.0);
  res.stageSeconds = torch::tensor(seconds, torch::kFloat64);
  return res;
}

}  // namespace fl
