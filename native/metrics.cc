// metrics: see lib/metrics.ts for the public API.
#include "metrics.h"
#include "capabilities.h"
#include "fisher.h"
#include "common/checks.h"
#include "common/errors.h"
#include "common/options.h"
#include "common/tensor.h"
#include "common/worker.h"
#include "models/model_wrap.h"
#include <ATen/CPUGeneratorImpl.h>
#include <cmath>

namespace fl {

torch::Tensor klRows(const torch::Tensor& lp, const torch::Tensor& lq) { return (lp.exp() * (lp - lq)).sum(1); }

ClassSums classSums(const torch::Tensor& logits, const torch::Tensor& y0, torch::Tensor* logpOut) {
  torch::NoGradGuard ng;
  torch::Tensor l = torch::log_softmax(logits.detach().to(torch::kFloat64), 1);  // [B, C]
  const int64_t B = l.size(0), C = l.size(1);
  torch::Tensor y = y0.to(l.device(), torch::kInt64);
  torch::Tensor p = l.exp();
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
  // seeded uniform pairs among different-class ordered pairs (rejection of same-class draws)
  auto gen = at::detail::createCPUGenerator(seed);
  std::vector<torch::Tensor> I, Jx;
  int64_t have = 0, tries = 0;
  torch::Tensor ycpu = y.to(torch::kCPU);
  while (have < samples) {
    FL_CHECK(++tries < 1000, ERR_VALUE, "pair sampling: the labels have a single class, no different-class pairs");
    int64_t m = std::max<int64_t>(1024, 2 * (samples - have));
    torch::Tensor i = at::randint(N, {m}, gen, torch::kInt64), j = at::randint(N, {m}, gen, torch::kInt64);
    torch::Tensor keep = ycpu.index({i}) != ycpu.index({j});
    i = i.index({keep});
    j = j.index({keep});
    int64_t take = std::min<int64_t>(i.size(0), samples - have);
    I.push_back(i.narrow(0, 0, take));
    Jx.push_back(j.narrow(0, 0, take));
    have += take;
  }
  torch::Tensor i = torch::cat(I).to(l.device()), j = torch::cat(Jx).to(l.device());
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

namespace {


// ccklBatch(model | null, x | logits, y, ctl?) -> Promise<{ n, A, P, S: Float64Array; correct,
// ceSum, count: number; logp: Tensor [B, C] float64 }>. With a model: one eval-mode forward of x.
Napi::Value CcklBatchJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = info[0].IsNull() || info[0].IsUndefined() ? nullptr : unwrapModel(info[0], "ccklBatch(model)");
    torch::Tensor x = unwrapTensor(info[1], m ? "ccklBatch(x)" : "ccklBatch(logits)");
    torch::Tensor y = unwrapTensor(info[2], "ccklBatch(y)");
    return startOp(info.Env(), info[3], [m, x, y](OpContext&) -> Finisher {
      torch::Tensor logits;
      if (m) {
        checkImages(x, "ccklBatch(x)");
        ModeGuard mode(*m, false, false);
        torch::NoGradGuard ng;
        logits = m->forward(x.to(m->device(), modelDtype(*m)));
      } else {
        FL_CHECK(x.dim() == 2 && x.is_floating_point(), ERR_SHAPE, "ccklBatch(logits): expected float logits [B, C], got ", shapeOf(x));
        logits = x;
      }
      checkLogits(logits, "cckl");
      checkLabels(y, logits.size(0), logits.size(1), "ccklBatch(y)");
      torch::Tensor logp;
      ClassSums s = classSums(logits, y, &logp);
      FL_CHECK(torch::isfinite(logp).all().item<bool>(), ERR_VALUE, "ccklBatch: the logits contain NaN or Inf");
      return [s, logp](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("n", toFloat64Array(env, s.n));
        o.Set("A", toFloat64Array(env, s.A));
        o.Set("P", toFloat64Array(env, s.P));
        o.Set("S", toFloat64Array(env, s.S));
        o.Set("correct", Napi::Number::New(env, s.correct));
        o.Set("ceSum", Napi::Number::New(env, s.ceSum));
        o.Set("count", Napi::Number::New(env, s.count));
        o.Set("logp", wrapTensor(env, logp));
        return o;
      };
    });
  });
}

