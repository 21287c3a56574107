// The linear engine for TorchScript models (see torchscript_tape.h).
#include "models/torchscript_tape.h"
#include "common/errors.h"
#include "models/linear_tape.h"
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <algorithm>
#include <sstream>
#include <unordered_set>

namespace fl {
namespace {

using torch::jit::Block;
using torch::jit::IValue;
using torch::jit::Node;
using torch::jit::Value;
using Op = LinearTape::Op;
using K = LinearTape::Kind;

// Where a node is, for messages: its kind, its first output's name and its Python source line
std::string describe(const Node* n) {
  std::ostringstream s;
  s << n->kind().toQualString();
  if (!n->outputs().empty()) s << " (%" << n->output(0)->debugName() << ")";
  const torch::jit::SourceRange& r = n->sourceRange();
  auto orig = r.findSourceRangeThatGenerated();
  for (const auto& range : {orig.value_or(r), r}) {
    if (auto flc = range.file_line_col()) {
      s << " at " << std::get<0>(*flc) << ":" << std::get<1>(*flc);
      break;
    }
  }
  return s.str();
}

// Thrown while interpreting: the graph cannot be lowered (the reason names the node)
struct Unsupported {
  std::string why;
};

std::vector<int64_t> tail(c10::IntArrayRef s) { return std::vector<int64_t>(s.begin() + 1, s.end()); }

// A list argument of length 1 or n, as n values
std::vector<int64_t> expandList(std::vector<int64_t> v, size_t n) {
  if (v.size() == 1 && n > 1) v.assign(n, v[0]);
  return v;
}

int64_t normDim(int64_t d, int64_t ndim) { return d < 0 ? d + ndim : d; }

class Interpreter {
 public:
  Interpreter(LinearTape& tape, const std::unordered_map<const Node*, torch::jit::Operation>& ops) : tape_(tape), ops_(ops) {}

  void bind(const Value* v, IValue x, bool onPath) {
    env_[v] = std::move(x);
    if (onPath) path_.insert(v);
    else path_.erase(v);
  }
  const IValue& val(const Value* v) const {
    auto it = env_.find(v);
    if (it == env_.end()) throw Unsupported{"value %" + v->debugName() + " used before it was computed"};
    return it->second;
  }
  bool onPath(const Value* v) const { return path_.count(v) > 0; }

  void runBlock(const Block* b) {
    for (const Node* n : b->nodes()) node(n);
  }

 private:
  LinearTape& tape_;
  const std::unordered_map<const Node*, torch::jit::Operation>& ops_;
  std::unordered_map<const Value*, IValue> env_;
  std::unordered_set<const Value*> path_;

  torch::Tensor T(const Value* v) const { return val(v).toTensor(); }
  int64_t id(const Value* v) const {
    int64_t i = tape_.idOf(T(v));
    if (i < 0) throw Unsupported{"value %" + v->debugName() + " lost its place on the input's path"};
    return i;
  }
  // a recorded op's output: pushes it and binds the node output
  void emit(Op op, const Value* out, const torch::Tensor& y) {
    tape_.push(std::move(op), y);
    bind(out, y, true);
  }
  // an intermediate node of a lowering that needs several tape ops (its own placeholder tensor)
  int64_t emitTemp(Op op) {
    torch::Tensor t = torch::empty({0});
    tape_.push(std::move(op), t);
    return tape_.idOf(t);
  }
  // the output is the input's node (an identity: contiguous, eval-mode dropout, + constant)
  void same(const Value* out, const Value* in, const torch::Tensor& y) {
    tape_.alias(y, id(in));
    bind(out, y, true);
  }
  Op unary(K kind, const Value* in) {
    Op op;
    op.kind = kind;
    op.in = id(in);
    return op;
  }
  // inputs other than the first must not be on the path (weights, shapes, options)
  void constArgs(const Node* n, size_t from, const char* what) const {
    for (size_t i = from; i < n->inputs().size(); ++i)
      if (onPath(n->input(i))) throw Unsupported{describe(n) + ": " + what + " depends on the input"};
  }
  void fail(const Node* n, const std::string& what = "") const {
    throw Unsupported{describe(n) + (what.empty() ? "" : ": " + what)};
  }

