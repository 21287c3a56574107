// N-API glue of the Fisher ops (fisher.h; the segment, metrics.h): reads the options, runs the
// method on the compute thread with progress and abort between iterations, and writes the result.
// See lib/fisher.ts for the public API.
#include "binding/init.h"
#include "binding/model.h"
#include "binding/options.h"
#include "binding/segment.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "common/checks.h"
#include "common/errors.h"
#include "fisher.h"

namespace fl {

namespace {

// The speed options, complete (lib/options.ts FISHER_SPEED_OPTIONS declares and validates them)
FisherOptions parseOptions(const Napi::Value& v) {
  OptionReader r(v, "fisher");
  FisherOptions o;
  o.channelsLast = r.flag("channelsLast");
  o.streams = static_cast<int>(r.integer("streams"));
  o.autograd = r.flag("autograd");
  o.classesPerPass = r.integer("classesPerPass");
  FL_CHECK(o.classesPerPass >= 1, ERR_INTERNAL, "fisher: classesPerPass ", o.classesPerPass, " (lib/fisher.ts resolves 'auto' to a positive count)");
  return o;
}

// Progress through OpContext every few iterations, with abort checks between iterations
std::function<void(int64_t)> iterHook(OpContext& ctx, const char* method, int64_t total) {
  return [&ctx, method, total](int64_t it) {
    ctx.checkAbort();
    ctx.report(str("{\"method\":\"", method, "\",\"step\":", it, ",\"steps\":", total, "}"));
  };
}

// fisherExact(model, x, { eigvec?, channelsLast?, streams? }, ctl?) -> Promise<{ lambdaMax, trace,
// frobenius: Float64Array [B]; spectrum: Tensor [B, C] float64; probs: Tensor [B, C]; eigvec?: Tensor }>
Napi::Value FisherExactJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "fisherExact(model)");
    torch::Tensor x = unwrapTensor(info[1], "fisherExact(x)");
    bool wantVec = OptionReader(info[2], "fisherExact").flag("eigvec");
    FisherOptions o = parseOptions(info[2]);
    return startOp(info.Env(), info[3], [m, x, wantVec, o](OpContext&) -> Finisher {
      checkImages(x, "fisherExact(x)");
      ExactFisher r = fisherExact(*m, x, wantVec, o);
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("lambdaMax", toFloat64Array(env, r.lambdaMax));
        o.Set("trace", toFloat64Array(env, r.trace));
        o.Set("frobenius", toFloat64Array(env, r.frobenius));
        o.Set("spectrum", wrapTensor(env, r.spectrum));
        o.Set("probs", wrapTensor(env, r.probs));
        if (r.eigvec.defined()) o.Set("eigvec", wrapTensor(env, r.eigvec));
        o.Set("engine", r.engine);
        o.Set("engineReason", r.engineReason);
        return o;
      };
    });
  });
}

// fisherPower(model, x, { tol, maxIter, channelsLast? }, ctl?) -> Promise<{ lambdaMax, iterations,
// converged: Uint8Array [B] (1: met tol; a boolean per sample); eigvec: Tensor float64 }>
Napi::Value FisherPowerJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "fisherPower(model)");
    torch::Tensor x = unwrapTensor(info[1], "fisherPower(x)");
    OptionReader r(info[2], "fisherPower");
    double tol = r.num("tol");
    int64_t maxIter = r.integer("maxIter");
    FisherOptions o = parseOptions(info[2]);
    return startOp(info.Env(), info[3], [m, x, tol, maxIter, o](OpContext& ctx) -> Finisher {
      checkImages(x, "fisherPower(x)");
      FisherOperator op(*m, x, o);
      PowerResult r = fisherPower(op, tol, maxIter, iterHook(ctx, "power", maxIter));
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("lambdaMax", toFloat64Array(env, r.lambdaMax));
        o.Set("iterations", toFloat64Array(env, r.iterations));
        o.Set("converged", toTypedArray(env, r.converged.to(torch::kUInt8)));
        o.Set("eigvec", wrapTensor(env, r.eigvec));
        o.Set("engine", r.engine);
        o.Set("engineReason", r.engineReason);
        return o;
      };
    });
  });
}

