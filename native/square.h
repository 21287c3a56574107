// Square attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box
// adversarial attack via random search"). See square.cc, lib/attacks.ts and docs/attacks.md.
#pragma once
#include <torch/torch.h>
#include <ATen/core/Generator.h>
#include "attacks.h"

namespace fl {

// Score-based random search (no gradient at all): square-shaped updates of the perturbation with
// the published schedule of square sizes from o.pInit, accepted when they lower the margin
// z_y − max_{j≠y} z_j; each sample stops once misclassified, after o.queries model queries at most.
// o.restarts runs a fresh search from a new start on the samples still classified correctly.
// x: [B, C, H, W] in [0, 1], y: [B] labels -> xAdv in the ε-ball and the box, loss = the margin at
// xAdv [B] float64, queries [B] float64 summed over the runs (0 for samples misclassified clean).
AttackResult squareAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                          at::Generator& gen, const OpContext* ctx);

}  // namespace fl
