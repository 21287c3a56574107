// metrics: see lib/metrics.ts for the public API.
#include "metrics.h"
#include "attacks.h"
#include "binding/init.h"
#include "fisher.h"
#include "common/checks.h"
#include "common/errors.h"
#include "binding/options.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "binding/model.h"
#include <ATen/CPUGeneratorImpl.h>
#include <cmath>

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

std::vector<double> parseTs(const Napi::Value& v, const char* what) {
  FL_CHECK(v.IsArray(), ERR_ARG, what, ": expected an array of numbers");
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<double> ts;
  for (uint32_t k = 0; k < arr.Length(); ++k) {
    Napi::Value e = arr.Get(k);
    FL_CHECK(e.IsNumber(), ERR_ARG, what, ": element ", k, " is not a number");
    ts.push_back(e.ToNumber().DoubleValue());
  }
  return ts;
}

Napi::Value writeSegment(Napi::Env env, const Segment& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("kl", wrapTensor(env, s.kl));
  o.Set("quadratic", toFloat64Array(env, s.quadratic));
  return o;
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

namespace {


// ccklBatch(model | null, x | logits | probs, y, { probs }, ctl?) -> Promise<{ n, A, P, S: Float64Array;
// correct, ceSum, count: number; logp: Tensor [B, C] float64 }>. With a model: one eval-mode forward
// of x; without, x holds logits, or with `probs` probabilities (fisherExact's).
Napi::Value CcklBatchJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = info[0].IsNull() || info[0].IsUndefined() ? nullptr : unwrapModel(info[0], "ccklBatch(model)");
    const bool probs = OptionReader(info[3], "ccklBatch").flag("probs");
    FL_CHECK(!(m && probs), ERR_ARG, "ccklBatch: probs are given without a model");
    torch::Tensor x = unwrapTensor(info[1], m ? "ccklBatch(x)" : probs ? "ccklBatch(probs)" : "ccklBatch(logits)");
    torch::Tensor y = unwrapTensor(info[2], "ccklBatch(y)");
    return startOp(info.Env(), info[4], [m, x, y, probs](OpContext&) -> Finisher {
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
      torch::Tensor logp;
      ClassSums s = classSums(logits, y, &logp, probs);
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

// samplePairs(labels: Tensor [N] int64, count, seed, ctl?) -> Promise<{ i, j: Float64Array [count] }>:
// seeded uniform different-class ordered pairs (samplePairs above)
Napi::Value SamplePairsJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    torch::Tensor y = unwrapTensor(info[0], "samplePairs(labels)");
    FL_CHECK(info[1].IsNumber() && info[2].IsNumber(), ERR_ARG, "samplePairs(labels, count, seed): count and seed must be numbers");
    const double c = info[1].ToNumber().DoubleValue(), sd = info[2].ToNumber().DoubleValue();
    FL_CHECK(c >= 0 && std::floor(c) == c, ERR_ARG, "samplePairs: count must be an integer ≥ 0, got ", c);
    FL_CHECK(sd >= 0 && std::floor(sd) == sd, ERR_ARG, "samplePairs: seed must be an integer ≥ 0, got ", sd);
    const int64_t count = static_cast<int64_t>(c);
    const uint64_t seed = static_cast<uint64_t>(sd);
    return startOp(info.Env(), info[3], [y, count, seed](OpContext&) -> Finisher {
      FL_CHECK(y.dim() == 1 && !y.is_floating_point(), ERR_SHAPE, "samplePairs(labels): expected integer labels [N], got ", shapeOf(y));
      auto gen = at::detail::createCPUGenerator(seed);
      auto [i, j] = samplePairs(y, count, gen);
      return [i, j](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("i", toFloat64Array(env, i));
        o.Set("j", toFloat64Array(env, j));
        return o;
      };
    });
  });
}

// klPairSegment(model, xi, xj, ts: number[], ctl?) -> Promise<{ kl: Tensor [B, T] float64, quadratic:
// Float64Array [B] }>: with δ = x_j − x_i (x's dtype), KL(p(x_i) ‖ p(x_i + t δ)) for each t and δᵀ G_{x_i} δ
// (one JVP). ts = [1] gives the pair's exact KL(p(x_i) ‖ p(x_j)) beside its quadratic form.
Napi::Value KlPairSegmentJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "klPairSegment(model)");
    torch::Tensor xi = unwrapTensor(info[1], "klPairSegment(xi)");
    torch::Tensor xj = unwrapTensor(info[2], "klPairSegment(xj)");
    std::vector<double> ts = parseTs(info[3], "klPairSegment(ts)");
    return startOp(info.Env(), info[4], [m, xi, xj, ts](OpContext& ctx) -> Finisher {
      checkImages(xi, "klPairSegment(xi)");
      checkImages(xj, "klPairSegment(xj)");
      FL_CHECK(xi.sizes() == xj.sizes(), ERR_SHAPE, "klPairSegment: xi and xj must have the same shape, got ", shapeOf(xi), " and ", shapeOf(xj));
      torch::Tensor delta = xj.to(xi.scalar_type()) - xi;
      Segment s = klSegmentOf(*m, xi, delta, ts, FisherOptions{}, [&ctx]() { ctx.checkAbort(); });
      return [s](Napi::Env env) -> Napi::Value { return writeSegment(env, s); };
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
      auto klAt = [&](const torch::Tensor& xa) {
        torch::NoGradGuard ng;
        return klRows(lp0, torch::log_softmax(m->forward(xa).to(torch::kFloat64), 1));
      };
      // start: the better of x ± ε v_top, projected on the ball (and the box with clip)
      torch::Tensor v = ef.eigvec.to(m->device(), dt).reshape(x0.sizes());
      torch::Tensor xp = projectBall(x0 + eps * v, x0, Norm::L2, eps, clip);
      torch::Tensor xn = projectBall(x0 - eps * v, x0, Norm::L2, eps, clip);
      torch::Tensor kp = klAt(xp), kn = klAt(xn);
      torch::Tensor pos = (kp >= kn).view({B, 1, 1, 1});
      torch::Tensor best = torch::where(pos, xp, xn), bestKl = torch::maximum(kp, kn);
      torch::Tensor initial = bestKl.clone();
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
      ascend(*m, x0, best.clone(), kl, Norm::L2, eps, 2.5 * eps / std::max<int64_t>(1, steps), steps, ao, &ctx);
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
  exports.Set("rho", Napi::Function::New(env, RhoJs, "rho"));
  exports.Set("samplePairs", Napi::Function::New(env, SamplePairsJs, "samplePairs"));
  exports.Set("klPairSegment", Napi::Function::New(env, KlPairSegmentJs, "klPairSegment"));
}

}  // namespace fl
