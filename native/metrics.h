// Metrics of shared/PAPER.md §1–4: accuracy, cross-entropy, CCKL in O(N·C) from class sums,
// the JS mean and its lower bound over different-class pairs, the disentanglement's pair
// quadratic forms, and the adversarial measure ρ(x, ε) by a KL-PGD from the Fisher eigenvector.
#pragma once
#include <torch/torch.h>
#include <ATen/core/Generator.h>
#include <functional>
#include <utility>
#include <vector>
#include <napi.h>
#include "fisher.h"
#include "models/classifier.h"

namespace fl {

// KL(p ‖ q) per row from log-probabilities lp, lq [B, C] (any float dtype; differentiable) -> [B]:
// Σ_c e^{lp} (lp − lq). The one KL from log-probabilities: the metrics, ρ, the Fisher segment
// (klSegment), the KL attack (attacks.cc) and TRADES' loss (train.cc).
torch::Tensor klRows(const torch::Tensor& lp, const torch::Tensor& lq);

// KL(p(x) ‖ p(x + t d)) for each t of ts, in eval mode without gradients: x, d [B, ...], logp0
// = log p(x) [B, C] float64 -> [B, T] float64. `check` runs before each forward (abort).
torch::Tensor klAlong(Classifier& m, const torch::Tensor& x, const torch::Tensor& d, const torch::Tensor& logp0,
                      const std::vector<double>& ts, const std::function<void()>& check);

// KL(p(x) ‖ p(x + t d)) for each t of ts [B, T] and dᵀ G_x d [B] (one JVP), float64: the one body of
// the klSegment (fisher.cc) and klPairSegment ops. x, d: [B, ...].
struct Segment {
  torch::Tensor kl, quadratic;
};
Segment klSegmentOf(Classifier& m, const torch::Tensor& x, const torch::Tensor& d, const std::vector<double>& ts,
                    const FisherOptions& o, const std::function<void()>& check);
// The segment ops' `ts` argument: a JS array of numbers (ERR_ARG naming `what` otherwise)
std::vector<double> parseTs(const Napi::Value& v, const char* what);
// The segment ops' result: { kl: Tensor [B, T] float64, quadratic: Float64Array [B] }
Napi::Value writeSegment(Napi::Env env, const Segment& s);

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

struct PairMeans {
  double jsMean = 0, jsSe = 0, boundMean = 0, boundSe = 0, pairs = 0;
  bool exact = true;
};
// Mean over different-class ordered pairs of JS(p_i, p_j) (nats) and of
// 2 ln2 · max(0, 1 − √err_i − √err_j)² (err_i = 1 − p_{i,y_i}): exact by blocks when
// N ≤ exactMax, else over `samples` seeded uniform pairs (with standard errors).
PairMeans pairMeans(const torch::Tensor& logp, const torch::Tensor& y, int64_t exactMax, int64_t samples,
                    uint64_t seed, const std::function<void()>& check);

}  // namespace fl
