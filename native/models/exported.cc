// Programs exported by torch.export (the graph of a .pt2 archive's models/<name>.json, export
// schema 8.x), run by an interpreter that calls each ATen op through LibTorch's dispatcher. The
// dispatcher's autograd kernels record every op, so input gradients, parameter gradients and
// training work as for a built-in model. The archive is data, not code: only the pure ATen ops of
// allowedOps() run (no custom op, no in-place or out= overload), so loading one runs no user code.
// lib/science/exported.ts reads the archive (zip, versions, weights) and builds the spec; the
// weights then arrive through models/weights.h like a state dict's.
#include "models/exported.h"
#include "common/errors.h"
#include "models/torchscript_tape.h"
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/script.h>
#include <nlohmann/json.hpp>
#include <cmath>
#include <iomanip>
#include <mutex>
#include <set>
#include <sstream>
#include <unordered_map>

namespace fl {
namespace {

using json = nlohmann::json;

// The pure ATen ops an archive may call (any overload but out= ones). Each computes a value from
// its inputs with no side effect beyond batch_norm's running statistics in train mode.
const std::set<std::string>& allowedOps() {
  static const std::set<std::string> s = {
      "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "convolution", "linear", "matmul", "mm",
      "bmm", "addmm", "t", "batch_norm", "layer_norm", "group_norm", "instance_norm", "relu", "relu6", "gelu",
      "silu", "sigmoid", "rms_norm", "tanh", "softplus", "leaky_relu", "hardtanh", "elu", "selu", "mish", "hardswish",
      "hardsigmoid", "log_softmax", "softmax", "add", "sub", "rsub", "mul", "div", "neg", "pow", "sqrt", "rsqrt",
      "exp", "log", "abs", "clamp", "clamp_min", "clamp_max", "maximum", "minimum", "where", "max_pool1d",
      "max_pool2d", "max_pool2d_with_indices", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
      "adaptive_avg_pool2d", "adaptive_max_pool2d", "flatten", "view", "reshape", "_unsafe_view", "permute",
      "transpose", "squeeze", "unsqueeze", "expand", "slice", "select", "narrow", "cat", "stack", "pad",
      "constant_pad_nd", "dropout", "feature_dropout", "alpha_dropout", "clone", "contiguous", "alias", "mean",
      "sum", "amax", "upsample_nearest2d", "upsample_bilinear2d", "split", "split_with_sizes", "chunk", "unbind",
      "flip", "detach", "_to_copy", "to", "type_as", "zeros_like", "ones_like", "full_like", "scalar_tensor",
      "sym_size"};
  return s;
}

// Ops whose `training` / `train` argument follows the model's mode, not the exporter's.
bool followsMode(const std::string& op) {
  return op == "batch_norm" || op == "dropout" || op == "feature_dropout" || op == "alpha_dropout" ||
         op == "instance_norm";
}

// export schema ScalarType -> c10 (torch/_export/serde/schema.py)
c10::ScalarType scalarType(int64_t v) {
  switch (v) {
    case 1: return c10::kByte;
    case 2: return c10::kChar;
    case 3: return c10::kShort;
    case 4: return c10::kInt;
    case 5: return c10::kLong;
    case 6: return c10::kHalf;
    case 7: return c10::kFloat;
    case 8: return c10::kDouble;
    case 12: return c10::kBool;
    case 13: return c10::kBFloat16;
    default: throw FlError(ERR_FORMAT, str("the exported program uses scalar type ", v, ", which FisherLens does not read"));
  }
}

// A serialized Argument that does not depend on the run's values (numbers, lists of them, flags,
// strings, dtypes, memory formats, layouts, None) as the IValue the op takes; false for the others
// (tensors, sizes computed by the graph, the device).
bool constantOf(const json& a, c10::IValue* out) {
  if (a.contains("as_none")) *out = c10::IValue();
  else if (a.contains("as_int")) *out = c10::IValue(a["as_int"].get<int64_t>());
  else if (a.contains("as_ints")) *out = c10::IValue(a["as_ints"].get<std::vector<int64_t>>());
  else if (a.contains("as_float")) *out = c10::IValue(a["as_float"].get<double>());
  else if (a.contains("as_floats")) *out = c10::IValue(a["as_floats"].get<std::vector<double>>());
  else if (a.contains("as_bool")) *out = c10::IValue(a["as_bool"].get<bool>());
  else if (a.contains("as_bools")) {
    c10::List<bool> l;
    for (const json& b : a["as_bools"]) l.push_back(b.get<bool>());
    *out = c10::IValue(l);
  } else if (a.contains("as_string")) *out = c10::IValue(a["as_string"].get<std::string>());
  else if (a.contains("as_scalar_type")) *out = c10::IValue(int64_t(scalarType(a["as_scalar_type"].get<int64_t>())));
  else if (a.contains("as_memory_format")) {
    static const c10::MemoryFormat f[] = {c10::MemoryFormat::Contiguous, c10::MemoryFormat::Contiguous,
                                          c10::MemoryFormat::ChannelsLast, c10::MemoryFormat::ChannelsLast3d,
                                          c10::MemoryFormat::Preserve};
    int64_t v = a["as_memory_format"].get<int64_t>();
    FL_CHECK(v >= 0 && v <= 4, ERR_FORMAT, "unknown memory format ", v);
    *out = c10::IValue(int64_t(f[v]));
  } else if (a.contains("as_layout")) *out = c10::IValue(int64_t(c10::kStrided));
  else return false;
  return true;
}

struct Node {
  std::string target;  // torch.ops.aten.conv2d.default, _operator.mul, ...
  std::string op;      // conv2d
  c10::optional<c10::OperatorHandle> handle;
  std::vector<std::pair<std::string, json>> inputs;  // schema argument name -> serialized Argument
  json outputs;
  // An ATen op's arguments in schema order, resolved once at load: a constant (given or the
  // schema's default), a value the run computes (serialized), or the model's mode
  struct Arg {
    enum class Kind { Constant, Value, Mode } kind;
    c10::IValue constant;
    json value;
  };
  std::vector<Arg> args;
  // batch_norm: the state index of its module's num_batches_tracked, which PyTorch's BatchNorm
  // module (not the op) counts up per train-mode forward; -1 when absent
  int64_t batchCounter = -1;
};

class ExportedClassifier : public Classifier {
 public:
  explicit ExportedClassifier(const std::string& specJson) : spec_(specJson) { parse(); }

