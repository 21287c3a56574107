// N-API glue of training (train.h): the optimizer handle, the training step, the training state
// and the global seed. See lib/train.ts for the loop, schedules and tracking.
#include "binding/init.h"
#include "binding/model.h"
#include "binding/options.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "common/errors.h"
#include <ATen/CPUGeneratorImpl.h>
#include "train.h"

namespace fl {

namespace {

// The optimizer handle: a JS External owning the optimizer and the model it trains
constexpr uint32_t kOptMagic = 0x0F15E0F7;
struct OptBox {
  uint32_t magic = kOptMagic;
  ClassifierPtr model;
  std::unique_ptr<torch::optim::Optimizer> opt;
  OptimizerSpec spec;
};
using OptPtr = std::shared_ptr<OptBox>;

OptPtr unwrapOpt(Napi::Value v) {
  FL_CHECK(v.IsExternal(), ERR_ARG, "expected an optimizer made by createOptimizer()");
  auto* p = v.As<Napi::External<OptPtr>>().Data();
  FL_CHECK(p && (*p)->magic == kOptMagic, ERR_ARG, "expected an optimizer made by createOptimizer()");
  return *p;
}

// trainStep's options, complete (lib/science/options.ts TRAIN_STEP_OPTIONS declares, validates and
// fills them; the method's own λ default is filled there too)
StepOptions readStepOptions(OptionReader& j) {
  StepOptions o;
  o.method = j.string("method");
  bool known = false;
  for (const char* k : {"natural", "pgd-at", "trades", "mart", "fire", "jacobian", "fisher-trace", "fisher-lambda"}) {
    known = known || o.method == k;
  }
  FL_CHECK(known, ERR_ARG, "unknown training method '", o.method,
           "'; expected natural, pgd-at, trades, mart, fire, jacobian, fisher-trace or fisher-lambda");
  o.lr = j.num("lr");
  o.beta = j.num("beta");
  o.attack.epsilon = j.num("epsilon");
  o.attack.stepSize = j.num("stepSize");
  o.attack.steps = j.integer("steps");
  std::string norm = j.string("norm");
  FL_CHECK(norm == "linf" || norm == "l2", ERR_ARG, "norm must be 'linf' or 'l2', got '", norm, "'");
  o.attack.norm = norm == "l2" ? Norm::L2 : Norm::Linf;
  o.attack.randomStart = j.flag("randomStart");
  o.cropPad = j.integer("cropPad");
  o.flip = j.flag("flip");
  o.seed = static_cast<uint64_t>(j.integer("seed"));
  o.channelsLast = j.flag("channelsLast");
  o.lambda = j.num("lambda");
  o.samples = j.integer("samples");
  o.exact = j.flag("exact");
  o.powerIters = j.integer("powerIters");
  return o;
}

// createOptimizer(model, { type, lr, momentum, nesterov, weightDecay, beta1, beta2, eps }, ctl?)
// -> Promise<External>: an op, since it reads the model's parameters (after the ops before it)
Napi::Value CreateOptimizer(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "createOptimizer(model)");
    // complete options (lib/options.ts OPTIMIZER_OPTIONS declares, validates and fills them)
    OptionReader j(info[1], "createOptimizer");
    OptimizerSpec s;
    s.type = j.string("type");
    s.lr = j.num("lr");
    s.momentum = j.num("momentum");
    s.nesterov = j.flag("nesterov");
    s.weightDecay = j.num("weightDecay");
    s.beta1 = j.num("beta1");
    s.beta2 = j.num("beta2");
    s.eps = j.num("eps");
    return startOp(info.Env(), info[2], [m, s](OpContext&) -> Finisher {
      auto box = std::make_shared<OptBox>();
      box->model = m;
      box->spec = s;
      box->opt = makeOptimizer(*m, s);
      return [box](Napi::Env env) -> Napi::Value {
        return Napi::External<OptPtr>::New(env, new OptPtr(box), [](Napi::Env, OptPtr* p) { delete p; });
      };
    });
  });
}

// trainStep(model, opt, x, y, { method, lr, epsilon, stepSize, steps, norm, randomStart, beta,
//   cropPad, flip, seed }, ctl?) -> Promise<{ loss, lossNatural, lossRobust, correct, batch }>
Napi::Value TrainStepJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "trainStep(model)");
    OptPtr box = unwrapOpt(info[1]);
    FL_CHECK(box->model == m, ERR_ARG, "trainStep: the optimizer was made for another model");
    torch::Tensor x = unwrapTensor(info[2], "trainStep(x)");
    torch::Tensor y = unwrapTensor(info[3], "trainStep(y)");
    // complete options (lib/options.ts TRAIN_STEP_OPTIONS declares, validates and fills them)
    OptionReader j(info[4], "trainStep");
    StepOptions o;
    o = readStepOptions(j);
    return startOp(info.Env(), info[5], [m, box, x, y, o](OpContext& ctx) -> Finisher {
      StepResult r = trainStep(*m, *box->opt, x, y, o, &ctx);
      return [r](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("loss", r.loss);
        out.Set("lossNatural", r.lossNatural);
        out.Set("lossRobust", r.lossRobust);
        out.Set("correct", static_cast<double>(r.correct));
        out.Set("batch", static_cast<double>(r.batch));
        return out;
      };
    });
  });
}

