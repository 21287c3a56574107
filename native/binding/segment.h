// The KL-segment ops' arguments and result, shared by klSegment (binding/fisher.cc) and
// klPairSegment (binding/metrics.cc); the computation is metrics.h klSegmentOf.
#pragma once
#include <napi.h>
#include <vector>
#include "metrics.h"

namespace fl {

// The segment ops' `ts` argument: a JS array of numbers (ERR_ARG naming `what` otherwise)
std::vector<double> parseTs(const Napi::Value& v, const char* what);
// The segment ops' result: { kl: Tensor [B, T] float64, quadratic: Float64Array [B] }
Napi::Value writeSegment(Napi::Env env, const Segment& s);

}  // namespace fl
