// FAB and FAB-T (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
// boundary attack"): minimal-norm adversarial examples by projections onto the linearised decision
// boundary. See fab.cc, lib/attacks.ts and docs/attacks.md.
#pragma once
#include <torch/torch.h>
#include <ATen/core/Generator.h>
#include "attacks.h"

namespace fl {

// o.kind "fab" (untargeted: the linearised boundary to the nearest class, K input gradients per
// step) or "fab-t" (the boundary to each of the o.targets classes with the largest clean logits
// in turn, one input gradient per step; still an untargeted attack: success = misclassified).
// o.restarts runs per target, all but the first from a random start at ε/2. A sample keeps the
// smallest misclassified point of the first run that finds one within ε; elsewhere x_adv = x.
// x: [B, ...] in [0, 1], y: [B] labels -> xAdv [B, ...] in the ε-ball and the box (loss, success
// are filled in by runAttack). Eval mode, no weight gradients, model restored.
AttackResult fabAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                       at::Generator& gen, const OpContext* ctx);

// d: [N, D] with the smallest ‖d‖ (L∞ or L2) such that w·(t + d) = b and t + d ∈ [0, 1]^D; when the
// box makes the hyperplane unreachable, the corner of the box that gets closest to it.
// t, w: [N, D], b: [N]; computed in float64.
torch::Tensor projectOnHyperplane(const torch::Tensor& t, const torch::Tensor& w, const torch::Tensor& b, Norm norm);

}  // namespace fl