  // Runs the node's operator on its current inputs (in-place ops on a copy of their first input, so
  // saved tensors stay intact); returns the outputs
  std::vector<IValue> evaluate(const Node* n, bool inPlace = false) {
    auto it = ops_.find(n);
    if (it == ops_.end()) fail(n, "no operator to evaluate it");
    torch::jit::Stack st;
    for (size_t i = 0; i < n->inputs().size(); ++i) {
      IValue v = val(n->input(i));
      if (i == 0 && inPlace && v.isTensor()) v = v.toTensor().clone();
      st.push_back(std::move(v));
    }
    torch::jit::Operation op = it->second;
    op(st);
    if (st.size() != n->outputs().size()) fail(n, "unexpected number of outputs");
    return std::vector<IValue>(st.begin(), st.end());
  }

  void node(const Node* n) {
    using namespace torch::jit;
    const Symbol kind = n->kind();
    if (kind == prim::Constant) {
      auto v = toIValue(n->output());
      if (!v) fail(n, "a constant of an unknown type");
      bind(n->output(), *v, false);
      return;
    }
    if (kind == prim::GetAttr) {  // parameters, buffers, submodules and flags of the LIVE module
      const IValue& obj = val(n->input(0));
      if (!obj.isObject()) fail(n, "attribute of a non-object");
      bind(n->output(), obj.toObject()->getAttr(n->s(attr::name)), false);
      return;
    }
    if (kind == prim::If) {
      if (onPath(n->input(0))) fail(n, "the condition depends on the input");
      const Block* b = val(n->input(0)).toBool() ? n->blocks()[0] : n->blocks()[1];
      runBlock(b);
      for (size_t i = 0; i < n->outputs().size(); ++i) bind(n->output(i), val(b->outputs()[i]), onPath(b->outputs()[i]));
      return;
    }
    if (kind == prim::Loop) {
      loop(n);
      return;
    }
    bool anyPath = false;
    for (const Value* v : n->inputs()) anyPath = anyPath || onPath(v);
    // the interpreter's own instructions (no registered operator)
    if (kind == prim::ListConstruct) {
      c10::impl::GenericList l(n->output()->type()->expectRef<c10::ListType>().getElementType());
      for (const Value* v : n->inputs()) l.push_back(val(v));
      bind(n->output(), IValue(l), anyPath);  // a list on the path: only aten::cat reads it
      return;
    }
    if (kind == prim::unchecked_cast) {
      bind(n->output(), val(n->input(0)), anyPath);
      return;
    }
    if (kind == prim::Uninitialized) {
      bind(n->output(), IValue(), false);
      return;
    }
    if (kind == prim::RaiseException) throw std::runtime_error("the forward raised an exception for this input");
    if (!anyPath && (kind == prim::TupleConstruct || kind == prim::TupleUnpack || kind == prim::ListUnpack ||
                     kind == prim::TupleIndex)) {
      std::vector<IValue> outs;
      if (kind == prim::TupleConstruct) {
        std::vector<IValue> items;
        for (const Value* v : n->inputs()) items.push_back(val(v));
        outs.emplace_back(c10::ivalue::Tuple::create(std::move(items)));
      } else if (kind == prim::TupleUnpack) {
        for (const IValue& v : val(n->input(0)).toTupleRef().elements()) outs.push_back(v);
      } else if (kind == prim::ListUnpack) {
        for (const IValue& v : val(n->input(0)).toListRef()) outs.push_back(v);
      } else {
        outs.push_back(val(n->input(0)).toTupleRef().elements().at(val(n->input(1)).toInt()));
      }
      if (outs.size() != n->outputs().size()) fail(n, "unexpected number of elements");
      for (size_t i = 0; i < outs.size(); ++i) bind(n->output(i), outs[i], false);
      return;
    }
    if (!anyPath) {
      if (kind == prim::SetAttr) fail(n, "the forward changes the module's state");
      auto outs = evaluate(n);
      for (size_t i = 0; i < outs.size(); ++i) bind(n->output(i), std::move(outs[i]), false);
      return;
    }
    lower(n);
  }