  torch::Tensor forward(const torch::Tensor& x0) override {
    FL_CHECK(x0.dim() == int64_t(inputShape_.size()) + 1, ERR_SHAPE, "the exported program expects input ",
             shapeText(), ", got ", x0.sizes());
    for (size_t d = 0; d < inputShape_.size(); ++d) {
      FL_CHECK(inputShape_[d] < 0 || x0.size(int64_t(d) + 1) == inputShape_[d], ERR_SHAPE,
               "the exported program expects input ", shapeText(), ", got ", x0.sizes());
    }
    torch::Tensor x = x0;
    if (!state_.empty() && x.is_floating_point() && state_[0].is_floating_point() && x.scalar_type() != state_[0].scalar_type()) {
      x = x.to(state_[0].scalar_type());
    }
    const int64_t b = x.size(0);
    if (staticBatch_ < 0 || b == staticBatch_) return run(x);
    // A program exported with a fixed batch: its view / reshape arguments hold that batch. In eval
    // mode samples are independent, so the batch is run in chunks of the exported size, the last
    // one padded with zeros whose rows are dropped; autograd flows through the cat and the slices.
    FL_CHECK(!training_, ERR_SHAPE, "the exported program was exported for batches of exactly ", staticBatch_,
             " and cannot train on a batch of ", b, " (batch norm couples the samples): export it with "
             "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}");
    std::vector<torch::Tensor> parts;
    for (int64_t s = 0; s < b; s += staticBatch_) {
      const int64_t n = std::min(staticBatch_, b - s);
      torch::Tensor chunk = x.narrow(0, s, n);
      if (n < staticBatch_) {
        std::vector<int64_t> padShape = chunk.sizes().vec();
        padShape[0] = staticBatch_ - n;
        chunk = torch::cat({chunk, torch::zeros(padShape, chunk.options())}, 0);
      }
      parts.push_back(run(chunk).narrow(0, 0, n));
    }
    return torch::cat(parts, 0);
  }

