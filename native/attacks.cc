// attacks: FGSM, PGD (L∞/L2, random start, restarts, targeted), CW∞ (PGD on the CW margin loss),
// CW-L2, the KL attack (TRADES' inner maximisation) and the Fisher-eigenvector attack (OSSA).
// See lib/attacks.ts for the public API and docs/attacks.md for conventions.
#include "attacks.h"
#include "apgd.h"
#include <ATen/CPUGeneratorImpl.h>
#include <cmath>
#include <functional>
#include <limits>
#include "common/checks.h"
#include "common/errors.h"
#include "common/op_context.h"
#include "fab.h"
#include "fisher.h"
#include "metrics.h"
#include "square.h"

namespace fl {

namespace {

// [B, 1, 1, ...] view shape for per-sample scaling of a [B, ...] tensor
std::vector<int64_t> perSampleShape(const torch::Tensor& x) {
  std::vector<int64_t> s(x.dim(), 1);
  s[0] = x.size(0);
  return s;
}

// Per-sample L2 norm of a [B, ...] tensor -> [B]
torch::Tensor l2PerSample(const torch::Tensor& d) { return d.flatten(1).norm(2, 1); }

void progress(const OpContext* ctx, int64_t step, int64_t steps) {
  if (!ctx) return;
  ctx->checkAbort();
  ctx->report(str("{\"step\":", step, ",\"steps\":", steps, "}"));
}

// CE (mean, TRADES' convention: the sign/normalised steps do not depend on the scale)
Objective crossEntropy(const torch::Tensor& y, bool targeted) {
  return [y, targeted](const torch::Tensor& z) {
    torch::Tensor l = torch::nn::functional::cross_entropy(z, y);
    return targeted ? -l : l;
  };
}

// z_y − max_{j≠y} z_j per sample: z [B, K], y [B] -> [B]
torch::Tensor margin(const torch::Tensor& z, const torch::Tensor& y) {
  torch::Tensor zy = z.gather(1, y.unsqueeze(1)).squeeze(1);
  torch::Tensor other = z.scatter(1, y.unsqueeze(1), -std::numeric_limits<double>::infinity()).amax(1);
  return zy - other;
}

// Carlini–Wagner margin loss per sample, to ascend: −relu(z_y − max_{j≠y} z_j + κ) (push the label
// below the others by κ); targeted (y = the targets): −relu(max_{j≠t} z_j − z_t + κ) (push the
// target above the others by κ). z [B, K] -> [B]
torch::Tensor cwObjective(const torch::Tensor& z, const torch::Tensor& y, bool targeted, double kappa) {
  torch::Tensor mg = margin(z, y);
  return -torch::relu((targeted ? -mg : mg) + kappa);
}

Objective cwMargin(const torch::Tensor& y, bool targeted, double kappa) {
  return [y, targeted, kappa](const torch::Tensor& z) { return cwObjective(z, y, targeted, kappa).sum(); };
}

// Per-sample objective values (for restarts): z [B, K] -> [B]
torch::Tensor perSampleObjective(const std::string& kind, const torch::Tensor& z, const torch::Tensor& y, bool targeted,
                                 double kappa) {
  if (kind == "cw") return cwObjective(z, y, targeted, kappa);
  torch::Tensor l = torch::nn::functional::cross_entropy(
      z, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  return targeted ? -l : l;
}

// Uniform start in the ball (L∞: each pixel uniform in [−ε, ε]; L2: uniform in the L2 ball),
// then projected onto the box.
torch::Tensor randomStart(const torch::Tensor& x, Norm norm, double eps, at::Generator& gen) {
  auto cpu = x.options().device(torch::kCPU);
  torch::Tensor d;
  if (norm == Norm::Linf) {
    d = (torch::rand(x.sizes(), gen, cpu) * 2 - 1) * eps;
  } else {
    torch::Tensor g = torch::randn(x.sizes(), gen, cpu);
    torch::Tensor n = l2PerSample(g).clamp_min(1e-12);
    const double D = static_cast<double>(x.numel() / x.size(0));
    torch::Tensor r = torch::rand({x.size(0)}, gen, cpu).pow(1.0 / D) * eps;
    d = g * (r / n).view(perSampleShape(x));
  }
  return projectBall(x + d.to(x.device()), x, norm, eps);
}

// One run of PGD / FGSM / CW∞ (no restarts)
torch::Tensor pgdOnce(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                      at::Generator& gen, const OpContext* ctx) {
  const bool fgsm = o.kind == "fgsm";
  torch::Tensor xa = (o.randomStart && !fgsm) ? randomStart(x, o.norm, o.epsilon, gen) : x.clone();
  Objective obj = o.kind == "cw" ? cwMargin(y, o.targeted, o.kappa) : crossEntropy(y, o.targeted);
  return ascend(m, x, xa, obj, o.norm, o.epsilon, fgsm ? o.epsilon : o.stepSize, fgsm ? 1 : o.steps, AscentOptions{}, ctx);
}

// CW-L2 (Carlini & Wagner 2017): x' = (tanh w + 1)/2, Adam on ‖x' − x‖² + c·f(x'), binary search
// on c per sample; keeps the smallest successful perturbation. Unsuccessful samples stay at x.
torch::Tensor cwL2(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                   const OpContext* ctx) {
  const int64_t B = x.size(0);
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(x.device());
  torch::Tensor lo = torch::zeros({B}, f64), hi = torch::full({B}, 1e10, f64), c = torch::full({B}, o.initialConst, f64);
  torch::Tensor bestL2 = torch::full({B}, std::numeric_limits<double>::infinity(), f64);
  torch::Tensor best = x.clone();
  torch::Tensor w0 = torch::atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach();
  const int64_t total = o.binarySteps * o.steps;
  torch::AutoGradMode gradOn(true);
  for (int64_t bs = 0; bs < o.binarySteps; ++bs) {
    torch::Tensor w = w0.clone().requires_grad_(true);
    torch::optim::Adam opt({w}, torch::optim::AdamOptions(o.learningRate));
    torch::Tensor won = torch::zeros({B}, torch::TensorOptions().dtype(torch::kBool).device(x.device()));
    torch::Tensor cz = c.to(x.scalar_type());
    for (int64_t it = 0; it < o.steps; ++it) {
      progress(ctx, bs * o.steps + it, total);
      torch::Tensor xa = (torch::tanh(w) + 1) * 0.5;
      torch::Tensor z = m.forward(xa);
      torch::Tensor mg = margin(z, y);  // z_y − max other (targeted: y are the targets)
      // untargeted: push z_y below the others by κ; targeted: push z_t above the others by κ
      torch::Tensor f = o.targeted ? torch::relu(-mg + o.confidence) : torch::relu(mg + o.confidence);
      torch::Tensor l2 = (xa - x).pow(2).flatten(1).sum(1);
      opt.zero_grad();
      (l2 + cz * f).sum().backward();
      opt.step();
      torch::NoGradGuard ng;
      torch::Tensor mgd = mg.detach();
      torch::Tensor succ = o.targeted ? (mgd >= o.confidence) & (mgd > 0) : (o.confidence > 0 ? (-mgd >= o.confidence) : (mgd < 0));
      torch::Tensor l2d = l2.detach().to(torch::kFloat64);
      torch::Tensor better = succ & (l2d < bestL2);
      bestL2 = torch::where(better, l2d, bestL2);
      best = torch::where(better.view(perSampleShape(x)), xa.detach(), best);
      won |= succ;
    }
    torch::NoGradGuard ng;
    hi = torch::where(won, torch::minimum(hi, c), hi);
    lo = torch::where(won, lo, torch::maximum(lo, c));
    c = torch::where(hi < 1e9, (lo + hi) / 2, c * 10);
  }
  progress(ctx, total, total);
  torch::NoGradGuard ng;
  best = best.clamp(0, 1);
  if (std::isfinite(o.epsilon)) {
    torch::Tensor inside = l2PerSample((best - x).to(torch::kFloat64)) <= o.epsilon;
    best = torch::where(inside.view(perSampleShape(x)), best, x);
  }
  return best;
}

// Fisher-eigenvector attack (OSSA, Zhao et al. 2019): step α along ±v, v the leading eigenvector
// of G_x (L∞: α·sign(±v)), keeping per sample the sign that raises the cross-entropy; steps = 1
// with α = ε is the one-step attack.
torch::Tensor fisherAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                           const OpContext* ctx) {
  torch::Tensor xa = x.clone();
  const double alpha = o.steps <= 1 ? o.epsilon : o.stepSize;
  const int64_t steps = std::max<int64_t>(1, o.steps);
  for (int64_t k = 0; k < steps; ++k) {
    progress(ctx, k, steps);
    torch::Tensor v = fisherExact(m, xa, true).eigvec;
    if (o.norm == Norm::Linf) v = v.sign();
    torch::Tensor plus = projectBall(xa + alpha * v, x, o.norm, o.epsilon);
    torch::Tensor minus = projectBall(xa - alpha * v, x, o.norm, o.epsilon);
    torch::NoGradGuard ng;
    torch::Tensor lp = perSampleObjective("pgd", m.forward(plus), y, o.targeted, 0);
    torch::Tensor lm = perSampleObjective("pgd", m.forward(minus), y, o.targeted, 0);
    xa = torch::where((lp >= lm).view(perSampleShape(x)), plus, minus);
  }
  progress(ctx, steps, steps);
  return xa;
}

}  // namespace

torch::Tensor projectBall(const torch::Tensor& xa, const torch::Tensor& x, Norm norm, double eps, bool box) {
  torch::Tensor r;
  if (norm == Norm::Linf) {
    // the same as min(max(xa, x − ε), x + ε) followed by clamp(0, 1): x lies in both intervals
    r = torch::min(torch::max(xa, x - eps), x + eps);
  } else {
    torch::Tensor d = xa - x;
    torch::Tensor n = l2PerSample(d);
    torch::Tensor scale = torch::where(n > eps, eps / n.clamp_min(1e-30), torch::ones_like(n));
    // shrink slightly below ε so that rounding in x + d cannot push the norm above it
    scale = torch::where(n > eps, scale * (1 - 1e-6), scale);
    r = x + d * scale.view(perSampleShape(d));
  }
  return box ? r.clamp_(0, 1) : r;
}

// Gradient ascent on `obj` from xa (attacks.h). L2: a zero gradient takes a random unit direction
// when o.gen is given, as TRADES' L2 KL attack does.
torch::Tensor ascend(Classifier& m, const torch::Tensor& x, torch::Tensor xa, const Objective& obj, Norm norm, double eps,
                     double alpha, int64_t steps, const AscentOptions& o, const OpContext* ctx) {
  InputGradient grad(m, xa);
  for (int64_t k = 0; k < steps; ++k) {
    progress(ctx, k, steps);
    torch::Tensor g = grad(xa, obj);
    xa = xa.detach();
    if (norm == Norm::Linf) {
      xa.add_(g.sign_(), alpha);
    } else {
      torch::Tensor gn = l2PerSample(g);
      if (o.gen && (gn == 0).any().item<bool>()) {
        torch::Tensor r = torch::randn(g.sizes(), *o.gen, g.options().device(torch::kCPU)).to(g.device());
        torch::Tensor zero = (gn == 0).view(perSampleShape(g));
        g = torch::where(zero, r, g);
        gn = l2PerSample(g);
      }
      xa.add_(g / gn.clamp_min(1e-12).view(perSampleShape(g)), alpha);
    }
    xa = projectBall(xa, x, norm, eps, o.box);
    if (o.afterStep) {
      torch::NoGradGuard ng;
      o.afterStep(xa);
    }
  }
  progress(ctx, steps, steps);
  return xa.detach();
}

torch::Tensor pgdAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                        at::Generator& gen, const OpContext* ctx) {
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  torch::Tensor best = pgdOnce(m, x, y, o, gen, ctx);
  const int64_t restarts = (o.randomStart && o.kind != "fgsm") ? std::max<int64_t>(1, o.restarts) : 1;
  if (restarts == 1) return best;
  auto score = [&](const torch::Tensor& xa, torch::Tensor& wrong, torch::Tensor& val) {
    torch::NoGradGuard ng;
    torch::Tensor z = m.forward(xa);
    torch::Tensor pred = z.argmax(1);
    wrong = o.targeted ? pred.eq(y) : pred.ne(y);
    val = perSampleObjective(o.kind, z, y, o.targeted, o.kappa);
  };
  torch::Tensor bw, bv;
  score(best, bw, bv);
  for (int64_t r = 1; r < restarts; ++r) {
    torch::Tensor xa = pgdOnce(m, x, y, o, gen, ctx), w, v;
    score(xa, w, v);
    // a successful restart beats an unsuccessful one; among equals the higher objective wins
    torch::Tensor take = (w & ~bw) | ((w == bw) & (v > bv));
    best = torch::where(take.view(perSampleShape(x)), xa, best);
    bw = torch::where(take, w, bw);
    bv = torch::where(take, v, bv);
  }
  return best;
}

