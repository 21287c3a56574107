// Input checks shared by every op: each failure is a FlError saying what was expected and what came.
#pragma once
#include <torch/torch.h>
#include "common/errors.h"

namespace fl {

inline std::string shapeOf(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

// x: images [B, C, H, W], floating point, finite
inline void checkImages(const torch::Tensor& x, const char* what) {
  FL_CHECK(x.dim() == 4, ERR_SHAPE, what, ": expected images [B, C, H, W], got shape ", shapeOf(x));
  FL_CHECK(x.is_floating_point(), ERR_DTYPE, what, ": expected float32 or float64 images, got ", c10::toString(x.scalar_type()));
  FL_CHECK(x.size(0) > 0, ERR_SHAPE, what, ": empty batch");
  FL_CHECK(torch::isfinite(x).all().item<bool>(), ERR_VALUE, what, ": contains NaN or Inf");
}

// y: labels [B] int64 in [0, K)
inline void checkLabels(const torch::Tensor& y, int64_t batch, int64_t numClasses, const char* what) {
  FL_CHECK(y.dim() == 1 && y.size(0) == batch, ERR_SHAPE, what, ": expected labels [", batch, "], got shape ", shapeOf(y));
  FL_CHECK(y.scalar_type() == torch::kInt64, ERR_DTYPE, what, ": expected int64 labels, got ", c10::toString(y.scalar_type()));
  if (y.numel() > 0 && numClasses > 0) {
    int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
    FL_CHECK(lo >= 0 && hi < numClasses, ERR_VALUE, what, ": labels must lie in [0, ", numClasses, "), got [", lo, ", ", hi, "]");
  }
}

// z: logits [B, K] straight from the model: every entry finite, else ERR_VALUE naming how many of
// the B samples have a NaN or Inf logit (the one check behind eval, attack and fisher)
inline void checkLogits(const torch::Tensor& z, const char* what) {
  int64_t bad = z.dim() == 2 ? (~torch::isfinite(z)).any(1).sum().item<int64_t>()
                             : (~torch::isfinite(z)).any().item<bool>();
  FL_CHECK(bad == 0, ERR_VALUE, what, ": the model's logits are NaN or Inf for ", bad, " of ", z.size(0),
           " samples (diverged training, or a model that produces non-finite outputs)");
}

}  // namespace fl
