// The linearisation of a built-in network at one input: the chain of linear maps whose
// composition is the logits' Jacobian J = ∂z/∂x, recorded during one eval-mode forward pass
// (convolutions and linear layers without bias, BatchNorm as its per-channel scale, activations
// as their derivative at x, pools as their selection/averaging, reshapes, residual adds).
//
// Why: the Fisher engine needs J v (JVP) and Jᵀ u (VJP) many times for one x. Through autograd a
// JVP is a double backward (a graph of backward-of-backward nodes) and every VJP walks the
// engine; through the tape a JVP is one bias-free forward of the tangent and a VJP one input-only
// backward, with the activations' derivatives computed once. Same numbers (tested against
// autograd for every architecture), less work.
//
// Recording: the zoo's nets call the fl::rec helpers below for every op; while a tape is active on
// the calling thread they record, otherwise they only compute. An op that was not routed through
// them breaks the chain: linearize() then fails with ERR_INTERNAL and callers fall back to
// autograd. TorchScript models are recorded by interpreting their graph (torchscript_tape.h),
// which pushes ops directly (and uses the rec helpers where an op is exactly a built-in's).
#pragma once
#include <torch/torch.h>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace fl {

class LinearTape {
 public:
  enum class Kind {
    Scale, Conv, Linear, Relu, Mul, MaxPool, AvgPool, GlobalAvg, Reshape, Add, ShortcutA,
    // recorded by the TorchScript lowering (torchscript_tape.cc); see Op's last fields
    ConvNd, MaxPoolG, AvgPoolG, AdaptiveAvg, Reduce, View, Permute, Sub, Pad, Slice
  };
  struct Op {
    Kind kind;
    int64_t in = -1, in2 = -1, out = -1;  // node ids (in2: Add only)
    torch::Tensor w;                      // Conv/Linear weight; Scale: broadcastable factor; Mul: derivative; Relu, MaxPool(G): output
    torch::Tensor wFlipT;                 // Conv (stride 1): the weight flipped and transposed, [Cin, Cout, kh, kw]
    torch::Tensor input;                  // the op's forward input (its shape/layout for the backward)
    torch::Tensor idx;                    // MaxPool: argmax indices
    std::vector<int64_t> stride, padding, dilation, kernel;
    int64_t groups = 1, lo = 0, hi = 0;   // Conv groups; ShortcutA: zero channels before/after
    // TorchScript lowering. shape: the input's sizes without the batch dimension (View, Reduce,
    // Slice, Pad); dims: View's output sizes without the batch dimension, AdaptiveAvg's output
    // size, Reduce's dims (ascending), Permute's order, Pad's constant_pad_nd widths, Slice's
    // {dim, start, end, step, select?}; Reduce's factor in w (undefined: 1); MaxPoolG/AvgPoolG's
    // ceil mode, count_include_pad and divisor (0: none). ConvNd: any-dimensional convolution.
    std::vector<int64_t> shape, dims;
    bool ceil = false, countPad = true, keepdim = false;
    int64_t divisor = 0;
    // a ReLU whose only consumer is a max pool (MaxPool or MaxPoolG): the VJP masks the pool's (smaller)
    // cotangent by the pool's output sign instead (the same numbers: the pool passes each window's
    // cotangent to its argmax, whose ReLU output is the pool's output). Set on both ops by finish().
    bool fusedMask = false;
  };

  // Node id of a tensor produced by a recorded op (or the input); -1 if unknown.
  int64_t idOf(const torch::Tensor& t) const;
  // Registers t as the output of the op just pushed (or as the input when no op was pushed yet).
  void push(Op op, const torch::Tensor& out);
  void setInput(const torch::Tensor& x);
  // Registers t as another name of node id (an identity op: contiguous, eval-mode dropout, + const)
  void alias(const torch::Tensor& t, int64_t id);
  // Ends recording: z must be the last recorded tensor (the logits)
  void finish(const torch::Tensor& z);

  // v: tangents shaped like x (model dtype) -> J v [B, K]
  torch::Tensor jvp(const torch::Tensor& v) const;
  // u: cotangents [B, K] -> Jᵀ u, shaped like x
  torch::Tensor vjp(const torch::Tensor& u) const;
  // k VJPs in one pass over the tape: u [k·B, K] holds k blocks of B rows (block j: every sample's
  // j-th cotangent) -> Jᵀ u [k·B, ...x's shape]. The kernels see a k-times larger batch; the saved
  // per-sample tensors are broadcast, not copied (max-pool indices are repeated). opMs, if given,
  // receives each op's wall time in ms (tape order; for per-layer profiles).
  torch::Tensor vjp(const torch::Tensor& u, int64_t k, std::vector<double>* opMs = nullptr) const;

