// Adversarial attacks on any Classifier (see lib/attacks.ts and docs/attacks.md). Every attack
// runs one batch, in eval mode without weight gradients (ModeGuard), keeps x_adv inside the
// ε-ball around x and the [0, 1] box, and leaves the model as it found it. Training (train.cc)
// calls pgdAttack and klAttack for its inner maximisation.
#pragma once
#include <torch/torch.h>
#include <ATen/core/Generator.h>
#include <cmath>
#include <functional>
#include <string>
#include <vector>
#include "gradient.h"
#include "models/classifier.h"

namespace fl {

class OpContext;

enum class Norm { Linf, L2 };

struct AttackOptions {
  // Parsed ops fill every field from the complete options object (lib/options.ts declares the
  // defaults); the initial values serve the attacks built inside native ops (training's inner PGD).
  std::string kind = "pgd";  // a kind of lib/options.ts ATTACK_TABLE: fgsm | pgd | cw | cw-l2 | kl | fisher | apgd-* | fab* | square
  Norm norm = Norm::Linf;
  double epsilon = 0.031;    // radius of the ball (pixel units); cw-l2: +inf means unbounded
  double stepSize = 0.003;   // α per step (L∞: α·sign(g); L2: α·g/‖g‖)
  int64_t steps = 20;        // iterations (cw-l2: Adam iterations per binary-search step)
  bool randomStart = true;   // pgd / cw: uniform start in the ball
  int64_t restarts = 1;      // pgd / cw: keep the worst case per sample; fab / fab-t / square: runs on the samples still robust
  bool targeted = false;     // pgd / cw-l2: move towards `target` labels
  double kappa = 50;         // cw (L∞ margin loss) κ
  int64_t binarySteps = 9;   // cw-l2: binary search steps on c
  double learningRate = 0.01;  // cw-l2: Adam learning rate
  double initialConst = 1e-3;  // cw-l2: initial c
  double confidence = 0;       // cw-l2: κ of the CW-L2 objective
  int64_t targets = 9;         // apgd-t / fab-t: target classes tried (the top ones after the label; ≤ K − 1)
  int64_t eotIter = 1;         // apgd: gradients averaged per step (expectation over transformation, randomised models)
  torch::Tensor init;          // apgd: start point [B, ...] (projected onto the ball and box); undefined: random start
  double alphaMax = 0.1;        // fab / fab-t: largest weight α of the original point in a step
  double eta = 1.05;            // fab / fab-t: extrapolation η of the projection steps (overshoot)
  double beta = 0.9;            // fab / fab-t: backward step towards x after a success
  double pInit = 0.8;           // square: initial fraction p of the image the square covers (queries = steps)
  uint64_t seed = 0;
  bool channelsLast = false;   // run convolutions in channels-last memory format (bindings only)
};

struct AttackResult {
  torch::Tensor xAdv;     // [B, ...] like x
  torch::Tensor loss;     // [B] float64: the attack's objective per sample at x_adv (kl: KL(p(x) ‖ p(x_adv)))
  torch::Tensor success;  // [B] bool: misclassified at x_adv (targeted: predicted as the target)
  torch::Tensor queries;  // [B] float64: square: model queries spent per sample (undefined for other attacks)
};

// Projects xa onto {‖xa − x‖ ≤ ε} ∩ [0, 1]^D (without `box`: onto the ball only). x, xa: [B, ...] -> [B, ...]
torch::Tensor projectBall(const torch::Tensor& xa, const torch::Tensor& x, Norm norm, double eps, bool box = true);

// Where the ascent stays and what it reports after each step.
struct AscentOptions {
  bool box = true;        // also project onto the [0, 1] box after each step
  at::Generator* gen = nullptr;  // L2: a zero gradient takes a random unit direction drawn here (none: no step)
  // called after each step with the new point x_a [B, ...] (no gradients), e.g. to keep the best point
  std::function<void(const torch::Tensor& xa)> afterStep;
};

// The one projected gradient ascent of every attack and of ρ (metrics.cc): `steps` steps from xa of
// α·sign(g) (L∞) or α·g/‖g‖₂ (L2), each followed by projectBall(·, x, norm, ε, o.box). The model
// must already be in eval mode with frozen weights. x, xa: [B, ...] -> the last x_a [B, ...]
torch::Tensor ascend(Classifier& m, const torch::Tensor& x, torch::Tensor xa, const Objective& obj, Norm norm, double eps,
                     double alpha, int64_t steps, const AscentOptions& o, const OpContext* ctx);

// PGD with cross-entropy (o.kind "pgd"/"fgsm") or the CW margin loss (o.kind "cw"), restarts and
// random start as in `o`. Model state is handled inside (eval, no weight grads, restored).
// x: [B, ...], y: [B] int64 (targeted: the target labels) -> x_adv [B, ...]
torch::Tensor pgdAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                        at::Generator& gen, const OpContext* ctx);

// TRADES' inner maximisation: maximise KL(p(x) ‖ p(x+δ)) (klRows, metrics.h) from x + 0.001·N(0, I),
// p(x) in eval mode. klReached: optional [B] float64 out.
torch::Tensor klAttack(Classifier& m, const torch::Tensor& x, const AttackOptions& o, at::Generator& gen,
                       const OpContext* ctx, torch::Tensor* klReached);

// Any attack by o.kind. target: [B] labels for targeted attacks (else undefined).
AttackResult runAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& target,
                       const AttackOptions& o, const OpContext* ctx);

// What the attack op returns for one batch
struct AttackOutcome {
  torch::Tensor xAdv;          // [B, ...] like x, contiguous
  torch::Tensor loss;          // [B] float64 (AttackResult::loss)
  torch::Tensor success;       // [B] uint8 (0/1)
  torch::Tensor norm;          // [B] float64: ‖x_adv − x‖ in the attack's norm
  torch::Tensor cleanCorrect;  // [B] uint8 (0/1): correct at x in eval mode
  torch::Tensor queries;       // [B] float64 (square), else undefined
};
// The attack op on one batch: checks x (images in [0, 1]), y and target ([B] labels within the
// model's K classes; ERR_SHAPE / ERR_DTYPE / ERR_VALUE), the clean logits (finite), moves the
// batch to the model's device, runs runAttack in o.channelsLast's layout and measures the result.
AttackOutcome attackBatch(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& target,
                          const AttackOptions& o, const OpContext* ctx);

// Per sample, the example of the first attack that broke it, else the last attack's example (the
// worst case of an evaluation over A attacks). advs: A ≥ 1 batches [B, ...] of one shape and dtype
// (ERR_SHAPE otherwise), succ: A flags [B] (uint8, 1 = broken) -> [B, ...], contiguous.
torch::Tensor firstSuccessful(const std::vector<torch::Tensor>& advs, const std::vector<torch::Tensor>& succ);

}  // namespace fl