  std::vector<torch::Tensor> parameters() override {
    std::vector<torch::Tensor> out;
    for (size_t i = 0; i < state_.size(); ++i)
      if (isParam_[i]) out.push_back(state_[i]);
    return out;
  }
  std::vector<std::pair<std::string, torch::Tensor>> namedState() override {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (size_t i = 0; i < state_.size(); ++i) out.emplace_back(stateNames_[i], state_[i]);
    return out;
  }
  void train(bool on) override { training_ = on; }
  bool isTraining() const override { return training_; }
  void to(const torch::Device& d) override {
    torch::NoGradGuard ng;
    for (auto& t : state_) t.set_data(t.data().to(d));
    device_ = d;
  }
  torch::Device device() const override { return device_; }
  std::string kind() const override { return "exported"; }
  // The linear engine: the graph, written as the TorchScript forward of a module whose attributes
  // are this model's own tensors, goes through the TorchScript lowering (models/torchscript_tape.h),
  // which names the first op it cannot lower. The source is generated here from allowlisted ATen
  // calls only; nothing of the archive is compiled as code.
  std::shared_ptr<LinearTape> linearize(const torch::Tensor& x, torch::Tensor* z, std::string* why) override {
    if (why) *why = "";
    if (training_) {
      if (why) *why = "the model is in train mode";
      return nullptr;
    }
    if (staticBatch_ >= 0 && x.size(0) != staticBatch_) {
      if (why) *why = str("the program was exported for batches of ", staticBatch_, " and runs other batches in chunks");
      return nullptr;
    }
    std::call_once(loweringOnce_, [this]() {
      try {
        script_ = std::make_unique<torch::jit::Module>("fisherlens_exported");
        for (size_t i = 0; i < state_.size(); ++i) {
          if (isParam_[i]) script_->register_parameter("s" + std::to_string(i), state_[i], false);
          else script_->register_buffer("s" + std::to_string(i), state_[i]);
        }
        script_->define(scriptSource());
        script_->eval();
        lowering_ = std::make_unique<ScriptLowering>(*script_);
      } catch (const std::exception& e) {
        loweringError_ = str("the exported graph could not be prepared for the linear engine: ", e.what());
      }
    });
    if (!lowering_) {
      if (why) *why = loweringError_;
      return nullptr;
    }
    std::string reason;
    auto tape = lowering_->record(x, z, &reason);
    if (why) *why = reason;
    return tape;
  }
  std::string specJson() const override { return spec_; }
  void exportState(const std::string&) override {
    throw FlError(ERR_ARG, "exportTorchScript: an exported program (.pt2) is already a PyTorch 2.x model; "
                           "use exportWeights for its state dict");
  }

 private:
  std::string shapeText() const {
    std::string s = "[" + (staticBatch_ < 0 ? std::string("B") : std::to_string(staticBatch_));
    for (int64_t d : inputShape_) s += ", " + (d < 0 ? std::string("?") : std::to_string(d));
    return s + "]";
  }

