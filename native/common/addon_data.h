// Per-environment constructors of the wrapped classes (Napi instance data, no globals).
#pragma once
#include <napi.h>

namespace fl {
struct AddonData {
  Napi::FunctionReference tensor, cancel, model;
};
inline AddonData& addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }
}  // namespace fl