  // prim::Loop, unrolled (its trip count and condition do not depend on the input's values)
  void loop(const Node* n) {
    const Block* body = n->blocks()[0];
    if (onPath(n->input(0)) || onPath(n->input(1))) fail(n, "the loop's condition depends on the input");
    const int64_t maxTrip = val(n->input(0)).toInt();
    bool cond = val(n->input(1)).toBool();
    const size_t nc = n->outputs().size();
    std::vector<std::pair<IValue, bool>> carried;
    for (size_t j = 0; j < nc; ++j) carried.emplace_back(val(n->input(2 + j)), onPath(n->input(2 + j)));
    for (int64_t i = 0; cond && i < maxTrip; ++i) {
      if (i >= 100000) fail(n, "more than 100000 iterations");
      bind(body->inputs()[0], IValue(i), false);
      for (size_t j = 0; j < nc; ++j) bind(body->inputs()[1 + j], carried[j].first, carried[j].second);
      runBlock(body);
      if (onPath(body->outputs()[0])) fail(n, "the loop's condition depends on the input");
      cond = val(body->outputs()[0]).toBool();
      for (size_t j = 0; j < nc; ++j) carried[j] = {val(body->outputs()[1 + j]), onPath(body->outputs()[1 + j])};
    }
    for (size_t j = 0; j < nc; ++j) bind(n->output(j), carried[j].first, carried[j].second);
  }

