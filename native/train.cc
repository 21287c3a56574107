// train: one native op per batch step (natural, PGD-AT, TRADES, MART, FIRE, Jacobian
// regularisation, fisher-trace, fisher-lambda), optimizers, and the training
// state file (weights + optimizer state + meta) used for resumable checkpoints. The ops' glue is
// binding/train.cc; lib/train.ts runs the loop.
#include "train.h"
#include <ATen/CPUGeneratorImpl.h>
#include <limits>
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

namespace {

bool knownMethod(const std::string& s) {
  for (const char* k : {"natural", "pgd-at", "trades", "mart", "fire", "jacobian", "fisher-trace", "fisher-lambda"}) {
    if (s == k) return true;
  }
  return false;
}

// per-sample squared Euclidean norms of g [B, ...] -> [B]
torch::Tensor sqNorms(const torch::Tensor& g) { return g.flatten(1).pow(2).sum(1); }

// ∂(Σ obj)/∂x keeping the graph (double backprop: the result is differentiable in the parameters)
torch::Tensor gradKeep(const torch::Tensor& obj, const torch::Tensor& x) {
  return torch::autograd::grad({obj}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
}
// the same, detached (power iterations)
torch::Tensor gradDetached(const torch::Tensor& obj, const torch::Tensor& x) {
  return torch::autograd::grad({obj}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/false)[0].detach();
}

// FIRE's clamp of the Bhattacharyya coefficient BC = Σ_k √(p_k q_k) before arccos: arccos′(u) =
// −1/√(1 − u²) is infinite at u = 1 (p = q, and x′ = x at the start of the attack), and float
// rounding can push BC above 1, where arccos is NaN. Clamping to 1 − 1e-6 bounds the factor by
// 1/√(1 − (1 − 1e-6)²) ≈ 707; a sample clamped there (d_FR < 2·arccos(1 − 1e-6) ≈ 2.8e-3) adds no
// gradient, as in the FIRE code, which clamps the coefficient below 1 as well.
constexpr double kFireClamp = 1e-6;

// the Bhattacharyya coefficient of the rows of two categorical distributions given by their
// log-probabilities lp, lq [B, K] -> [B]: Σ_k exp((lp_k + lq_k)/2), with no square root of a product
torch::Tensor bhattacharyya(const torch::Tensor& lp, const torch::Tensor& lq) { return ((lp + lq) * 0.5).exp().sum(1); }

// FIRE's inner maximisation: x′ maximises d_FR(p(x), p(x′)) = 2·arccos BC over the ball, from
// x + 0.001·N(0, I) as TRADES' KL attack starts. d_FR is a decreasing function of BC, so the
// ascent climbs −BC: the same sign (L∞) and normalised (L2) steps as on d_FR, without the
// clamped arccos, whose gradient vanishes at the start point. The gradients come from the
// gradient engine (gradient.h) through ascend.
torch::Tensor fireAttack(Classifier& m, const torch::Tensor& x, const AttackOptions& o, at::Generator& gen,
                         const OpContext* ctx) {
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  torch::Tensor lp;
  {
    torch::NoGradGuard ng;
    lp = torch::log_softmax(m.forward(x), 1);
  }
  Objective negBc = [lp](const torch::Tensor& z) { return -bhattacharyya(lp, torch::log_softmax(z, 1)).sum(); };
  torch::Tensor noise = torch::randn(x.sizes(), gen, x.options().device(torch::kCPU)).to(x.device());
  torch::Tensor xa = projectBall(x + 0.001 * noise, x, o.norm, o.epsilon);
  AscentOptions ao;
  ao.gen = &gen;
  return ascend(m, x, xa, negBc, o.norm, o.epsilon, o.stepSize, o.steps, ao, ctx);
}

// MART's inner maximisation: PGD on the summed CE from x + 0.001·N(0, I), as the MART code starts
// (not PGD-AT's uniform start), input gradients from the gradient engine through ascend
torch::Tensor martAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                         at::Generator& gen, const OpContext* ctx) {
  ModeGuard mode(m, /*train=*/false, /*paramsRequireGrad=*/false);
  Objective ce = [y](const torch::Tensor& z) {
    return torch::nn::functional::cross_entropy(z, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  };
  torch::Tensor noise = torch::randn(x.sizes(), gen, x.options().device(torch::kCPU)).to(x.device());
  torch::Tensor xa = projectBall(x + 0.001 * noise, x, o.norm, o.epsilon);
  AscentOptions ao;
  ao.gen = &gen;
  return ascend(m, x, xa, ce, o.norm, o.epsilon, o.stepSize, o.steps, ao, ctx);
}

// ŷ ∼ p(·|x): n draws per row of the (detached) probabilities p [B, K] -> [n, B] int64, from gen
torch::Tensor sampleLabels(const torch::Tensor& p, int64_t n, at::Generator& gen) {
  torch::Tensor pc = p.detach().to(torch::kCPU, torch::kFloat64);
  return torch::multinomial(pc, n, /*replacement=*/true, gen).t().contiguous();
}

}  // namespace

MethodLoss methodLoss(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const StepOptions& o,
                      at::Generator& gen, const LossDraws& d, const OpContext* ctx) {
  FL_CHECK(knownMethod(o.method), ERR_ARG, "unknown training method '", o.method,
           "'; expected natural, pgd-at, trades, mart, fire, jacobian, fisher-trace or fisher-lambda");
  const std::string& me = o.method;
  torch::Tensor xAdv = d.xAdv.defined() ? d.xAdv.to(x.device(), x.scalar_type()) : torch::Tensor();
  if (!xAdv.defined()) {
    if (me == "mart") {
      xAdv = martAttack(m, x, y, o.attack, gen, ctx);
    } else if (me == "pgd-at") {
      AttackOptions a = o.attack;
      a.kind = "pgd";
      xAdv = pgdAttack(m, x, y, a, gen, ctx);
    } else if (me == "trades") {
      xAdv = klAttack(m, x, o.attack, gen, ctx, nullptr);
    } else if (me == "fire") {
      xAdv = fireAttack(m, x, o.attack, gen, ctx);
    }
  }
  if (ctx) ctx->checkAbort();
  ModeGuard mode(m, /*train=*/true, /*paramsRequireGrad=*/true);
  torch::AutoGradMode gradOn(true);
  const double B = static_cast<double>(x.size(0));
  MethodLoss r;
  namespace F = torch::nn::functional;
  if (me == "natural") {
    r.z = m.forward(x);
    r.loss = F::cross_entropy(r.z, y);
    r.natural = r.loss.item<double>();
  } else if (me == "pgd-at") {
    r.z = m.forward(xAdv);
    r.loss = F::cross_entropy(r.z, y);
    r.natural = r.robust = r.loss.item<double>();
  } else if (me == "trades") {
    // TRADES: CE(f(x), y) + β · (1/B) Σ KL(p(x) ‖ p(x')), gradients through both arguments
    r.z = m.forward(x);
    torch::Tensor zAdv = m.forward(xAdv);
    torch::Tensor ce = F::cross_entropy(r.z, y);
    torch::Tensor kl = klRows(torch::log_softmax(r.z, 1), torch::log_softmax(zAdv, 1)).sum() / B;
    r.loss = ce + o.beta * kl;
    r.natural = ce.item<double>();
    r.robust = kl.item<double>();
  } else if (me == "mart") {
    // MART (Wang et al. 2020, eq. 8): (1/B) Σ [BCE(p(x′), y) + β·KL(p(x) ‖ p(x′))·(1 − p_y(x))], with
    // BCE(p, y) = −log p_y − log(1 − max_{k≠y} p_k). log(1 − p_k) = logsumexp_{j≠k} z_j − logsumexp z:
    // exact, and finite however close p_k is to 1. The weight 1 − p_y(x) carries gradient, as in the paper.
    r.z = m.forward(x);
    torch::Tensor zAdv = m.forward(xAdv);
    torch::Tensor lpAdv = torch::log_softmax(zAdv, 1), lp = torch::log_softmax(r.z, 1);
    torch::Tensor yc = y.unsqueeze(1);
    const double inf = std::numeric_limits<double>::infinity();
    torch::Tensor wrong = zAdv.detach().scatter(1, yc, -inf).argmax(1, /*keepdim=*/true);
    torch::Tensor log1mWrong = torch::logsumexp(zAdv.scatter(1, wrong, -inf), 1) - torch::logsumexp(zAdv, 1);
    torch::Tensor bce = (-lpAdv.gather(1, yc).squeeze(1) - log1mWrong).mean();
    torch::Tensor weight = 1 - lp.gather(1, yc).squeeze(1).exp();
    torch::Tensor reg = (klRows(lp, lpAdv) * weight).mean();
    r.loss = bce + o.beta * reg;
    r.natural = bce.item<double>();
    r.robust = reg.item<double>();
  } else if (me == "fire") {
    // FIRE (Picot et al. 2021): CE(f(x), y) + λ · (1/B) Σ d_FR(p(x), p(x′))², d_FR = 2·arccos BC
    r.z = m.forward(x);
    torch::Tensor zAdv = m.forward(xAdv);
    torch::Tensor ce = F::cross_entropy(r.z, y);
    torch::Tensor bc = bhattacharyya(torch::log_softmax(r.z, 1), torch::log_softmax(zAdv, 1));
    torch::Tensor dist = 2 * torch::acos(bc.clamp(0, 1 - kFireClamp));
    torch::Tensor reg = dist.pow(2).mean();
    r.loss = ce + o.lambda * reg;
    r.natural = ce.item<double>();
    r.robust = reg.item<double>();
  } else {
    // the input-gradient penalties: double backprop through x (its own leaf, so that the parameters'
    // gradients include the path through ∂z/∂x)
    torch::Tensor xg = x.detach().requires_grad_(true);
    r.z = m.forward(xg);
    const int64_t K = r.z.size(1), n = o.samples;
    torch::Tensor ce = F::cross_entropy(r.z, y);
    torch::Tensor reg;
    if (me == "jacobian") {
      // (1/B) Σ_i ‖J_i‖_F², J_i = ∂z(x_i)/∂x_i [K, D]. Exact: Σ_k ‖∂z_k/∂x‖². Estimate (Hoffman et al.):
      // K·‖vᵀJ_i‖² with v uniform on the unit sphere of R^K, averaged over n projections.
      torch::Tensor acc = torch::zeros({x.size(0)}, r.z.options());
      if (o.exact) {
        for (int64_t k = 0; k < K; ++k) acc = acc + sqNorms(gradKeep(r.z.select(1, k).sum(), xg));
      } else {
        torch::Tensor proj = d.proj;
        if (!proj.defined()) {
          proj = torch::randn({n, x.size(0), K}, gen, torch::TensorOptions().dtype(torch::kFloat64));
          proj = proj / proj.norm(2, {2}, /*keepdim=*/true);
        }
        FL_CHECK(proj.dim() == 3 && proj.size(1) == x.size(0) && proj.size(2) == K, ERR_SHAPE,
                 "jacobian: projections must be [n, B, K]");
        proj = proj.to(r.z.device(), r.z.scalar_type());
        for (int64_t j = 0; j < proj.size(0); ++j) acc = acc + sqNorms(gradKeep((r.z * proj[j]).sum(), xg));
        acc = acc * (static_cast<double>(K) / static_cast<double>(proj.size(0)));
      }
      reg = acc.mean();
      r.loss = ce + (o.lambda / 2) * reg;
    } else {
      torch::Tensor lp = torch::log_softmax(r.z, 1);
      torch::Tensor labels = d.labels;
      const bool sampled = !(me == "fisher-trace" && o.exact);
      if (sampled && !labels.defined()) labels = sampleLabels(lp.exp(), me == "fisher-lambda" ? 1 : n, gen);
      if (sampled) {
        FL_CHECK(labels.dim() == 2 && labels.size(1) == x.size(0), ERR_SHAPE, o.method, ": sampled labels must be [n, B]");
        labels = labels.to(r.z.device(), torch::kLong);
      }
      if (me == "fisher-trace") {
        // tr G_x = E_{ŷ∼p(·|x)} ‖∇ₓ log p_ŷ(x)‖². Exact: Σ_k p_k ‖∇ₓ log p_k‖² (p_k with its gradient)
        torch::Tensor acc = torch::zeros({x.size(0)}, r.z.options());
        if (o.exact) {
          for (int64_t k = 0; k < K; ++k) acc = acc + lp.select(1, k).exp() * sqNorms(gradKeep(lp.select(1, k).sum(), xg));
        } else {
          for (int64_t j = 0; j < labels.size(0); ++j) {
            acc = acc + sqNorms(gradKeep(lp.gather(1, labels[j].unsqueeze(1)).sum(), xg));
          }
          acc = acc / static_cast<double>(labels.size(0));
        }
        reg = acc.mean();
      } else {
        // λ_max(G_x) per sample by k detached power iterations v ← G_x v / ‖v‖ from v₀ = ∇ₓ log p_ŷ, then the
        // Rayleigh quotient vᵀG_xv / vᵀv at the final, detached v, differentiable in θ. G_x = Jᵀ(diag p − ppᵀ)J;
        // J v comes from the double-backward identity J v = ∂(vᵀJᵀw)/∂w at any w (here w = 0).
        torch::Tensor w = torch::zeros_like(r.z).requires_grad_(true);
        torch::Tensor jtw = gradKeep((r.z * w).sum(), xg);  // Jᵀw, linear in w
        torch::Tensor p = lp.exp();
        torch::Tensor pd = p.detach();
        auto perSample = [&](const torch::Tensor& s) {
          std::vector<int64_t> shape(x.dim(), 1);
          shape[0] = x.size(0);
          return s.view(shape);
        };
        // J v [B, K]; keep: differentiable in θ (the final quotient), else detached (the iterations)
        auto jv = [&](const torch::Tensor& v, bool keep) {
          torch::Tensor u = torch::autograd::grad({(jtw * v).sum()}, {w}, {}, /*retain_graph=*/true, keep)[0];
          return keep ? u : u.detach();
        };
        torch::Tensor v = gradDetached(lp.gather(1, labels[0].unsqueeze(1)).sum(), xg);
        for (int64_t it = 0; it < o.powerIters; ++it) {
          if (ctx) ctx->checkAbort();
          torch::Tensor u = jv(v, false);
          torch::Tensor a = pd * u - pd * (pd * u).sum(1, /*keepdim=*/true);  // (diag p − ppᵀ) J v
          v = gradDetached((r.z * a).sum(), xg);                             // G_x v = Jᵀ a
          v = v / perSample(sqNorms(v).sqrt().clamp_min(1e-30));
        }
        torch::Tensor u = jv(v, true);
        torch::Tensor quad = (p * u.pow(2)).sum(1) - (p * u).sum(1).pow(2);  // vᵀ G_x v
        reg = (quad / sqNorms(v).clamp_min(1e-30)).mean();
      }
      r.loss = ce + o.lambda * reg;
    }
    r.natural = ce.item<double>();
    r.robust = reg.item<double>();
  }
  return r;
}

StepResult trainStep(Classifier& m, torch::optim::Optimizer& opt, const torch::Tensor& xIn, const torch::Tensor& yIn,
                     const StepOptions& o, const OpContext* ctx) {
  checkImages(xIn, "trainStep(x)");
  checkLabels(yIn, xIn.size(0), 0, "trainStep(y)");
  const torch::Tensor x0 = xIn.to(m.device()), y = yIn.to(m.device());
  // The step's randomness, all from its seed, none from LibTorch's process-wide generator: the
  // crops and flips are augment(x, seed) (data.h: the same crops as Dataset.augmentedBatches and
  // augment() give for that seed); the attack's random start, the penalties' draws (projections,
  // sampled classes) and built-in models' dropout masks draw from one generator seeded by it. A
  // resumed run therefore repeats an uninterrupted one.
  torch::Tensor x = (o.cropPad > 0 || o.flip) ? augment(x0, o.seed, o.cropPad, o.flip) : x0;
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  DropoutGenerator dropoutGen(gen);
  LayoutGuard layout(m, o.channelsLast);
  if (o.channelsLast && x.dim() == 4) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  if (o.lr >= 0) setLearningRate(opt, o.lr);
  StepResult r;
  r.batch = x.size(0);
  // train mode and parameter gradients until backward is done (methodLoss's own guard restores to this)
  ModeGuard mode(m, /*train=*/true, /*paramsRequireGrad=*/true);
  // A cancelled step (its AbortSignal: a batch abandoned at the end of a preemption grace) leaves
  // the model and optimiser as they were, so that a checkpoint written then holds the state at
  // this batch boundary: every abort check comes before opt.step(), and the buffers a train-mode
  // forward updates (BatchNorm running statistics; fisher-lambda checks between its power
  // iterations, after that forward) are put back. The buffers are small (2 floats per channel).
  std::vector<std::pair<torch::Tensor, torch::Tensor>> buffers;
  if (ctx) {
    std::vector<torch::Tensor> params = m.parameters();
    for (auto& [name, t] : m.namedState()) {
      bool isParam = false;
      for (auto& p : params) isParam = isParam || p.unsafeGetTensorImpl() == t.unsafeGetTensorImpl();
      if (!isParam) buffers.emplace_back(t, t.detach().clone());
    }
  }
  opt.zero_grad();
  MethodLoss l;
  try {
    l = methodLoss(m, x, y, o, gen, LossDraws{}, ctx);
  } catch (...) {
    torch::NoGradGuard noGrad;
    for (auto& [t, saved] : buffers) t.copy_(saved);
    for (auto& p : m.parameters()) {
      if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
    }
    throw;
  }
  l.loss.backward();
  opt.step();
  r.loss = l.loss.item<double>();
  r.lossNatural = l.natural;
  r.lossRobust = l.robust;
  r.correct = l.z.detach().argmax(1).eq(y).sum().item<int64_t>();
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