// pairMeans(logps: Tensor[], ys: Tensor[], { exactMax, samples, seed }, ctl?) -> Promise<{ jsMean,
// jsSe, boundMean, boundSe, pairs: number; exact: boolean }>
Napi::Value PairMeansJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info[0].IsArray() && info[1].IsArray(), ERR_ARG, "pairMeans(logps, ys): expected two arrays of tensors");
    Napi::Array la = info[0].As<Napi::Array>(), ya = info[1].As<Napi::Array>();
    FL_CHECK(la.Length() == ya.Length() && la.Length() > 0, ERR_ARG, "pairMeans: logps and ys must be non-empty and of equal length");
    std::vector<torch::Tensor> ls, ys;
    for (uint32_t i = 0; i < la.Length(); ++i) {
      ls.push_back(unwrapTensor(la.Get(i), "pairMeans(logps)"));
      ys.push_back(unwrapTensor(ya.Get(i), "pairMeans(ys)"));
    }
    OptionReader r(info[2], "pairMeans");
    int64_t exactMax = r.integer("exactMax");
    int64_t samples = r.integer("samples");
    uint64_t seed = static_cast<uint64_t>(r.integer("seed"));
    return startOp(info.Env(), info[3], [ls, ys, exactMax, samples, seed](OpContext& ctx) -> Finisher {
      torch::Tensor l = torch::cat(ls), y = torch::cat(ys);
      FL_CHECK(l.dim() == 2, ERR_SHAPE, "pairMeans(logps): expected [B, C] tensors, got ", shapeOf(l));
      checkLabels(y, l.size(0), l.size(1), "pairMeans(ys)");
      PairMeans r = pairMeans(l, y, exactMax, samples, seed, [&ctx]() { ctx.checkAbort(); });
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("jsMean", Napi::Number::New(env, r.jsMean));
        o.Set("jsSe", Napi::Number::New(env, r.jsSe));
        o.Set("boundMean", Napi::Number::New(env, r.boundMean));
        o.Set("boundSe", Napi::Number::New(env, r.boundSe));
        o.Set("pairs", Napi::Number::New(env, r.pairs));
        o.Set("exact", Napi::Boolean::New(env, r.exact));
        return o;
      };
    });
  });
}

// pairQuadratic(model, xi, xj, ctl?) -> Promise<{ quadratic, kl: Float64Array [B] }>:
// δᵀ G_{x_i} δ with δ = x_j − x_i (one JVP), and the exact KL(p(x_i) ‖ p(x_j))
Napi::Value PairQuadraticJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "pairQuadratic(model)");
    torch::Tensor xi = unwrapTensor(info[1], "pairQuadratic(xi)");
    torch::Tensor xj = unwrapTensor(info[2], "pairQuadratic(xj)");
    return startOp(info.Env(), info[3], [m, xi, xj](OpContext&) -> Finisher {
      checkImages(xi, "pairQuadratic(xi)");
      checkImages(xj, "pairQuadratic(xj)");
      FL_CHECK(xi.sizes() == xj.sizes(), ERR_SHAPE, "pairQuadratic: xi and xj must have the same shape, got ", shapeOf(xi), " and ", shapeOf(xj));
      torch::Tensor q, kl;
      FisherOperator op(*m, xi);
      torch::Tensor delta = (xj.to(torch::kFloat64) - xi.to(torch::kFloat64)).reshape({xi.size(0), -1}).to(op.probs.device());
      q = op.quadratic(delta);
      {
        torch::NoGradGuard ng;
        torch::Tensor lj = torch::log_softmax(m->forward(xj.to(m->device(), modelDtype(*m))).to(torch::kFloat64), 1);
        kl = klRows(op.logp, lj);
      }
      return [q, kl](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("quadratic", toFloat64Array(env, q));
        o.Set("kl", toFloat64Array(env, kl));
        return o;
      };
    });
  });
}