  void parse() {
    json spec = json::parse(spec_, nullptr, false);
    FL_CHECK(spec.is_object() && spec.contains("program") && spec.contains("state"), ERR_FORMAT,
             "an exported-program spec needs 'program' and 'state'");
    // the archive's model JSON as text: parsed here, since int64 values (INT64_MAX slice ends)
    // would not survive a JavaScript number
    FL_CHECK(spec["program"].is_string(), ERR_FORMAT, "an exported-program spec's 'program' is the model JSON's text");
    json model = json::parse(spec["program"].get<std::string>(), nullptr, false);
    FL_CHECK(model.is_object() && model.contains("graph_module"), ERR_FORMAT, "the exported program's model JSON has no graph_module");
    const json& gm = model["graph_module"];
    const std::string tv = spec.value("torchVersion", std::string("?"));
    try {
      // the state: parameters and buffers, by their module names, zero until the weights load
      for (const json& e : spec.at("state")) {
        std::string name = e.at("name").get<std::string>();
        auto shape = e.at("shape").get<std::vector<int64_t>>();
        auto dtype = scalarType(e.at("dtype").get<int64_t>());
        bool param = e.at("param").get<bool>();
        torch::Tensor t = torch::zeros(shape, torch::TensorOptions().dtype(dtype));
        if (param) t.requires_grad_(true);
        stateIndex_[name] = state_.size();
        stateNames_.push_back(name);
        state_.push_back(t);
        isParam_.push_back(param);
      }
      // the signature: which graph input is which parameter, buffer or the user's input
      for (const json& in : gm.at("signature").at("input_specs")) {
        if (in.contains("parameter")) {
          bind(in["parameter"]["arg"]["name"].get<std::string>(), in["parameter"]["parameter_name"].get<std::string>());
        } else if (in.contains("buffer")) {
          bind(in["buffer"]["arg"]["name"].get<std::string>(), in["buffer"]["buffer_name"].get<std::string>());
        } else if (in.contains("user_input")) {
          const json& a = in["user_input"]["arg"];
          FL_CHECK(a.contains("as_tensor") && userInput_.empty(), ERR_FORMAT,
                   "the exported program must take one tensor input (the images [B, C, H, W])");
          userInput_ = a["as_tensor"]["name"].get<std::string>();
        } else {
          throw FlError(ERR_FORMAT, str("the exported program has an input FisherLens does not read: ", in.dump().substr(0, 120),
                                        " (lifted tensor constants, custom objects and constant inputs are refused)"));
        }
      }
      FL_CHECK(!userInput_.empty(), ERR_FORMAT, "the exported program takes no tensor input");
      for (const json& out : gm["signature"].at("output_specs")) {
        if (out.contains("user_output")) {
          const json& a = out["user_output"]["arg"];
          FL_CHECK(a.contains("as_tensor") && output_.empty(), ERR_FORMAT,
                   "the exported program must return one tensor (the logits [B, K])");
          output_ = a["as_tensor"]["name"].get<std::string>();
        } else {
          throw FlError(ERR_FORMAT, str("the exported program has an output FisherLens does not read: ", out.dump().substr(0, 120),
                                        " (export the model in eval mode: model.eval() before torch.export.export)"));
        }
      }
      FL_CHECK(!output_.empty(), ERR_FORMAT, "the exported program returns no tensor");
      const json& g = gm.at("graph");
      // the input's recorded shape: a fixed batch or a symbol
      const json& meta = g.at("tensor_values").at(userInput_);
      const json& sizes = meta.at("sizes");
      FL_CHECK(sizes.size() >= 2, ERR_FORMAT, "the exported program's input has ", sizes.size(), " dimensions; FisherLens passes [B, C, H, W] images");
      staticBatch_ = sizes[0].contains("as_int") ? sizes[0]["as_int"].get<int64_t>() : -1;
      for (size_t d = 1; d < sizes.size(); ++d) inputShape_.push_back(sizes[d].contains("as_int") ? sizes[d]["as_int"].get<int64_t>() : -1);
      // the nodes, each op checked against the allowlist and found in this LibTorch
      for (const json& n : g.at("nodes")) {
        Node node;
        node.target = n.at("target").get<std::string>();
        for (const json& a : n.at("inputs")) node.inputs.emplace_back(a.at("name").get<std::string>(), a.at("arg"));
        node.outputs = n.at("outputs");
        resolve(node, tv);
        if (node.op == "batch_norm") node.batchCounter = batchCounter(node);
        nodes_.push_back(std::move(node));
      }
    } catch (const json::exception& e) {
      throw FlError(ERR_FORMAT, str("the exported program's graph is malformed: ", e.what()));
    }
  }