torch::Tensor klAttack(Classifier& m, const torch::Tensor& x, const AttackOptions& o, at::Generator& gen,
                       const OpContext* ctx, torch::Tensor* klReached) {
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  torch::Tensor logp;
  {
    torch::NoGradGuard ng;
    logp = torch::log_softmax(m.forward(x), 1);
  }
  // KL(p ‖ q) summed over the batch (TRADES: KLDivLoss(size_average=False))
  Objective kl = [logp](const torch::Tensor& z) { return klRows(logp, torch::log_softmax(z, 1)).sum(); };
  torch::Tensor noise = torch::randn(x.sizes(), gen, x.options().device(torch::kCPU)).to(x.device());
  torch::Tensor xa = projectBall(x + 0.001 * noise, x, o.norm, o.epsilon);
  AscentOptions ao;
  ao.gen = &gen;
  xa = ascend(m, x, xa, kl, o.norm, o.epsilon, o.stepSize, o.steps, ao, ctx);
  if (klReached) {
    torch::NoGradGuard ng;
    *klReached = klRows(logp, torch::log_softmax(m.forward(xa), 1)).to(torch::kFloat64);
  }
  return xa;
}

AttackResult runAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& target,
                       const AttackOptions& o, const OpContext* ctx) {
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  const torch::Tensor& goal = o.targeted ? target : y;
  AttackResult r;
  if (o.kind == "pgd" || o.kind == "fgsm" || o.kind == "cw") {
    r.xAdv = pgdAttack(m, x, goal, o, gen, ctx);
  } else if (o.kind == "kl") {
    r.xAdv = klAttack(m, x, o, gen, ctx, &r.loss);
  } else if (o.kind == "cw-l2") {
    r.xAdv = cwL2(m, x, goal, o, ctx);
  } else if (o.kind == "fisher") {
    r.xAdv = fisherAttack(m, x, goal, o, ctx);
  } else if (o.kind == "apgd-ce" || o.kind == "apgd-dlr" || o.kind == "apgd-t") {
    r = apgdAttack(m, x, y, o, gen, ctx);
  } else if (o.kind == "fab" || o.kind == "fab-t") {
    r = fabAttack(m, x, y, o, gen, ctx);
  } else if (o.kind == "square") {
    r = squareAttack(m, x, y, o, gen, ctx);
  } else {
    throw FlError(ERR_ARG, str("unknown attack '", o.kind, "' (lib/options.ts ATTACK_TABLE lists the kinds)"));
  }
  torch::NoGradGuard ng;
  torch::Tensor z = m.forward(r.xAdv);
  torch::Tensor pred = z.argmax(1);
  r.success = o.targeted ? pred.eq(target) : pred.ne(y);
  if (!r.loss.defined()) r.loss = perSampleObjective(o.kind == "cw" ? "cw" : "pgd", z, goal, o.targeted, o.kappa).to(torch::kFloat64);
  return r;
}