  // A node with at least one input on the input's path: its tape op(s)
  void lower(const Node* n) {
    std::string k = n->kind().toQualString();
    bool inPlace = k.size() > 1 && k.back() == '_' && k[k.size() - 2] != '_';
    if (inPlace) {
      k.pop_back();
      // the mutated value must not be read again (it is computed out of place here)
      for (const auto& u : n->input(0)->uses())
        if (u.user != n && !u.user->isBefore(n)) fail(n, "an in-place op whose input is used again");
    }
    const Value* x = n->input(0);
    const Value* out = n->outputs().empty() ? nullptr : n->output(0);

    // values that only read the path tensor's shape
    static const std::unordered_set<std::string> shapeOnly = {
        "aten::size", "aten::dim", "aten::len", "prim::shape", "aten::numel", "prim::dtype", "prim::device",
        "prim::layout", "aten::is_floating_point", "prim::is_cuda", "aten::__is__", "aten::__isnot__"};
    if (shapeOnly.count(k)) {
      auto outs = evaluate(n);
      for (size_t i = 0; i < outs.size(); ++i) bind(n->output(i), std::move(outs[i]), false);
      return;
    }
    if (!onPath(x) && k != "aten::add" && k != "aten::sub" && k != "aten::mul" && k != "aten::div" && k != "aten::cat")
      fail(n, "the input's path enters as a non-first argument");
    if (k == "aten::detach") {  // autograd sees no derivative through it either
      bind(out, T(x).detach(), false);
      return;
    }

    if (k == "aten::conv1d" || k == "aten::conv2d" || k == "aten::conv3d" || k == "aten::_convolution" ||
        k == "aten::convolution")
      return conv(n, k);
    if (k == "aten::linear") {
      constArgs(n, 1, "the weight");
      torch::Tensor y = evaluate(n)[0].toTensor();
      Op op = unary(K::Linear, x);
      op.w = T(n->input(1));
      op.input = T(x);
      return emit(std::move(op), out, y);
    }
    if (k == "aten::matmul" || k == "aten::mm" || k == "aten::addmm") {
      const bool addmm = k == "aten::addmm";
      const Value* a = n->input(addmm ? 1 : 0);
      const Value* w = n->input(addmm ? 2 : 1);
      if (!onPath(a) || onPath(w) || (addmm && onPath(n->input(0)))) fail(n, "only input × constant matrix is linear");
      torch::Tensor W = T(w);
      if (W.dim() != 2) fail(n, "the constant operand must be a matrix");
      torch::Tensor y = evaluate(n)[0].toTensor();
      Op op = unary(K::Linear, a);
      op.w = W.t();
      if (addmm) {
        double alpha = val(n->input(4)).toScalar().toDouble();
        if (alpha != 1) op.w = op.w * alpha;
      }
      op.input = T(a);
      return emit(std::move(op), out, y);
    }
    if (k == "aten::batch_norm") {
      constArgs(n, 1, "a batch norm's statistics");
      if (val(n->input(5)).toBool()) fail(n, "batch norm in train mode (batch statistics)");
      const IValue &w = val(n->input(1)), &var = val(n->input(4));
      if (var.isNone()) fail(n, "batch norm without running statistics");
      torch::Tensor y = evaluate(n)[0].toTensor();
      torch::Tensor s = (var.toTensor() + val(n->input(7)).toDouble()).rsqrt();
      if (!w.isNone()) s = s * w.toTensor();
      std::vector<int64_t> shape(T(x).dim(), 1);
      shape[1] = -1;
      Op op = unary(K::Scale, x);
      op.w = s.view(shape);
      return emit(std::move(op), out, y);
    }
    if (activation(n, k, inPlace)) return;
    if (k == "aten::max_pool2d" || k == "aten::avg_pool2d") return pool(n, k);
    if (k == "aten::adaptive_avg_pool2d") {
      constArgs(n, 1, "the output size");
      auto size = expandList(val(n->input(1)).toIntVector(), 2);
      if (size[0] == 1 && size[1] == 1 && T(x).dim() == 4) return bind(out, rec::globalAvgPool(T(x)), true);
      torch::Tensor y = evaluate(n)[0].toTensor();
      Op op = unary(K::AdaptiveAvg, x);
      op.dims = size;
      op.input = T(x);
      return emit(std::move(op), out, y);
    }
    if (k == "aten::mean" || k == "aten::sum") {
      constArgs(n, 1, "the reduction's dimensions");
      if (n->inputs().size() < 3 || !val(n->input(1)).isIntList()) fail(n, "a reduction over the batch");
      if (!val(n->input(3)).isNone()) fail(n, "a reduction with a dtype");
      torch::Tensor xt = T(x);
      std::vector<int64_t> dims;
      double count = 1;
      for (int64_t d : val(n->input(1)).toIntVector()) {
        d = normDim(d, xt.dim());
        if (d == 0) fail(n, "a reduction over the batch");
        dims.push_back(d);
        count *= static_cast<double>(xt.size(d));
      }
      if (dims.empty()) fail(n, "a reduction over the batch");
      std::sort(dims.begin(), dims.end());
      torch::Tensor y = evaluate(n)[0].toTensor();
      Op op = unary(K::Reduce, x);
      op.dims = dims;
      op.keepdim = val(n->input(2)).toBool();
      op.shape = tail(xt.sizes());
      if (k == "aten::mean") op.w = torch::scalar_tensor(1.0 / count, xt.options());
      return emit(std::move(op), out, y);
    }
    if (k == "aten::flatten" || k == "aten::view" || k == "aten::reshape" || k == "aten::squeeze" ||
        k == "aten::unsqueeze")
      return view(n);
    if (k == "aten::permute" || k == "aten::transpose") {
      constArgs(n, 1, "the permutation");
      torch::Tensor xt = T(x);
      std::vector<int64_t> dims(xt.dim());
      for (int64_t i = 0; i < xt.dim(); ++i) dims[i] = i;
      if (k == "aten::permute") {
        dims = val(n->input(1)).toIntVector();
        for (auto& d : dims) d = normDim(d, xt.dim());
      } else {
        std::swap(dims[normDim(val(n->input(1)).toInt(), xt.dim())], dims[normDim(val(n->input(2)).toInt(), xt.dim())]);
      }
      if (dims.empty() || dims[0] != 0) fail(n, "a permutation that moves the batch dimension");
      torch::Tensor y = evaluate(n)[0].toTensor();
      Op op = unary(K::Permute, x);
      op.dims = dims;
      return emit(std::move(op), out, y);
    }
    if (k == "aten::contiguous" || k == "aten::clone") {
      constArgs(n, 1, "an option");
      return same(out, x, evaluate(n)[0].toTensor());
    }
    if (k == "aten::to" || k == "aten::type_as") {
      constArgs(n, 1, "an option");
      torch::Tensor y = evaluate(n)[0].toTensor();
      if (y.scalar_type() != T(x).scalar_type() || y.device() != T(x).device()) fail(n, "a change of dtype or device");
      return same(out, x, y);
    }
    if (k == "aten::dropout" || k == "aten::feature_dropout" || k == "aten::alpha_dropout" ||
        k == "aten::feature_alpha_dropout") {
      constArgs(n, 1, "the dropout rate");
      if (val(n->input(2)).toBool()) fail(n, "dropout in train mode");
      return same(out, x, T(x));
    }
    if (k == "aten::add" || k == "aten::sub" || k == "aten::rsub" || k == "aten::mul" || k == "aten::div" ||
        k == "aten::neg")
      return arithmetic(n, k, inPlace);
    if (k == "aten::cat") return cat(n);
    if (k == "aten::pad" || k == "aten::constant_pad_nd") {
      constArgs(n, 1, "the padding");
      if (k == "aten::pad" && val(n->input(2)).toStringRef() != "constant")
        fail(n, "padding mode '" + val(n->input(2)).toStringRef() + "' (only constant padding is linear here)");
      auto pad = val(n->input(1)).toIntVector();
      if (pad.size() % 2 != 0 || static_cast<int64_t>(pad.size()) > 2 * (T(x).dim() - 1)) fail(n, "padding of the batch dimension");
      torch::Tensor y = evaluate(n)[0].toTensor();
      Op op = unary(K::Pad, x);
      op.dims = pad;
      op.shape = tail(T(x).sizes());
      return emit(std::move(op), out, y);
    }
    if (k == "aten::slice" || k == "aten::select" || k == "aten::narrow") return slice(n, k);
    fail(n);
  }