  // The graph as TorchScript source: `def forward(self, x)` with one line per node, values renamed
  // v0, v1, ..., the state read as self.s<i>, every argument a literal or a value, the mode flags
  // of batch norm and dropout False (the engine linearises eval-mode forwards only).
  std::string scriptSource() const {
    std::unordered_map<std::string, std::string> names;
    for (const auto& [arg, i] : inputSlot_) names[arg] = "self.s" + std::to_string(i);
    names[userInput_] = "x";
    int64_t next = 0;
    auto fresh = [&](const std::string& graphName) {
      std::string v = "v" + std::to_string(next++);
      names[graphName] = v;
      return v;
    };
    auto ref = [&](const json& r) -> std::string {
      const std::string n = r.at("name").get<std::string>();
      auto it = names.find(n);
      FL_CHECK(it != names.end(), ERR_FORMAT, "the exported program uses '", n, "' before it is computed");
      return it->second;
    };
    auto number = [](double v) {
      if (std::isnan(v)) return std::string("float(\"nan\")");
      if (std::isinf(v)) return std::string(v > 0 ? "float(\"inf\")" : "float(\"-inf\")");
      std::ostringstream o;
      o << std::setprecision(17) << v;
      std::string t = o.str();
      if (t.find_first_of(".e") == std::string::npos) t += ".0";
      return t;
    };
    auto sym = [&](const json& a) -> std::string {
      return a.contains("as_int") ? std::to_string(a["as_int"].get<int64_t>()) : names.at(a.at("as_name").get<std::string>());
    };
    std::function<std::string(const json&)> lit = [&](const json& a) -> std::string {
      auto list = [&](const json& xs, const std::function<std::string(const json&)>& f) {
        std::string o = "[";
        for (size_t i = 0; i < xs.size(); ++i) o += (i ? ", " : "") + f(xs[i]);
        return o + "]";
      };
      if (a.contains("as_tensor")) return ref(a["as_tensor"]);
      if (a.contains("as_none")) return "None";
      if (a.contains("as_int")) return std::to_string(a["as_int"].get<int64_t>());
      if (a.contains("as_ints")) return list(a["as_ints"], [](const json& v) { return std::to_string(v.get<int64_t>()); });
      if (a.contains("as_float")) return number(a["as_float"].get<double>());
      if (a.contains("as_floats")) return list(a["as_floats"], [&](const json& v) { return number(v.get<double>()); });
      if (a.contains("as_bool")) return a["as_bool"].get<bool>() ? "True" : "False";
      if (a.contains("as_bools")) return list(a["as_bools"], [](const json& v) { return std::string(v.get<bool>() ? "True" : "False"); });
      if (a.contains("as_string")) return json(a["as_string"].get<std::string>()).dump();
      if (a.contains("as_sym_int")) return sym(a["as_sym_int"]);
      if (a.contains("as_sym_ints")) return list(a["as_sym_ints"], sym);
      if (a.contains("as_scalar_type")) return std::to_string(int64_t(scalarType(a["as_scalar_type"].get<int64_t>())));
      if (a.contains("as_device")) return "x.device";
      if (a.contains("as_tensors")) return list(a["as_tensors"], [&](const json& r) { return ref(r); });
      if (a.contains("as_optional_tensor")) return a["as_optional_tensor"].contains("as_tensor") ? ref(a["as_optional_tensor"]["as_tensor"]) : "None";
      throw FlError(ERR_FORMAT, str("the linear engine cannot take the argument ", a.dump().substr(0, 80)));
    };
    std::ostringstream src;
    src << "def forward(self, x):\n";
    for (const Node& n : nodes_) {
      std::string call;
      if (!n.handle) {
        if (n.op == "sym_size") {
          std::string t, d;
          for (const auto& [k, v] : n.inputs) (k == "self" ? t : d) = lit(v);
          call = t + ".size(" + d + ")";
        } else {
          const char* opText = n.op == "add" ? " + " : n.op == "sub" ? " - " : n.op == "mul" ? " * " : " // ";
          call = lit(n.inputs.at(0).second) + opText + lit(n.inputs.at(1).second);
        }
      } else {
        call = "torch." + n.op + "(";  // the TorchScript compiler reads torch.<name> as aten::<name>
        bool skipped = false, first = true;
        for (const c10::Argument& arg : n.handle->schema().arguments()) {
          std::string value;
          if (followsMode(n.op) && (arg.name() == "training" || arg.name() == "train")) {
            value = "False";
          } else {
            const json* given = nullptr;
            for (const auto& [k, v] : n.inputs)
              if (k == arg.name()) given = &v;
            if (!given) {
              skipped = true;
              continue;
            }
            value = lit(*given);
          }
          call += (first ? "" : ", ") + ((skipped || arg.kwarg_only()) ? arg.name() + "=" : std::string()) + value;
          first = false;
        }
        call += ")";
      }
      std::string lhs;
      const json& outs = n.outputs;
      for (size_t i = 0; i < outs.size(); ++i) {
        const json& o = outs[i];
        std::string v;
        if (o.contains("as_tensor")) v = fresh(o["as_tensor"]["name"].get<std::string>());
        else if (o.contains("as_sym_int") && o["as_sym_int"].contains("as_name")) v = fresh(o["as_sym_int"]["as_name"].get<std::string>());
        else if (o.contains("as_tensors")) {
          for (size_t k = 0; k < o["as_tensors"].size(); ++k) v += (k ? ", " : "") + fresh(o["as_tensors"][k]["name"].get<std::string>());
        } else {
          v = "_";
        }
        lhs += (i ? ", " : "") + v;
      }
      src << "    " << (lhs.empty() ? "" : lhs + " = ") << call << "\n";
    }
    src << "    return " << names.at(output_) << "\n";
    return src.str();
  }

