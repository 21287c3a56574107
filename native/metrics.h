// Metrics of shared/PAPER.md §1–4: accuracy, cross-entropy, CCKL in O(N·C) from class sums,
// the JS mean and its lower bound over different-class pairs, the disentanglement's pair
// quadratic forms, and the adversarial measure ρ(x, ε) by a KL-PGD from the Fisher eigenvector.
#pragma once
#include <torch/torch.h>
#include <ATen/core/Generator.h>
#include <functional>
#include <utility>
#include <vector>
#include "fisher.h"
#include "models/classifier.h"

namespace fl {

class OpContext;

// KL(p ‖ q) per row from log-probabilities lp, lq [B, C] (any float dtype; differentiable) -> [B]:
// Σ_c e^{lp} (lp − lq). The one KL from log-probabilities: the metrics, ρ, the Fisher segment
// (klSegment), the KL attack (attacks.cc) and TRADES' loss (train.cc).
torch::Tensor klRows(const torch::Tensor& lp, const torch::Tensor& lq);

// KL(p(x) ‖ p(x + t d)) for each t of ts, in eval mode without gradients: x, d [B, ...], logp0
// = log p(x) [B, C] float64 -> [B, T] float64. `check` runs before each forward (abort).
torch::Tensor klAlong(Classifier& m, const torch::Tensor& x, const torch::Tensor& d, const torch::Tensor& logp0,
                      const std::vector<double>& ts, const std::function<void()>& check);

// KL(p(x) ‖ p(x + t d)) for each t of ts [B, T] and dᵀ G_x d [B] (one JVP), float64: the one body of
// the klSegment (binding/fisher.cc) and klPairSegment ops. x, d: [B, ...].
struct Segment {
  torch::Tensor kl, quadratic;
};
Segment klSegmentOf(Classifier& m, const torch::Tensor& x, const torch::Tensor& d, const std::vector<double>& ts,
                    const FisherOptions& o, const std::function<void()>& check);
// The klPairSegment op: with δ = x_j − x_i (x_i's dtype), KL(p(x_i) ‖ p(x_i + t δ)) for each t and
// δᵀ G_{x_i} δ (one JVP). xi, xj: images of one shape [B, C, H, W] (ERR_SHAPE otherwise).
Segment klPairSegment(Classifier& m, const torch::Tensor& xi, const torch::Tensor& xj, const std::vector<double>& ts,
                      const std::function<void()>& check);

// `count` ordered pairs (i, j), uniform among those with y_i ≠ y_j: rejection sampling of uniform
// index pairs drawn from `gen` in rounds of max(1024, 2 · missing) draws. y: [N] int64 ->
// (i, j) [count] int64 on the CPU. ERR_VALUE when the labels have a single class.
std::pair<torch::Tensor, torch::Tensor> samplePairs(const torch::Tensor& y, int64_t count, at::Generator& gen);

// Per-batch sums from which CCKL over all different-class pairs follows exactly (PAPER.md §1).
// With ℓ_i = log p_i and a_i = p_i · ℓ_i, per class k: n_k, A_k = Σ a_i, P_k = Σ p_i, S_k = Σ ℓ_i.
// Σ_{y_i≠y_j} KL(p_i‖p_j) = N ΣA − Σ_k n_k A_k − (ΣP)·(ΣS) + Σ_k P_k·S_k. All float64.
struct ClassSums {
  torch::Tensor n;  // [C]
  torch::Tensor A;  // [C]
  torch::Tensor P;  // [C, C] (class, component)
  torch::Tensor S;  // [C, C]
  double correct = 0, ceSum = 0, count = 0;
};
// logits [B, C] (any float), y [B] int64 -> the batch's sums; logp [B, C] float64 if asked.
// With `probs`, the rows are probabilities p (from fisherExact) and log p = log max(p, 1e-300).
ClassSums classSums(const torch::Tensor& logits, const torch::Tensor& y, torch::Tensor* logp, bool probs = false);
// The ccklBatch op: with a model, one eval-mode forward of images x [B, C, H, W]; without (m null),
// x holds logits [B, C], or with `probs` probabilities (fisherExact's). Checks x, y and the logits
// (ERR_SHAPE / ERR_VALUE); *logp (required) receives log p [B, C] float64.
ClassSums ccklBatch(Classifier* m, const torch::Tensor& x, const torch::Tensor& y, bool probs, torch::Tensor* logp);

struct PairMeans {
  double jsMean = 0, jsSe = 0, boundMean = 0, boundSe = 0, pairs = 0;
  bool exact = true;
};
// Mean over different-class ordered pairs of JS(p_i, p_j) (nats) and of
// 2 ln2 · max(0, 1 − √err_i − √err_j)² (err_i = 1 − p_{i,y_i}): exact by blocks when
// N ≤ exactMax, else over `samples` seeded uniform pairs (with standard errors).
PairMeans pairMeans(const torch::Tensor& logp, const torch::Tensor& y, int64_t exactMax, int64_t samples,
                    uint64_t seed, const std::function<void()>& check);
// The same over batches: logps [B_i, C], ys [B_i] concatenated (ERR_SHAPE / ERR_VALUE on bad rows or labels)
PairMeans pairMeans(const std::vector<torch::Tensor>& logps, const std::vector<torch::Tensor>& ys, int64_t exactMax,
                    int64_t samples, uint64_t seed, const std::function<void()>& check);

// ρ(x, ε) = max_{‖δ‖₂ ≤ ε} KL(p(x) ‖ p(x+δ)) by KL-PGD (L2, normalised gradient steps of 2.5 ε / steps,
// projection on the ball; with clip, x+δ also stays in [0, 1]), started from the better of ±ε v_top
// (the Fisher eigenvector: KL's gradient vanishes at δ = 0), keeping the best point per sample.
// x: images [B, C, H, W]; every field [B] float64.
struct RhoResult {
  torch::Tensor rho;          // the largest KL reached
  torch::Tensor fisherBound;  // ½ ε² λ_max
  torch::Tensor lambdaMax;    // λ_max of G_x
  torch::Tensor initial;      // the KL at the start point
};
RhoResult rho(Classifier& m, const torch::Tensor& x, double eps, int64_t steps, bool clip, const OpContext* ctx);

// Accuracy and cross-entropy of one batch in eval mode without gradients: x images [B, C, H, W],
// y [B] labels (checked against the model's K classes). ceSum: Σ_i −log softmax(z_i)_{y_i} in nats
// (float64 accumulation).
struct BatchScore {
  int64_t correct = 0, count = 0;
  double ceSum = 0;
};
BatchScore evaluateBatch(Classifier& m, const torch::Tensor& x, const torch::Tensor& y);

}  // namespace fl