  void conv(const Node* n, const std::string& k) {
    constArgs(n, 1, "the weight");
    const Value* x = n->input(0);
    torch::Tensor w = T(n->input(1));
    const size_t nd = static_cast<size_t>(w.dim() - 2);
    const bool generic = k == "aten::_convolution" || k == "aten::convolution";
    if (generic && val(n->input(6)).toBool()) fail(n, "a transposed convolution");
    std::vector<int64_t> padding;
    if (val(n->input(4)).isString()) {
      if (val(n->input(4)).toStringRef() != "valid") fail(n, "padding='" + val(n->input(4)).toStringRef() + "'");
      padding.assign(nd, 0);
    } else {
      padding = expandList(val(n->input(4)).toIntVector(), nd);
    }
    Op op = unary(nd == 2 ? K::Conv : K::ConvNd, x);
    op.w = w;
    op.input = T(x);
    op.stride = expandList(val(n->input(3)).toIntVector(), nd);
    op.padding = padding;
    op.dilation = expandList(val(n->input(5)).toIntVector(), nd);
    op.groups = val(n->input(generic ? 8 : 6)).toInt();
    torch::Tensor y = evaluate(n)[0].toTensor();
    if (nd == 2) prepareConvBackward(op);
    emit(std::move(op), n->output(0), y);
  }

  bool activation(const Node* n, const std::string& k, bool inPlace) {
    static const std::unordered_set<std::string> acts = {"aten::relu", "aten::leaky_relu", "aten::tanh", "aten::sigmoid",
                                                         "aten::gelu", "aten::silu", "aten::softplus", "aten::elu",
                                                         "aten::hardtanh", "aten::relu6"};
    if (!acts.count(k)) return false;
    constArgs(n, 1, "an activation's parameter");
    const Value* x = n->input(0);
    torch::Tensor xt = T(x);
    torch::Tensor y = evaluate(n, inPlace)[0].toTensor();
    if (k == "aten::relu") {
      Op op = unary(K::Relu, x);
      op.w = y;  // relu'(x) = [y > 0]
      emit(std::move(op), n->output(0), y);
      return true;
    }
    auto num = [&](size_t i) { return val(n->input(i)).toScalar().toDouble(); };
    torch::Tensor d;
    if (k == "aten::leaky_relu") d = torch::where(xt > 0, torch::ones_like(xt), torch::full_like(xt, num(1)));
    else if (k == "aten::tanh") d = 1 - y * y;
    else if (k == "aten::sigmoid") d = y * (1 - y);
    else if (k == "aten::gelu") {
      std::string approx = n->inputs().size() > 1 ? val(n->input(1)).toStringRef() : "none";
      d = at::gelu_backward(torch::ones_like(xt), xt, approx);
    } else if (k == "aten::silu") {
      torch::Tensor s = torch::sigmoid(xt);
      d = s * (1 + xt * (1 - s));
    } else if (k == "aten::softplus") {
      const double beta = num(1), threshold = num(2);
      d = torch::where(xt * beta > threshold, torch::ones_like(xt), torch::sigmoid(xt * beta));
    } else if (k == "aten::elu") {
      const double alpha = num(1), scale = num(2), inScale = num(3);
      d = torch::where(xt > 0, torch::full_like(xt, scale), (xt * inScale).exp() * (alpha * scale * inScale));
    } else {  // hardtanh, relu6
      const double lo = k == "aten::relu6" ? 0.0 : num(1), hi = k == "aten::relu6" ? 6.0 : num(2);
      d = ((xt > lo) & (xt < hi)).to(xt.scalar_type());
    }
    Op op = unary(K::Mul, x);
    op.w = d;
    emit(std::move(op), n->output(0), y);
    return true;
  }

