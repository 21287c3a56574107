// The JS class Model (a Classifier behind an ObjectWrap handle) and the model ops: createModel,
// loadTorchScript, evaluateBatch. See lib/model.ts for the public API.
#include "binding/model.h"
#include "binding/addon_data.h"
#include "binding/init.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "common/checks.h"
#include "common/errors.h"
#include "gradient.h"
#include "metrics.h"
#include "models/exported.h"

namespace fl {
namespace {

// What the JS thread may read about a model without touching it: a snapshot taken when the
// handle is made (the model is new then, no op holds it) and updated by the ops that change it
// (setTraining, to). The compute thread never reads or writes it.
struct ModelInfo {
  bool training = false;
  std::string kind, spec, device;
  int64_t parameters = 0;
  int64_t bytes = 0;  // parameters and buffers, as told to V8 (AdjustExternalMemory)
};

ModelInfo describe(Classifier& m) {
  ModelInfo i;
  i.training = m.isTraining();
  i.kind = m.kind();
  i.spec = m.specJson();
  i.device = deviceName(m.device());
  i.parameters = m.parameterCount();
  for (auto& [name, t] : m.namedState()) i.bytes += t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
  return i;
}

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Model",
                       {InstanceMethod<&ModelWrap::Forward>("forward"),
                        InstanceMethod<&ModelWrap::SetTraining>("setTraining"),
                        InstanceMethod<&ModelWrap::To>("to"),
                        InstanceMethod<&ModelWrap::ExportState>("exportState"),
                        InstanceMethod<&ModelWrap::State>("state"),
#ifdef FL_TEST_HOOKS
                        InstanceMethod<&ModelWrap::GradState>("gradState"),
#endif
                        InstanceMethod<&ModelWrap::Dispose>("dispose"),
                        InstanceAccessor<&ModelWrap::Training>("training"),
                        InstanceAccessor<&ModelWrap::Kind>("kind"),
                        InstanceAccessor<&ModelWrap::Spec>("spec"),
                        InstanceAccessor<&ModelWrap::Device>("device"),
                        InstanceAccessor<&ModelWrap::ParameterCount>("parameterCount"),
                        InstanceAccessor<&ModelWrap::GradientChoices>("gradientChoices"),
                        InstanceMethod<&ModelWrap::SetGradientChoice>("setGradientChoice"),
                        InstanceAccessor<&ModelWrap::Disposed>("disposed")});
  }
  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {}
  ~ModelWrap() override { release(); }

  ClassifierPtr model() const {
    FL_CHECK(m_ != nullptr, ERR_DISPOSED, "this Model was disposed; it can no longer be used");
    return m_;
  }
  // Main thread, on a model no op holds yet (just built or loaded)
  void attach(ClassifierPtr m) {
    release();
    info_ = std::make_shared<ModelInfo>(describe(*m));
    m_ = std::move(m);
    if (info_->bytes) Napi::MemoryManagement::AdjustExternalMemory(Env(), info_->bytes);
  }

 private:
  void release() {
    if (m_ && info_->bytes) Napi::MemoryManagement::AdjustExternalMemory(Env(), -info_->bytes);
    m_.reset();
  }
  const ModelInfo& info() const {
    model();
    return *info_;
  }

  // gradientChoices -> [{ key: number[], engine: 'linear' | 'autograd', linearMs, autogradMs }]:
  // the attacks' input gradient engine measured per input batch (key: its shape, then dtype and
  // device codes) for this model's architecture (gradient.h gradientChoices; its own lock, so safe
  // while an op runs)
  Napi::Value GradientChoices(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      Napi::Env env = info.Env();
      std::vector<GradientChoice> cs = gradientChoices(*model());
      Napi::Array out = Napi::Array::New(env, cs.size());
      for (size_t i = 0; i < cs.size(); ++i) {
        Napi::Object o = Napi::Object::New(env);
        Napi::Array key = Napi::Array::New(env, cs[i].key.size());
        for (size_t d = 0; d < cs[i].key.size(); ++d) key.Set(static_cast<uint32_t>(d), static_cast<double>(cs[i].key[d]));
        o.Set("key", key);
        o.Set("engine", cs[i].linear ? "linear" : "autograd");
        o.Set("linearMs", cs[i].linearMs);
        o.Set("autogradMs", cs[i].autogradMs);
        out.Set(static_cast<uint32_t>(i), o);
      }
      return out;
    });
  }

  // setGradientChoice({ key: number[], engine, linearMs, autogradMs }): a stored choice for this
  // model's architecture (gradient.h setGradientChoice)
  Napi::Value SetGradientChoice(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      FL_CHECK(info.Length() >= 1 && info[0].IsObject(), ERR_ARG, "setGradientChoice(choice): expected an object");
      Napi::Object o = info[0].As<Napi::Object>();
      FL_CHECK(o.Get("engine").IsString(), ERR_ARG, "setGradientChoice: engine 'linear' or 'autograd'");
      GradientChoice c;
      c.key = readShape(o.Get("key"), "setGradientChoice key");  // the shape, then dtype and device codes: all ≥ 0
      const std::string engine = o.Get("engine").As<Napi::String>().Utf8Value();
      FL_CHECK(engine == "linear" || engine == "autograd", ERR_ARG, "setGradientChoice: engine linear or autograd, got '", engine, "'");
      c.linear = engine == "linear";
      auto num = [&](const char* k) { return o.Get(k).IsNumber() ? o.Get(k).As<Napi::Number>().DoubleValue() : NAN; };
      c.linearMs = num("linearMs");
      c.autogradMs = num("autogradMs");
      setGradientChoice(*model(), c);
      return info.Env().Undefined();
    });
  }

  // forward(x: Tensor [B, C, H, W], ctl?) -> Promise<Tensor [B, K]> (eval mode is the caller's; no grad)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      ClassifierPtr m = model();
      torch::Tensor x = unwrapTensor(info[0], "forward(x)");
      return startOp(info.Env(), info[1], [m, x](OpContext&) -> Finisher {
        checkImages(x, "forward(x)");
        torch::NoGradGuard ng;
        torch::Tensor z = m->forward(x.to(m->device()));
        return [z](Napi::Env env) -> Napi::Value { return wrapTensor(env, z); };
      });
    });
  }
  // setTraining(on: boolean, ctl?) -> Promise<void>: an op like any other, so it waits for the
  // ops before it instead of racing them; `training` says the new mode at once (every op started
  // after this call sees it)
  Napi::Value SetTraining(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      ClassifierPtr m = model();
      FL_CHECK(info.Length() >= 1 && info[0].IsBoolean(), ERR_ARG, "setTraining(on): expected a boolean");
      bool on = info[0].As<Napi::Boolean>().Value();
      info_->training = on;
      return startOp(info.Env(), info[1], [m, on](OpContext&) -> Finisher {
        m->train(on);
        return nullptr;
      });
    });
  }
  // to(device: string, ctl?) -> Promise<void>: moves parameters and buffers; `device` says the
  // new device once the move is done
  Napi::Value To(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      ClassifierPtr m = model();
      FL_CHECK(info.Length() >= 1 && info[0].IsString(), ERR_ARG, "to(device): expected 'cpu', 'cuda' or 'cuda:N'");
      torch::Device d = parseDevice(info[0].As<Napi::String>().Utf8Value());
      std::shared_ptr<ModelInfo> cache = info_;
      return startOp(info.Env(), info[1], [m, d, cache](OpContext&) -> Finisher {
        m->to(d);
        std::string name = deviceName(m->device());
        return [cache, name](Napi::Env env) -> Napi::Value {
          cache->device = name;
          return env.Undefined();
        };
      });
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
      });
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
      });
    });
  }
  // (test build only: CMakeLists.txt's FL_TEST_HOOKS)
  // gradState(ctl?) -> Promise<{ training, parameters, requiresGrad, withGrad }>: how many
  // parameters require grad and how many hold a defined .grad (tests check that algorithms leave
  // no trace), read on the compute thread after the ops before it
  Napi::Value GradState(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      ClassifierPtr m = model();
      return startOp(info.Env(), info[0], [m](OpContext&) -> Finisher {
        bool training = m->isTraining();
        double n = 0, req = 0, withGrad = 0;
        for (auto& p : m->parameters()) {
          ++n;
          if (p.requires_grad()) ++req;
          if (p.grad().defined()) ++withGrad;
        }
        return [training, n, req, withGrad](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("training", training);
          o.Set("parameters", n);
          o.Set("requiresGrad", req);
          o.Set("withGrad", withGrad);
          return o;
        };
      });
    });
  }
  void Dispose(const Napi::CallbackInfo&) { release(); }
  Napi::Value Training(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value { return Napi::Boolean::New(info.Env(), this->info().training); });
  }
  Napi::Value Kind(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), this->info().kind); });
  }
  Napi::Value Spec(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), this->info().spec); });
  }
  Napi::Value Device(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), this->info().device); });
  }
  Napi::Value ParameterCount(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      return Napi::Number::New(info.Env(), static_cast<double>(this->info().parameters));
    });
  }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), m_ == nullptr); }

  ClassifierPtr m_;
  std::shared_ptr<ModelInfo> info_;
};

