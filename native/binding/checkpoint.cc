// N-API glue of checkpoints (models/checkpoint.h): save, load and load-state ops. See lib/model.ts
// for the public API (Model.save, Model.loadCheckpoint, model.loadState).
#include "binding/init.h"
#include "binding/model.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "common/errors.h"
#include "models/checkpoint.h"

namespace fl {

namespace {

std::string pathArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  FL_CHECK(info.Length() > i && info[i].IsString(), ERR_ARG, what, ": expected a path (string)");
  return info[i].As<Napi::String>().Utf8Value();
}

// saveCheckpoint(model, path, metaJson, ctl?) -> Promise<void>
Napi::Value SaveCheckpointJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "saveCheckpoint(model)");
    std::string path = pathArg(info, 1, "saveCheckpoint(path)");
    std::string meta = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "{}";
    return startOp(info.Env(), info[3], [m, path, meta](OpContext&) -> Finisher {
      saveCheckpoint(path, *m, meta, {});
      return nullptr;
    });
  });
}

// loadCheckpoint(path, device, restoreRng, ctl?) -> Promise<{ model, meta, hasOptimizer, version }>
Napi::Value LoadCheckpointJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    std::string path = pathArg(info, 0, "loadCheckpoint(path)");
    torch::Device d = parseDevice(info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "cpu");
    bool restore = info.Length() > 2 && info[2].ToBoolean().Value();
    return startOp(info.Env(), info[3], [path, d, restore](OpContext&) -> Finisher {
      LoadedCheckpoint c = loadCheckpoint(path, d, restore);
      return [c](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("model", wrapModel(env, c.model));
        o.Set("meta", Napi::String::New(env, c.metaJson));
        o.Set("hasOptimizer", Napi::Boolean::New(env, c.hasOptimizer));
        o.Set("version", Napi::Number::New(env, c.version));
        return o;
      };
    });
  });
}

// loadCheckpointState(model, path, ctl?) -> Promise<void>
Napi::Value LoadCheckpointStateJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "loadState(model)");
    std::string path = pathArg(info, 1, "loadState(path)");
    return startOp(info.Env(), info[2], [m, path](OpContext&) -> Finisher {
      loadCheckpointState(path, *m);
      return nullptr;
    });
  });
}

#ifdef FL_TEST_HOOKS
// (test build only: CMakeLists.txt's FL_TEST_HOOKS)
// __checkpointOptimizerSelfTest(model, path, ctl?) -> Promise<{ hasOptimizer, steps, maxDiff }>
// (models/checkpoint.h checkpointOptimizerSelfTest)
Napi::Value OptimizerSelfTestJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "__checkpointOptimizerSelfTest(model)");
    std::string path = pathArg(info, 1, "__checkpointOptimizerSelfTest(path)");
    return startOp(info.Env(), info[2], [m, path](OpContext&) -> Finisher {
      OptimizerSelfTest r = checkpointOptimizerSelfTest(*m, path);
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("hasOptimizer", Napi::Boolean::New(env, r.hasOptimizer));
        o.Set("steps", Napi::Number::New(env, double(r.steps)));
        o.Set("maxDiff", Napi::Number::New(env, r.maxDiff));
        return o;
      };
    });
  });
}
#endif  // FL_TEST_HOOKS

}  // namespace

void InitCheckpoint(Napi::Env env, Napi::Object exports) {
  exports.Set("saveCheckpoint", Napi::Function::New(env, SaveCheckpointJs, "saveCheckpoint"));
  exports.Set("loadCheckpoint", Napi::Function::New(env, LoadCheckpointJs, "loadCheckpoint"));
  exports.Set("loadCheckpointState", Napi::Function::New(env, LoadCheckpointStateJs, "loadCheckpointState"));
#ifdef FL_TEST_HOOKS
  exports.Set("__checkpointOptimizerSelfTest", Napi::Function::New(env, OptimizerSelfTestJs, "__checkpointOptimizerSelfTest"));
#endif
}

}  // namespace fl