  void pool(const Node* n, const std::string& k) {
    constArgs(n, 1, "a pool's size");
    const Value* x = n->input(0);
    torch::Tensor xt = T(x);
    if (xt.dim() != 4) fail(n, "a pool of a tensor that is not [B, C, H, W]");
    auto kernel = expandList(val(n->input(1)).toIntVector(), 2);
    auto stride = expandList(val(n->input(2)).toIntVector(), 2);
    if (stride.empty()) stride = kernel;
    auto padding = expandList(val(n->input(3)).toIntVector(), 2);
    const bool isMax = k == "aten::max_pool2d";
    std::vector<int64_t> dilation = isMax ? expandList(val(n->input(4)).toIntVector(), 2) : std::vector<int64_t>{1, 1};
    const bool ceil = val(n->input(isMax ? 5 : 4)).toBool();
    const bool countPad = isMax ? true : val(n->input(5)).toBool();
    const IValue& div = isMax ? IValue() : val(n->input(6));
    const bool plain = kernel[0] == kernel[1] && stride == kernel && padding[0] == 0 && padding[1] == 0 &&
                       dilation[0] == 1 && dilation[1] == 1 && !ceil && div.isNone();
    if (plain) {  // the built-ins' own pools (same kernels, same tie breaking)
      bind(n->output(0), isMax ? rec::maxPool(xt, kernel[0]) : rec::avgPool(xt, kernel[0]), true);
      return;
    }
    Op op = unary(isMax ? K::MaxPoolG : K::AvgPoolG, x);
    op.input = xt;
    op.kernel = kernel;
    op.stride = stride;
    op.padding = padding;
    op.dilation = dilation;
    op.ceil = ceil;
    op.countPad = countPad;
    op.divisor = div.isNone() ? 0 : div.toInt();
    torch::Tensor y;
    if (isMax) {
      std::tie(y, op.idx) = at::max_pool2d_with_indices(xt, kernel, stride, padding, dilation, ceil);
      op.w = y;  // its output, for a preceding ReLU's mask (Op::fusedMask)
    }
    else y = evaluate(n)[0].toTensor();
    emit(std::move(op), n->output(0), y);
  }

  void view(const Node* n) {
    constArgs(n, 1, "the new shape");
    const Value* x = n->input(0);
    torch::Tensor xt = T(x);
    torch::Tensor y = evaluate(n)[0].toTensor();
    // the same batch size first: each sample keeps its own block of the row-major order
    if (y.dim() < 1 || y.size(0) != xt.size(0)) fail(n, "a reshape that mixes the batch dimension");
    if (y.unsafeGetTensorImpl() == xt.unsafeGetTensorImpl()) return same(n->output(0), x, y);
    Op op = unary(K::View, x);
    op.shape = tail(xt.sizes());
    op.dims = tail(y.sizes());
    emit(std::move(op), n->output(0), y);
  }

  void slice(const Node* n, const std::string& k) {
    constArgs(n, 1, "the slice bounds");
    const Value* x = n->input(0);
    torch::Tensor xt = T(x);
    torch::Tensor y = evaluate(n)[0].toTensor();
    const int64_t dim = normDim(val(n->input(1)).toInt(), xt.dim());
    Op op = unary(K::Slice, x);
    op.shape = tail(xt.sizes());
    if (k == "aten::select") {
      if (dim == 0) fail(n, "a selection of samples");
      op.dims = {dim, normDim(val(n->input(2)).toInt(), xt.size(dim)), 0, 1, 1};
      return emit(std::move(op), n->output(0), y);
    }
    int64_t start, step = 1;
    if (k == "aten::narrow") {
      start = normDim(val(n->input(2)).toInt(), xt.size(dim));
    } else {
      const IValue& s = val(n->input(2));
      start = s.isNone() ? 0 : s.toInt();
      if (start < 0) start += xt.size(dim);
      start = std::min(std::max<int64_t>(start, 0), xt.size(dim));
      step = val(n->input(4)).toInt();
    }
    const int64_t len = y.size(dim);
    if (dim == 0) {
      if (start != 0 || step != 1 || len != xt.size(0)) fail(n, "a selection of samples");
      return same(n->output(0), x, y);
    }
    // the whole dimension (x[:, :, ...] of a scripted index): an identity, not a copy
    if (start == 0 && step == 1 && len == xt.size(dim)) return same(n->output(0), x, y);
    const int64_t end = len > 0 ? start + (len - 1) * step + 1 : start;
    op.dims = {dim, start, end, step, 0};
    op.input = xt;  // for LinearTape::finish's option-A shortcut (slices and a channel pad as one op)
    emit(std::move(op), n->output(0), y);
  }

