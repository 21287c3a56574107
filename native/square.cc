// Square attack (Andriushchenko et al. 2020): random search over square-shaped changes of the
// perturbation, accepted when they lower the margin loss z_y − max_{j≠y} z_j. Only forwards, no
// gradient. L∞: a start of vertical stripes ±ε, then squares of ±2ε (projected back into the
// ball); L2: a start of 5×5 blocks of the paper's centred patterns, then moves of mass between two
// windows that keep ‖δ‖₂ = ε. The square side follows the published schedule p(i) (halved at
// queries 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10 000, rescaled to the budget), with
// one window position per step shared by the batch, as the public reference does.
#include "square.h"
#include <algorithm>
#include <cmath>
#include "common/errors.h"
#include "common/op_context.h"

namespace fl {

namespace {

// z_y − max_{j≠y} z_j per sample: z [n, K], y [n] -> [n]
torch::Tensor marginOf(const torch::Tensor& z, const torch::Tensor& y) {
  torch::Tensor zy = z.gather(1, y.unsqueeze(1)).squeeze(1);
  torch::Tensor other = z.scatter(1, y.unsqueeze(1), -std::numeric_limits<double>::infinity()).amax(1);
  return zy - other;
}

// ±1 with equal probability, shape `s`, on the device of `like`
torch::Tensor randomSign(at::IntArrayRef s, const torch::Tensor& like, at::Generator& gen) {
  torch::Tensor u = torch::rand(s, gen, like.options().device(torch::kCPU));
  return (u < 0.5).to(like.scalar_type()).mul(2).sub(1).to(like.device());
}

int64_t randomInt(int64_t lo, int64_t hi, at::Generator& gen) {  // uniform in [lo, hi]
  return torch::randint(lo, hi + 1, {1}, gen, torch::TensorOptions().dtype(torch::kInt64)).item<int64_t>();
}

// The published schedule: the fraction p of pixels a square covers at step `it` of `budget`
double squareFraction(int64_t it, int64_t budget, double pInit) {
  const int64_t i = static_cast<int64_t>(static_cast<double>(it) / static_cast<double>(budget) * 10000);
  static const int64_t marks[] = {10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000};
  double p = pInit;
  for (int64_t mk : marks) {
    if (i > mk) p /= 2;
  }
  return p;
}

// [a, b] concentric rectangles around the centre, ring k weighted 1/(k+1)² (summed inwards)
torch::Tensor rings(int64_t a, int64_t b, const torch::TensorOptions& opt) {
  torch::Tensor d = torch::zeros({a, b}, opt);
  const int64_t ca = a / 2, cb = b / 2;
  for (int64_t k = 0; k <= std::max(ca, cb); ++k) {
    int64_t r0 = std::max<int64_t>(ca - k, 0), r1 = std::min<int64_t>(ca + k + 1, a);
    int64_t c0 = std::max<int64_t>(cb - k, 0), c1 = std::min<int64_t>(cb + k + 1, b);
    if (r1 > r0 && c1 > c0) d.slice(0, r0, r1).slice(1, c0, c1).add_(1.0 / static_cast<double>((k + 1) * (k + 1)));
  }
  return d;
}

// The L2 update pattern [s, s]: rings on one half, minus rings on the other, unit L2 norm,
// transposed with probability ½
torch::Tensor pattern(int64_t s, const torch::TensorOptions& opt, at::Generator& gen) {
  torch::Tensor d = torch::cat({rings(s / 2, s, opt), -rings(s - s / 2, s, opt)}, 0);
  d = d / d.norm().clamp_min(1e-12);
  if (torch::rand({1}, gen, torch::TensorOptions().dtype(torch::kFloat64)).item<double>() > 0.5) d = d.t().contiguous();
  return d;
}

// per-sample L2 norm of [n, ...] as [n, 1, 1, 1]
torch::Tensor l2Of(const torch::Tensor& d) { return d.flatten(1).norm(2, 1).view({-1, 1, 1, 1}); }

// A start inside the ball for the samples xs [n, C, H, W]
torch::Tensor start(const torch::Tensor& xs, const AttackOptions& o, at::Generator& gen) {
  const int64_t n = xs.size(0), c = xs.size(1), h = xs.size(2), w = xs.size(3);
  if (o.norm == Norm::Linf) return projectBall(xs + o.epsilon * randomSign({n, c, 1, w}, xs, gen), xs, o.norm, o.epsilon);
  torch::Tensor d = torch::zeros_like(xs);
  const int64_t s = h / 5, sp = (h - 5 * s) / 2;
  for (int64_t vh = sp; vh + s <= h; vh += s) {
    for (int64_t vw = sp; vw + s <= w; vw += s) {
      torch::Tensor e = pattern(s, xs.options(), gen).view({1, 1, s, s});
      d.slice(2, vh, vh + s).slice(3, vw, vw + s).add_(e * randomSign({n, c, 1, 1}, xs, gen));
    }
  }
  return projectBall(xs + d / (l2Of(d) + 1e-12) * o.epsilon, xs, o.norm, o.epsilon);
}

// One proposal per sample from the current best points xb around xs at step `it`
torch::Tensor propose(const torch::Tensor& xs, const torch::Tensor& xb, const AttackOptions& o, int64_t it, at::Generator& gen) {
  const int64_t n = xs.size(0), c = xs.size(1), h = xs.size(2), w = xs.size(3);
  const double p = squareFraction(it, o.steps, o.pInit);
  int64_t s = std::llround(std::sqrt(p * static_cast<double>(h * w)));
  if (o.norm == Norm::Linf) {
    s = std::min<int64_t>(std::max<int64_t>(s, 1), std::min(h, w));
    const int64_t vh = randomInt(0, h - s, gen), vw = randomInt(0, w - s, gen);
    torch::Tensor d = torch::zeros_like(xs);
    d.slice(2, vh, vh + s).slice(3, vw, vw + s).copy_((2 * o.epsilon * randomSign({n, c, 1, 1}, xs, gen)).expand({n, c, s, s}));
    return projectBall(xb + d, xs, o.norm, o.epsilon);
  }
  s = std::max<int64_t>(s, 3);
  if (s % 2 == 0) ++s;
  s = std::min<int64_t>(s, std::min(h, w));
  torch::Tensor delta = xb - xs;
  const int64_t vh = randomInt(0, h - s, gen), vw = randomInt(0, w - s, gen);
  const int64_t vh2 = randomInt(0, h - s, gen), vw2 = randomInt(0, w - s, gen);
  auto window = [&](const torch::Tensor& t, int64_t a, int64_t b) { return t.slice(2, a, a + s).slice(3, b, b + s); };
  torch::Tensor w1 = window(delta, vh, vw).clone();
  torch::Tensor nw1 = w1.pow(2).sum({2, 3}, true).sqrt();  // [n, c, 1, 1]
  torch::Tensor nImage = l2Of(delta);                      // [n, 1, 1, 1]
  torch::Tensor mask = torch::zeros({1, 1, h, w}, xs.options());
  window(mask, vh, vw).fill_(1);
  window(mask, vh2, vw2).fill_(1);
  torch::Tensor nWindows = (delta * mask).pow(2).sum({2, 3}, true).sqrt();  // [n, c, 1, 1]
  // a new pattern plus the old content of window 1, scaled to take the mass of both windows and
  // whatever the budget ε leaves
  torch::Tensor nd = pattern(s, xs.options(), gen).view({1, 1, s, s}) * randomSign({n, c, 1, 1}, xs, gen) + w1 / (nw1 + 1e-12);
  torch::Tensor room = ((o.epsilon * o.epsilon - nImage.pow(2)).clamp_min(0) / static_cast<double>(c) + nWindows.pow(2)).sqrt();
  nd = nd / (nd.pow(2).sum({2, 3}, true).sqrt() + 1e-12) * room;
  window(delta, vh2, vw2).zero_();
  window(delta, vh, vw).copy_(nd);
  return projectBall(xs + delta / (l2Of(delta) + 1e-12) * o.epsilon, xs, o.norm, o.epsilon);
}

}  // namespace

AttackResult squareAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                          at::Generator& gen, const OpContext* ctx) {
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  torch::NoGradGuard ng;
  FL_CHECK(x.dim() == 4, ERR_SHAPE, "square: expected images [B, C, H, W]");
  FL_CHECK(o.norm == Norm::Linf || (x.size(2) >= 5 && x.size(3) >= 5), ERR_ARG,
           "square with L2 needs images of at least 5×5 pixels, got ", x.size(2), "×", x.size(3));
  torch::Tensor z = m.forward(x);
  const int64_t K = z.size(1);
  FL_CHECK(K >= 2, ERR_ARG, "square needs at least 2 classes, the model has ", K);
  FL_CHECK(y.max().item<int64_t>() < K, ERR_VALUE, "square: labels must lie in [0, ", K, "), got ", y.max().item<int64_t>());
  const int64_t B = x.size(0);
  torch::Tensor xBest = x.clone();
  torch::Tensor best = marginOf(z, y);                 // the margin at xBest (the loss minimised)
  torch::Tensor alive = z.argmax(1).eq(y);             // still classified correctly
  torch::Tensor queries = torch::zeros({B}, torch::TensorOptions().dtype(torch::kFloat64).device(x.device()));
  const int64_t restarts = std::max<int64_t>(1, o.restarts), total = restarts * o.steps, reportEvery = 25;
  for (int64_t r = 0; r < restarts; ++r) {
    // a fresh search from a new start on the samples still classified correctly (global indices S)
    torch::Tensor S = alive.nonzero().squeeze(1);
    if (S.numel() == 0) break;
    torch::Tensor lx = x.index_select(0, S), ly = y.index_select(0, S);
    torch::Tensor lBest = lx.clone(), lMargin = best.index_select(0, S);
    torch::Tensor lAlive = torch::ones_like(ly, ly.options().dtype(torch::kBool));
    for (int64_t it = 0; it < o.steps; ++it) {
      if (ctx) {
        ctx->checkAbort();
        if (it % reportEvery == 0) ctx->report(str("{\"step\":", r * o.steps + it, ",\"steps\":", total, "}"));
      }
      torch::Tensor idx = lAlive.nonzero().squeeze(1);
      if (idx.numel() == 0) break;
      torch::Tensor xs = lx.index_select(0, idx), ys = ly.index_select(0, idx);
      // query 0 is the start (taken whatever its margin); then proposals from the best point
      torch::Tensor xn = it == 0 ? start(xs, o, gen) : propose(xs, lBest.index_select(0, idx), o, it - 1, gen);
      torch::Tensor zn = m.forward(xn);
      torch::Tensor mn = marginOf(zn, ys).to(best.scalar_type());
      torch::Tensor wrong = zn.argmax(1).ne(ys);
      torch::Tensor take = it == 0 ? torch::ones_like(wrong) : (wrong | (mn < lMargin.index_select(0, idx)));
      torch::Tensor sel = take.nonzero().squeeze(1);
      torch::Tensor at = idx.index_select(0, sel);
      lBest.index_copy_(0, at, xn.index_select(0, sel));
      lMargin.index_copy_(0, at, mn.index_select(0, sel));
      queries.index_add_(0, S.index_select(0, idx), torch::ones({idx.numel()}, queries.options()));
      lAlive.index_copy_(0, idx, ~wrong);
    }
    // the first run's point stands; a later run's replaces it when it succeeded or has a lower margin
    torch::Tensor keep = r == 0 ? torch::ones_like(lAlive) : (~lAlive | (lMargin < best.index_select(0, S)));
    torch::Tensor sel = keep.nonzero().squeeze(1);
    torch::Tensor at = S.index_select(0, sel);
    xBest.index_copy_(0, at, lBest.index_select(0, sel));
    best.index_copy_(0, at, lMargin.index_select(0, sel));
    alive.index_copy_(0, S, lAlive);
  }
  if (ctx) ctx->report(str("{\"step\":", total, ",\"steps\":", total, "}"));
  AttackResult r;
  r.xAdv = xBest;
  r.loss = best.to(torch::kFloat64);
  r.queries = queries;
  return r;
}

}  // namespace fl
