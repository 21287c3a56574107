#include "models/model_wrap.h"
#include "common/addon_data.h"
#include "common/checks.h"
#include "common/errors.h"
#include "common/tensor.h"
#include "common/worker.h"

namespace fl {
namespace {

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Model",
                       {InstanceMethod<&ModelWrap::Forward>("forward"),
                        InstanceMethod<&ModelWrap::SetTraining>("setTraining"),
                        InstanceMethod<&ModelWrap::To>("to"),
                        InstanceMethod<&ModelWrap::ExportState>("exportState"),
                        InstanceMethod<&ModelWrap::State>("state"),
                        InstanceMethod<&ModelWrap::Dispose>("dispose"),
                        InstanceAccessor<&ModelWrap::Training>("training"),
                        InstanceAccessor<&ModelWrap::Kind>("kind"),
                        InstanceAccessor<&ModelWrap::Spec>("spec"),
                        InstanceAccessor<&ModelWrap::Device>("device"),
                        InstanceAccessor<&ModelWrap::ParameterCount>("parameterCount"),
                        InstanceAccessor<&ModelWrap::Disposed>("disposed")});
  }
  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {}

  ClassifierPtr model() const {
    FL_CHECK(m_ != nullptr, ERR_DISPOSED, "this Model was disposed; it can no longer be used");
    return m_;
  }
  ClassifierPtr m_;

 private:
  // forward(x: Tensor [B, C, H, W], ctl?) -> Promise<Tensor [B, K]> (eval mode, no grad)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      ClassifierPtr m = model();
      torch::Tensor x = unwrapTensor(info[0], "forward(x)");
      return startOp(info.Env(), info[1], [m, x](OpContext&) -> Finisher {
        checkImages(x, "forward(x)");
        torch::NoGradGuard ng;
        torch::Tensor z = m->forward(x.to(m->device()));
        return [z](Napi::Env env) -> Napi::Value { return wrapTensor(env, z); };
      }, {m->lock});
    });
  }
  void SetTraining(const Napi::CallbackInfo& info) {
    guard(info.Env(), [&]() {
      ClassifierPtr m = model();
      std::lock_guard<std::mutex> g(*m->lock);
      m->train(info[0].ToBoolean().Value());
    });
  }
  // to(device: string) -> Promise<void>: moves parameters and buffers
  Napi::Value To(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      ClassifierPtr m = model();
      FL_CHECK(info.Length() >= 1 && info[0].IsString(), ERR_ARG, "to(device): expected 'cpu', 'cuda' or 'cuda:N'");
      torch::Device d = parseDevice(info[0].As<Napi::String>().Utf8Value());
      return startOp(info.Env(), info[1], [m, d](OpContext&) -> Finisher {
        m->to(d);
        return nullptr;
      }, {m->lock});
    });
  }
  Napi::Value ExportState(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      ClassifierPtr m = model();
      FL_CHECK(info.Length() >= 1 && info[0].IsString(), ERR_ARG, "exportState(path): expected a path");
      std::string path = info[0].As<Napi::String>().Utf8Value();
      return startOp(info.Env(), info[1], [m, path](OpContext&) -> Finisher {
        m->exportState(path);
        return nullptr;
      }, {m->lock});
    });
  }
  // state(ctl?) -> Promise<{ [name]: Tensor }>: copies of the named parameters and buffers
  Napi::Value State(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      ClassifierPtr m = model();
      return startOp(info.Env(), info[0], [m](OpContext&) -> Finisher {
        std::vector<std::pair<std::string, torch::Tensor>> st;
        for (auto& [name, t] : m->namedState()) st.emplace_back(name, t.detach().clone());
        return [st](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          for (auto& [name, t] : st) o.Set(name, wrapTensor(env, t));
          return o;
        };
      }, {m->lock});
    });
  }
  void Dispose(const Napi::CallbackInfo&) { m_.reset(); }
  Napi::Value Training(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value { return Napi::Boolean::New(info.Env(), model()->isTraining()); });
  }
  Napi::Value Kind(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), model()->kind()); });
  }
  Napi::Value Spec(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), model()->specJson()); });
  }
  Napi::Value Device(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), deviceName(model()->device())); });
  }
  Napi::Value ParameterCount(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      return Napi::Number::New(info.Env(), static_cast<double>(model()->parameterCount()));
    });
  }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), m_ == nullptr); }
};

// createModel(specJson: string, device: string) -> Model (sync: building is fast)
Napi::Value CreateModel(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info.Length() >= 1 && info[0].IsString(), ERR_ARG, "createModel(spec): expected the spec as JSON text");
    ClassifierPtr m = createBuiltin(info[0].As<Napi::String>().Utf8Value());
    if (info.Length() >= 2 && info[1].IsString()) {
      torch::Device d = parseDevice(info[1].As<Napi::String>().Utf8Value());
      if (!d.is_cpu()) m->to(d);
    }
    return wrapModel(info.Env(), m);
  });
}

// loadTorchScript(path, device, ctl?) -> Promise<Model>
Napi::Value LoadTorchScript(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info.Length() >= 1 && info[0].IsString(), ERR_ARG, "loadTorchScript(path): expected a path");
    std::string path = info[0].As<Napi::String>().Utf8Value();
    torch::Device d = parseDevice(info.Length() >= 2 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "cpu");
    return startOp(info.Env(), info[2], [path, d](OpContext&) -> Finisher {
      ClassifierPtr m = loadTorchScript(path, d);
      return [m](Napi::Env env) -> Napi::Value { return wrapModel(env, m); };
    });
  });
}

}  // namespace

ClassifierPtr unwrapModel(Napi::Value v, const char* what) {
  FL_CHECK(v.IsObject() && v.As<Napi::Object>().InstanceOf(addonData(v.Env()).model.Value()), ERR_ARG, what,
           ": expected a Model");
  return ModelWrap::Unwrap(v.As<Napi::Object>())->model();
}

Napi::Object wrapModel(Napi::Env env, ClassifierPtr m) {
  Napi::Object o = addonData(env).model.New({});
  ModelWrap::Unwrap(o)->m_ = std::move(m);
  return o;
}

void InitModels(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = ModelWrap::Define(env);
  addonData(env).model = Napi::Persistent(ctor);
  exports.Set("Model", ctor);
  exports.Set("createModel", Napi::Function::New(env, CreateModel, "createModel"));
  exports.Set("loadTorchScript", Napi::Function::New(env, LoadTorchScript, "loadTorchScript"));
}

}  // namespace fl