  // add / sub / rsub / mul / div / neg with one or two operands on the path
  void arithmetic(const Node* n, const std::string& k, bool inPlace) {
    const Value* a = n->input(0);
    const Value* b = n->inputs().size() > 1 ? n->input(1) : nullptr;
    const bool pa = onPath(a), pb = b && onPath(b);
    if (n->inputs().size() > 2 && onPath(n->input(2))) fail(n, "a factor that depends on the input");
    if (k == "aten::div" && n->inputs().size() > 2 && !val(n->input(2)).isNone()) fail(n, "division with rounding");
    torch::Tensor y = evaluate(n, inPlace && pa)[0].toTensor();
    const Value* out = n->output(0);
    auto sameShape = [&](const Value* v) {
      if (!T(v).sizes().equals(y.sizes())) fail(n, "broadcasting of the input's path");
    };
    // constant factor c (a scalar or tensor) applied to path value p
    auto scaled = [&](const Value* p, const IValue& c) -> Op {
      Op op = unary(K::Scale, p);
      torch::Tensor pt = T(p);
      if (c.isTensor()) {
        torch::Tensor ct = c.toTensor();
        if (ct.dim() == pt.dim() && pt.size(0) > 1 && ct.size(0) == pt.size(0)) op.kind = K::Mul;  // per sample
        op.w = ct.to(pt.scalar_type());
      } else {
        op.w = torch::scalar_tensor(c.toScalar().toDouble(), pt.options());
      }
      return op;
    };
    auto scalarOf = [&](size_t i) { return n->inputs().size() > i ? val(n->input(i)).toScalar().toDouble() : 1.0; };
    if (k == "aten::neg") {
      sameShape(a);
      return emit(scaled(a, IValue(-1.0)), out, y);
    }
    if (k == "aten::add" || k == "aten::sub" || k == "aten::rsub") {
      const double alpha = scalarOf(2);
      const bool sub = k != "aten::add";
      // rsub(a, b, α) = b − α a: the roles of a and b in a − α b swapped
      const Value* first = k == "aten::rsub" ? b : a;
      const Value* second = k == "aten::rsub" ? a : b;
      const bool pf = onPath(first), ps = onPath(second);
      if (ps) sameShape(second);
      if (pf) sameShape(first);
      if (pf && !ps) return same(out, first, y);
      const double f = sub ? -alpha : alpha;  // factor of `second`
      if (!pf) {
        if (f == 1) return same(out, second, y);
        return emit(scaled(second, IValue(f)), out, y);
      }
      Op op = unary(K::Add, first);
      op.in2 = id(second);
      if (f == -1) {
        op.kind = K::Sub;
      } else if (f != 1) {
        op.in2 = emitTemp(scaled(second, IValue(f)));
      }
      return emit(std::move(op), out, y);
    }
    if (k == "aten::mul" || k == "aten::div") {
      const bool div = k == "aten::div";
      if (pa) sameShape(a);
      if (pb) sameShape(b);
      // ∂y = (∂y/∂a) ∂a + (∂y/∂b) ∂b with mul: b, a; div: 1/b, −y/b
      auto factorA = [&]() -> IValue {
        const IValue& c = val(b);
        if (!div) return c;
        if (c.isTensor()) return IValue(c.toTensor().reciprocal());
        return IValue(1.0 / c.toScalar().toDouble());
      };
      if (pa && !pb) return emit(scaled(a, factorA()), out, y);
      torch::Tensor bt = T(b);
      Op ob = unary(K::Mul, b);
      if (div) ob.w = -y / bt;
      else if (pa) ob.w = T(a);
      if (!pa) return emit(div ? std::move(ob) : scaled(b, val(a)), out, y);
      Op oa = unary(K::Mul, a);
      oa.w = div ? bt.reciprocal() : bt;
      Op sum;
      sum.kind = K::Add;
      sum.in = emitTemp(std::move(oa));
      sum.in2 = emitTemp(std::move(ob));
      return emit(std::move(sum), out, y);
    }
    fail(n);
  }

