#include "common/tensor_ops.h"
#include <torch/cuda.h>
#include <sstream>
#include "common/errors.h"

namespace fl {

namespace {

// The dtypes JavaScript can name (binding/tensor.cc maps each to its TypedArray)
struct DtypeName {
  const char* name;
  torch::ScalarType st;
};
const DtypeName kDtypeNames[] = {
    {"float32", torch::kFloat32}, {"float64", torch::kFloat64}, {"int64", torch::kInt64},
    {"int32", torch::kInt32},     {"uint8", torch::kUInt8},
};

}  // namespace

torch::ScalarType parseDtype(const std::string& name) {
  for (const auto& r : kDtypeNames)
    if (name == r.name) return r.st;
  throw FlError(ERR_DTYPE, str("unknown dtype '", name, "'; expected float32, float64, int64, int32 or uint8"));
}

std::string dtypeName(torch::ScalarType t) {
  for (const auto& r : kDtypeNames)
    if (r.st == t) return r.name;
  return std::string(c10::toString(t));
}

torch::Device parseDevice(const std::string& name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    int index = 0;
    if (name.size() > 4) {
      FL_CHECK(name[4] == ':' && name.size() > 5 && name.find_first_not_of("0123456789", 5) == std::string::npos,
               ERR_DEVICE, "unknown device '", name, "'; expected 'cpu', 'cuda' or 'cuda:N'");
      index = std::stoi(name.substr(5));
    }
    FL_CHECK(torch::cuda::is_available(), ERR_DEVICE, "device '", name,
             "' asked for, but CUDA is not available (this LibTorch has no CUDA or no GPU is visible); use 'cpu'");
    int count = static_cast<int>(torch::cuda::device_count());
    FL_CHECK(index < count, ERR_DEVICE, "device '", name, "' asked for, but only ", count, " CUDA device(s) exist");
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw FlError(ERR_DEVICE, str("unknown device '", name, "'; expected 'cpu', 'cuda' or 'cuda:N'"));
}

std::string deviceName(const torch::Device& d) {
  if (d.is_cpu()) return "cpu";
  return str("cuda:", d.has_index() ? d.index() : 0);
}

bool namesDevice(const std::string& s) { return s == "cpu" || s.rfind("cuda", 0) == 0; }

std::string shapeStr(c10::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

torch::Tensor convertTo(const torch::Tensor& t, const std::string& s) {
  if (namesDevice(s)) return t.to(parseDevice(s));
  return t.to(parseDtype(s));
}

void checkRowIndex(const torch::Tensor& t, const torch::Tensor& idx) {
  FL_CHECK(idx.dim() == 1 && idx.scalar_type() == torch::kInt64, ERR_DTYPE,
           "index(indices): expected a 1-D int64 tensor, got ", dtypeName(idx.scalar_type()), " ", shapeStr(idx.sizes()));
  FL_CHECK(t.dim() >= 1, ERR_SHAPE, "index(indices): this tensor is a scalar");
}

torch::Tensor indexRows(const torch::Tensor& t, const torch::Tensor& idx) {
  checkRowIndex(t, idx);
  if (idx.numel() > 0) {
    int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
    FL_CHECK(lo >= 0 && hi < t.size(0), ERR_SHAPE, "index(indices): indices must lie in [0, ", t.size(0),
             "), got [", lo, ", ", hi, "]");
  }
  return t.index_select(0, idx.to(t.device()));
}

void syncDevice(const torch::Tensor& t) {
  if (t.defined() && t.is_cuda()) torch::cuda::synchronize(t.device().index());
}

}  // namespace fl
