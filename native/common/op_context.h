// What a running op may ask of whoever started it, without N-API: whether its AbortSignal fired,
// and where its progress events go. binding/worker.cc fills one per op (the CancelToken's flag and
// the onProgress callback); the mathematics takes `const OpContext*` (nullptr: nobody is listening
// and nothing can abort, e.g. training's inner attack called per batch).
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include "common/errors.h"

namespace fl {

class OpContext {
 public:
  // Throws FlError(ERR_ABORTED) when the op's AbortSignal fired. Call between iterations.
  void checkAbort() const {
    if (aborted()) throw FlError(ERR_ABORTED, "operation aborted by its AbortSignal");
  }
  bool aborted() const { return cancel_ && cancel_->load(); }
  // Sends a progress event (a JSON object as text) to the listener, if any; never blocks.
  void report(const std::string& json) const {
    if (progress_) progress_(json);
  }

  std::shared_ptr<std::atomic<bool>> cancel_;              // set by the JS thread (CancelToken.cancel)
  std::function<void(const std::string& json)> progress_;  // empty: no listener
};

}  // namespace fl