  void cat(const Node* n) {
    const Value* list = n->input(0);
    const Node* ln = list->node();
    if (ln->kind() != torch::jit::prim::ListConstruct) fail(n, "a concatenation of a list not built in the graph");
    if (onPath(n->input(1))) fail(n, "the dimension depends on the input");
    torch::Tensor y = evaluate(n)[0].toTensor();
    const int64_t dim = normDim(val(n->input(1)).toInt(), y.dim());
    if (dim == 0) fail(n, "a concatenation of samples");
    int64_t offset = 0, acc = -1;
    const int64_t total = y.size(dim);
    for (const Value* e : ln->inputs()) {
      torch::Tensor et = T(e);
      const int64_t len = et.size(dim);
      if (onPath(e)) {
        // the piece's tangent, zero-padded to its place along dim
        Op op = unary(K::Pad, e);
        op.dims.assign(2 * (y.dim() - dim), 0);
        op.dims[2 * (y.dim() - 1 - dim)] = offset;
        op.dims[2 * (y.dim() - 1 - dim) + 1] = total - offset - len;
        op.shape = tail(et.sizes());
        int64_t t = emitTemp(std::move(op));
        if (acc < 0) {
          acc = t;
        } else {
          Op add;
          add.kind = K::Add;
          add.in = acc;
          add.in2 = t;
          acc = emitTemp(std::move(add));
        }
      }
      offset += len;
    }
    // the result's node: the last op's output registered under y
    tape_.alias(y, acc);
    bind(n->output(0), y, true);
  }
};

// Inlined, cleaned copy of the module's forward graph
std::shared_ptr<torch::jit::Graph> prepareGraph(const torch::jit::Module& m) {
  auto g = m.get_method("forward").graph()->copy();
  torch::jit::Inline(*g);
  torch::jit::ConstantPropagation(g);
  torch::jit::EliminateDeadCode(g);
  return g;
}

void collectOps(const Block* b, std::unordered_map<const Node*, torch::jit::Operation>& ops) {
  using namespace torch::jit;
  for (const Node* n : b->nodes()) {
    for (const Block* sub : n->blocks()) collectOps(sub, ops);
    const Symbol k = n->kind();
    if (k == prim::Constant || k == prim::GetAttr || k == prim::If || k == prim::Loop) continue;
    try {
      ops.emplace(n, n->getOperation());
    } catch (const std::exception&) {
      // no operator (reported if the node is ever evaluated)
    }
  }
}

}  // namespace

ScriptLowering::ScriptLowering(const torch::jit::Module& m) : m_(m) {
  try {
    graph_ = prepareGraph(m_);
    collectOps(graph_->block(), ops_);
  } catch (const c10::Error& e) {
    setupError_ = str("the forward graph could not be prepared: ", e.what_without_backtrace());
    graph_.reset();
  }
}

ScriptLowering::~ScriptLowering() = default;

std::shared_ptr<LinearTape> ScriptLowering::record(const torch::Tensor& x, torch::Tensor* z, std::string* why) {
  auto refuse = [&](const std::string& reason) -> std::shared_ptr<LinearTape> {
    if (why) *why = reason;
    return nullptr;
  };
  if (!graph_) return refuse(setupError_);
  if (graph_->inputs().size() != 2) return refuse("the forward takes more than one input");
  std::ostringstream sig;
  sig << x.scalar_type() << " " << x.device() << " " << x.sizes().slice(1);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = failed_.find(sig.str());
    if (it != failed_.end()) return refuse(it->second);
  }
  auto tape = std::make_shared<LinearTape>();
  torch::NoGradGuard ng;
  try {
    TapeRecording recording(*tape);
    tape->setInput(x);
    Interpreter in(*tape, ops_);
    in.bind(graph_->inputs()[0], IValue(m_._ivalue()), false);
    in.bind(graph_->inputs()[1], IValue(x), true);
    in.runBlock(graph_->block());
    const Value* o = graph_->outputs()[0];
    if (!in.onPath(o) || !in.val(o).isTensor()) throw Unsupported{"the forward's result is not a tensor that depends on the input"};
    torch::Tensor out = in.val(o).toTensor();
    if (out.dim() != 2 || out.size(0) != x.size(0)) throw Unsupported{"the forward's result is not logits [B, K]"};
    tape->finish(out);
    if (z) *z = out;
  } catch (const Unsupported& u) {
    std::lock_guard<std::mutex> lock(mu_);
    failed_[sig.str()] = u.why;
    return refuse(u.why);
  } catch (const c10::Error& e) {
    // the model's own error for this input: autograd's forward reports it
    return refuse(str("the forward failed: ", e.what_without_backtrace()));
  } catch (const FlError& e) {
    if (e.code != ERR_INTERNAL) throw;
    return refuse(e.what());
  } catch (const std::exception& e) {
    return refuse(str("the forward failed: ", e.what()));
  }
  return tape;
}

}  // namespace fl
