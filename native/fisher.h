// Fisher information of the output distribution w.r.t. the input (shared/PAPER.md §3):
// G_x = Jᵀ M J with J = ∂z/∂x [C, D] and M = diag(p) − p pᵀ. Used by fisher.cc's bindings,
// by attacks (the Fisher-eigenvector attack) and by training's per-epoch tracking.
#pragma once
#include <torch/torch.h>
#include "models/classifier.h"

namespace fl {

struct ExactFisher {
  torch::Tensor lambdaMax;  // [B] float64: spectral norm of G_x
  torch::Tensor trace;      // [B] float64: tr G_x = tr(M K)
  torch::Tensor frobenius;  // [B] float64: ‖G_x‖_F = sqrt(tr(M K M K))
  torch::Tensor spectrum;   // [B, C] float64: eigenvalues of M½ K M½ (the non-zero spectrum of G_x), descending
  torch::Tensor eigvec;     // [B, ...input shape] (x's dtype): unit leading eigenvector of G_x; undefined unless asked
  torch::Tensor probs;      // [B, C] float64: p(x)
};

// Exact per-sample Fisher quantities from K = J Jᵀ (C input-gradient passes over one forward).
// Runs in eval mode without weight gradients and restores the model's state.
// x: [B, C_in, H, W] -> ExactFisher
ExactFisher fisherExact(Classifier& m, const torch::Tensor& x, bool wantEigvec);

// Per-sample logits Jacobian J = ∂z/∂x: x [B, ...] -> [B, C, D] (C backward passes, retained graph).
// The model must already be in the wanted mode; returns the logits' softmax in `probs` [B, C].
torch::Tensor logitJacobian(Classifier& m, const torch::Tensor& x, torch::Tensor* probs);

}  // namespace fl
