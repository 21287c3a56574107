// metrics (metrics.h): the CCKL class sums, the JS pair means and bound, the KL segments, ρ and
// the batch accuracy; the ops' glue is binding/metrics.cc, the public API lib/metrics.ts.
#include "metrics.h"
#include <ATen/CPUGeneratorImpl.h>
#include <cmath>
#include "attacks.h"
#include "common/checks.h"
#include "common/errors.h"
#include "common/op_context.h"

namespace fl {

torch::Tensor klRows(const torch::Tensor& lp, const torch::Tensor& lq) { return (lp.exp() * (lp - lq)).sum(1); }

torch::Tensor klAlong(Classifier& m, const torch::Tensor& x, const torch::Tensor& d, const torch::Tensor& logp0,
                      const std::vector<double>& ts, const std::function<void()>& check) {
  ModeGuard mode(m, false, false);
  torch::NoGradGuard ng;
  torch::Tensor xd = x.to(m.device(), modelDtype(m));
  torch::Tensor dd = d.to(m.device(), modelDtype(m));
  std::vector<torch::Tensor> cols;
  for (double t : ts) {
    if (check) check();
    cols.push_back(klRows(logp0, torch::log_softmax(m.forward(xd + t * dd).to(torch::kFloat64), 1)));
  }
  return cols.empty() ? torch::zeros({x.size(0), 0}, torch::kFloat64) : torch::stack(cols, 1);
}

Segment klSegmentOf(Classifier& m, const torch::Tensor& x, const torch::Tensor& d, const std::vector<double>& ts,
                    const FisherOptions& o, const std::function<void()>& check) {
  Segment s;
  torch::Tensor logp0;
  {
    FisherOperator op(m, x, o);
    s.quadratic = op.quadratic(d.reshape({d.size(0), -1}).to(torch::kFloat64).to(op.probs.device()));
    logp0 = op.logp;
  }
  s.kl = klAlong(m, x, d, logp0, ts, check);
  return s;
}

std::pair<torch::Tensor, torch::Tensor> samplePairs(const torch::Tensor& y0, int64_t count, at::Generator& gen) {
  torch::Tensor y = y0.to(torch::kCPU, torch::kInt64).reshape({-1});
  const int64_t N = y.size(0);
  FL_CHECK(N > 0 && (y != y[0]).any().item<bool>(), ERR_VALUE,
           "pair sampling: the labels have a single class, no different-class pairs");
  std::vector<torch::Tensor> I, J;
  int64_t have = 0;
  while (have < count) {
    int64_t m = std::max<int64_t>(1024, 2 * (count - have));
    torch::Tensor i = at::randint(N, {m}, gen, torch::kInt64), j = at::randint(N, {m}, gen, torch::kInt64);
    torch::Tensor keep = y.index({i}) != y.index({j});
    i = i.index({keep});
    j = j.index({keep});
    int64_t take = std::min<int64_t>(i.size(0), count - have);
    I.push_back(i.narrow(0, 0, take));
    J.push_back(j.narrow(0, 0, take));
    have += take;
  }
  if (I.empty()) return {torch::zeros({0}, torch::kInt64), torch::zeros({0}, torch::kInt64)};
  return {torch::cat(I), torch::cat(J)};
}

ClassSums classSums(const torch::Tensor& logits, const torch::Tensor& y0, torch::Tensor* logpOut, bool probs) {
  torch::NoGradGuard ng;
  torch::Tensor l, p;  // [B, C] float64
  if (probs) {
    p = logits.detach().to(torch::kFloat64);
    l = p.clamp_min(1e-300).log();
  } else {
    l = torch::log_softmax(logits.detach().to(torch::kFloat64), 1);
    p = l.exp();
  }
  const int64_t B = l.size(0), C = l.size(1);
  torch::Tensor y = y0.to(l.device(), torch::kInt64);
  torch::Tensor a = (p * l).sum(1);  // [B]
  ClassSums s;
  auto f64 = l.options();
  s.n = torch::zeros({C}, f64).index_add_(0, y, torch::ones({B}, f64));
  s.A = torch::zeros({C}, f64).index_add_(0, y, a);
  s.P = torch::zeros({C, C}, f64).index_add_(0, y, p);
  s.S = torch::zeros({C, C}, f64).index_add_(0, y, l);
  torch::Tensor ly = l.gather(1, y.unsqueeze(1)).squeeze(1);
  s.correct = (l.argmax(1) == y).sum().item<double>();
  s.ceSum = -ly.sum().item<double>();
  s.count = static_cast<double>(B);
  if (logpOut) *logpOut = l;
  return s;
}

PairMeans pairMeans(const torch::Tensor& logp, const torch::Tensor& y0, int64_t exactMax, int64_t samples,
                    uint64_t seed, const std::function<void()>& check) {
  torch::NoGradGuard ng;
  const int64_t N = logp.size(0);
  torch::Tensor l = logp.to(torch::kFloat64);
  torch::Tensor y = y0.to(l.device(), torch::kInt64);
  torch::Tensor p = l.exp();
  torch::Tensor a = torch::xlogy(p, p).sum(1);                                   // [N] Σ p log p
  torch::Tensor se = (1 - p.gather(1, y.unsqueeze(1)).squeeze(1)).clamp_min(0).sqrt();  // √err
  const double ln2x2 = 2 * std::log(2.0);
  // JS(p_i, p_j) = ½(a_i + a_j) − Σ_c m log m, m = ½(p_i + p_j)
  auto jsOf = [](const torch::Tensor& pi, const torch::Tensor& ai, const torch::Tensor& pj, const torch::Tensor& aj) {
    torch::Tensor m = 0.5 * (pi + pj);
    return (0.5 * (ai + aj) - torch::xlogy(m, m).sum(-1)).clamp_min(0);
  };
  PairMeans r;
  if (N <= exactMax) {
    const int64_t bs = 256;
    double js = 0, bd = 0, cnt = 0;
    for (int64_t i0 = 0; i0 < N; i0 += bs) {
      int64_t ni = std::min(bs, N - i0);
      torch::Tensor pi = p.narrow(0, i0, ni).unsqueeze(1), ai = a.narrow(0, i0, ni).unsqueeze(1);
      torch::Tensor yi = y.narrow(0, i0, ni).unsqueeze(1), si = se.narrow(0, i0, ni).unsqueeze(1);
      for (int64_t j0 = i0; j0 < N; j0 += bs) {
        if (check) check();
        int64_t nj = std::min(bs, N - j0);
        torch::Tensor pj = p.narrow(0, j0, nj).unsqueeze(0), aj = a.narrow(0, j0, nj).unsqueeze(0);
        torch::Tensor yj = y.narrow(0, j0, nj).unsqueeze(0), sj = se.narrow(0, j0, nj).unsqueeze(0);
        torch::Tensor mask = (yi != yj).to(torch::kFloat64);                // [ni, nj]
        torch::Tensor J = jsOf(pi, ai, pj, aj);                              // [ni, nj]
        torch::Tensor bnd = ln2x2 * (1 - si - sj).clamp_min(0).pow(2);
        double w = j0 == i0 ? 1.0 : 2.0;  // the ordered pairs (j, i) of an off-diagonal block
        js += w * (J * mask).sum().item<double>();
        bd += w * (bnd * mask).sum().item<double>();
        cnt += w * mask.sum().item<double>();
      }
    }
    r.exact = true;
    r.pairs = cnt;
    r.jsMean = cnt > 0 ? js / cnt : 0;
    r.boundMean = cnt > 0 ? bd / cnt : 0;
    return r;
  }
  // seeded uniform pairs among different-class ordered pairs
  auto gen = at::detail::createCPUGenerator(seed);
  auto [i0, j0] = samplePairs(y, samples, gen);
  torch::Tensor i = i0.to(l.device()), j = j0.to(l.device());
  torch::Tensor J = jsOf(p.index({i}), a.index({i}), p.index({j}), a.index({j}));
  torch::Tensor bnd = ln2x2 * (1 - se.index({i}) - se.index({j})).clamp_min(0).pow(2);
  double sq = std::sqrt(static_cast<double>(samples));
  r.exact = false;
  r.pairs = static_cast<double>(samples);
  r.jsMean = J.mean().item<double>();
  r.boundMean = bnd.mean().item<double>();
  r.jsSe = samples > 1 ? J.std().item<double>() / sq : INFINITY;
  r.boundSe = samples > 1 ? bnd.std().item<double>() / sq : INFINITY;
  return r;
}

ClassSums ccklBatch(Classifier* m, const torch::Tensor& x, const torch::Tensor& y, bool probs, torch::Tensor* logp) {
  torch::Tensor logits;
  if (m) {
    checkImages(x, "ccklBatch(x)");
    ModeGuard mode(*m, false, false);
    torch::NoGradGuard ng;
    logits = m->forward(x.to(m->device(), modelDtype(*m)));
  } else {
    FL_CHECK(x.dim() == 2 && x.is_floating_point(), ERR_SHAPE, "ccklBatch(", probs ? "probs" : "logits",
             "): expected float rows [B, C], got ", shapeOf(x));
    logits = x;
  }
  if (probs) {
    FL_CHECK(torch::isfinite(x).all().item<bool>() && (x >= 0).all().item<bool>(), ERR_VALUE,
             "ccklBatch(probs): probabilities must be finite and ≥ 0");
  } else {
    checkLogits(logits, "cckl");
  }
  checkLabels(y, logits.size(0), logits.size(1), "ccklBatch(y)");
  ClassSums s = classSums(logits, y, logp, probs);
  FL_CHECK(torch::isfinite(*logp).all().item<bool>(), ERR_VALUE, "ccklBatch: the logits contain NaN or Inf");
  return s;
}

PairMeans pairMeans(const std::vector<torch::Tensor>& logps, const std::vector<torch::Tensor>& ys, int64_t exactMax,
                    int64_t samples, uint64_t seed, const std::function<void()>& check) {
  torch::Tensor l = torch::cat(logps), y = torch::cat(ys);
  FL_CHECK(l.dim() == 2, ERR_SHAPE, "pairMeans(logps): expected [B, C] tensors, got ", shapeOf(l));
  checkLabels(y, l.size(0), l.size(1), "pairMeans(ys)");
  return pairMeans(l, y, exactMax, samples, seed, check);
}

Segment klPairSegment(Classifier& m, const torch::Tensor& xi, const torch::Tensor& xj, const std::vector<double>& ts,
                      const std::function<void()>& check) {
  checkImages(xi, "klPairSegment(xi)");
  checkImages(xj, "klPairSegment(xj)");
  FL_CHECK(xi.sizes() == xj.sizes(), ERR_SHAPE, "klPairSegment: xi and xj must have the same shape, got ", shapeOf(xi), " and ", shapeOf(xj));
  torch::Tensor delta = xj.to(xi.scalar_type()) - xi;
  return klSegmentOf(m, xi, delta, ts, FisherOptions{}, check);
}

RhoResult rho(Classifier& m, const torch::Tensor& x, double eps, int64_t steps, bool clip, const OpContext* ctx) {
  checkImages(x, "rho(x)");
  ExactFisher ef = fisherExact(m, x, true);
  ModeGuard mode(m, false, false);
  torch::AutoGradMode gm(true);
  auto dt = modelDtype(m);
  torch::Tensor x0 = x.to(m.device(), dt).detach();
  const int64_t B = x0.size(0);
  torch::Tensor lp0;
  {
    torch::NoGradGuard ng;
    lp0 = torch::log_softmax(m.forward(x0).to(torch::kFloat64), 1);
  }
  auto klAt = [&](const torch::Tensor& xa) {
    torch::NoGradGuard ng;
    return klRows(lp0, torch::log_softmax(m.forward(xa).to(torch::kFloat64), 1));
  };
  // start: the better of x ± ε v_top, projected on the ball (and the box with clip)
  torch::Tensor v = ef.eigvec.to(m.device(), dt).reshape(x0.sizes());
  torch::Tensor xp = projectBall(x0 + eps * v, x0, Norm::L2, eps, clip);
  torch::Tensor xn = projectBall(x0 - eps * v, x0, Norm::L2, eps, clip);
  torch::Tensor kp = klAt(xp), kn = klAt(xn);
  torch::Tensor pos = (kp >= kn).view({B, 1, 1, 1});
  torch::Tensor best = torch::where(pos, xp, xn), bestKl = torch::maximum(kp, kn);
  RhoResult r;
  r.initial = bestKl.clone();
  // KL-PGD: attacks.cc's L2 ascent on KL(p(x) ‖ p(x_a)), keeping the best point per sample
  Objective kl = [&lp0](const torch::Tensor& z) { return klRows(lp0, torch::log_softmax(z.to(torch::kFloat64), 1)).sum(); };
  AscentOptions ao;
  ao.box = clip;
  ao.afterStep = [&](const torch::Tensor& xa) {
    torch::Tensor k = klAt(xa);
    torch::Tensor better = k > bestKl;
    best = torch::where(better.view({B, 1, 1, 1}), xa, best);
    bestKl = torch::where(better, k, bestKl);
  };
  ascend(m, x0, best.clone(), kl, Norm::L2, eps, 2.5 * eps / std::max<int64_t>(1, steps), steps, ao, ctx);
  r.rho = bestKl;
  r.fisherBound = 0.5 * eps * eps * ef.lambdaMax;
  r.lambdaMax = ef.lambdaMax;
  return r;
}

BatchScore evaluateBatch(Classifier& m, const torch::Tensor& x, const torch::Tensor& y) {
  checkImages(x, "evaluateBatch(x)");
  checkLabels(y, x.size(0), 0, "evaluateBatch(y)");
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  torch::NoGradGuard ng;
  torch::Tensor z = m.forward(x.to(m.device())).to(torch::kFloat64);
  checkLogits(z, "evaluateBatch");
  torch::Tensor yy = y.to(z.device());
  checkLabels(yy, x.size(0), z.size(1), "evaluateBatch(y)");
  BatchScore s;
  s.correct = z.argmax(1).eq(yy).sum().item<int64_t>();
  s.ceSum = torch::nll_loss(torch::log_softmax(z, 1), yy, {}, at::Reduction::Sum).item<double>();
  s.count = x.size(0);
  return s;
}

}  // namespace fl
