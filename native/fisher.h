// Fisher information of the output distribution w.r.t. the input (shared/PAPER.md §3):
// G_x = Jᵀ M J with J = ∂z/∂x [C, D] and M = diag(p) − p pᵀ. Used by the fisher ops
// (binding/fisher.cc), by metrics.cc (disentanglement, ρ), by attacks (the Fisher-eigenvector attack) and by
// training's per-epoch tracking.
//
// Every function runs the model in the dtype of its parameters (x is cast to it): a model
// converted to float64 gives a float64 computation end to end.
#pragma once
#include <torch/torch.h>
#include <memory>
#include <optional>
#include "models/classifier.h"

namespace fl {

struct ExactFisher {
  torch::Tensor lambdaMax;  // [B] float64: spectral norm of G_x
  torch::Tensor trace;      // [B] float64: tr G_x = tr(M K)
  torch::Tensor frobenius;  // [B] float64: ‖G_x‖_F = sqrt(tr(M K M K))
  torch::Tensor spectrum;   // [B, C] float64: eigenvalues of M½ K M½ (the non-zero spectrum of G_x), descending
  torch::Tensor eigvec;     // [B, ...input shape] (x's dtype): unit leading eigenvector of G_x; undefined unless asked
  torch::Tensor probs;      // [B, C] float64: p(x)
  std::string engine;       // "linear" (the model's linearisation) or "autograd"
  std::string engineReason; // why autograd ("" with the linear engine)
};

// Speed options of the Fisher computations (results do not depend on them beyond rounding).
struct FisherOptions {
  // Run convolutions in channels-last memory format (input and 4-D weights, restored after).
  // Which layout is faster depends on the model and the CPU: lib/fisher.ts's exact autotune
  // measures it (docs/fisher.md has the figures); the matrix-free methods take it as given.
  bool channelsLast = false;
  // Backward passes run concurrently on this many threads (each with cores/streams intra-op
  // threads); 0 or 1: one after the other.
  int streams = 1;
  // Compute through autograd even where the model has a linearisation (built-ins do): the
  // reference path, slower (double-backward JVPs, the engine per VJP); for cross-checks.
  bool autograd = false;
  // Exact method, linear engine: classes' cotangents pushed through one VJP as a [k·B] batch
  // (1: one class per pass; clamped to C−1; the autograd engine always uses 1).
  int64_t classesPerPass = 1;
};

// One candidate of the exact method's speed options and its measured cost
struct ExactTuneRow {
  bool channelsLast = false;
  int64_t classesPerPass = 1;
  double msPerClass = 0;            // median of msSamples; NaN: not measured
  std::vector<double> msSamples;    // each timed pass: ms per class's VJP over the batch
};
// Times each candidate's VJP pass on x's batch: one warm-up and three timed passes each, then up
// to two more timed passes while the time since the start is under budgetMs; with the linear
// engine the candidates take turns within each round. Every timed pass is returned (the noise of
// the measurement) with their median. Candidates with classesPerPass > 1 need the linear engine
// (NaN otherwise). For the exact method's autotune (lib/fisher.ts chooses and caches).
std::vector<ExactTuneRow> tuneExact(Classifier& m, const torch::Tensor& x, std::vector<ExactTuneRow> candidates, double budgetMs, bool autograd);
// One op of a profiled VJP pass: its kind, wall time (ms) and the multiply-add FLOPs of its input
// gradient (convolutions and linear layers: 2 per multiply-add, the same count as their forward;
// 0 for the other kinds)
struct VjpProfileRow {
  std::string op;
  double ms = 0, flops = 0;
};
// Per-op rows of one VJP pass of k classes over the linearisation (tape order): the per-layer
// profile of the exact method. Empty without a linearisation.
std::vector<VjpProfileRow> profileVjp(Classifier& m, const torch::Tensor& x, bool channelsLast, int64_t k);

// Exact per-sample Fisher quantities from K = J Jᵀ (C−1 input-gradient passes over one forward:
// G only sees logit differences since M 1 = 0). Runs in eval mode without weight gradients and
// restores the model's state.
// x: [B, C_in, H, W] -> ExactFisher. The three-argument form runs channels-last (the exact default).
ExactFisher fisherExact(Classifier& m, const torch::Tensor& x, bool wantEigvec);
ExactFisher fisherExact(Classifier& m, const torch::Tensor& x, bool wantEigvec, const FisherOptions& o);

// The dtype a model computes in (its first floating parameter; float32 without parameters).
torch::ScalarType modelDtype(Classifier& m);

// Converts 4-D parameters to channels-last for its lifetime (then back to contiguous).
class LayoutGuard {
 public:
  LayoutGuard(Classifier& m, bool channelsLast);
  ~LayoutGuard();
  LayoutGuard(const LayoutGuard&) = delete;
  LayoutGuard& operator=(const LayoutGuard&) = delete;

