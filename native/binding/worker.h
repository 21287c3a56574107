// One async mechanism for every op that can take over a millisecond ("baton" pattern): the op's
// inputs are read and captured by value on the main thread (tensors and shared_ptrs keep native
// state alive however the JS wrappers are collected); the op runs on the one compute thread
// (common/compute_thread.h) and touches no N-API there; the result is built on the main thread
// by a Finisher, delivered through one completion ThreadSafeFunction, and settles the Promise.
// Abort: a CancelToken (binding/cancel_token.h) checked between iterations through OpContext
// (common/op_context.h). Progress: an optional JS callback fed JSON strings through a
// ThreadSafeFunction.
#pragma once
#include <napi.h>
#include <functional>
#include <string>
#include "common/op_context.h"

namespace fl {

using Finisher = std::function<Napi::Value(Napi::Env)>;
using OpFn = std::function<Finisher(OpContext&)>;

// Queues `fn` on the one compute thread and returns a Promise. `ctl` is undefined or
// { token?: CancelToken, onProgress?: (json: string) => void }. Ops run one at a time in the
// order they were started, so ops on the same model (mutations included) never overlap and
// need no lock.
Napi::Value startOp(Napi::Env env, Napi::Value ctl, OpFn fn);

// Throws a JS Error with `code` (for synchronous bindings).
[[noreturn]] void throwJs(Napi::Env env, const std::string& code, const std::string& message);
// Runs fn synchronously, mapping any C++ exception to a JS Error with `code`.
template <typename F>
auto guard(Napi::Env env, F&& fn) -> decltype(fn());

}  // namespace fl

#include "common/errors.h"
namespace fl {
template <typename F>
auto guard(Napi::Env env, F&& fn) -> decltype(fn()) {
  std::string code, message;
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    classifyError(std::current_exception(), code, message);
  }
  throwJs(env, code, message);
}
}  // namespace fl