// fisherLanczos(model, x, { steps, channelsLast? }, ctl?) -> Promise<{ lambdaMax, trace, frobenius,
// steps: Float64Array [B]; ritz: Tensor [B, S] float64; eigvec: Tensor float64 }>
Napi::Value FisherLanczosJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "fisherLanczos(model)");
    torch::Tensor x = unwrapTensor(info[1], "fisherLanczos(x)");
    int64_t steps = OptionReader(info[2], "fisherLanczos").integer("steps");
    FisherOptions o = parseOptions(info[2]);
    return startOp(info.Env(), info[3], [m, x, steps, o](OpContext& ctx) -> Finisher {
      checkImages(x, "fisherLanczos(x)");
      FisherOperator op(*m, x, o);
      int64_t S = steps > 0 ? steps : op.C;
      LanczosResult r = fisherLanczos(op, S, iterHook(ctx, "lanczos", S));
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("lambdaMax", toFloat64Array(env, r.lambdaMax));
        o.Set("trace", toFloat64Array(env, r.trace));
        o.Set("frobenius", toFloat64Array(env, r.frobenius));
        o.Set("steps", toFloat64Array(env, r.steps));
        o.Set("ritz", wrapTensor(env, r.ritz));
        o.Set("eigvec", wrapTensor(env, r.eigvec));
        return o;
      };
    });
  });
}

// fisherHutchinson(model, x, { probes, seed, channelsLast? }, ctl?) -> Promise<{ trace, traceSe,
// frobenius, frobeniusSe: Float64Array [B] }>
Napi::Value FisherHutchinsonJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "fisherHutchinson(model)");
    torch::Tensor x = unwrapTensor(info[1], "fisherHutchinson(x)");
    OptionReader r(info[2], "fisherHutchinson");
    int64_t probes = r.integer("probes");
    uint64_t seed = static_cast<uint64_t>(r.integer("seed"));
    FisherOptions o = parseOptions(info[2]);
    return startOp(info.Env(), info[3], [m, x, probes, seed, o](OpContext& ctx) -> Finisher {
      checkImages(x, "fisherHutchinson(x)");
      FisherOperator op(*m, x, o);
      HutchinsonResult r = fisherHutchinson(op, probes, seed, iterHook(ctx, "hutchinson", probes));
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("trace", toFloat64Array(env, r.trace));
        o.Set("traceSe", toFloat64Array(env, r.traceSe));
        o.Set("frobenius", toFloat64Array(env, r.frobenius));
        o.Set("frobeniusSe", toFloat64Array(env, r.frobeniusSe));
        return o;
      };
    });
  });
}

// fisherQuadratic(model, x, v, opts, ctl?) -> Promise<Float64Array [B]>: vᵀ G_x v per sample (one JVP)
Napi::Value FisherQuadraticJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "fisherQuadratic(model)");
    torch::Tensor x = unwrapTensor(info[1], "fisherQuadratic(x)");
    torch::Tensor v = unwrapTensor(info[2], "fisherQuadratic(v)");
    FisherOptions o = parseOptions(info[3]);
    return startOp(info.Env(), info[4], [m, x, v, o](OpContext&) -> Finisher {
      checkImages(x, "fisherQuadratic(x)");
      torch::Tensor vf = flatDirections(v, x, "fisherQuadratic(v)");
      FisherOperator op(*m, x, o);
      torch::Tensor q = op.quadratic(vf.to(op.probs.device()));
      return [q](Napi::Env env) -> Napi::Value { return toFloat64Array(env, q); };
    });
  });
}

// fisherVectorProduct(model, x, v, opts, ctl?) -> Promise<Tensor>: G_x v per sample, float64, shaped like x
Napi::Value FisherVectorProductJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "fisherVectorProduct(model)");
    torch::Tensor x = unwrapTensor(info[1], "fisherVectorProduct(x)");
    torch::Tensor v = unwrapTensor(info[2], "fisherVectorProduct(v)");
    FisherOptions o = parseOptions(info[3]);
    return startOp(info.Env(), info[4], [m, x, v, o](OpContext&) -> Finisher {
      checkImages(x, "fisherVectorProduct(x)");
      torch::Tensor vf = flatDirections(v, x, "fisherVectorProduct(v)");
      FisherOperator op(*m, x, o);
      torch::Tensor g = op.gvp(vf.to(op.probs.device())).reshape(x.sizes());
      return [g](Napi::Env env) -> Napi::Value { return wrapTensor(env, g); };
    });
  });
}

// klSegment(model, x, delta, ts: number[], opts, ctl?) -> Promise<{ kl: Tensor [B, T] float64,
// quadratic: Float64Array [B] }>: KL(p(x) ‖ p(x + t δ)) for each t, and δᵀ G_x δ
Napi::Value KlSegmentJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "klSegment(model)");
    torch::Tensor x = unwrapTensor(info[1], "klSegment(x)");
    torch::Tensor d = unwrapTensor(info[2], "klSegment(delta)");
    std::vector<double> ts = parseTs(info[3], "klSegment(ts)");
    FisherOptions o = parseOptions(info[4]);
    return startOp(info.Env(), info[5], [m, x, d, ts, o](OpContext& ctx) -> Finisher {
      checkImages(x, "klSegment(x)");
      flatDirections(d, x, "klSegment(delta)");  // checks shape and dtype
      Segment s = klSegmentOf(*m, x, d, ts, o, [&ctx]() { ctx.checkAbort(); });
      return [s](Napi::Env env) -> Napi::Value { return writeSegment(env, s); };
    });
  });
}

