// APGD-CE, APGD-DLR and APGD-T (Croce & Hein 2020, Algorithm 1), written from the paper; the
// checkpoint rule and the DLR losses follow the authors' public code where the paper leaves the
// details open. The Python reference scripts/reference/attacks_apgd.py implements the same
// iteration independently (test/apgd-python.test.ts compares them in float64).
#include "apgd.h"
#include <algorithm>
#include <cmath>
#include <limits>
#include "common/errors.h"
#include "common/op_context.h"

namespace fl {

namespace {

constexpr double kMomentum = 0.75;  // α of the momentum step (the paper's choice)
constexpr double kRho = 0.75;       // ρ: halve when at most ρ·k of the last k steps raised the loss

std::vector<int64_t> perSample(const torch::Tensor& x) {
  std::vector<int64_t> s(x.dim(), 1);
  s[0] = x.size(0);
  return s;
}

enum class Loss { CE, DLR, DLRTargeted };

// Per-sample loss to ascend: z [B, K], y [B], t [B] (targets, DLRTargeted only) -> [B]
torch::Tensor lossOf(Loss l, const torch::Tensor& z, const torch::Tensor& y, const torch::Tensor& t) {
  if (l == Loss::CE) {
    return torch::nn::functional::cross_entropy(z, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  }
  if (l == Loss::DLR) return dlrLoss(z, y);
  // targeted DLR: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)
  torch::Tensor zs = std::get<0>(z.sort(1, /*descending=*/true));
  torch::Tensor zy = z.gather(1, y.unsqueeze(1)).squeeze(1), zt = z.gather(1, t.unsqueeze(1)).squeeze(1);
  torch::Tensor den = zs.select(1, 0) - 0.5 * (zs.select(1, 2) + zs.select(1, 3)) + 1e-12;
  return -(zy - zt) / den;
}

// Projection onto the ε-ball around x and the [0, 1] box (attacks.cc's projectBall)
torch::Tensor proj(const torch::Tensor& xa, const torch::Tensor& x, const AttackOptions& o) {
  return projectBall(xa, x, o.norm, o.epsilon);
}

struct Run {
  torch::Tensor xBest;     // [b, ...] highest-loss point
  torch::Tensor xBestAdv;  // [b, ...] last misclassified iterate (the start where none)
  torch::Tensor fooled;    // [b] bool: some iterate was misclassified
  torch::Tensor lossBest;  // [b]
};

// One APGD run (Algorithm 1) on a batch. x0: the start (already in the ball and box).
// `done`/`total` count iterations over all runs of the op, for progress.
Run apgdRun(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& t, Loss lf,
            const torch::Tensor& x0, const AttackOptions& o, const OpContext* ctx, int64_t& done, int64_t total) {
  const int64_t N = o.steps;
  const int64_t n2 = std::max<int64_t>(static_cast<int64_t>(0.22 * N), 1);     // first checkpoint
  const int64_t nMin = std::max<int64_t>(static_cast<int64_t>(0.06 * N), 1);   // shortest interval
  const int64_t decr = std::max<int64_t>(static_cast<int64_t>(0.03 * N), 1);   // interval shrink
  const auto shape = perSample(x);
  torch::AutoGradMode gradOn(true);

  // loss per sample and its input gradient (averaged over o.eotIter forwards)
  torch::Tensor z, L;
  InputGradient grad(m, x);
  auto lossGrad = [&](const torch::Tensor& xa) {
    torch::Tensor g;
    for (int64_t e = 0; e < o.eotIter; ++e) {
      torch::Tensor ge = grad(xa, [&](const torch::Tensor& zz) {
        L = lossOf(lf, zz, y, t);
        return L.sum();
      }, &z);
      g = e == 0 ? ge : g + ge;
    }
    z = z.detach();
    L = L.detach();
    return o.eotIter > 1 ? g / static_cast<double>(o.eotIter) : g;
  };

  torch::Tensor xa = x0.detach().clone();
  torch::Tensor g = lossGrad(xa);
  torch::NoGradGuard ng;
  torch::Tensor acc = z.argmax(1).eq(y);
  torch::Tensor xBestAdv = xa.clone(), xBest = xa.clone(), gBest = g.clone(), lBest = L.clone();
  torch::Tensor step = torch::full({x.size(0)}, 2 * o.epsilon, x.options());  // η⁽⁰⁾ = 2ε
  torch::Tensor xOld = xa.clone();
  std::vector<torch::Tensor> trace{L};  // f(x⁽⁰⁾), f(x⁽¹⁾), ...
  torch::Tensor lBestLastCheck = lBest.clone();
  torch::Tensor reducedLast = torch::ones({x.size(0)}, x.options().dtype(torch::kBool));
  int64_t k = n2, counter = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (ctx) {
      ctx->checkAbort();
      ctx->report(str("{\"step\":", done, ",\"steps\":", total, "}"));
    }
    ++done;
    // z⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + η·s(∇f)), x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α(z⁽ᵏ⁺¹⁾ − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾)); α = 1 at the first step
    torch::Tensor mom = xa - xOld;
    xOld = xa;
    const double a = i > 0 ? kMomentum : 1.0;
    torch::Tensor dir = o.norm == Norm::Linf ? g.sign() : g / g.flatten(1).norm(2, 1).clamp_min(1e-12).view(shape);
    torch::Tensor z1 = proj(xa + step.view(shape) * dir, x, o);
    xa = proj(xa + a * (z1 - xa) + (1 - a) * mom, x, o);
    {
      torch::AutoGradMode on(true);
      g = lossGrad(xa);
    }
    torch::Tensor pred = z.argmax(1).eq(y);
    acc = acc & pred;
    xBestAdv = torch::where(pred.logical_not().view(shape), xa, xBestAdv);
    trace.push_back(L);
    torch::Tensor up = L > lBest;
    xBest = torch::where(up.view(shape), xa, xBest);
    gBest = torch::where(up.view(shape), g, gBest);
    lBest = torch::where(up, L, lBest);
    if (++counter == k) {
      // condition 1: at most ρ·k of the last k steps raised the loss
      torch::Tensor rises = torch::zeros({x.size(0)}, x.options());
      const int64_t last = static_cast<int64_t>(trace.size()) - 1;
      for (int64_t j = last - k + 1; j <= last; ++j) rises += (trace[j] > trace[j - 1]).to(x.scalar_type());
      torch::Tensor cond1 = rises <= k * kRho;
      // condition 2: the step was not halved at the last checkpoint and the best loss did not rise
      torch::Tensor cond2 = reducedLast.logical_not() & (lBestLastCheck >= lBest);
      torch::Tensor reduce = cond1 | cond2;
      reducedLast = reduce;
      lBestLastCheck = lBest.clone();
      step = torch::where(reduce, step / 2, step);
      xa = torch::where(reduce.view(shape), xBest, xa);  // restart from the best point
      g = torch::where(reduce.view(shape), gBest, g);
      k = std::max(k - decr, nMin);
      counter = 0;
    }
  }
  return {xBest, xBestAdv, acc.logical_not(), lBest};
}

// The start point: o.init, else uniform on the ε-sphere's L∞ / L2 shell as in the paper
// (L∞: x + ε·u/‖u‖∞, u uniform in [−1, 1]^D; L2: x + ε·n/‖n‖₂, n Gaussian), else x.
torch::Tensor startPoint(const torch::Tensor& x, const torch::Tensor& init, const AttackOptions& o, at::Generator& gen) {
  if (init.defined()) return proj(init.to(x.options()), x, o);
  if (!o.randomStart) return x.clone();
  auto cpu = x.options().device(torch::kCPU);
  torch::Tensor u = o.norm == Norm::Linf ? torch::rand(x.sizes(), gen, cpu) * 2 - 1 : torch::randn(x.sizes(), gen, cpu);
  torch::Tensor n = o.norm == Norm::Linf ? u.flatten(1).abs().amax(1) : u.flatten(1).norm(2, 1);
  u = u / n.clamp_min(1e-12).view(perSample(x));
  return proj(x + o.epsilon * u.to(x.device()), x, o);
}

}  // namespace

torch::Tensor dlrLoss(const torch::Tensor& z, const torch::Tensor& y) {
  torch::Tensor zs = std::get<0>(z.sort(1, /*descending=*/true));
  torch::Tensor zy = z.gather(1, y.unsqueeze(1)).squeeze(1);
  torch::Tensor other = torch::where(z.argmax(1).eq(y), zs.select(1, 1), zs.select(1, 0));
  return -(zy - other) / (zs.select(1, 0) - zs.select(1, 2) + 1e-12);
}

AttackResult apgdAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                        at::Generator& gen, const OpContext* ctx) {
  const bool targetedDlr = o.kind == "apgd-t";
  const Loss lf = o.kind == "apgd-ce" ? Loss::CE : targetedDlr ? Loss::DLRTargeted : Loss::DLR;
  torch::Tensor zc;
  {
    torch::NoGradGuard ng;
    zc = m.forward(x);
  }
  const int64_t K = zc.size(1);
  const int64_t need = targetedDlr ? 4 : lf == Loss::DLR ? 3 : 2;
  FL_CHECK(K >= need, ERR_ARG, o.kind, " needs at least ", need, " classes (its loss sorts the logits), the model has ", K);
  FL_CHECK(!o.init.defined() || o.init.sizes() == x.sizes(), ERR_SHAPE, o.kind, ": init must be shaped like x");
  // targets: the classes ranked 2nd, 3rd, ... by the clean logits (apgd-t), one pass otherwise
  const int64_t nT = targetedDlr ? std::min<int64_t>(o.targets, K - 1) : 1;
  torch::Tensor ranked = targetedDlr ? zc.argsort(1, /*descending=*/true) : torch::Tensor();
  const int64_t restarts = std::max<int64_t>(1, o.restarts);
  int64_t done = 0;
  const int64_t total = nT * restarts * o.steps;

  torch::Tensor xAdv = x.clone();
  torch::Tensor fooled = torch::zeros({x.size(0)}, x.options().dtype(torch::kBool));
  const auto shape = perSample(x);
  for (int64_t ti = 0; ti < nT; ++ti) {
    for (int64_t r = 0; r < restarts; ++r) {
      torch::Tensor idx = fooled.logical_not().nonzero().squeeze(1);
      if (idx.numel() == 0) {
        done += o.steps;
        continue;
      }
      torch::Tensor xs = x.index_select(0, idx), ys = y.index_select(0, idx);
      torch::Tensor ts = targetedDlr ? ranked.select(1, ti + 1).index_select(0, idx) : torch::Tensor();
      torch::Tensor x0 = startPoint(xs, o.init.defined() ? o.init.index_select(0, idx) : torch::Tensor(), o, gen);
      Run run = apgdRun(m, xs, ys, ts, lf, x0, o, ctx, done, total);
      torch::NoGradGuard ng;
      torch::Tensor out = torch::where(run.fooled.view(perSample(xs)), run.xBestAdv, run.xBest);
      xAdv.index_copy_(0, idx, out);
      fooled.index_copy_(0, idx, run.fooled);
    }
  }
  if (ctx) ctx->report(str("{\"step\":", total, ",\"steps\":", total, "}"));
  torch::NoGradGuard ng;
  AttackResult res;
  res.xAdv = xAdv;
  torch::Tensor z = m.forward(xAdv);
  res.loss = (lf == Loss::CE ? lossOf(Loss::CE, z, y, torch::Tensor()) : dlrLoss(z, y)).to(torch::kFloat64);
  return res;
}

}  // namespace fl