#ifdef FL_TEST_HOOKS
// (test build only: CMakeLists.txt's FL_TEST_HOOKS)
// __trainLoss(model, x, y, options, { xAdv?, proj?, labels? }, ctl?) -> Promise<{ loss, lossNatural,
//   lossRobust, grad }>: methodLoss (train.h) on the batch with the given draws (the rest from the
// options' seed), no augmentation and no optimizer step; grad: the loss's parameter gradient,
// every parameter flattened and concatenated in parameters() order, as a float64 Tensor. The
// model's .grad are cleared afterwards.
Napi::Value TrainLossJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    ClassifierPtr m = unwrapModel(info[0], "__trainLoss(model)");
    torch::Tensor x = unwrapTensor(info[1], "__trainLoss(x)");
    torch::Tensor y = unwrapTensor(info[2], "__trainLoss(y)");
    OptionReader j(info[3], "__trainLoss");
    StepOptions o = readStepOptions(j);
    LossDraws d;
    FL_CHECK(info[4].IsObject(), ERR_ARG, "__trainLoss(draws): expected an object");
    Napi::Object dj = info[4].As<Napi::Object>();
    if (dj.Has("xAdv")) d.xAdv = unwrapTensor(dj.Get("xAdv"), "__trainLoss(xAdv)");
    if (dj.Has("proj")) d.proj = unwrapTensor(dj.Get("proj"), "__trainLoss(proj)");
    if (dj.Has("labels")) d.labels = unwrapTensor(dj.Get("labels"), "__trainLoss(labels)");
    return startOp(info.Env(), info[5], [m, x, y, o, d](OpContext& ctx) -> Finisher {
      at::Generator gen = at::detail::createCPUGenerator(o.seed);
      torch::Tensor xd = x.to(m->device()), yd = y.to(m->device());
      ModeGuard mode(*m, /*train=*/true, /*paramsRequireGrad=*/true);
      MethodLoss l = methodLoss(*m, xd, yd, o, gen, d, &ctx);
      for (auto& p : m->parameters()) p.mutable_grad() = torch::Tensor();
      l.loss.backward();
      std::vector<torch::Tensor> gs;
      for (auto& p : m->parameters()) {
        gs.push_back((p.grad().defined() ? p.grad() : torch::zeros_like(p)).detach().flatten().to(torch::kCPU, torch::kFloat64));
        p.mutable_grad() = torch::Tensor();
      }
      torch::Tensor g = torch::cat(gs);
      double loss = l.loss.item<double>(), nat = l.natural, rob = l.robust;
      return [g, loss, nat, rob](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("loss", loss);
        out.Set("lossNatural", nat);
        out.Set("lossRobust", rob);
        out.Set("grad", wrapTensor(env, g));
        return out;
      };
    });
  });
}
#endif  // FL_TEST_HOOKS

// saveTrainState(path, model, opt, metaJson, ctl?) -> Promise<void> (train.h saveTrainState)
Napi::Value SaveTrainState(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info[0].IsString(), ERR_ARG, "saveTrainState(path): expected a path");
    std::string path = info[0].As<Napi::String>().Utf8Value();
    ClassifierPtr m = unwrapModel(info[1], "saveTrainState(model)");
    OptPtr box = unwrapOpt(info[2]);
    std::string meta = info[3].IsString() ? info[3].As<Napi::String>().Utf8Value() : "{}";
    return startOp(info.Env(), info[4], [path, m, box, meta](OpContext&) -> Finisher {
      saveTrainState(path, *m, *box->opt, meta);
      return nullptr;
    });
  });
}

// loadTrainState(path, model, opt, ctl?) -> Promise<string meta> (train.h loadTrainState)
Napi::Value LoadTrainState(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info[0].IsString(), ERR_ARG, "loadTrainState(path): expected a path");
    std::string path = info[0].As<Napi::String>().Utf8Value();
    ClassifierPtr m = unwrapModel(info[1], "loadTrainState(model)");
    OptPtr box = unwrapOpt(info[2]);
    return startOp(info.Env(), info[3], [path, m, box](OpContext&) -> Finisher {
      std::string metaText = loadTrainState(path, *m, *box->opt);
      return [metaText](Napi::Env env) -> Napi::Value { return Napi::String::New(env, metaText); };
    });
  });
}

// manualSeed(seed): seeds LibTorch's default CPU generator (weight init of Model.create, dropout
// outside trainStep)
void ManualSeed(const Napi::CallbackInfo& info) {
  guard(info.Env(), [&]() {
    FL_CHECK(info[0].IsNumber() && info[0].As<Napi::Number>().DoubleValue() >= 0, ERR_ARG, "manualSeed(seed): expected an integer >= 0");
    manualSeed(static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue()));
  });
}

}  // namespace

void InitTrain(Napi::Env env, Napi::Object exports) {
  exports.Set("createOptimizer", Napi::Function::New(env, CreateOptimizer, "createOptimizer"));
  exports.Set("manualSeed", Napi::Function::New(env, ManualSeed, "manualSeed"));
  exports.Set("trainStep", Napi::Function::New(env, TrainStepJs, "trainStep"));
  exports.Set("saveTrainState", Napi::Function::New(env, SaveTrainState, "saveTrainState"));
  exports.Set("loadTrainState", Napi::Function::New(env, LoadTrainState, "loadTrainState"));
#ifdef FL_TEST_HOOKS
  exports.Set("__trainLoss", Napi::Function::New(env, TrainLossJs, "__trainLoss"));
#endif
}

}  // namespace fl
