// The linearisation of a built-in network (see linear_tape.h).
#include "models/linear_tape.h"
#include <algorithm>
#include "common/errors.h"
#include "common/tensor_ops.h"
#include <torch/version.h>
#include <chrono>

namespace fl {

namespace {
thread_local LinearTape* tTape = nullptr;

const void* key(const torch::Tensor& t) { return t.unsafeGetTensorImpl(); }

std::vector<int64_t> arr(torch::ExpandingArray<2> a) { return {a->at(0), a->at(1)}; }
}  // namespace

LinearTape* activeTape() { return tTape; }

namespace {
thread_local at::Generator* tDropoutGen = nullptr;
}  // namespace

DropoutGenerator::DropoutGenerator(at::Generator gen) : gen_(std::move(gen)), prev_(tDropoutGen) { tDropoutGen = &gen_; }
DropoutGenerator::~DropoutGenerator() { tDropoutGen = prev_; }

TapeRecording::TapeRecording(LinearTape& t) {
  FL_CHECK(tTape == nullptr, ERR_INTERNAL, "a linearisation is already being recorded on this thread");
  tTape = &t;
}
TapeRecording::~TapeRecording() { tTape = nullptr; }

int64_t LinearTape::idOf(const torch::Tensor& t) const {
  auto it = ids_.find(key(t));
  return it == ids_.end() ? -1 : it->second;
}

int64_t LinearTape::lookup(const torch::Tensor& t, const char* what) const {
  int64_t id = idOf(t);
  FL_CHECK(id >= 0, ERR_INTERNAL, "linearisation: the input of ", what, " was not produced by a recorded op");
  return id;
}

void LinearTape::setInput(const torch::Tensor& x) {
  FL_CHECK(nodes_ == 0, ERR_INTERNAL, "linearisation: input set twice");
  inShape_ = x.sizes().vec();
  ids_[key(x)] = nodes_++;
  alive_.push_back(x);
}

void LinearTape::alias(const torch::Tensor& t, int64_t id) {
  FL_CHECK(id >= 0 && id < nodes_, ERR_INTERNAL, "linearisation: alias of an unknown node");
  ids_[key(t)] = id;
  alive_.push_back(t);
}

void LinearTape::push(Op op, const torch::Tensor& out) {
  op.out = nodes_++;
  ids_[key(out)] = op.out;
  alive_.push_back(out);
  ops_.push_back(std::move(op));
}

void LinearTape::finish(const torch::Tensor& z) {
  outId_ = lookup(z, "the logits");
  FL_CHECK(z.dim() == 2, ERR_INTERNAL, "linearisation: logits must be [B, K]");
  // per node: how many ops read it, and which op wrote it (-1: the input)
  std::vector<int64_t> readers, producer;
  auto link = [&]() {
    readers.assign(nodes_, 0);
    producer.assign(nodes_, -1);
    for (size_t i = 0; i < ops_.size(); ++i) {
      ++readers[ops_[i].in];
      if (ops_[i].in2 >= 0) ++readers[ops_[i].in2];
      producer[ops_[i].out] = static_cast<int64_t>(i);
    }
  };
  link();
  // resnet's option-A shortcut as a lowered graph writes it, x[:, :, ::s, ::s] padded with zero
  // channels: two strided slices (H and W, from 0 over the whole extent, either order) read only by
  // a channel-only constant pad, recorded as the built-ins' one ShortcutA op (one zero-filled
  // buffer in the VJP instead of three)
  auto wholeStrided = [&](const Op& o, int64_t dim) {
    return o.kind == Kind::Slice && o.input.defined() && o.input.dim() == 4 && o.dims.size() == 5 && o.dims[0] == dim &&
           o.dims[1] == 0 && o.dims[4] == 0 && o.dims[3] >= 1 && o.dims[2] + o.dims[3] > o.input.size(dim);
  };
  std::vector<bool> dropped(ops_.size(), false);
  for (Op& op : ops_) {
    if (op.kind != Kind::Pad || op.dims.size() != 6 || op.dims[0] || op.dims[1] || op.dims[2] || op.dims[3] ||
        op.dims[4] < 0 || op.dims[5] < 0 || op.in == outId_)
      continue;
    const int64_t j = producer[op.in];
    if (j < 0 || readers[op.in] != 1) continue;
    const int64_t i = producer[ops_[j].in];
    if (i < 0 || readers[ops_[j].in] != 1 || ops_[j].in == outId_) continue;
    const Op &a = ops_[i], &b = ops_[j];
    const bool hw = wholeStrided(a, 2) && wholeStrided(b, 3), wh = wholeStrided(a, 3) && wholeStrided(b, 2);
    if (!(hw || wh) || a.dims[3] != b.dims[3]) continue;
    Op sc;
    sc.kind = Kind::ShortcutA;
    sc.in = a.in;
    sc.out = op.out;
    sc.input = a.input;
    sc.stride = {a.dims[3], a.dims[3]};
    sc.lo = op.dims[4];
    sc.hi = op.dims[5];
    op = std::move(sc);
    dropped[i] = dropped[j] = true;
  }
  if (std::find(dropped.begin(), dropped.end(), true) != dropped.end()) {
    std::vector<Op> kept;
    for (size_t i = 0; i < ops_.size(); ++i)
      if (!dropped[i]) kept.push_back(std::move(ops_[i]));
    ops_ = std::move(kept);
    link();
  }
  // ReLU -> max pool pairs where the pool is the ReLU output's only reader (see Op::fusedMask)
  for (Op& op : ops_) {
    if ((op.kind != Kind::MaxPool && op.kind != Kind::MaxPoolG) || !op.w.defined()) continue;
    int64_t j = producer[op.in];
    if (j < 0 || ops_[j].kind != Kind::Relu || readers[op.in] != 1 || op.in == outId_) continue;
    op.fusedMask = true;
    ops_[j].fusedMask = true;
  }
  ids_.clear();
  alive_.clear();
}

namespace {

// A CPU convolution with ≤ 4 input channels (an RGB or grey input layer): oneDNN reorders its
// wide output for little arithmetic, so those run on LibTorch's im2col kernels (docs/fisher.md,
// "Kernel choices of the linear engine"; bench/python/conv_kernels.py measures both).
bool thinCpuConv(const LinearTape::Op& op, const torch::Tensor& t) {
  return t.is_cpu() && op.w.size(1) <= 4 && op.groups == 1 && op.dilation[0] == 1 && op.dilation[1] == 1 &&
         t.is_contiguous();
}

// t in like's memory format (a channels-last tangent stays channels-last through pads and
// slices, as through the built-ins' ShortcutA: mixing formats makes every later kernel convert)
torch::Tensor keepFormat(const torch::Tensor& t, const torch::Tensor& like) {
  if (t.dim() != 4 || like.dim() != 4) return t;
  at::MemoryFormat f = like.suggest_memory_format();
  return t.suggest_memory_format() == f ? t : t.contiguous(f);
}

// One op applied forward to a tangent (a: its input's tangent, b: the second input's for Add)
torch::Tensor forwardOp(const LinearTape::Op& op, const torch::Tensor& a, const torch::Tensor& b) {
  using K = LinearTape::Kind;
  switch (op.kind) {
    case K::Scale: return a * op.w;
    case K::Conv:
      if (thinCpuConv(op, a)) return at::thnn_conv2d(a, op.w, {op.w.size(2), op.w.size(3)}, {}, op.stride, op.padding);
      return at::conv2d(a, op.w, {}, op.stride, op.padding, op.dilation, op.groups);
    case K::Linear: return at::linear(a, op.w);
    case K::Relu: return at::threshold_backward(a, op.w, 0);
    case K::Mul: return a * op.w;
    case K::MaxPool: {
      auto shape = op.idx.sizes();
      return a.flatten(2).gather(2, op.idx.flatten(2)).view(shape);
    }
    case K::AvgPool: return at::avg_pool2d(a, op.kernel, op.kernel);
    case K::GlobalAvg: return a.mean({2, 3}, /*keepdim=*/true);
    case K::Reshape: return a.reshape({a.size(0), -1});
    case K::Add: return a + b;
    case K::ShortcutA: {
      torch::Tensor s = a;
      if (op.stride[0] != 1) s = s.slice(2, 0, c10::nullopt, op.stride[0]).slice(3, 0, c10::nullopt, op.stride[0]);
      return at::constant_pad_nd(s, {0, 0, 0, 0, op.lo, op.hi}, 0);
    }
    case K::ConvNd:
      return at::convolution(a, op.w, {}, op.stride, op.padding, op.dilation, false,
                             std::vector<int64_t>(op.stride.size(), 0), op.groups);
    case K::MaxPoolG: {
      auto shape = op.idx.sizes();
      return a.flatten(2).gather(2, op.idx.flatten(2)).view(shape);
    }
    case K::AvgPoolG:
      return at::avg_pool2d(a, op.kernel, op.stride, op.padding, op.ceil, op.countPad,
                            op.divisor > 0 ? c10::optional<int64_t>(op.divisor) : c10::nullopt);
    case K::AdaptiveAvg: return at::adaptive_avg_pool2d(a, op.dims);
    case K::Reduce: {
      torch::Tensor r = a.sum(op.dims, op.keepdim);
      return op.w.defined() ? r * op.w : r;
    }
    case K::View: {
      std::vector<int64_t> s{a.size(0)};
      s.insert(s.end(), op.dims.begin(), op.dims.end());
      return a.reshape(s);
    }
    case K::Permute: return a.permute(op.dims);
    case K::Sub: return a - b;
    case K::Pad: return keepFormat(at::constant_pad_nd(a, op.dims, 0), a);
    case K::Slice:
      if (op.dims[4]) return a.select(op.dims[0], op.dims[1]);
      return a.slice(op.dims[0], op.dims[1], op.dims[2], op.dims[3]);
  }
  throw FlError(ERR_INTERNAL, "linearisation: unknown op");
}

// The sizes [batch, shape...] (the input of a TorchScript-lowered op, batch from a tangent)
std::vector<int64_t> withBatch(int64_t b, const std::vector<int64_t>& shape) {
  std::vector<int64_t> s{b};
  s.insert(s.end(), shape.begin(), shape.end());
  return s;
}

// A tensor shaped like the saved per-sample tensor t for k stacked batches ([k·B, ...]), in t's
// memory format, uninitialised: the backward kernels read only its shape
torch::Tensor likeK(const torch::Tensor& t, int64_t k) {
  if (k == 1) return t;
  std::vector<int64_t> s = t.sizes().vec();
  s[0] *= k;
  return at::empty(s, t.options().memory_format(t.suggest_memory_format()));
}

// f(g, w) for g [k·B, ...] and a per-sample w [B, ...]: g viewed [k, B, ...] against w broadcast
template <class F>
torch::Tensor perSample(const torch::Tensor& g, const torch::Tensor& w, int64_t k, F f) {
  if (k == 1) return f(g, w);
  std::vector<int64_t> s = g.sizes().vec(), v = {k, s[0] / k};
  v.insert(v.end(), s.begin() + 1, s.end());
  return f(g.view(v), w.unsqueeze(0)).reshape(s);
}

// One op applied backward to a cotangent g of its output (k stacked batches, see vjp); returns the
// input's (and for Add the second input's, in *g2) cotangent
torch::Tensor backwardOp(const LinearTape::Op& op, const torch::Tensor& g, torch::Tensor* g2, int64_t k) {
  using K = LinearTape::Kind;
  switch (op.kind) {
    case K::Scale: return g * op.w;
    case K::Conv:
      if (thinCpuConv(op, g))
        return std::get<0>(at::_slow_conv2d_backward(g.contiguous(), likeK(op.input, k), op.w, {op.w.size(2), op.w.size(3)}, op.stride,
                                                     op.padding, {true, false, false}));
      if (op.wFlipT.defined())  // CPU, stride 1: the input gradient is a "full" convolution
        return at::conv2d(g, op.wFlipT, {}, 1, {op.w.size(2) - 1 - op.padding[0], op.w.size(3) - 1 - op.padding[1]});
      return std::get<0>(at::convolution_backward(g, likeK(op.input, k), op.w, c10::nullopt, op.stride, op.padding, op.dilation,
                                                  /*transposed=*/false, {0, 0}, op.groups, {true, false, false}));
    case K::Linear: return g.matmul(op.w);
    case K::Relu:
      if (op.fusedMask) return g;  // its max pool applied the mask
      return perSample(g, op.w, k, [](const torch::Tensor& a, const torch::Tensor& w) { return at::threshold_backward(a, w, 0); });
    case K::Mul: return perSample(g, op.w, k, [](const torch::Tensor& a, const torch::Tensor& w) { return a * w; });
    case K::MaxPool: {
      torch::Tensor idx = k == 1 ? op.idx : op.idx.repeat({k, 1, 1, 1}).contiguous(op.idx.suggest_memory_format());
      torch::Tensor gm = !op.fusedMask ? g
          : perSample(g, op.w, k, [](const torch::Tensor& a, const torch::Tensor& w) { return at::threshold_backward(a, w, 0); });
      return at::max_pool2d_with_indices_backward(gm, likeK(op.input, k), op.kernel, op.kernel, {0, 0}, {1, 1}, false, idx);
    }
    case K::AvgPool:
      return at::avg_pool2d_backward(g, likeK(op.input, k), op.kernel, op.kernel, {0, 0}, false, true, c10::nullopt);
    case K::GlobalAvg: {
      double n = static_cast<double>(op.input.size(2) * op.input.size(3));
      std::vector<int64_t> s = op.input.sizes().vec();
      s[0] *= k;
      return (g / n).expand(s).contiguous(op.input.suggest_memory_format());
    }
    case K::Reshape: {
      std::vector<int64_t> s = op.input.sizes().vec();
      s[0] *= k;
      return g.reshape(s);
    }
    case K::Add:
      *g2 = g;
      return g;
    case K::ShortcutA: {
      torch::Tensor s = g.narrow(1, op.lo, op.input.size(1));
      if (op.stride[0] == 1) return s;
      torch::Tensor r = torch::zeros_like(likeK(op.input, k));
      r.slice(2, 0, c10::nullopt, op.stride[0]).slice(3, 0, c10::nullopt, op.stride[0]).copy_(s);
      return r;
    }
    case K::ConvNd:
      return std::get<0>(at::convolution_backward(g, likeK(op.input, k), op.w, c10::nullopt, op.stride, op.padding, op.dilation,
                                                  /*transposed=*/false, std::vector<int64_t>(op.stride.size(), 0),
                                                  op.groups, {true, false, false}));
    case K::MaxPoolG: {
      std::vector<int64_t> reps(op.idx.dim(), 1);
      reps[0] = k;
      torch::Tensor idx = k == 1 ? op.idx : op.idx.repeat(reps).contiguous(op.idx.suggest_memory_format());
      // fused: every window whose argmax is element j has the pool output y_j (padding is −∞, so
      // an argmax is always a real element), so masking each window's cotangent by its output's
      // sign is the ReLU's mask on their sum
      torch::Tensor gm = !op.fusedMask ? g
          : perSample(g, op.w, k, [](const torch::Tensor& a, const torch::Tensor& w) { return at::threshold_backward(a, w, 0); });
      return at::max_pool2d_with_indices_backward(gm, likeK(op.input, k), op.kernel, op.stride, op.padding, op.dilation, op.ceil,
                                                  idx);
    }
    case K::AvgPoolG:
      return at::avg_pool2d_backward(g, likeK(op.input, k), op.kernel, op.stride, op.padding, op.ceil, op.countPad,
                                     op.divisor > 0 ? c10::optional<int64_t>(op.divisor) : c10::nullopt);
    case K::AdaptiveAvg: return at::_adaptive_avg_pool2d_backward(g, likeK(op.input, k));
    case K::Reduce: {
      torch::Tensor r = op.w.defined() ? g * op.w : g;
      if (!op.keepdim)
        for (int64_t d : op.dims) r = r.unsqueeze(d);  // dims ascending
      return r.expand(withBatch(g.size(0), op.shape));
    }
    case K::View: return g.reshape(withBatch(g.size(0), op.shape));
    case K::Permute: {
      std::vector<int64_t> inv(op.dims.size());
      for (size_t i = 0; i < op.dims.size(); ++i) inv[op.dims[i]] = static_cast<int64_t>(i);
      return g.permute(inv);
    }
    case K::Sub:
      *g2 = -g;
      return g;
    case K::Pad: {
      std::vector<int64_t> neg(op.dims.size());
      for (size_t i = 0; i < neg.size(); ++i) neg[i] = -op.dims[i];
      return keepFormat(at::constant_pad_nd(g, neg, 0), g);
    }
    case K::Slice: {
      torch::Tensor r = torch::zeros(withBatch(g.size(0), op.shape), g.options());
      r = keepFormat(r, g);
      if (op.dims[4]) r.select(op.dims[0], op.dims[1]).copy_(g);
      else r.slice(op.dims[0], op.dims[1], op.dims[2], op.dims[3]).copy_(g);
      return r;
    }
  }
  throw FlError(ERR_INTERNAL, "linearisation: unknown op");
}

}  // namespace

std::shared_ptr<LinearTape> LinearTape::mapSaved(const std::function<torch::Tensor(const torch::Tensor&)>& f, bool weightsToo) const {
  FL_CHECK(outId_ >= 0, ERR_INTERNAL, "linearisation was not finished");
  torch::NoGradGuard ng;
  auto t = std::make_shared<LinearTape>();
  t->nodes_ = nodes_;
  t->outId_ = outId_;
  t->inShape_ = inShape_;
  // one mapping per saved tensor (a ReLU's output is also the next op's input)
  std::unordered_map<const void*, torch::Tensor> picked;
  auto pick = [&](const torch::Tensor& x) -> torch::Tensor {
    if (!x.defined()) return x;
    auto it = picked.find(key(x));
    if (it != picked.end()) return it->second;
    torch::Tensor y = f(x);
    picked.emplace(key(x), y);
    return y;
  };
  using K = Kind;
  for (const Op& op : ops_) {
    Op o = op;
    o.input = pick(op.input);
    o.idx = pick(op.idx);
    if (op.kind == K::Relu || op.kind == K::Mul || op.kind == K::MaxPool || op.kind == K::MaxPoolG) o.w = pick(op.w);  // per-sample derivatives / outputs
    if (weightsToo && op.kind == K::Conv) {
      o.w = f(op.w.detach());
      if (op.wFlipT.defined()) o.wFlipT = f(op.wFlipT);
    }
    t->ops_.push_back(std::move(o));
  }
  return t;
}

std::shared_ptr<LinearTape> LinearTape::subset(const torch::Tensor& index) const {
  auto t = mapSaved([&](const torch::Tensor& x) { return x.index_select(0, index).contiguous(x.suggest_memory_format()); }, false);
  t->inShape_[0] = index.size(0);
  return t;
}

std::shared_ptr<LinearTape> LinearTape::withLayout(at::MemoryFormat fmt) const {
  return mapSaved([fmt](const torch::Tensor& x) { return x.dim() == 4 ? x.contiguous(fmt) : x; }, true);
}

torch::Tensor LinearTape::jvp(const torch::Tensor& v) const {
  FL_CHECK(outId_ >= 0, ERR_INTERNAL, "linearisation was not finished");
  torch::NoGradGuard ng;
  // the last op that reads each node, so tangents are freed as soon as possible
  std::vector<int64_t> last(nodes_, -1);
  for (size_t i = 0; i < ops_.size(); ++i) {
    last[ops_[i].in] = static_cast<int64_t>(i);
    if (ops_[i].in2 >= 0) last[ops_[i].in2] = static_cast<int64_t>(i);
  }
  std::vector<torch::Tensor> t(nodes_);
  t[0] = v.reshape(inShape_);
  for (size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    t[op.out] = forwardOp(op, t[op.in], op.in2 >= 0 ? t[op.in2] : torch::Tensor());
    if (last[op.in] == static_cast<int64_t>(i) && op.in != outId_) t[op.in] = torch::Tensor();
    if (op.in2 >= 0 && last[op.in2] == static_cast<int64_t>(i) && op.in2 != outId_) t[op.in2] = torch::Tensor();
  }
  return t[outId_];
}

torch::Tensor LinearTape::vjp(const torch::Tensor& u) const { return vjp(u, 1); }

torch::Tensor LinearTape::vjp(const torch::Tensor& u, int64_t k, std::vector<double>* opMs) const {
  FL_CHECK(outId_ >= 0, ERR_INTERNAL, "linearisation was not finished");
  FL_CHECK(k >= 1 && u.size(0) == k * inShape_[0], ERR_INTERNAL, "linearisation: ", k, " stacked cotangent batches need ",
           k * inShape_[0], " rows, got ", u.size(0));
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> g(nodes_);
  g[outId_] = u;
  if (opMs) opMs->assign(ops_.size(), 0.0);
  auto acc = [&](int64_t id, const torch::Tensor& c) { g[id] = g[id].defined() ? g[id] + c : c; };
  for (auto it = ops_.rbegin(); it != ops_.rend(); ++it) {
    const Op& op = *it;
    if (!g[op.out].defined()) continue;  // does not reach the logits
    auto t0 = std::chrono::steady_clock::now();
    torch::Tensor g2;
    torch::Tensor gi = backwardOp(op, g[op.out], &g2, k);
    g[op.out] = torch::Tensor();
    acc(op.in, gi);
    if (op.in2 >= 0) acc(op.in2, g2);
    if (opMs) syncDevice(gi);  // CUDA: the op's kernels, not their launch
    if (opMs) (*opMs)[ops_.rend() - it - 1] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  FL_CHECK(g[0].defined(), ERR_INTERNAL, "linearisation: the logits do not depend on the input");
  return g[0];
}

// ---------------- recording helpers ----------------

void prepareConvBackward(LinearTape::Op& op) {
  const torch::Tensor& w = op.w;
  // stride-1 input gradients on the CPU as a forward convolution with the flipped, transposed
  // kernel: oneDNN's forward kernels beat its backward-data kernels here (docs/fisher.md, "Kernel
  // choices of the linear engine"). Costs one copy of the layer's weights per linearisation.
  if (w.is_cpu() && op.stride[0] == 1 && op.stride[1] == 1 && op.groups == 1 && op.dilation[0] == 1 &&
      op.dilation[1] == 1 && op.padding[0] <= w.size(2) - 1 && op.padding[1] <= w.size(3) - 1) {
    torch::NoGradGuard ng;
    op.wFlipT = w.detach().flip({2, 3}).transpose(0, 1).contiguous(w.suggest_memory_format());
  }
}

namespace rec {

namespace {
using Op = LinearTape::Op;
using K = LinearTape::Kind;

Op unary(LinearTape& t, K kind, const torch::Tensor& x, const char* what) {
  Op op;
  op.kind = kind;
  op.in = t.idOf(x);
  FL_CHECK(op.in >= 0, ERR_INTERNAL, "linearisation: the input of ", what, " was not produced by a recorded op");
  return op;
}
}  // namespace

torch::Tensor conv(torch::nn::Conv2dImpl& c, const torch::Tensor& x) {
  torch::Tensor y = c.forward(x);
  if (LinearTape* t = activeTape()) {
    Op op = unary(*t, K::Conv, x, "a convolution");
    op.w = c.weight;
    op.input = x;
    op.stride = arr(c.options.stride());
    op.dilation = arr(c.options.dilation());
#if TORCH_VERSION_MAJOR >= 2
    auto* pad = std::get_if<torch::ExpandingArray<2>>(&c.options.padding());  // c10::variant is std::variant since 2.0
#else
    auto* pad = c10::get_if<torch::ExpandingArray<2>>(&c.options.padding());
#endif
    FL_CHECK(pad != nullptr, ERR_INTERNAL, "linearisation: only explicit convolution padding is supported");
    op.padding = arr(*pad);
    op.groups = c.options.groups();
    prepareConvBackward(op);
    FL_CHECK(c.options.padding_mode().index() == 0, ERR_INTERNAL, "linearisation: only zero padding is supported");
    t->push(std::move(op), y);
  }
  return y;
}

torch::Tensor linear(torch::nn::LinearImpl& l, const torch::Tensor& x) {
  torch::Tensor y = l.forward(x);
  if (LinearTape* t = activeTape()) {
    Op op = unary(*t, K::Linear, x, "a linear layer");
    op.w = l.weight;
    op.input = x;
    t->push(std::move(op), y);
  }
  return y;
}

torch::Tensor batchNorm(torch::nn::BatchNorm2dImpl& b, const torch::Tensor& x) {
  torch::Tensor y = b.forward(x);
  if (LinearTape* t = activeTape()) {
    FL_CHECK(!b.is_training(), ERR_INTERNAL, "linearisation needs BatchNorm in eval mode");
    Op op = unary(*t, K::Scale, x, "a batch norm");
    torch::NoGradGuard ng;
    torch::Tensor s = (b.running_var + b.options.eps()).rsqrt();
    if (b.options.affine()) s = s * b.weight;
    op.w = s.detach().view({1, -1, 1, 1});
    t->push(std::move(op), y);
  }
  return y;
}

torch::Tensor normalise(const torch::Tensor& x, const torch::Tensor& mean, const torch::Tensor& std) {
  torch::Tensor y = (x - mean) / std;
  if (LinearTape* t = activeTape()) {
    Op op = unary(*t, K::Scale, x, "the normalisation");
    op.w = std.reciprocal().detach();
    t->push(std::move(op), y);
  }
  return y;
}

torch::Tensor activation(const std::string& act, const torch::Tensor& x) {
  torch::Tensor y;
  if (act == "relu") y = torch::relu(x);
  else if (act == "identity") return x;
  else if (act == "tanh") y = torch::tanh(x);
  else if (act == "softplus") y = torch::softplus(x);
  else if (act == "gelu") y = torch::gelu(x);
  else throw FlError(ERR_ARG, str("unknown activation '", act, "'; expected relu, identity, tanh, softplus or gelu"));
  if (LinearTape* t = activeTape()) {
    torch::NoGradGuard ng;
    if (act == "relu") {
      Op op = unary(*t, K::Relu, x, "an activation");
      op.w = y;  // relu'(x) = [y > 0]
      t->push(std::move(op), y);
    } else {
      Op op = unary(*t, K::Mul, x, "an activation");
      if (act == "tanh") op.w = 1 - y * y;
      else if (act == "softplus") op.w = torch::sigmoid(x);
      else op.w = at::gelu_backward(torch::ones_like(x), x);
      t->push(std::move(op), y);
    }
  }
  return y;
}

torch::Tensor maxPool(const torch::Tensor& x, int64_t k) {
  LinearTape* t = activeTape();
  if (!t) return torch::max_pool2d(x, k);
  auto [y, idx] = at::max_pool2d_with_indices(x, {k, k}, {k, k}, {0, 0}, {1, 1}, false);
  Op op = unary(*t, K::MaxPool, x, "a max pool");
  op.idx = idx;
  op.w = y;
  op.input = x;
  op.kernel = {k, k};
  t->push(std::move(op), y);
  return y;
}

torch::Tensor avgPool(const torch::Tensor& x, int64_t k) {
  torch::Tensor y = torch::avg_pool2d(x, k);
  if (LinearTape* t = activeTape()) {
    Op op = unary(*t, K::AvgPool, x, "an average pool");
    op.input = x;
    op.kernel = {k, k};
    t->push(std::move(op), y);
  }
  return y;
}

torch::Tensor globalAvgPool(const torch::Tensor& x) {
  torch::Tensor y = torch::adaptive_avg_pool2d(x, {1, 1});
  if (LinearTape* t = activeTape()) {
    Op op = unary(*t, K::GlobalAvg, x, "the global average pool");
    op.input = x;
    t->push(std::move(op), y);
  }
  return y;
}

torch::Tensor flatten(const torch::Tensor& x) {
  torch::Tensor y = x.flatten(1);
  if (LinearTape* t = activeTape()) {
    Op op = unary(*t, K::Reshape, x, "a flatten");
    op.input = x;
    if (y.unsafeGetTensorImpl() == x.unsafeGetTensorImpl()) y = y.alias();  // a new node needs a new tensor
    t->push(std::move(op), y);
  }
  return y;
}

torch::Tensor add(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor y = a + b;
  if (LinearTape* t = activeTape()) {
    Op op = unary(*t, K::Add, a, "a residual add");
    op.in2 = t->idOf(b);
    FL_CHECK(op.in2 >= 0, ERR_INTERNAL, "linearisation: the input of a residual add was not produced by a recorded op");
    t->push(std::move(op), y);
  }
  return y;
}

torch::Tensor shortcutA(const torch::Tensor& x, int64_t stride, int64_t lo, int64_t hi) {
  torch::Tensor s = x;
  if (stride != 1) s = s.slice(2, 0, c10::nullopt, stride).slice(3, 0, c10::nullopt, stride);
  torch::Tensor y = torch::constant_pad_nd(s, {0, 0, 0, 0, lo, hi}, 0);
  if (LinearTape* t = activeTape()) {
    Op op = unary(*t, K::ShortcutA, x, "a shortcut");
    op.input = x;
    op.stride = {stride, stride};
    op.lo = lo;
    op.hi = hi;
    t->push(std::move(op), y);
  }
  return y;
}

torch::Tensor dropout(torch::nn::Module& d, const std::function<torch::Tensor(const torch::Tensor&)>& fwd, const torch::Tensor& x) {
  if (activeTape()) {
    FL_CHECK(!d.is_training(), ERR_INTERNAL, "linearisation needs dropout in eval mode");
    return x;  // eval-mode dropout is the identity
  }
  at::Generator* gen = tDropoutGen;
  if (!d.is_training() || gen == nullptr) return fwd(x);
  // inverted dropout as nn::Dropout / nn::Dropout2d compute it, with the step's generator:
  // x · keep / (1 − p), keep ~ Bernoulli(1 − p) per element (Dropout) or per channel (Dropout2d)
  double p;
  std::vector<int64_t> maskShape = x.sizes().vec();
  if (auto* a = dynamic_cast<torch::nn::DropoutImpl*>(&d)) {
    p = a->options.p();
  } else if (auto* b = dynamic_cast<torch::nn::Dropout2dImpl*>(&d)) {
    p = b->options.p();
    for (size_t i = 2; i < maskShape.size(); ++i) maskShape[i] = 1;
  } else {
    return fwd(x);
  }
  if (p <= 0) return x;
  if (p >= 1) return x * 0;
  torch::Tensor keep = torch::empty(maskShape, x.options().device(torch::kCPU).requires_grad(false)).bernoulli_(1 - p, *gen);
  return x * keep.to(x.device()) / (1 - p);
}

}  // namespace rec
}  // namespace fl