// rho(model, x, { eps, steps, clip }, ctl?) -> Promise<{ rho, fisherBound, lambdaMax, initial: Float64Array [B] }>
// ρ(x, ε) = max_{‖δ‖₂ ≤ ε} KL(p(x) ‖ p(x+δ)) by KL-PGD (L2, normalised gradient steps of 2.5 ε / steps,
// projection on the ball; with clip, x+δ also stays in [0, 1]), started from the better of ±ε v_top
// (the Fisher eigenvector: KL's gradient vanishes at δ = 0). fisherBound = ½ ε² λ_max.
Napi::Value RhoJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "rho(model)");
    torch::Tensor x = unwrapTensor(info[1], "rho(x)");
    OptionReader r(info[2], "rho");
    double eps = r.num("eps");
    int64_t steps = r.integer("steps");
    bool clip = r.flag("clip");
    return startOp(info.Env(), info[3], [m, x, eps, steps, clip](OpContext& ctx) -> Finisher {
      checkImages(x, "rho(x)");
      ExactFisher ef = fisherExact(*m, x, true);
      ModeGuard mode(*m, false, false);
      torch::AutoGradMode gm(true);
      auto dt = modelDtype(*m);
      torch::Tensor x0 = x.to(m->device(), dt).detach();
      const int64_t B = x0.size(0);
      torch::Tensor lp0;
      {
        torch::NoGradGuard ng;
        lp0 = torch::log_softmax(m->forward(x0).to(torch::kFloat64), 1);
      }
      auto project = [&](torch::Tensor d) {
        torch::Tensor n = d.reshape({B, -1}).norm(2, 1).clamp_min(1e-300);
        torch::Tensor f = (eps / n).clamp_max(1.0).to(d.scalar_type());
        d = d * f.view({B, 1, 1, 1});
        if (clip) d = (x0 + d).clamp(0, 1) - x0;
        return d;
      };
      auto klAt = [&](const torch::Tensor& d) {
        torch::NoGradGuard ng;
        return klRows(lp0, torch::log_softmax(m->forward(x0 + d).to(torch::kFloat64), 1));
      };
      torch::Tensor v = ef.eigvec.to(m->device(), dt);
      torch::Tensor dp = project(eps * v), dn = project(-eps * v);
      torch::Tensor kp = klAt(dp), kn = klAt(dn);
      torch::Tensor pos = (kp >= kn).view({B, 1, 1, 1});
      torch::Tensor best = torch::where(pos, dp, dn), bestKl = torch::maximum(kp, kn);
      torch::Tensor initial = bestKl.clone();
      torch::Tensor d = best.clone();
      double alpha = 2.5 * eps / std::max<int64_t>(1, steps);
      for (int64_t s = 0; s < steps; ++s) {
        ctx.checkAbort();
        torch::Tensor dv = d.detach().requires_grad_(true);
        torch::Tensor lq = torch::log_softmax(m->forward(x0 + dv).to(torch::kFloat64), 1);
        torch::Tensor kl = klRows(lp0, lq);
        torch::Tensor g = torch::autograd::grad({kl.sum()}, {dv})[0];
        torch::Tensor gn = g.reshape({B, -1}).norm(2, 1).clamp_min(1e-300).view({B, 1, 1, 1});
        d = project(d + alpha * g / gn).detach();
        torch::Tensor k = klAt(d);
        torch::Tensor better = k > bestKl;
        best = torch::where(better.view({B, 1, 1, 1}), d, best);
        bestKl = torch::where(better, k, bestKl);
      }
      torch::Tensor bound = 0.5 * eps * eps * ef.lambdaMax;
      torch::Tensor lam = ef.lambdaMax;
      return [bestKl, bound, lam, initial](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("rho", toFloat64Array(env, bestKl));
        o.Set("fisherBound", toFloat64Array(env, bound));
        o.Set("lambdaMax", toFloat64Array(env, lam));
        o.Set("initial", toFloat64Array(env, initial));
        return o;
      };
    });
  });
}

}  // namespace

void InitMetrics(Napi::Env env, Napi::Object exports) {
  exports.Set("ccklBatch", Napi::Function::New(env, CcklBatchJs, "ccklBatch"));
  exports.Set("pairMeans", Napi::Function::New(env, PairMeansJs, "pairMeans"));
  exports.Set("pairQuadratic", Napi::Function::New(env, PairQuadraticJs, "pairQuadratic"));
  exports.Set("rho", Napi::Function::New(env, RhoJs, "rho"));
}

}  // namespace fl