AttackOutcome attackBatch(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& target,
                          const AttackOptions& o, const OpContext* ctx) {
  checkImages(x, "attack(x)");
  checkLabels(y, x.size(0), 0, "attack(y)");
  if (target.defined()) checkLabels(target, x.size(0), 0, "attack(target)");
  torch::Device dev = m.device();
  torch::Tensor xd = x.to(dev), yd = y.to(dev), td = target.defined() ? target.to(dev) : target;
  FL_CHECK(xd.min().item<double>() >= 0 && xd.max().item<double>() <= 1, ERR_VALUE,
           "attack(x): images must lie in [0, 1] (normalisation belongs in the model)");
  AttackOutcome out;
  {
    ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
    torch::NoGradGuard ng;
    torch::Tensor z = m.forward(xd);
    checkLogits(z, "attack");
    checkLabels(yd, x.size(0), z.size(1), "attack(y)");
    if (td.defined()) checkLabels(td, x.size(0), z.size(1), "attack(target)");
    out.cleanCorrect = z.argmax(1).eq(yd).to(torch::kUInt8);
  }
  AttackResult r;
  {
    LayoutGuard layout(m, o.channelsLast);
    torch::Tensor xl = o.channelsLast ? xd.contiguous(at::MemoryFormat::ChannelsLast) : xd;
    r = runAttack(m, xl, yd, td, o, ctx);
    r.xAdv = r.xAdv.contiguous();
  }
  torch::Tensor d = (r.xAdv - xd).flatten(1).to(torch::kFloat64);
  out.norm = o.norm == Norm::Linf ? d.abs().amax(1) : d.norm(2, 1);
  out.success = r.success.to(torch::kUInt8);
  out.xAdv = r.xAdv;
  out.loss = r.loss;
  out.queries = r.queries;
  return out;
}

torch::Tensor firstSuccessful(const std::vector<torch::Tensor>& advs, const std::vector<torch::Tensor>& succ) {
  const torch::Tensor& last = advs.back();
  for (size_t a = 0; a < advs.size(); ++a) {
    FL_CHECK(advs[a].dim() >= 1 && advs[a].sizes() == last.sizes() && advs[a].scalar_type() == last.scalar_type(), ERR_SHAPE,
             "firstSuccessful(advs): every example batch must have the shape and dtype of the last, got ",
             shapeOf(advs[a]), " and ", shapeOf(last));
    FL_CHECK(succ[a].size(0) == last.size(0), ERR_SHAPE, "firstSuccessful(successes): element ", a, " has ",
             succ[a].size(0), " flags for ", last.size(0), " samples");
  }
  torch::Tensor out = last.clone();
  for (size_t a = advs.size() - 1; a-- > 0;) {
    torch::Tensor broke = (succ[a] != 0).to(last.device()).view(perSampleShape(last));
    out = torch::where(broke, advs[a].to(last.device()), out);
  }
  return out.contiguous();
}

}  // namespace fl
