#include "binding/worker.h"
#include <memory>
#include <optional>
#include "binding/addon_data.h"
#include "binding/cancel_token.h"
#include "common/compute_thread.h"
#include "common/errors.h"

namespace fl {

[[noreturn]] void throwJs(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Value().Set("code", Napi::String::New(env, code));
  throw err;
}

namespace {

// One op in flight: created on the main thread, run on the compute thread, settled back on the
// main thread through the one completion ThreadSafeFunction (two thread hops per op).
struct PendingOp {
  explicit PendingOp(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise::Deferred deferred;
  OpFn fn;
  OpContext ctx;
  std::optional<Napi::ThreadSafeFunction> progress;  // feeds ctx.report to the onProgress callback
  Finisher finish;
  std::string code, message;
  bool failed = false;

  // Compute thread: run, record the outcome
  void run() {
    try {
      ctx.checkAbort();
      finish = fn(ctx);
    } catch (...) {
      failed = true;
      classifyError(std::current_exception(), code, message);
    }
  }
  // Main thread: settle the Promise (the finisher builds the JS value), then free the op here so
  // captured tensors die on the main thread
  void settle(Napi::Env env) {
    Napi::HandleScope scope(env);
    if (progress) {
      ctx.progress_ = nullptr;
      progress->Release();
      progress.reset();
    }
    if (!failed) {
      try {
        deferred.Resolve(finish ? finish(env) : env.Undefined());
        return;
      } catch (const Napi::Error& e) {
        deferred.Reject(e.Value());
        return;
      } catch (...) {
        classifyError(std::current_exception(), code, message);
      }
    }
    Napi::Error err = Napi::Error::New(env, message);
    err.Value().Set("code", Napi::String::New(env, code));
    deferred.Reject(err.Value());
  }
};

// The completion channel: one ThreadSafeFunction, referenced only while ops are in flight so an
// idle addon never keeps the process alive.
struct Completions {
  Napi::ThreadSafeFunction tsfn;
  int64_t inflight = 0;
};

Completions& completions(Napi::Env env) {
  auto& slot = addonData(env).completions;
  if (!slot) {
    auto c = std::make_shared<Completions>();
    c->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                            "fisherlens-op", 0, 1);
    c->tsfn.Unref(env);
    slot = c;
  }
  return *std::static_pointer_cast<Completions>(slot);
}

// Progress events of one op: each JSON text goes to `tsfn`'s callback on the main thread; an
// event that cannot be queued (the environment is shutting down) is dropped.
std::function<void(const std::string&)> progressSink(Napi::ThreadSafeFunction tsfn) {
  return [tsfn](const std::string& json) {
    auto* payload = new std::string(json);
    napi_status st = tsfn.NonBlockingCall(payload, [](Napi::Env env, Napi::Function cb, std::string* data) {
      std::unique_ptr<std::string> owned(data);
      if (env != nullptr && cb != nullptr) cb.Call({Napi::String::New(env, *owned)});
    });
    if (st != napi_ok) delete payload;
  };
}

}  // namespace

Napi::Value startOp(Napi::Env env, Napi::Value ctl, OpFn fn) {
  auto* op = new PendingOp(env);
  op->fn = std::move(fn);
  if (ctl.IsObject()) {
    Napi::Object o = ctl.As<Napi::Object>();
    op->ctx.cancel_ = cancelFlag(o.Get("token"));
    Napi::Value cb = o.Get("onProgress");
    if (cb.IsFunction()) {
      op->progress = Napi::ThreadSafeFunction::New(env, cb.As<Napi::Function>(), "fisherlens-progress", 0, 1);
      op->ctx.progress_ = progressSink(*op->progress);
    }
  }
  Napi::Promise p = op->deferred.Promise();
  Completions& c = completions(env);
  if (c.inflight++ == 0) c.tsfn.Ref(env);
  Napi::ThreadSafeFunction tsfn = c.tsfn;
  std::shared_ptr<void> keep = addonData(env).completions;
  postCompute([op, tsfn, keep]() mutable {
    op->run();
    napi_status st = tsfn.NonBlockingCall(op, [](Napi::Env env, Napi::Function, PendingOp* done) {
      std::unique_ptr<PendingOp> own(done);
      Completions& c = completions(env);
      own->settle(env);
      own.reset();
      if (--c.inflight == 0) c.tsfn.Unref(env);
    });
    if (st != napi_ok) delete op;  // the environment is shutting down
  });
  return p;
}

}  // namespace fl
