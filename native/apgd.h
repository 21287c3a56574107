// APGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an ensemble of
// diverse parameter-free attacks"): projected gradient ascent with momentum and a step size that
// halves at checkpoints when the loss stops rising. Kinds apgd-ce (cross-entropy), apgd-dlr (the
// scale-invariant DLR loss) and apgd-t (targeted DLR towards the top `targets` classes in turn; an
// untargeted attack: success = misclassified). See docs/attacks.md.
#pragma once
#include "attacks.h"

namespace fl {

// x: [B, ...] in [0, 1], y: [B] int64 labels. Runs o.restarts runs (apgd-t: per target class),
// each only on the samples not yet misclassified. x_adv: the last misclassified iterate where the
// attack succeeded, else the point of highest loss. loss: untargeted DLR (apgd-dlr, apgd-t) or CE
// at x_adv. Works in x's dtype (float64 on a float64 model). The caller sets the model's mode.
AttackResult apgdAttack(Classifier& m, const torch::Tensor& x, const torch::Tensor& y, const AttackOptions& o,
                        at::Generator& gen, const OpContext* ctx);

// Per-sample DLR loss −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e-12), z_π sorted descending: z [B, K] -> [B]
torch::Tensor dlrLoss(const torch::Tensor& z, const torch::Tensor& y);

}  // namespace fl
