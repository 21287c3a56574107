// N-API glue of the attacks (attacks.h): reads the options, runs attackBatch / firstSuccessful on
// the compute thread and writes the results. See lib/attacks.ts for the public API.
#include "binding/attack_options.h"
#include "binding/init.h"
#include "binding/model.h"
#include "binding/options.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "common/errors.h"

namespace fl {

// Reads the complete options object on the main thread. lib/options.ts declares every option
// (type, default, range) and each attack's capabilities (ATTACK_TABLE), validates against them and
// fills the defaults; here every key is required (binding/options.h).
AttackOptions parseAttackOptions(Napi::Value v) {
  OptionReader r(v, "attack");
  AttackOptions o;
  o.kind = r.string("kind");
  const std::string norm = r.string("norm");
  FL_CHECK(norm == "linf" || norm == "l2", ERR_ARG, "attack option 'norm': expected one of linf, l2, got '", norm, "'");
  o.norm = norm == "l2" ? Norm::L2 : Norm::Linf;
  o.epsilon = r.num("epsilon");
  o.stepSize = r.num("stepSize");
  o.steps = r.integer("steps");
  o.randomStart = r.flag("randomStart");
  o.restarts = r.integer("restarts");
  o.targeted = r.flag("targeted");
  o.targets = r.integer("targets");
  o.eotIter = r.integer("eotIter");
  if (r.has("init")) {
    FL_CHECK(isTensor(r.raw("init")), ERR_ARG, "attack init: expected a Tensor shaped like x");
    o.init = unwrapTensor(r.raw("init"), "attack(init)");
  }
  o.kappa = r.num("kappa");
  o.binarySteps = r.integer("binarySteps");
  o.learningRate = r.num("learningRate");
  o.initialConst = r.num("initialConst");
  o.confidence = r.num("confidence");
  o.channelsLast = r.flag("channelsLast");
  o.alphaMax = r.num("alphaMax");
  o.eta = r.num("eta");
  o.beta = r.num("beta");
  o.pInit = r.num("pInit");
  const int64_t seed = r.integer("seed");
  FL_CHECK(seed >= 0, ERR_ARG, "attack option 'seed': expected a non-negative integer, got ", seed);
  o.seed = static_cast<uint64_t>(seed);
  return o;
}

namespace {

// attack(model, x, y, opts, ctl?) -> Promise<{ xAdv: Tensor, loss: Float64Array, success: Uint8Array (0/1),
// norm: Float64Array (‖x_adv − x‖ in the attack's norm), cleanCorrect: Uint8Array (0/1, eval mode),
// queries?: Float64Array (square) }>; opts.target: Tensor [B] for targeted attacks
Napi::Value AttackJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "attack(model)");
    torch::Tensor x = unwrapTensor(info[1], "attack(x)");
    torch::Tensor y = unwrapTensor(info[2], "attack(y)");
    AttackOptions o = parseAttackOptions(info[3]);
    torch::Tensor target;
    if (o.targeted) {
      Napi::Value t = info[3].As<Napi::Object>().Get("target");
      FL_CHECK(isTensor(t), ERR_ARG, "a targeted attack needs opts.target: int64 labels [B]");
      target = unwrapTensor(t, "attack(target)");
    }
    return startOp(info.Env(), info[4], [m, x, y, target, o](OpContext& ctx) -> Finisher {
      AttackOutcome r = attackBatch(*m, x, y, target, o, &ctx);
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("xAdv", wrapTensor(env, r.xAdv));
        out.Set("loss", toFloat64Array(env, r.loss));
        out.Set("success", toTypedArray(env, r.success));
        out.Set("norm", toFloat64Array(env, r.norm));
        out.Set("cleanCorrect", toTypedArray(env, r.cleanCorrect));
        if (r.queries.defined()) out.Set("queries", toFloat64Array(env, r.queries));
        return out;
      };
    });
  });
}

// firstSuccessful(advs: Tensor[] (A × [B, ...]), successes: Uint8Array[] (A × [B], 1 = broken), ctl?)
// -> Promise<Tensor [B, ...]>: per sample, the example of the first attack that broke it, else the
// last attack's example (attacks.h firstSuccessful; lib/attacks.ts evaluate).
Napi::Value FirstSuccessfulJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info[0].IsArray() && info[1].IsArray(), ERR_ARG, "firstSuccessful(advs, successes): expected two arrays");
    Napi::Array aa = info[0].As<Napi::Array>(), sa = info[1].As<Napi::Array>();
    FL_CHECK(aa.Length() > 0 && aa.Length() == sa.Length(), ERR_ARG,
             "firstSuccessful: advs and successes must be non-empty and of equal length, got ", aa.Length(), " and ", sa.Length());
    std::vector<torch::Tensor> advs, succ;
    for (uint32_t a = 0; a < aa.Length(); ++a) {
      advs.push_back(unwrapTensor(aa.Get(a), "firstSuccessful(advs)"));
      Napi::Value v = sa.Get(a);
      FL_CHECK(v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array, ERR_ARG,
               "firstSuccessful(successes): element ", a, " is not a Uint8Array");
      Napi::Uint8Array f = v.As<Napi::Uint8Array>();
      succ.push_back(torch::from_blob(f.Data(), {static_cast<int64_t>(f.ElementLength())}, torch::kUInt8).clone());
    }
    return startOp(info.Env(), info[2], [advs, succ](OpContext&) -> Finisher {
      torch::Tensor out = firstSuccessful(advs, succ);
      return [out](Napi::Env env) -> Napi::Value { return wrapTensor(env, out); };
    });
  });
}

}  // namespace

void InitAttacks(Napi::Env env, Napi::Object exports) {
  exports.Set("attack", Napi::Function::New(env, AttackJs, "attack"));
  exports.Set("firstSuccessful", Napi::Function::New(env, FirstSuccessfulJs, "firstSuccessful"));
}

}  // namespace fl
