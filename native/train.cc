// train: one native op per batch step (natural, PGD-AT, TRADES), optimizers, and the training
// state file (weights + optimizer state + meta) used for resumable checkpoints. The ops' glue is
// binding/train.cc; lib/train.ts runs the loop.
#include "train.h"
#include <ATen/CPUGeneratorImpl.h>
#include <mutex>
#include "common/checks.h"
#include "common/errors.h"
#include "common/op_context.h"
#include "data.h"
#include "fisher.h"
#include "metrics.h"
#include "models/checkpoint.h"
#include "models/linear_tape.h"

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

StepResult trainStep(Classifier& m, torch::optim::Optimizer& opt, const torch::Tensor& xIn, const torch::Tensor& yIn,
                     const StepOptions& o, const OpContext* ctx) {
  checkImages(xIn, "trainStep(x)");
  checkLabels(yIn, xIn.size(0), 0, "trainStep(y)");
  const torch::Tensor x0 = xIn.to(m.device()), y = yIn.to(m.device());
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

void saveTrainState(const std::string& path, Classifier& m, torch::optim::Optimizer& opt, const std::string& metaJson) {
  saveCheckpoint(path, m, metaJson, [&](torch::serialize::OutputArchive& a) { opt.save(a); });
}

std::string loadTrainState(const std::string& path, Classifier& m, torch::optim::Optimizer& opt) {
  LoadedCheckpoint c = loadCheckpoint(path, m.device(), /*restoreRng=*/false);
  FL_CHECK(c.hasOptimizer, ERR_FORMAT, "checkpoint '", path, "' holds no optimizer state: it cannot resume training");
  FL_CHECK(c.version >= kResumableCheckpointVersion, ERR_FORMAT, "checkpoint '", path, "' has format version ", c.version,
           ": its run drew crops, attack starts and dropout differently, so it cannot resume exactly. Its weights ",
           "still load (Model.loadCheckpoint, fisherlens eval); to finish the run, start it again (delete the ",
           "checkpoint, or the run folder)");
  loadCheckpointState(path, m);
  torch::serialize::InputArchive sub;
  c.archive->read("optimizer", sub);
  opt.load(sub);
  return c.metaJson;
}

void manualSeed(uint64_t seed) {
  at::Generator def = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(def.mutex());
  def.set_current_seed(seed);
}

}  // namespace fl