  void bind(const std::string& arg, const std::string& stateName) {
    auto it = stateIndex_.find(stateName);
    FL_CHECK(it != stateIndex_.end(), ERR_FORMAT, "the exported program's graph names '", stateName,
             "', which its weights do not hold");
    inputSlot_.emplace_back(arg, it->second);
  }

  // The num_batches_tracked buffer beside the running_mean a batch_norm node reads
  int64_t batchCounter(const Node& node) const {
    for (const auto& [name, arg] : node.inputs) {
      if (name != "running_mean" || !arg.contains("as_tensor")) continue;
      const std::string g = arg["as_tensor"]["name"].get<std::string>();
      for (const auto& [inName, idx] : inputSlot_) {
        if (inName != g) continue;
        const std::string& s = stateNames_[idx];
        const std::string suffix = "running_mean";
        if (s.size() < suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0) return -1;
        auto it = stateIndex_.find(s.substr(0, s.size() - suffix.size()) + "num_batches_tracked");
        return it == stateIndex_.end() ? -1 : int64_t(it->second);
      }
    }
    return -1;
  }

  static void resolve(Node& node, const std::string& torchVersion) {
    const std::string& t = node.target;
    if (t == "_operator.add" || t == "_operator.sub" || t == "_operator.mul" || t == "_operator.floordiv") {
      node.op = t.substr(10);
      return;
    }
    const std::string prefix = "torch.ops.";
    FL_CHECK(t.compare(0, prefix.size(), prefix) == 0, ERR_FORMAT, "the exported program calls '", t,
             "', which is not an ATen op: loading a .pt2 runs ATen ops only");
    std::string rest = t.substr(prefix.size());
    size_t a = rest.find('.'), b = rest.rfind('.');
    FL_CHECK(a != std::string::npos && b != std::string::npos && a != b, ERR_FORMAT, "the exported program calls '", t,
             "', which is not an op name");
    std::string ns = rest.substr(0, a), name = rest.substr(a + 1, b - a - 1), overload = rest.substr(b + 1);
    FL_CHECK(ns == "aten", ERR_FORMAT, "the exported program calls the custom op '", t,
             "': a .pt2 may call pure ATen ops only (an archive is data, not code)");
    FL_CHECK(allowedOps().count(name) && overload != "out" && overload.find("_out") == std::string::npos, ERR_FORMAT,
             "the exported program calls '", t, "', which is not among the pure ATen ops FisherLens runs (docs/models.md)");
    node.op = name;
    if (name == "sym_size") return;
    auto h = c10::Dispatcher::singleton().findSchema({"aten::" + name, overload == "default" ? "" : overload});
    FL_CHECK(h.has_value(), ERR_FORMAT, "the exported program calls '", t, "', which this LibTorch (", TORCH_VERSION,
             ") lacks: it needs the LibTorch of the torch that exported it (", torchVersion, ")");
    node.handle = h;
    for (const c10::Argument& arg : h->schema().arguments()) {
      Node::Arg a;
      const json* given = nullptr;
      for (const auto& [k, v] : node.inputs)
        if (k == arg.name()) given = &v;
      if (followsMode(name) && (arg.name() == "training" || arg.name() == "train")) {
        a.kind = Node::Arg::Kind::Mode;
      } else if (given) {
        a.kind = constantOf(*given, &a.constant) ? Node::Arg::Kind::Constant : Node::Arg::Kind::Value;
        if (a.kind == Node::Arg::Kind::Value) a.value = *given;
      } else {
        FL_CHECK(arg.default_value().has_value(), ERR_FORMAT, "'", t, "' is missing its argument '", arg.name(), "'");
        a.kind = Node::Arg::Kind::Constant;
        a.constant = *arg.default_value();
      }
      node.args.push_back(std::move(a));
    }
  }