 private:
  std::vector<torch::Tensor> params_;
};

// The engine every method starts from (fisher.cc, fisher_tune.cc): the model's linearisation at
// x0 (models/linear_tape.h), in channels-last when o.channelsLast, with *x the input cast to the
// model's device and dtype; or nullptr where the model has none or o.autograd (*why, when given,
// says why), then *x requires grad, *z is autograd's graph of the logits, and *layout holds the
// parameters in the asked layout. Eval mode and gradient mode are the caller's. z: logits [B, C].
std::shared_ptr<LinearTape> linearise(Classifier& m, const torch::Tensor& x0, const FisherOptions& o, torch::Tensor* x,
                                      torch::Tensor* z, std::unique_ptr<LayoutGuard>* layout, std::string* why = nullptr);
// k cotangents stacked [k·B, C] for logits z [B, C]: block j selects class c0 + j minus the last class
torch::Tensor classCotangents(const torch::Tensor& z, int64_t c0, int64_t k);

// Directions d shaped like x (float) as rows [B, D] float64; ERR_SHAPE / ERR_DTYPE naming `what`
torch::Tensor flatDirections(const torch::Tensor& d, const torch::Tensor& x, const char* what);

// Matrix-free access to G_x for one batch: Fisher-vector products G v = Jᵀ (M (J v)).
// Built-in models and TorchScript models whose graph lowers: one recorded forward
// (models/linear_tape.h), then J v is one bias-free forward of v through the linearised network
// and Jᵀ w one input-only backward. Other models or options.autograd: one forward with a retained graph, J v by double backward through a dummy
// u (J v = ∂/∂u [(Jᵀ u) · v]), Jᵀ w by autograd. Vectors are [B, D] float64 (D = input size per sample).
// Holds eval mode / no weight gradients for its lifetime.
class FisherOperator {
 public:
  FisherOperator(Classifier& m, const torch::Tensor& x, const FisherOptions& o = {});
  ~FisherOperator();
  int64_t B = 0, C = 0, D = 0;
  torch::Tensor probs;  // [B, C] float64
  torch::Tensor logp;   // [B, C] float64 log-softmax

  torch::Tensor vjp(const torch::Tensor& w);           // w [B, C] -> Jᵀ w [B, D] float64
  torch::Tensor jvp(const torch::Tensor& v);           // v [B, D] -> J v [B, C] float64
  torch::Tensor applyM(const torch::Tensor& w) const;  // w [B, C] -> M w [B, C] float64
  torch::Tensor gvp(const torch::Tensor& v);           // v [B, D] -> G v [B, D] float64
  torch::Tensor quadratic(const torch::Tensor& v);     // v [B, D] -> vᵀ G v [B] float64 (one JVP)
  // Start vector in the range of G: ∇ₓ log p_ŷ = Jᵀ (e_ŷ − p) with ŷ = argmax p, unit norm
  // (a fixed vector where it vanishes). Deterministic per sample, so batch-invariant.
  torch::Tensor startVector();
  const std::vector<int64_t>& inputShape() const { return shape_; }
  // "linear" (J v and Jᵀ w through the model's linearisation) or "autograd"
  const char* engine() const { return tape_ ? "linear" : "autograd"; }
  // Why the autograd engine ("" with the linear engine)
  const std::string& engineReason() const { return why_; }
  // Restricts the operator to the samples `index` (int64 [n], positions in the current batch):
  // afterwards B = n and every vector is [n, ...] for those samples (probs and logp too).
  // Linear engine only; returns false (and changes nothing) otherwise.
  bool restrict(const torch::Tensor& index);

 private:
  std::unique_ptr<ModeGuard> mode_;
  std::unique_ptr<LayoutGuard> layout_;
  std::shared_ptr<LinearTape> tape_;  // the model's linearisation, else autograd
  torch::Tensor x_, z_, u_, g_;
  std::vector<int64_t> shape_;     // the whole batch's input shape (inputShape())
  std::vector<int64_t> subShape_;  // the current samples' input shape (after restrict)
  torch::ScalarType dt_;
  std::string why_;
};

struct PowerResult {
  torch::Tensor lambdaMax;   // [B] float64
  torch::Tensor iterations;  // [B] int64: iterations until convergence (or maxIter)
  torch::Tensor converged;   // [B] bool
  torch::Tensor eigvec;      // [B, ...input shape] float64, unit
  std::string engine;        // FisherOperator::engine()
  std::string engineReason;  // FisherOperator::engineReason()
};
// Power iteration on G_x per sample; a sample stops (its values frozen) once the Rayleigh
// quotient changes by ≤ tol relative between iterations. With the linear engine the converged
// samples also stop costing: once a quarter of the computed ones are done, the operator is
// restricted to the rest (op is left restricted).
PowerResult fisherPower(FisherOperator& op, double tol, int64_t maxIter, const std::function<void(int64_t)>& onIter = {});

struct LanczosResult {
  torch::Tensor lambdaMax, trace, frobenius;  // [B] float64 (from the Ritz values)
  torch::Tensor ritz;                         // [B, steps] float64, descending
  torch::Tensor eigvec;                       // [B, ...input shape] float64, unit
  torch::Tensor steps;                        // [B] int64: Krylov dimension reached (breakdown stops it)
};
// Lanczos with full reorthogonalisation; steps ≥ rank(G) + 1 (default C) makes it exact.
LanczosResult fisherLanczos(FisherOperator& op, int64_t steps, const std::function<void(int64_t)>& onIter = {});

struct HutchinsonResult {
  torch::Tensor trace, traceSe, frobenius, frobeniusSe;  // [B] float64
};
// Hutchinson estimates with `probes` Rademacher vectors (the same seeded probes for every sample,
// so a sample's estimate does not depend on its batch): tr G = E vᵀGv, ‖G‖_F² = E ‖Gv‖².
HutchinsonResult fisherHutchinson(FisherOperator& op, int64_t probes, uint64_t seed, const std::function<void(int64_t)>& onIter = {});

}  // namespace fl