// fisherExactTune(model, x, { candidates: [{ channelsLast, classesPerPass }], budgetMs, autograd? }, ctl?)
// -> Promise<[{ channelsLast, classesPerPass, msPerClass, msSamples }]> (msPerClass: the median of
// msSamples, each timed pass in ms per class; NaN: not measured)
Napi::Value FisherExactTuneJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "fisherExactTune(model)");
    torch::Tensor x = unwrapTensor(info[1], "fisherExactTune(x)");
    OptionReader r(info[2], "fisherExactTune");
    double budgetMs = r.num("budgetMs");
    bool autograd = r.flag("autograd");
    Napi::Value cv = r.raw("candidates");
    FL_CHECK(cv.IsArray(), ERR_ARG, "fisherExactTune(candidates): expected an array");
    Napi::Array arr = cv.As<Napi::Array>();
    std::vector<ExactTuneRow> cands;
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      OptionReader e(arr.Get(i), "fisherExactTune(candidates)");
      ExactTuneRow c;
      c.channelsLast = e.flag("channelsLast");
      c.classesPerPass = e.integer("classesPerPass");
      FL_CHECK(c.classesPerPass >= 1, ERR_ARG, "fisherExactTune: classesPerPass must be ≥ 1, got ", c.classesPerPass);
      cands.push_back(c);
    }
    return startOp(info.Env(), info[3], [m, x, cands, budgetMs, autograd](OpContext&) -> Finisher {
      checkImages(x, "fisherExactTune(x)");
      std::vector<ExactTuneRow> r = tuneExact(*m, x, cands, budgetMs, autograd);
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, r.size());
        for (size_t i = 0; i < r.size(); ++i) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("channelsLast", r[i].channelsLast);
          o.Set("classesPerPass", static_cast<double>(r[i].classesPerPass));
          o.Set("msPerClass", r[i].msPerClass);
          Napi::Array samples = Napi::Array::New(env, r[i].msSamples.size());
          for (size_t j = 0; j < r[i].msSamples.size(); ++j) samples.Set(static_cast<uint32_t>(j), r[i].msSamples[j]);
          o.Set("msSamples", samples);
          a.Set(static_cast<uint32_t>(i), o);
        }
        return a;
      };
    });
  });
}

// profileVjp(model, x, { channelsLast, classesPerPass }, ctl?) -> Promise<[{ op, ms, flops }]>: per-op time
// of one exact-method VJP pass (tape order); [] without a linearisation
Napi::Value ProfileVjpJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "profileVjp(model)");
    torch::Tensor x = unwrapTensor(info[1], "profileVjp(x)");
    FisherOptions o = parseOptions(info[2]);
    return startOp(info.Env(), info[3], [m, x, o](OpContext&) -> Finisher {
      checkImages(x, "profileVjp(x)");
      auto rows = profileVjp(*m, x, o.channelsLast, o.classesPerPass);
      return [rows](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, rows.size());
        for (size_t i = 0; i < rows.size(); ++i) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("op", rows[i].op);
          o.Set("ms", rows[i].ms);
          o.Set("flops", rows[i].flops);
          a.Set(static_cast<uint32_t>(i), o);
        }
        return a;
      };
    });
  });
}

}  // namespace

void InitFisher(Napi::Env env, Napi::Object exports) {
  exports.Set("fisherExactTune", Napi::Function::New(env, FisherExactTuneJs, "fisherExactTune"));
  exports.Set("profileVjp", Napi::Function::New(env, ProfileVjpJs, "profileVjp"));
  exports.Set("fisherExact", Napi::Function::New(env, FisherExactJs, "fisherExact"));
  exports.Set("fisherPower", Napi::Function::New(env, FisherPowerJs, "fisherPower"));
  exports.Set("fisherLanczos", Napi::Function::New(env, FisherLanczosJs, "fisherLanczos"));
  exports.Set("fisherHutchinson", Napi::Function::New(env, FisherHutchinsonJs, "fisherHutchinson"));
  exports.Set("fisherQuadratic", Napi::Function::New(env, FisherQuadraticJs, "fisherQuadratic"));
  exports.Set("fisherVectorProduct", Napi::Function::New(env, FisherVectorProductJs, "fisherVectorProduct"));
  exports.Set("klSegment", Napi::Function::New(env, KlSegmentJs, "klSegment"));
}

}  // namespace fl
