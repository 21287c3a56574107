// N-API glue of the metrics ops (metrics.h): reads the arguments, runs the computation on the
// compute thread and writes the result; also the KL-segment ops' shared reader and writer
// (binding/segment.h). See lib/metrics.ts for the public API.
#include <ATen/CPUGeneratorImpl.h>
#include <cmath>
#include "binding/init.h"
#include "binding/model.h"
#include "binding/options.h"
#include "binding/segment.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "common/checks.h"
#include "common/errors.h"
#include "metrics.h"

namespace fl {

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
      torch::Tensor logp;
      ClassSums s = ccklBatch(m.get(), x, y, probs, &logp);
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
      PairMeans r = pairMeans(ls, ys, exactMax, samples, seed, [&ctx]() { ctx.checkAbort(); });
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
// seeded uniform different-class ordered pairs (metrics.h samplePairs)
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
      Segment s = klPairSegment(*m, xi, xj, ts, [&ctx]() { ctx.checkAbort(); });
      return [s](Napi::Env env) -> Napi::Value { return writeSegment(env, s); };
    });
  });
}

// rho(model, x, { eps, steps, clip }, ctl?) -> Promise<{ rho, fisherBound, lambdaMax, initial: Float64Array [B] }>
// (metrics.h rho)
Napi::Value RhoJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "rho(model)");
    torch::Tensor x = unwrapTensor(info[1], "rho(x)");
    OptionReader r(info[2], "rho");
    double eps = r.num("eps");
    int64_t steps = r.integer("steps");
    bool clip = r.flag("clip");
    return startOp(info.Env(), info[3], [m, x, eps, steps, clip](OpContext& ctx) -> Finisher {
      RhoResult r = rho(*m, x, eps, steps, clip, &ctx);
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("rho", toFloat64Array(env, r.rho));
        o.Set("fisherBound", toFloat64Array(env, r.fisherBound));
        o.Set("lambdaMax", toFloat64Array(env, r.lambdaMax));
        o.Set("initial", toFloat64Array(env, r.initial));
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
