// train: one native op per batch step (natural, PGD-AT, TRADES), optimizers, and the training
// state file (weights + optimizer state + meta) used for resumable checkpoints. See lib/train.ts.
#include "train.h"
#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include "binding/init.h"
#include "common/checks.h"
#include "common/errors.h"
#include "binding/options.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "data.h"
#include "fisher.h"
#include "metrics.h"
#include "models/linear_tape.h"
#include "models/checkpoint.h"
#include "binding/model.h"

namespace fl {

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(Classifier& m, const OptimizerSpec& s) {
  std::vector<torch::Tensor> params;
  for (auto& p : m.parameters()) params.push_back(p);
  FL_CHECK(!params.empty(), ERR_ARG, "the model has no parameters to train");
  if (s.type == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(s.lr).momentum(s.momentum).nesterov(s.nesterov).weight_decay(s.weightDecay));
  }
  if (s.type == "adam") {
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(s.lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(s.weightDecay));
  }
  if (s.type == "adamw") {
    return std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(s.lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(s.weightDecay));
  }
  throw FlError(ERR_ARG, str("unknown optimizer '", s.type, "'; expected sgd, adam or adamw"));
}

void setLearningRate(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

StepResult trainStep(Classifier& m, torch::optim::Optimizer& opt, const torch::Tensor& x0, const torch::Tensor& y,
                     const StepOptions& o, const OpContext* ctx) {
  // The step's randomness, all from its seed, none from LibTorch's process-wide generator: the
  // crops and flips are augment(x, seed) (data.h: the same crops as Dataset.augmentedBatches and
  // augment() give for that seed); the attack's random start and built-in models' dropout masks
  // draw from one generator seeded by it. A resumed run therefore repeats an uninterrupted one.
  torch::Tensor x = (o.cropPad > 0 || o.flip) ? augment(x0, o.seed, o.cropPad, o.flip) : x0;
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  DropoutGenerator dropoutGen(gen);
  LayoutGuard layout(m, o.channelsLast);
  if (o.channelsLast && x.dim() == 4) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  if (o.lr >= 0) setLearningRate(opt, o.lr);
  StepResult r;
  r.batch = x.size(0);
  torch::Tensor xAdv;
  if (o.method == "pgd-at") {
    AttackOptions a = o.attack;
    a.kind = "pgd";
    xAdv = pgdAttack(m, x, y, a, gen, ctx);
  } else if (o.method == "trades") {
    xAdv = klAttack(m, x, o.attack, gen, ctx, nullptr);
  } else {
    FL_CHECK(o.method == "natural", ERR_ARG, "unknown training method '", o.method, "'; expected natural, pgd-at or trades");
  }
  if (ctx) ctx->checkAbort();
  ModeGuard mode(m, /*train=*/true, /*paramsRequireGrad=*/true);
  torch::AutoGradMode gradOn(true);
  opt.zero_grad();
  torch::Tensor loss, z;
  if (o.method == "natural") {
    z = m.forward(x);
    loss = torch::nn::functional::cross_entropy(z, y);
    r.lossNatural = loss.item<double>();
  } else if (o.method == "pgd-at") {
    z = m.forward(xAdv);
    loss = torch::nn::functional::cross_entropy(z, y);
    r.lossNatural = r.lossRobust = loss.item<double>();
  } else {
    // TRADES: CE(f(x), y) + β · (1/B) Σ KL(p(x) ‖ p(x')), gradients through both arguments
    z = m.forward(x);
    torch::Tensor zAdv = m.forward(xAdv);
    torch::Tensor ce = torch::nn::functional::cross_entropy(z, y);
    torch::Tensor kl = klRows(torch::log_softmax(z, 1), torch::log_softmax(zAdv, 1)).sum() / static_cast<double>(r.batch);
    loss = ce + o.beta * kl;
    r.lossNatural = ce.item<double>();
    r.lossRobust = kl.item<double>();
  }
  loss.backward();
  opt.step();
  r.loss = loss.item<double>();
  r.correct = z.detach().argmax(1).eq(y).sum().item<int64_t>();
  // no .grad left between steps: the model looks the same to other algorithms before and after
  for (auto& p : m.parameters()) {
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
  }
  return r;
}

namespace {

// ---------- optimizer handle: a JS External owning the optimizer and the model it trains ----------
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
    o.method = j.string("method");
    FL_CHECK(o.method == "natural" || o.method == "pgd-at" || o.method == "trades", ERR_ARG, "unknown training method '",
             o.method, "'; expected natural, pgd-at or trades");
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
    return startOp(info.Env(), info[5], [m, box, x, y, o](OpContext& ctx) -> Finisher {
      checkImages(x, "trainStep(x)");
      checkLabels(y, x.size(0), 0, "trainStep(y)");
      torch::Device dev = m->device();
      StepResult r = trainStep(*m, *box->opt, x.to(dev), y.to(dev), o, &ctx);
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

// saveTrainState(path, model, opt, metaJson, ctl?) -> Promise<void>: a FisherLens checkpoint
// (models/checkpoint.h: weights, spec, meta, CPU generator state) with the optimizer's state under
// "optimizer", written atomically; Model.loadCheckpoint reads it like any other checkpoint.
Napi::Value SaveTrainState(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info[0].IsString(), ERR_ARG, "saveTrainState(path): expected a path");
    std::string path = info[0].As<Napi::String>().Utf8Value();
    ClassifierPtr m = unwrapModel(info[1], "saveTrainState(model)");
    OptPtr box = unwrapOpt(info[2]);
    std::string meta = info[3].IsString() ? info[3].As<Napi::String>().Utf8Value() : "{}";
    return startOp(info.Env(), info[4], [path, m, box, meta](OpContext&) -> Finisher {
      saveCheckpoint(path, *m, meta, [&](torch::serialize::OutputArchive& a) { box->opt->save(a); });
      return nullptr;
    });
  });
}

// loadTrainState(path, model, opt, ctl?) -> Promise<string meta>: restores weights (every name,
// shape and dtype checked first) and the optimizer's state from a checkpoint of saveTrainState.
Napi::Value LoadTrainState(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info[0].IsString(), ERR_ARG, "loadTrainState(path): expected a path");
    std::string path = info[0].As<Napi::String>().Utf8Value();
    ClassifierPtr m = unwrapModel(info[1], "loadTrainState(model)");
    OptPtr box = unwrapOpt(info[2]);
    return startOp(info.Env(), info[3], [path, m, box](OpContext&) -> Finisher {
      LoadedCheckpoint c = loadCheckpoint(path, m->device(), /*restoreRng=*/false);
      FL_CHECK(c.hasOptimizer, ERR_FORMAT, "checkpoint '", path, "' holds no optimizer state: it cannot resume training");
      FL_CHECK(c.version >= kResumableCheckpointVersion, ERR_FORMAT, "checkpoint '", path, "' has format version ", c.version,
               ": its run drew crops, attack starts and dropout differently, so it cannot resume exactly. Its weights ",
               "still load (Model.loadCheckpoint, fisherlens eval); to finish the run, start it again (delete the ",
               "checkpoint, or the run folder)");
      loadCheckpointState(path, *m);
      torch::serialize::InputArchive sub;
      c.archive->read("optimizer", sub);
      box->opt->load(sub);
      std::string metaText = c.metaJson;
      return [metaText](Napi::Env env) -> Napi::Value { return Napi::String::New(env, metaText); };
    });
  });
}

// manualSeed(seed): seeds LibTorch's default CPU generator (weight init of Model.create, dropout
// outside trainStep)
void ManualSeed(const Napi::CallbackInfo& info) {
  guard(info.Env(), [&]() {
    FL_CHECK(info[0].IsNumber() && info[0].As<Napi::Number>().DoubleValue() >= 0, ERR_ARG, "manualSeed(seed): expected an integer >= 0");
    at::Generator def = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(def.mutex());
    def.set_current_seed(static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue()));
  });
}

}  // namespace

void InitTrain(Napi::Env env, Napi::Object exports) {
  exports.Set("createOptimizer", Napi::Function::New(env, CreateOptimizer, "createOptimizer"));
  exports.Set("manualSeed", Napi::Function::New(env, ManualSeed, "manualSeed"));
  exports.Set("trainStep", Napi::Function::New(env, TrainStepJs, "trainStep"));
  exports.Set("saveTrainState", Napi::Function::New(env, SaveTrainState, "saveTrainState"));
  exports.Set("loadTrainState", Napi::Function::New(env, LoadTrainState, "loadTrainState"));
}

}  // namespace fl
