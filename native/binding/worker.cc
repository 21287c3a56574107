#include "binding/worker.h"
#include "common/errors.h"
#include "binding/addon_data.h"
#include <pthread.h>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <ATen/Parallel.h>

namespace fl {

std::atomic<int>& desiredThreads() {
  static std::atomic<int> n{0};
  return n;
}

void OpContext::checkAbort() const {
  if (aborted()) throw FlError(ERR_ABORTED, "operation aborted by its AbortSignal");
}

void OpContext::report(const std::string& json) const {
  if (!progress_) return;
  auto* payload = new std::string(json);
  napi_status st = progress_->NonBlockingCall(payload, [](Napi::Env env, Napi::Function cb, std::string* data) {
    std::unique_ptr<std::string> owned(data);
    if (env != nullptr && cb != nullptr) cb.Call({Napi::String::New(env, *owned)});
  });
  if (st != napi_ok) delete payload;
}

[[noreturn]] void throwJs(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Value().Set("code", Napi::String::New(env, code));
  throw err;
}

namespace {

class CancelToken : public Napi::ObjectWrap<CancelToken> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CancelToken",
                       {InstanceMethod<&CancelToken::Cancel>("cancel"),
                        InstanceAccessor<&CancelToken::Cancelled>("cancelled")});
  }
  explicit CancelToken(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<CancelToken>(info), flag(std::make_shared<std::atomic<bool>>(false)) {}
  void Cancel(const Napi::CallbackInfo&) { flag->store(true); }
  Napi::Value Cancelled(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), flag->load()); }
  std::shared_ptr<std::atomic<bool>> flag;
};

// Held while an op runs on the compute thread. A fork (child_process.spawn goes through fork in
// libuv) waits for it: OpenBLAS's own fork handler stops its worker threads, and a BLAS call in
// flight on the compute thread would then wait forever for them (seen as a hang in eigh while a
// test spawned CLI processes). pthread_atfork runs prepare handlers in reverse order of
// registration, so ours, registered when the addon loads (after OpenBLAS's, registered when the
// library loaded), runs first. Recursive: an op that forks itself does not deadlock.
std::recursive_mutex& opRunning() {
  static std::recursive_mutex m;
  return m;
}

void registerForkGuard() {
  static std::once_flag once;
  std::call_once(once, [] {
    pthread_atfork([] { opRunning().lock(); }, [] { opRunning().unlock(); }, [] { opRunning().unlock(); });
  });
}

// Every op's LibTorch work runs on one long-lived thread. OpenMP keeps a thread team per calling
// thread: ops spread over several threads make several teams whose idle workers spin against the
// busy one (docs/fisher.md has the measured cost).
class ComputeThread {
 public:
  ComputeThread() : thread_([this] { loop(); }) {}
  ~ComputeThread() {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // Queues `task` on the compute thread (tasks run in FIFO order).
  void post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> g(m_);
      queue_.push_back(std::move(task));
    }
    cv_.notify_one();
  }
 private:
  void loop() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [this] { return stop_ || !queue_.empty(); });
        if (stop_) return;  // process exit: finish the current task only, drop the queue
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      // OpenMP keeps the thread count per thread: apply the process-wide setting here
      int want = desiredThreads().load();
      if (want > 0 && at::get_num_threads() != want) at::set_num_threads(want);
      std::lock_guard<std::recursive_mutex> running(opRunning());  // a fork waits for this op (above)
      task();
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

ComputeThread& computeThread() {
  static ComputeThread t;  // started on first use, joined at process exit
  return t;
}

// One op in flight: created on the main thread, run on the compute thread, settled back on the
// main thread through the one completion ThreadSafeFunction (two thread hops per op).
struct PendingOp {
  explicit PendingOp(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise::Deferred deferred;
  OpFn fn;
  OpContext ctx;
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
    if (ctx.progress_) {
      ctx.progress_->Release();
      ctx.progress_.reset();
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

}  // namespace

Napi::Value startOp(Napi::Env env, Napi::Value ctl, OpFn fn) {
  auto* op = new PendingOp(env);
  op->fn = std::move(fn);
  if (ctl.IsObject()) {
    Napi::Object o = ctl.As<Napi::Object>();
    Napi::Value tok = o.Get("token");
    if (tok.IsObject() && tok.As<Napi::Object>().InstanceOf(addonData(env).cancel.Value())) {
      op->ctx.cancel_ = CancelToken::Unwrap(tok.As<Napi::Object>())->flag;
    }
    Napi::Value cb = o.Get("onProgress");
    if (cb.IsFunction()) {
      op->ctx.progress_ = Napi::ThreadSafeFunction::New(env, cb.As<Napi::Function>(), "fisherlens-progress", 0, 1);
    }
  }
  Napi::Promise p = op->deferred.Promise();
  Completions& c = completions(env);
  if (c.inflight++ == 0) c.tsfn.Ref(env);
  Napi::ThreadSafeFunction tsfn = c.tsfn;
  std::shared_ptr<void> keep = addonData(env).completions;
  computeThread().post([op, tsfn, keep]() mutable {
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

void InitWorker(Napi::Env env, Napi::Object exports) {
  registerForkGuard();
  Napi::Function ctor = CancelToken::Define(env);
  addonData(env).cancel = Napi::Persistent(ctor);
  exports.Set("CancelToken", ctor);
}

}  // namespace fl
