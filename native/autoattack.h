// The AutoAttack cascade on one batch (Croce & Hein 2020; autoattack.cc). lib/autoattack.ts
// streams the batches and aggregates.
#pragma once
#include <torch/torch.h>
#include <vector>
#include "attacks.h"
#include "models/classifier.h"

namespace fl {

// The sanity checks of the reference implementation, on the clean batch
struct AutoAttackChecks {
  double classes = 0;            // K, the model's number of logits
  double probabilityRows = 0;    // rows of the output that look like probabilities (in [0, 1], sum 1)
  double zeroGradient = 0;       // samples whose input gradient of the cross-entropy is exactly zero
  double nonFiniteGradient = 0;  // samples whose input gradient is NaN or Inf
  double forwardDifference = 0;  // max |z₁ − z₂| / max(1, max |z₁|) over two forwards (randomness)
};

struct AutoAttackResult {
  torch::Tensor xAdv;          // [B, ...] like x: the example of the stage that broke a sample, else the last stage's attempt (x if misclassified clean)
  torch::Tensor brokenBy;      // [B] float64: stage index; −1 robust; −2 misclassified clean
  torch::Tensor norm;          // [B] float64: ‖x_adv − x‖ in the stages' norm
  torch::Tensor stageSeconds;  // [stages] float64: wall time of each stage
  AutoAttackChecks checks;     // zeros unless asked for
};

// ERR_ARG unless stage i is untargeted, with stage 0's norm and ε, and ε finite
void checkStage(const std::vector<AttackOptions>& stages, size_t i);

// Runs each stage (through runAttack) only on the samples still classified correctly; checks that
// every adversarial example lies in the ε-ball and the [0, 1] box (ERR_INTERNAL otherwise).
// x: images [B, C, H, W] in [0, 1], y: [B] labels; stages: ≥ 1, each passing checkStage.
AutoAttackResult autoAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y,
                            const std::vector<AttackOptions>& stages, bool checks, const OpContext* ctx);

}  // namespace fl