// A model built synchronously from spec JSON text by `build` (what: the function's name for errors),
// moved to the device named by info[1] when given
Napi::Value modelFromSpec(const Napi::CallbackInfo& info, const char* what, ClassifierPtr (*build)(const std::string&)) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info.Length() >= 1 && info[0].IsString(), ERR_ARG, what, "(spec): expected the spec as JSON text");
    ClassifierPtr m = build(info[0].As<Napi::String>().Utf8Value());
    if (info.Length() >= 2 && info[1].IsString()) {
      torch::Device d = parseDevice(info[1].As<Napi::String>().Utf8Value());
      if (!d.is_cpu()) m->to(d);
    }
    return wrapModel(info.Env(), m);
  });
}

// createModel(specJson: string, device: string) -> Model (sync: building a new model is fast and
// touches nothing an op holds)
Napi::Value CreateModel(const Napi::CallbackInfo& info) { return modelFromSpec(info, "createModel", createBuiltin); }

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

// createExported(specJson, device) -> Model: an exported program (models/exported.h) with zero
// weights; lib/science/exported.ts then loads the archive's weights through loadWeights
Napi::Value CreateExported(const Napi::CallbackInfo& info) { return modelFromSpec(info, "createExported", createExported); }

// evaluateBatch(model, x, y, ctl?) -> Promise<{ correct, ceSum, count }> in eval mode, no grad
// (metrics.h evaluateBatch). ceSum: Σ_i −log softmax(z_i)_{y_i} in nats (float64 accumulation).
Napi::Value EvaluateBatchJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "evaluateBatch(model)");
    torch::Tensor x = unwrapTensor(info[1], "evaluateBatch(x)");
    torch::Tensor y = unwrapTensor(info[2], "evaluateBatch(y)");
    return startOp(info.Env(), info[3], [m, x, y](OpContext&) -> Finisher {
      BatchScore s = evaluateBatch(*m, x, y);
      return [s](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("correct", Napi::Number::New(env, double(s.correct)));
        o.Set("ceSum", Napi::Number::New(env, s.ceSum));
        o.Set("count", Napi::Number::New(env, double(s.count)));
        return o;
      };
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
  ModelWrap::Unwrap(o)->attach(std::move(m));
  return o;
}

void InitModels(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = ModelWrap::Define(env);
  addonData(env).model = Napi::Persistent(ctor);
  exports.Set("Model", ctor);
  exports.Set("createModel", Napi::Function::New(env, CreateModel, "createModel"));
  exports.Set("loadTorchScript", Napi::Function::New(env, LoadTorchScript, "loadTorchScript"));
  exports.Set("createExported", Napi::Function::New(env, CreateExported, "createExported"));
  exports.Set("evaluateBatch", Napi::Function::New(env, EvaluateBatchJs, "evaluateBatch"));
}

}  // namespace fl
