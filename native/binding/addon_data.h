// Per-environment constructors of the wrapped classes (Napi instance data, no globals).
#pragma once
#include <napi.h>
#include <memory>

namespace fl {
struct AddonData {
  Napi::FunctionReference tensor, cancel, model;
  // The completion channel of async ops (binding/worker.cc), made on first use
  std::shared_ptr<void> completions;
};
inline AddonData& addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }
}  // namespace fl
