// model.loadWeights' mathematics (models/weights.h).
#include "models/weights.h"
#include "common/errors.h"
#include <cstdio>
#include <map>
#include <memory>
#include <set>

namespace fl {

torch::ScalarType weightDtype(const std::string& n) {
  static const std::map<std::string, torch::ScalarType> table = {
      {"float32", torch::kFloat32}, {"float64", torch::kFloat64}, {"float16", torch::kFloat16},
      {"bfloat16", torch::kBFloat16}, {"int64", torch::kInt64}, {"int32", torch::kInt32},
      {"int16", torch::kInt16}, {"int8", torch::kInt8}, {"uint8", torch::kUInt8}, {"bool", torch::kBool}};
  auto it = table.find(n);
  FL_CHECK(it != table.end(), ERR_FORMAT, "weights: unsupported dtype '", n, "'");
  return it->second;
}

namespace {

std::string dtypeName(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "float32";
    case torch::kFloat64: return "float64";
    case torch::kFloat16: return "float16";
    case torch::kBFloat16: return "bfloat16";
    case torch::kInt64: return "int64";
    case torch::kInt32: return "int32";
    case torch::kInt16: return "int16";
    case torch::kInt8: return "int8";
    case torch::kUInt8: return "uint8";
    case torch::kBool: return "bool";
    default: return c10::toString(t);
  }
}

std::string shapeStr(at::IntArrayRef s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

struct FileCloser {
  void operator()(std::FILE* f) const { if (f) std::fclose(f); }
};

// Reads n bytes at byte `at` of f into dst.
void readAt(std::FILE* f, const std::string& path, int64_t at, void* dst, int64_t n) {
  if (n == 0) return;
  FL_CHECK(fseeko(f, at, SEEK_SET) == 0, ERR_IO, "weights: cannot seek to byte ", at, " of ", path);
  FL_CHECK(std::fread(dst, 1, size_t(n), f) == size_t(n), ERR_IO, "weights: ", path, " ended before byte ", at + n,
           " (changed while loading?)");
}

struct Checked {
  const WeightSource* src;
  torch::Tensor target;
  torch::ScalarType dtype;
  int64_t lo = 0, hi = -1;  // the elements of the storage the view touches, [lo, hi]
};

}  // namespace

std::vector<StateEntry> stateEntries(Classifier& m) {
  std::vector<StateEntry> out;
  for (auto& kv : m.namedState()) out.push_back({kv.first, kv.second.sizes().vec(), dtypeName(kv.second.scalar_type())});
  return out;
}

void loadWeights(Classifier& m, const std::string& path, const std::vector<WeightSource>& sources) {
  std::map<std::string, torch::Tensor> state;
  for (auto& kv : m.namedState()) state.emplace(kv.first, kv.second);
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  FL_CHECK(f, ERR_IO, "weights: cannot open ", path);
  FL_CHECK(fseeko(f.get(), 0, SEEK_END) == 0, ERR_IO, "weights: cannot seek in ", path);
  const int64_t fileSize = ftello(f.get());

  // every check before the first copy: a bad source changes nothing
  std::vector<Checked> plan;
  std::set<std::string> seen;
  for (const auto& s : sources) {
    auto it = state.find(s.target);
    FL_CHECK(it != state.end(), ERR_FORMAT, "weights: the model has no parameter or buffer '", s.target, "'");
    FL_CHECK(seen.insert(s.target).second, ERR_FORMAT, "weights: '", s.target, "' given twice");
    Checked c{&s, it->second, weightDtype(s.dtype)};
    const torch::Tensor& t = c.target;
    FL_CHECK(s.shape.size() == s.strides.size(), ERR_FORMAT, "weights: '", s.target, "': ", s.shape.size(), " sizes but ",
             s.strides.size(), " strides");
    int64_t numel = 1;
    for (size_t d = 0; d < s.shape.size(); ++d) {
      FL_CHECK(s.shape[d] >= 0 && s.strides[d] >= 0, ERR_FORMAT, "weights: '", s.target, "' has a negative size or stride");
      numel *= s.shape[d];
    }
    bool sameShape = at::IntArrayRef(s.shape) == t.sizes();
    bool normBuffer = s.target == "norm_mean" || s.target == "norm_std";
    FL_CHECK(sameShape || (normBuffer && numel == t.numel()), ERR_FORMAT, "weights: '", s.target, "' is ",
             shapeStr(s.shape), " in the file but ", shapeStr(t.sizes()), " in the model");
    FL_CHECK(c10::isFloatingType(c.dtype) == c10::isFloatingType(t.scalar_type()), ERR_FORMAT, "weights: '", s.target,
             "' is ", s.dtype, " in the file but ", dtypeName(t.scalar_type()), " in the model");
    const int64_t es = int64_t(c10::elementSize(c.dtype));
    FL_CHECK(s.byteStart >= 0 && s.byteLength >= 0 && s.byteStart + s.byteLength <= fileSize && s.byteLength % es == 0,
             ERR_FORMAT, "weights: '", s.target, "': storage bytes ", s.byteStart, "..", s.byteStart + s.byteLength,
             " lie outside the file (", fileSize, " bytes)");
    if (numel > 0) {
      c.lo = s.offset;
      c.hi = s.offset;
      for (size_t d = 0; d < s.shape.size(); ++d) c.hi += (s.shape[d] - 1) * s.strides[d];
      FL_CHECK(c.lo >= 0 && c.hi < s.byteLength / es, ERR_FORMAT, "weights: '", s.target, "': its view reaches element ",
               c.hi, " of a ", s.byteLength / es, "-element storage");
    }
    plan.push_back(c);
  }

  torch::NoGradGuard ng;
  for (const auto& c : plan) {
    const WeightSource& s = *c.src;
    torch::Tensor t = c.target;
    if (c.hi < c.lo) continue;  // no elements
    const int64_t es = int64_t(c10::elementSize(c.dtype));
    const int64_t numel = t.numel();
    bool contiguousView = true;
    for (int64_t d = int64_t(s.shape.size()) - 1, expect = 1; d >= 0; --d) {
      if (s.shape[d] != 1 && s.strides[d] != expect) contiguousView = false;
      expect *= s.shape[d];
    }
    if (contiguousView && c.dtype == t.scalar_type() && t.device().is_cpu() && t.is_contiguous()) {
      // straight into the parameter: no temporary
      readAt(f.get(), path, s.byteStart + c.lo * es, t.data_ptr(), numel * es);
      continue;
    }
    // the storage span the view touches, then the view over it, cast and moved by copy_
    torch::Tensor span = torch::empty({(c.hi - c.lo + 1)}, torch::TensorOptions().dtype(c.dtype));
    readAt(f.get(), path, s.byteStart + c.lo * es, span.data_ptr(), span.numel() * es);
    torch::Tensor view = span.as_strided(s.shape, s.strides, 0);
    t.copy_(view.reshape(t.sizes()));
  }
}

}  // namespace fl