  torch::Tensor run(const torch::Tensor& x) {
    std::unordered_map<std::string, c10::IValue> env;
    std::unordered_map<std::string, int64_t> syms;
    for (const auto& [arg, i] : inputSlot_) env[arg] = state_[i];
    env[userInput_] = x;
    auto tensorOf = [&](const json& ref) -> c10::IValue {
      const std::string n = ref.at("name").get<std::string>();
      auto it = env.find(n);
      FL_CHECK(it != env.end(), ERR_FORMAT, "the exported program uses '", n, "' before it is computed");
      return it->second;
    };
    auto symOf = [&](const json& s) -> int64_t {
      if (s.contains("as_int")) return s["as_int"].get<int64_t>();
      const std::string n = s.at("as_name").get<std::string>();
      auto it = syms.find(n);
      FL_CHECK(it != syms.end(), ERR_FORMAT, "the exported program uses the size '", n, "' before it is computed");
      return it->second;
    };
    auto value = [&](const json& a) -> c10::IValue {
      c10::IValue c;
      if (constantOf(a, &c)) return c;
      if (a.contains("as_tensor")) return tensorOf(a["as_tensor"]);
      if (a.contains("as_sym_int")) return c10::IValue(symOf(a["as_sym_int"]));
      if (a.contains("as_sym_ints")) {
        std::vector<int64_t> v;
        for (const json& s : a["as_sym_ints"]) v.push_back(symOf(s));
        return c10::IValue(v);
      }
      if (a.contains("as_device")) return c10::IValue(device_);
      if (a.contains("as_tensors")) {
        c10::List<at::Tensor> l;
        for (const json& r : a["as_tensors"]) l.push_back(tensorOf(r).toTensor());
        return c10::IValue(l);
      }
      if (a.contains("as_optional_tensor")) {
        const json& o = a["as_optional_tensor"];
        return o.contains("as_tensor") ? tensorOf(o["as_tensor"]) : c10::IValue();
      }
      if (a.contains("as_optional_tensors")) {
        c10::List<c10::optional<at::Tensor>> l;
        for (const json& o : a["as_optional_tensors"]) {
          if (o.contains("as_tensor")) l.push_back(tensorOf(o["as_tensor"]).toTensor());
          else l.push_back(c10::nullopt);
        }
        return c10::IValue(l);
      }
      throw FlError(ERR_FORMAT, str("the exported program passes an argument FisherLens does not read: ", a.dump().substr(0, 120)));
    };
    auto input = [](const Node& n, const std::string& name) -> const json* {
      for (const auto& [k, v] : n.inputs)
        if (k == name) return &v;
      return nullptr;
    };
    for (const Node& n : nodes_) {
      if (!n.handle) {
        if (n.op == "sym_size") {
          torch::Tensor t = value(*input(n, "self")).toTensor();
          int64_t d = value(*input(n, "dim")).toInt();
          syms[n.outputs.at(0).at("as_sym_int").at("as_name").get<std::string>()] = t.size(d);
        } else {  // integer arithmetic on sizes: _operator.add / sub / mul / floordiv
          FL_CHECK(n.inputs.size() == 2, ERR_FORMAT, "'", n.target, "' takes two sizes");
          int64_t a = value(n.inputs[0].second).toInt(), b = value(n.inputs[1].second).toInt();
          int64_t r = n.op == "add" ? a + b : n.op == "sub" ? a - b : n.op == "mul" ? a * b : (b ? a / b : 0);
          syms[n.outputs.at(0).at("as_sym_int").at("as_name").get<std::string>()] = r;
        }
        continue;
      }
      if (training_ && n.batchCounter >= 0) {
        torch::NoGradGuard ng;
        state_[size_t(n.batchCounter)].add_(1);
      }
      torch::jit::Stack stack;
      stack.reserve(n.args.size());
      for (const Node::Arg& arg : n.args) {
        if (arg.kind == Node::Arg::Kind::Mode) stack.emplace_back(training_);
        else if (arg.kind == Node::Arg::Kind::Constant) stack.push_back(arg.constant);
        else stack.push_back(value(arg.value));
      }
      if (n.op == "slice" && stack.size() >= 4 && stack[0].isTensor() && stack[1].isInt()) {
        // exporters write an open end as INT64_MAX; LibTorch 1.13's SymInt arguments read values
        // that large as symbolic. Bounds clamped to the dimension mean the same slice.
        const int64_t len = stack[0].toTensor().size(stack[1].toInt());
        for (size_t k : {size_t(2), size_t(3)})
          if (stack[k].isInt()) stack[k] = std::max(-len, std::min(len, stack[k].toInt()));
      }
      try {
        n.handle->callBoxed(&stack);
      } catch (const c10::Error& e) {
        throw FlError(ERR_TORCH, str("'", n.target, "' failed: ", e.what_without_backtrace()));
      }
      const json& outs = n.outputs;
      FL_CHECK(outs.size() <= stack.size(), ERR_FORMAT, "'", n.target, "' returns ", stack.size(), " values, the graph names ", outs.size());
      for (size_t i = 0; i < outs.size(); ++i) {
        const json& o = outs[i];
        if (o.contains("as_tensor")) {
          env[o["as_tensor"]["name"].get<std::string>()] = stack[i];
        } else if (o.contains("as_tensors")) {
          auto l = stack[i].toTensorList();
          FL_CHECK(l.size() == o["as_tensors"].size(), ERR_FORMAT, "'", n.target, "' returns ", l.size(), " tensors, the graph names ",
                   o["as_tensors"].size());
          for (size_t k = 0; k < l.size(); ++k) env[o["as_tensors"][k]["name"].get<std::string>()] = l.get(k);
        } else if (o.contains("as_sym_int") && o["as_sym_int"].contains("as_name")) {
          syms[o["as_sym_int"]["as_name"].get<std::string>()] = stack[i].toInt();
        }
      }
    }
    auto it = env.find(output_);
    FL_CHECK(it != env.end() && it->second.isTensor(), ERR_FORMAT, "the exported program never computes its output '", output_, "'");
    torch::Tensor z = it->second.toTensor();
    FL_CHECK(z.dim() == 2 && z.size(0) == x.size(0), ERR_SHAPE, "the exported program must return logits [B, K] for B = ", x.size(0),
             ", got ", z.sizes());
    return z;
  }

  std::string spec_;
  std::vector<std::string> stateNames_;
  std::vector<torch::Tensor> state_;
  std::vector<bool> isParam_;
  std::unordered_map<std::string, size_t> stateIndex_;
  std::vector<std::pair<std::string, size_t>> inputSlot_;  // graph input name -> state index
  std::string userInput_, output_;
  std::vector<Node> nodes_;
  std::vector<int64_t> inputShape_;  // C, H, W (-1: any)
  int64_t staticBatch_ = -1;         // the exported batch, -1 when dynamic
  bool training_ = false;
  torch::Device device_{torch::kCPU};
  std::once_flag loweringOnce_;
  std::unique_ptr<torch::jit::Module> script_;  // the graph as TorchScript over this model's tensors
  std::unique_ptr<ScriptLowering> lowering_;
  std::string loweringError_;
};

}  // namespace

ClassifierPtr createExported(const std::string& specJson) { return std::make_shared<ExportedClassifier>(specJson); }

}  // namespace fl
