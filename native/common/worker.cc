#include "common/worker.h"
#include "common/errors.h"
#include "common/addon_data.h"
#include <algorithm>
#include <condition_variable>
#include <deque>
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

// Every op's LibTorch work runs on one long-lived thread. OpenMP keeps a thread team per calling
// thread: ops spread over libuv's four pool threads made four teams whose idle workers spin
// against the busy one, which halved the speed of a small-cnn forward on 2 cores (52.9 ms vs
// 25.9 ms on one thread). The pool thread of an AsyncWorker hands the work over and waits.
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
  // Runs `task` on the compute thread and returns when it has finished (tasks run in FIFO order).
  void run(const std::function<void()>& task) {
    std::mutex doneM;
    std::condition_variable doneCv;
    bool done = false;
    {
      std::lock_guard<std::mutex> g(m_);
      queue_.push_back([&] {
        task();
        std::lock_guard<std::mutex> d(doneM);
        done = true;
        doneCv.notify_one();
      });
    }
    cv_.notify_one();
    std::unique_lock<std::mutex> d(doneM);
    doneCv.wait(d, [&] { return done; });
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [this] { return stop_ || !queue_.empty(); });
        if (stop_ && queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      // OpenMP keeps the thread count per thread: apply the process-wide setting here
      int want = desiredThreads().load();
      if (want > 0 && at::get_num_threads() != want) at::set_num_threads(want);
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

class OpWorker : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, OpFn fn, OpContext ctx, std::vector<Lock> locks)
      : Napi::AsyncWorker(env, "fisherlens-op"),
        deferred_(Napi::Promise::Deferred::New(env)),
        fn_(std::move(fn)),
        ctx_(std::move(ctx)),
        locks_(std::move(locks)) {
    // Lock in a fixed (address) order so two ops over the same models cannot deadlock
    std::sort(locks_.begin(), locks_.end());
    locks_.erase(std::unique(locks_.begin(), locks_.end()), locks_.end());
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    std::vector<std::unique_lock<std::mutex>> held;
    std::exception_ptr failure;
    try {
      for (auto& l : locks_) held.emplace_back(*l);
      ctx_.checkAbort();
      // The LibTorch work itself runs on the one compute thread (see ComputeThread)
      computeThread().run([this, &failure] {
        try {
          finish_ = fn_(ctx_);
        } catch (...) {
          failure = std::current_exception();
        }
      });
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure) {
      classifyError(failure, code_, message_);
      SetError(message_);
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      Napi::Value v = finish_ ? finish_(env) : env.Undefined();
      release();
      deferred_.Resolve(v);
    } catch (const Napi::Error& e) {
      release();
      deferred_.Reject(e.Value());
    } catch (...) {
      release();
      std::string code, msg;
      classifyError(std::current_exception(), code, msg);
      Napi::Error err = Napi::Error::New(env, msg);
      err.Value().Set("code", Napi::String::New(env, code));
      deferred_.Reject(err.Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    release();
    Napi::Error err = Napi::Error::New(env, message_);
    err.Value().Set("code", Napi::String::New(env, code_));
    deferred_.Reject(err.Value());
  }

 private:
  void release() {
    if (ctx_.progress_) {
      ctx_.progress_->Release();
      ctx_.progress_.reset();
    }
    finishOwned_ = std::move(finish_);  // destroy captured tensors on the main thread later
  }
  Napi::Promise::Deferred deferred_;
  OpFn fn_;
  OpContext ctx_;
  std::vector<Lock> locks_;
  Finisher finish_, finishOwned_;
  std::string code_, message_;
};

}  // namespace

Napi::Value startOp(Napi::Env env, Napi::Value ctl, OpFn fn, std::vector<Lock> locks) {
  OpContext ctx;
  if (ctl.IsObject()) {
    Napi::Object o = ctl.As<Napi::Object>();
    Napi::Value tok = o.Get("token");
    if (tok.IsObject() && tok.As<Napi::Object>().InstanceOf(addonData(env).cancel.Value())) {
      ctx.cancel_ = CancelToken::Unwrap(tok.As<Napi::Object>())->flag;
    }
    Napi::Value cb = o.Get("onProgress");
    if (cb.IsFunction()) {
      ctx.progress_ = Napi::ThreadSafeFunction::New(env, cb.As<Napi::Function>(), "fisherlens-progress", 0, 1);
    }
  }
  auto* w = new OpWorker(env, std::move(fn), std::move(ctx), std::move(locks));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Object makeObject(Napi::Env env) { return Napi::Object::New(env); }

void InitWorker(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = CancelToken::Define(env);
  addonData(env).cancel = Napi::Persistent(ctor);
  exports.Set("CancelToken", ctor);
}

}  // namespace fl
