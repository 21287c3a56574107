// FAB / FAB-T (Croce & Hein 2020): each step linearises the model at the current point x1, picks
// the decision hyperplane closest in the attack's norm, projects both x1 and the original x onto
// it (inside the [0, 1] box), mixes the two projections with a weight α that favours x when x1 has
// drifted far, extrapolates by η, and after every misclassified point steps back towards x by β.
// The smallest misclassified point seen is kept. Written from the paper and the public reference
// implementation's conventions (fra31/auto-attack: α_max 0.1, η 1.05, β 0.9, random starts at ε/2,
// targets = the classes with the 2nd..(k+1)-th largest clean logits).
#include "fab.h"
#include <algorithm>
#include <cmath>
#include <limits>
#include "common/errors.h"
#include "common/op_context.h"

namespace fl {

namespace {

constexpr double kBig = 1e300;  // a breakpoint never reached (coordinates with w_i = 0)

// per-row norm of d [N, D] -> [N]
torch::Tensor rowNorm(const torch::Tensor& d, Norm norm) { return norm == Norm::Linf ? d.abs().amax(1) : d.norm(2, 1); }

// [B, 1, 1, ...] view shape for per-sample scaling of a [B, ...] tensor
std::vector<int64_t> perSample(const torch::Tensor& x) {
  std::vector<int64_t> s(x.dim(), 1);
  s[0] = x.size(0);
  return s;
}

// Per row, the smallest θ ≥ 0 with f(θ) = Σ_i q_i·min(θ, bp_i) = c (q, bp ≥ 0; f is concave,
// non-decreasing and piecewise linear with breakpoints bp), or +inf when f(∞) ≤ c.
// q, bp: [N, D] float64, c: [N] float64 ≥ 0 -> θ [N].
torch::Tensor solveBreakpoints(const torch::Tensor& q, const torch::Tensor& bp, const torch::Tensor& c) {
  const int64_t N = q.size(0), D = q.size(1);
  auto sorted = bp.sort(1);
  torch::Tensor bps = std::get<0>(sorted), qs = q.gather(1, std::get<1>(sorted));
  torch::Tensor zero = torch::zeros({N, 1}, q.options());
  // with the first k breakpoints passed (k = 0..D): θ_k, the saturated part S_k and the slope W_k
  torch::Tensor theta = torch::cat({zero, bps}, 1);
  torch::Tensor S = torch::cat({zero, (qs * bps).cumsum(1)}, 1);
  torch::Tensor W = torch::cat({qs.flip({1}).cumsum(1).flip({1}), zero}, 1);
  torch::Tensor G = S + theta * W;  // f(θ_k), non-decreasing in k
  torch::Tensor k = (G <= c.unsqueeze(1)).sum(1, /*keepdim=*/true) - 1;  // the last segment start with f ≤ c
  torch::Tensor Sk = S.gather(1, k).squeeze(1), Wk = W.gather(1, k).squeeze(1);
  torch::Tensor inside = (k.squeeze(1) < D) & (Wk > 0);
  return torch::where(inside, (c - Sk) / Wk.clamp_min(1e-300), torch::full_like(c, std::numeric_limits<double>::infinity()));
}

// d out / d xa, zeros where the output does not depend on xa (a model that detaches its input)
torch::Tensor inputGrad(const torch::Tensor& out, const torch::Tensor& xa, bool retain) {
  if (!out.requires_grad()) return torch::zeros_like(xa);
  torch::Tensor g = torch::autograd::grad({out}, {xa}, {}, retain, /*create_graph=*/false, /*allow_unused=*/true)[0];
  return g.defined() ? g : torch::zeros_like(xa);
}

// One linearise-project-mix step sequence from x1 (o.steps steps) on a subset of samples.
// x0: [n, ...] originals, la: [n] labels, tgt: [n] targets (fab-t) or undefined (fab).
// Returns the smallest misclassified point found per sample and its norm (+inf where none).
std::pair<torch::Tensor, torch::Tensor> fabRun(Classifier& m, const torch::Tensor& x0, const torch::Tensor& la,
                                               const torch::Tensor& tgt, const AttackOptions& o, bool randomStart,
                                               at::Generator& gen, const OpContext* ctx, int64_t& step, int64_t total) {
  const int64_t n = x0.size(0);
  auto cpu = x0.options().device(torch::kCPU);
  auto f64 = x0.options().dtype(torch::kFloat64);
  torch::Tensor x1 = x0.clone();
  if (randomStart) {
    // a random point at distance ε/2 (L∞: scaled so the largest coordinate is ε/2)
    torch::Tensor t = o.norm == Norm::Linf ? torch::rand(x0.sizes(), gen, cpu) * 2 - 1 : torch::randn(x0.sizes(), gen, cpu);
    t = t.to(x0.device());
    torch::Tensor s = rowNorm(t.reshape({n, -1}), o.norm).clamp_min(1e-12);
    x1 = (x0 + t * (0.5 * o.epsilon / s).view(perSample(x0))).clamp(0, 1);
  }
  torch::Tensor x0f = x0.reshape({n, -1}).to(torch::kFloat64);
  torch::Tensor best = x0.clone();
  torch::Tensor bestNorm = torch::full({n}, std::numeric_limits<double>::infinity(), f64);
  torch::Tensor rows = torch::arange(n, la.options());
  for (int64_t it = 0; it < o.steps; ++it) {
    if (ctx) {
      ctx->checkAbort();
      ctx->report(str("{\"step\":", step, ",\"steps\":", total, "}"));
    }
    ++step;
    // linearisation at x1: df [n, J] logit differences (other − label), dg [n, J, D] their gradients
    torch::Tensor df, dg;
    {
      torch::AutoGradMode gradOn(true);
      torch::Tensor xa = x1.detach().requires_grad_(true);
      torch::Tensor z = m.forward(xa);
      if (tgt.defined()) {
        torch::Tensor diff = z.gather(1, tgt.unsqueeze(1)) - z.gather(1, la.unsqueeze(1));  // [n, 1]
        torch::Tensor g = inputGrad(diff.sum(), xa, false);
        df = diff.detach();
        dg = g.reshape({n, 1, -1});
      } else {
        const int64_t K = z.size(1);
        std::vector<torch::Tensor> gs;
        for (int64_t j = 0; j < K; ++j) {
          gs.push_back(inputGrad(z.select(1, j).sum(), xa, /*retain=*/j + 1 < K).reshape({n, -1}));
        }
        torch::Tensor G = torch::stack(gs, 1);  // [n, K, D]
        torch::Tensor zd = z.detach();
        df = zd - zd.gather(1, la.unsqueeze(1));
        dg = G - G.index({rows, la}).unsqueeze(1);
        df = df.scatter(1, la.unsqueeze(1), 1e10);  // the label's own "boundary" is never the closest
      }
    }
    torch::NoGradGuard ng;
    // the closest linearised boundary: |f_j| / ‖∇f_j‖_* (dual norm: L∞ -> L1, L2 -> L2)
    torch::Tensor dual = o.norm == Norm::Linf ? dg.abs().sum(2) : dg.pow(2).sum(2).sqrt();
    torch::Tensor ind = (df.abs() / (dual + 1e-12)).argmin(1);
    torch::Tensor w = dg.index({rows, ind}).to(torch::kFloat64);  // [n, D]
    torch::Tensor f = df.index({rows, ind}).to(torch::kFloat64);  // [n]
    torch::Tensor x1f = x1.reshape({n, -1}).to(torch::kFloat64);
    torch::Tensor b = (w * x1f).sum(1) - f;  // the hyperplane w·z = b where the linearised f_j vanishes
    torch::Tensor d = projectOnHyperplane(torch::cat({x1f, x0f}, 0), torch::cat({w, w}, 0), torch::cat({b, b}, 0), o.norm);
    torch::Tensor d1 = d.slice(0, 0, n), d2 = d.slice(0, n);
    torch::Tensor a = rowNorm(d, o.norm).clamp_min(1e-8);
    torch::Tensor a1 = a.slice(0, 0, n), a2 = a.slice(0, n);
    torch::Tensor alpha = (a1 / (a1 + a2)).clamp(0, o.alphaMax).unsqueeze(1);
    x1f = ((x1f + o.eta * d1) * (1 - alpha) + (x0f + o.eta * d2) * alpha).clamp(0, 1);
    x1 = x1f.to(x0.scalar_type()).view(x0.sizes());
    // keep the smallest misclassified point; from a misclassified one step back towards x0
    torch::Tensor adv = m.forward(x1).argmax(1).ne(la);
    torch::Tensor nrm = rowNorm((x1 - x0).reshape({n, -1}).to(torch::kFloat64), o.norm);
    torch::Tensor better = adv & (nrm < bestNorm);
    best = torch::where(better.view(perSample(x0)), x1, best);
    bestNorm = torch::where(better, nrm, bestNorm);
    x1 = torch::where(adv.view(perSample(x0)), x0 + (x1 - x0) * o.beta, x1);
  }
  return {best, bestNorm};
}

}  // namespace

torch::Tensor projectOnHyperplane(const torch::Tensor& t0, const torch::Tensor& w0, const torch::Tensor& b0, Norm norm) {
  torch::Tensor t = t0.to(torch::kFloat64), w = w0.to(torch::kFloat64), b = b0.to(torch::kFloat64);
  // d must change w·t by c; flipping the sign of w makes the change c' = |c| ≥ 0
  torch::Tensor c = b - (w * t).sum(1);
  torch::Tensor wp = w * c.sign().unsqueeze(1);
  torch::Tensor lo = -t, hi = 1 - t;  // the box for d
  torch::Tensor nz = wp != 0;
  torch::Tensor big = torch::full_like(t, kBig);
  // f(θ) = Σ q_i min(θ, bp_i) is wp·d for the best d of "size" θ:
  //  L2: d_i = clip(θ wp_i, lo_i, hi_i) (KKT), q = wp², bp = the θ where coordinate i hits the box;
  //  L∞: d_i = sign(wp_i)·min(θ, room_i) with θ = ‖d‖∞, q = |wp|, bp = room_i towards sign(wp_i).
  torch::Tensor room = torch::where(wp > 0, hi, -lo);
  torch::Tensor q, bp;
  if (norm == Norm::L2) {
    q = wp * wp;
    bp = torch::where(nz, (room / wp.abs()).clamp(0, kBig), big);
  } else {
    q = wp.abs();
    bp = torch::where(nz, room, big);
  }
  torch::Tensor theta = solveBreakpoints(q, bp, c.abs()).clamp_max(kBig).unsqueeze(1);
  torch::Tensor step = norm == Norm::L2 ? theta * wp : theta * wp.sign();
  return torch::min(torch::max(step, lo), hi);
}

AttackResult fabAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                       at::Generator& gen, const OpContext* ctx) {
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  const bool targeted = o.kind == "fab-t";
  torch::Tensor z0;
  {
    torch::NoGradGuard ng;
    z0 = m.forward(x);
  }
  const int64_t K = z0.size(1);
  FL_CHECK(K >= 2, ERR_ARG, o.kind, " needs at least 2 classes, the model has ", K);
  FL_CHECK(y.max().item<int64_t>() < K, ERR_VALUE, o.kind, ": labels must lie in [0, ", K, "), got ", y.max().item<int64_t>());
  torch::Tensor robust = z0.argmax(1).eq(y);  // only correctly classified samples are attacked
  torch::Tensor order = std::get<1>(z0.sort(1, /*descending=*/true));
  const int64_t targets = targeted ? std::min<int64_t>(o.targets, K - 1) : 1;
  const int64_t restarts = std::max<int64_t>(1, o.restarts);
  const int64_t total = targets * restarts * o.steps;
  int64_t step = 0;
  torch::Tensor xAdv = x.clone();
  for (int64_t t = 0; t < targets; ++t) {
    for (int64_t r = 0; r < restarts; ++r) {
      torch::Tensor idx = robust.nonzero().squeeze(1);
      if (idx.numel() == 0) break;
      torch::Tensor xs = x.index_select(0, idx), ys = y.index_select(0, idx);
      torch::Tensor ts = targeted ? order.index_select(0, idx).select(1, t + 1).contiguous() : torch::Tensor();
      auto run = fabRun(m, xs, ys, ts, o, /*randomStart=*/r > 0, gen, ctx, step, total);
      torch::NoGradGuard ng;
      // accepted when within ε and misclassified (checked again after the projection into the ball)
      torch::Tensor cand = projectBall(run.first, xs, o.norm, o.epsilon);
      torch::Tensor ok = (run.second <= o.epsilon) & m.forward(cand).argmax(1).ne(ys);
      torch::Tensor sel = ok.nonzero().squeeze(1);
      if (sel.numel() == 0) continue;
      torch::Tensor done = idx.index_select(0, sel);
      xAdv.index_copy_(0, done, cand.index_select(0, sel));
      robust.index_fill_(0, done, false);
    }
  }
  if (ctx) {
    ctx->checkAbort();
    ctx->report(str("{\"step\":", total, ",\"steps\":", total, "}"));
  }
  AttackResult res;
  res.xAdv = xAdv;
  return res;
}

}  // namespace fl