  // The linearisation of the samples `index` (int64 [n], positions in this tape's batch): every
  // per-sample saved tensor index-selected, weights shared. Costs one copy of those samples' saved
  // activations; lets iterative methods drop samples that have converged.
  std::shared_ptr<LinearTape> subset(const torch::Tensor& index) const;
  // The same linearisation with its per-sample saved tensors and convolution weights in memory
  // format fmt (4-D tensors only): the linearisation point is recorded in one layout and the
  // products run in another, so ReLU masks and max-pool argmax (at near-ties, which the layouts'
  // kernels round differently) do not depend on the products' layout.
  std::shared_ptr<LinearTape> withLayout(at::MemoryFormat fmt) const;

  int64_t nodes() const { return nodes_; }
  const std::vector<Op>& ops() const { return ops_; }

 private:
  int64_t lookup(const torch::Tensor& t, const char* what) const;
  // a copy with f applied once to each per-sample saved tensor (and to convolution weights if weightsToo)
  std::shared_ptr<LinearTape> mapSaved(const std::function<torch::Tensor(const torch::Tensor&)>& f, bool weightsToo) const;
  std::vector<Op> ops_;
  std::unordered_map<const void*, int64_t> ids_;
  std::vector<torch::Tensor> alive_;  // keeps recorded tensors (and so their addresses) alive while recording
  int64_t nodes_ = 0, outId_ = -1;
  std::vector<int64_t> inShape_;
  friend struct TapeRecording;
};

// Sets the calling thread's active tape for its lifetime (nested use is an error).
struct TapeRecording {
  explicit TapeRecording(LinearTape& t);
  ~TapeRecording();
};

// The tape active on this thread, or nullptr.
LinearTape* activeTape();

// Sets op.wFlipT where the stride-1 CPU input gradient runs as a forward convolution with the
// flipped, transposed kernel (op: a Conv with w, stride, padding, dilation, groups set).
void prepareConvBackward(LinearTape::Op& op);

// Recording helpers used by the zoo. Each computes the op and, under an active tape, records it.
namespace rec {
torch::Tensor conv(torch::nn::Conv2dImpl& c, const torch::Tensor& x);
torch::Tensor linear(torch::nn::LinearImpl& l, const torch::Tensor& x);
torch::Tensor batchNorm(torch::nn::BatchNorm2dImpl& b, const torch::Tensor& x);
// (x − mean) / std with broadcastable mean/std
torch::Tensor normalise(const torch::Tensor& x, const torch::Tensor& mean, const torch::Tensor& std);
// activation by name (relu | identity | tanh | softplus | gelu)
torch::Tensor activation(const std::string& act, const torch::Tensor& x);
torch::Tensor maxPool(const torch::Tensor& x, int64_t k);
torch::Tensor avgPool(const torch::Tensor& x, int64_t k);
torch::Tensor globalAvgPool(const torch::Tensor& x);  // [N, C, H, W] -> [N, C, 1, 1]
torch::Tensor flatten(const torch::Tensor& x);        // [N, ...] -> [N, prod]
torch::Tensor add(const torch::Tensor& a, const torch::Tensor& b);
// option-A shortcut: subsample by `stride`, zero-pad channels (lo before, hi after)
torch::Tensor shortcutA(const torch::Tensor& x, int64_t stride, int64_t lo, int64_t hi);
// dropout modules (nn::Dropout, nn::Dropout2d): identity in eval mode (the only mode a tape
// records in); in train mode the masks come from the generator of the enclosing
// DropoutGenerator scope (a training step's own), else from LibTorch's default generator
torch::Tensor dropout(torch::nn::Module& d, const std::function<torch::Tensor(const torch::Tensor&)>& fwd, const torch::Tensor& x);
}  // namespace rec

// While alive, built-in models' dropout on this thread draws its masks from `gen` (a training
// step's seeded generator), so no op reseeds or draws from LibTorch's process-wide generator.
class DropoutGenerator {
 public:
  explicit DropoutGenerator(at::Generator gen);
  ~DropoutGenerator();
  DropoutGenerator(const DropoutGenerator&) = delete;
  DropoutGenerator& operator=(const DropoutGenerator&) = delete;

 private:
  at::Generator gen_;
  at::Generator* prev_;
};

}  // namespace fl
