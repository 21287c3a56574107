// Per-batch training steps (see lib/train.ts for the loop, schedules and tracking; docs/training.md
// for each method's paper, defaults and estimators): natural (cross-entropy), PGD-AT (Madry et al.:
// cross-entropy on PGD examples), TRADES (CE(x) + β·KL(p(x) ‖ p(x')) with x' from the KL attack),
// MART (Wang et al. 2020), FIRE (Picot et al. 2021), Jacobian regularisation (Hoffman, Roberts &
// Yaida 2019) and the Fisher penalties fisher-trace and fisher-lambda. The inner maximisation runs
// in eval mode without weight gradients; the outer step in train mode. One call = one batch.
#pragma once
#include <torch/torch.h>
#include <memory>
#include <string>
#include "attacks.h"
#include "models/classifier.h"

namespace fl {

class OpContext;

struct OptimizerSpec {
  std::string type = "sgd";  // sgd | adam | adamw
  double lr = 0.1, momentum = 0.9, weightDecay = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  bool nesterov = false;
};

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(Classifier& m, const OptimizerSpec& s);
void setLearningRate(torch::optim::Optimizer& opt, double lr);

struct StepOptions {
  std::string method = "natural";  // natural | pgd-at | trades | mart | fire | jacobian | fisher-trace | fisher-lambda
  double lr = -1;                  // set before the step when >= 0
  AttackOptions attack;            // inner maximisation (epsilon, stepSize, steps, norm, randomStart)
  double beta = 6;                 // TRADES / MART β
  double lambda = 0;               // fire, jacobian, fisher-trace, fisher-lambda: the penalty's weight λ
  int64_t samples = 1;             // jacobian: random projections; fisher-trace / fisher-lambda: draws ŷ ∼ p(·|x)
  bool exact = false;              // jacobian, fisher-trace: the all-classes value instead of the estimate
  int64_t powerIters = 3;          // fisher-lambda: detached power iterations k
  int64_t cropPad = 0;             // random crop with zero padding (0: off)
  bool flip = false;               // random horizontal flip
  uint64_t seed = 0;               // this step's seed (attack start, augmentation, dropout)
  bool channelsLast = false;       // run convolutions in channels-last memory format
};

struct StepResult {
  double loss = 0;          // the minimised loss (mean over the batch)
  double lossNatural = 0;   // CE on clean inputs (natural, trades, fire, jacobian, fisher-*), on adversarial ones (pgd-at), MART's boosted CE on x_adv
  double lossRobust = 0;    // the regulariser before its weight (batch mean): TRADES' KL, MART's weighted KL, FIRE's d_FR², ‖J‖_F², tr G_x, λ_max; pgd-at: CE on x_adv
  int64_t correct = 0;      // correct predictions on the batch the outer step saw (pgd-at: x_adv)
  int64_t batch = 0;
};

// The random draws of one loss evaluation (each undefined: drawn from the step's generator). The
// test hook __trainLoss supplies them so that a reference implementation sees the same ones.
struct LossDraws {
  torch::Tensor xAdv;    // the inner maximisation's result [B, C, H, W] (mart, fire, pgd-at, trades)
  torch::Tensor proj;    // jacobian: unit projection vectors [n, B, K]
  torch::Tensor labels;  // fisher-trace / fisher-lambda: sampled classes ŷ [n, B] (int64)
};

// The method's loss on the batch x [B, C, H, W] (labels y [B]) at the current parameters, with
// the parameters' autograd graph (the caller calls backward); z receives the logits whose argmax
// counts as `correct`. Runs the inner maximisation unless d.xAdv is given. Call it inside a
// ModeGuard(m, true, true) that lasts until backward (its own guard restores the flags on return).
struct MethodLoss {
  torch::Tensor loss, z;
  double natural = 0, robust = 0;  // StepResult's lossNatural, lossRobust
};
MethodLoss methodLoss(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const StepOptions& o,
                      at::Generator& gen, const LossDraws& d, const OpContext* ctx);

// One optimisation step on the batch x: images [B, C, H, W], y: [B] labels (checked; moved to the
// model's device); the model's mode and requires-grad flags are restored afterwards.
StepResult trainStep(Classifier& m, torch::optim::Optimizer& opt, const torch::Tensor& x, const torch::Tensor& y,
                     const StepOptions& o, const OpContext* ctx);

// A FisherLens checkpoint (models/checkpoint.h: weights, spec, meta, CPU generator state) with the
// optimizer's state under "optimizer", written atomically; Model.loadCheckpoint reads it like any
// other checkpoint.
void saveTrainState(const std::string& path, Classifier& m, torch::optim::Optimizer& opt, const std::string& metaJson);
// Restores weights (every name, shape and dtype checked first) and the optimizer's state from a
// checkpoint of saveTrainState; returns its meta JSON. ERR_FORMAT when it holds no optimizer state
// or predates kResumableCheckpointVersion.
std::string loadTrainState(const std::string& path, Classifier& m, torch::optim::Optimizer& opt);

// Seeds LibTorch's default CPU generator (weight init of Model.create, dropout outside trainStep)
void manualSeed(uint64_t seed);

}  // namespace fl
