// N-API glue of weights files (models/weights.h): stateInfo and loadWeights ops. See
// lib/science/weights/apply.ts for the TypeScript side (model.loadWeights).
#include <nlohmann/json.hpp>
#include "binding/init.h"
#include "binding/model.h"
#include "binding/worker.h"
#include "common/errors.h"
#include "models/weights.h"

namespace fl {

namespace {

// stateInfo(model, ctl?) -> Promise<{ name, shape, dtype }[]>: the model's parameters and buffers
Napi::Value StateInfoJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "stateInfo(model)");
    return startOp(info.Env(), info[1], [m](OpContext&) -> Finisher {
      auto entries = std::make_shared<std::vector<StateEntry>>(stateEntries(*m));
      return [entries](Napi::Env env) -> Napi::Value {
        Napi::Array out = Napi::Array::New(env, entries->size());
        for (size_t i = 0; i < entries->size(); ++i) {
          const StateEntry& e = (*entries)[i];
          Napi::Object o = Napi::Object::New(env);
          o.Set("name", e.name);
          Napi::Array shape = Napi::Array::New(env, e.shape.size());
          for (size_t d = 0; d < e.shape.size(); ++d) shape.Set(uint32_t(d), Napi::Number::New(env, double(e.shape[d])));
          o.Set("shape", shape);
          o.Set("dtype", e.dtype);
          out.Set(uint32_t(i), o);
        }
        return out;
      };
    });
  });
}

// The sources' JSON: [{ target, dtype, shape, strides, offset, byteStart, byteLength }]
std::vector<WeightSource> parseSources(const std::string& text) {
  using json = nlohmann::json;
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    throw FlError(ERR_ARG, str("loadWeights(sources): not JSON: ", e.what()));
  }
  FL_CHECK(j.is_array(), ERR_ARG, "loadWeights(sources): expected an array");
  std::vector<WeightSource> out;
  for (const json& s : j) {
    try {
      WeightSource w;
      w.target = s.at("target").get<std::string>();
      w.dtype = s.at("dtype").get<std::string>();
      w.shape = s.at("shape").get<std::vector<int64_t>>();
      w.strides = s.at("strides").get<std::vector<int64_t>>();
      w.offset = s.at("offset").get<int64_t>();
      w.byteStart = s.at("byteStart").get<int64_t>();
      w.byteLength = s.at("byteLength").get<int64_t>();
      out.push_back(std::move(w));
    } catch (const json::exception& e) {
      throw FlError(ERR_ARG, str("loadWeights(sources): a malformed source: ", e.what()));
    }
  }
  return out;
}

// loadWeights(model, path, sourcesJson, ctl?) -> Promise<void>
Napi::Value LoadWeightsJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "loadWeights(model)");
    FL_CHECK(info.Length() > 2 && info[1].IsString() && info[2].IsString(), ERR_ARG, "loadWeights(model, path, sources): path and sources must be strings");
    std::string path = info[1].As<Napi::String>().Utf8Value();
    auto sources = std::make_shared<std::vector<WeightSource>>(parseSources(info[2].As<Napi::String>().Utf8Value()));
    return startOp(info.Env(), info[3], [m, path, sources](OpContext&) -> Finisher {
      loadWeights(*m, path, *sources);
      return nullptr;
    });
  });
}

}  // namespace

void InitWeights(Napi::Env env, Napi::Object exports) {
  exports.Set("stateInfo", Napi::Function::New(env, StateInfoJs, "stateInfo"));
  exports.Set("loadWeights", Napi::Function::New(env, LoadWeightsJs, "loadWeights"));
}

}  // namespace fl
