// N-API glue of the AutoAttack cascade (autoattack.h): reads the stages, runs autoAttack on the
// compute thread and writes the result. See lib/autoattack.ts for the public API.
#include "autoattack.h"
#include "binding/attack_options.h"
#include "binding/init.h"
#include "binding/model.h"
#include "binding/options.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "common/errors.h"

namespace fl {
namespace {

// autoAttack(model, x, y, { stages: [attack options], checks: bool }, ctl?) ->
// Promise<{ xAdv: Tensor, brokenBy: Float64Array [B] (stage index; −1 robust; −2 misclassified
// clean), norm: Float64Array [B] (‖x_adv − x‖), stageSeconds: Float64Array [stages], checks }>
Napi::Value AutoAttackJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "autoAttack(model)");
    torch::Tensor x = unwrapTensor(info[1], "autoAttack(x)");
    torch::Tensor y = unwrapTensor(info[2], "autoAttack(y)");
    FL_CHECK(info[3].IsObject(), ERR_ARG, "autoAttack: expected an options object");
    Napi::Object j = info[3].As<Napi::Object>();
    FL_CHECK(j.Get("stages").IsArray(), ERR_ARG, "autoAttack: `stages` must be an array of attack options");
    Napi::Array arr = j.Get("stages").As<Napi::Array>();
    FL_CHECK(arr.Length() >= 1, ERR_ARG, "autoAttack: at least one stage");
    std::vector<AttackOptions> stages;
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      stages.push_back(parseAttackOptions(arr.Get(i)));
      checkStage(stages, i);
    }
    const bool checks = OptionReader(j, "autoAttack").flag("checks");
    return startOp(info.Env(), info[4], [m, x, y, stages, checks](OpContext& ctx) -> Finisher {
      AutoAttackResult r = autoAttack(*m, x, y, stages, checks, &ctx);
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("xAdv", wrapTensor(env, r.xAdv));
        out.Set("brokenBy", toFloat64Array(env, r.brokenBy));
        out.Set("norm", toFloat64Array(env, r.norm));
        out.Set("stageSeconds", toFloat64Array(env, r.stageSeconds));
        Napi::Object c = Napi::Object::New(env);
        c.Set("classes", r.checks.classes);
        c.Set("probabilityRows", r.checks.probabilityRows);
        c.Set("zeroGradient", r.checks.zeroGradient);
        c.Set("nonFiniteGradient", r.checks.nonFiniteGradient);
        c.Set("forwardDifference", r.checks.forwardDifference);
        out.Set("checks", c);
        return out;
      };
    });
  });
}

}  // namespace

void InitAutoAttack(Napi::Env env, Napi::Object exports) {
  exports.Set("autoAttack", Napi::Function::New(env, AutoAttackJs, "autoAttack"));
}

}  // namespace fl
