// The JS class CancelToken: lib/op.ts makes one per AbortSignal and passes it as `ctl.token`;
// cancel() sets a flag the running op reads between iterations (OpContext::checkAbort).
#pragma once
#include <napi.h>
#include <atomic>
#include <memory>

namespace fl {

// The flag behind a CancelToken handle; nullptr when `v` is not one (no token: nothing aborts).
std::shared_ptr<std::atomic<bool>> cancelFlag(Napi::Value v);

}  // namespace fl
