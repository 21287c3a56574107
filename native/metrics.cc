// metrics: see lib/metrics.ts for the public API.
#include "capabilities.h"
#include "common/errors.h"
#include "common/tensor.h"
#include "common/worker.h"
#include "models/model_wrap.h"

namespace fl {
void InitMetrics(Napi::Env env, Napi::Object exports) {}
}  // namespace fl
