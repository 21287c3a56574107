// Backend facts and settings (common/process.h): versions, CUDA, intra-op threads, BLAS, TF32,
// the gradient engine, memory; diagnostic ops used by tests and benchmarks of the async mechanism
// (noop round trip, abortable spin).
#include "binding/init.h"
#include <ATen/Parallel.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include "gradient.h"
#include "binding/worker.h"
#include "common/errors.h"
#include "common/process.h"

namespace fl {
namespace {

Napi::Value Backend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("torchVersion", Napi::String::New(env, TORCH_VERSION));
  bool cuda = torch::cuda::is_available();
  o.Set("cuda", Napi::Boolean::New(env, cuda));
  o.Set("cudaDeviceCount", Napi::Number::New(env, cuda ? static_cast<double>(torch::cuda::device_count()) : 0));
  o.Set("threads", Napi::Number::New(env, at::get_num_threads()));
  o.Set("blas", Napi::String::New(env, loadedBlas()));
  o.Set("addonVersion", Napi::String::New(env, FL_ADDON_VERSION));
  o.Set("tf32", Napi::Boolean::New(env, at::globalContext().allowTF32CuBLAS()));
  o.Set("gradientEngine", Napi::String::New(env, gradientEngine()));
  o.Set("parallel", Napi::String::New(env, at::get_parallel_info()));
  o.Set("allocator", Napi::String::New(env, allocatorPolicy()));
  return o;
}

// setTf32(on): allow TF32 matrix products and convolutions on CUDA (off by default, or as
// FISHERLENS_TF32=1 set it when the addon loaded): they change λ_max in the 3rd digit
Napi::Value SetTf32(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info.Length() >= 1 && info[0].IsBoolean(), ERR_ARG, "setTf32(on): expected a boolean");
    setTf32(info[0].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  });
}

// setGradientEngine(engine): how attacks compute input gradients (gradient.h setGradientEngine)
Napi::Value SetGradientEngine(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info.Length() >= 1 && info[0].IsString(), ERR_ARG, "setGradientEngine(engine): expected a string");
    setGradientEngine(info[0].As<Napi::String>().Utf8Value());
    return info.Env().Undefined();
  });
}

// setThreads(n): LibTorch intra-op threads for every op that starts after this call
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info.Length() >= 1 && info[0].IsNumber(), ERR_ARG, "setThreads(n): expected a positive integer");
    setThreads(info[0].As<Napi::Number>().Int32Value());
    return info.Env().Undefined();
  });
}

#ifdef FL_TEST_HOOKS
// Test and diagnostic entry points (CMakeLists.txt's FL_TEST_HOOKS; binding.gyp, the build behind
// prebuilds and npm installs, leaves them out).
// noop(ctl?) -> Promise<number>: a trivial async op (round-trip benchmark); resolves to the
// intra-op thread count seen on the compute thread
Napi::Value Noop(const Napi::CallbackInfo& info) {
  return startOp(info.Env(), info[0], [](OpContext&) -> Finisher {
    int threads = at::get_num_threads();
    return [threads](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, threads); };
  });
}

// spin(ms, ctl?) -> Promise<number>: works for `ms` milliseconds in 5 ms slices, checking the
// AbortSignal and reporting progress between slices (tests of abort latency and progress)
Napi::Value Spin(const Napi::CallbackInfo& info) {
  double ms = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
  return startOp(info.Env(), info[1], [ms](OpContext& ctx) -> Finisher {
    auto t0 = std::chrono::steady_clock::now();
    int slices = 0;
    for (;;) {
      double el = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (el >= ms) break;
      ctx.checkAbort();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (++slices % 4 == 0) ctx.report(str("{\"elapsedMs\":", el, "}"));
    }
    return [slices](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, slices); };
  });
}
#endif  // FL_TEST_HOOKS

// peakMemory(reset?: boolean) -> { rss, peak } in bytes (Linux: VmRSS / VmHWM; reset returns freed
// heap memory to the system (malloc_trim) and clears the high-water mark through
// /proc/self/clear_refs). Zeros where /proc is unavailable.
Napi::Value PeakMemoryJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    MemoryUse m = peakMemory(info.Length() > 0 && info[0].ToBoolean().Value());
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("rss", Napi::Number::New(info.Env(), m.rss));
    o.Set("peak", Napi::Number::New(info.Env(), m.peak));
    return o;
  });
}

// exitNow(code): ends the process at once without running static destructors or atexit handlers
// (a forced exit while an op runs on the compute thread: LibTorch's destructors would run under
// it and crash, turning a second Ctrl-C into a segmentation fault). stdout/stderr are flushed first.
Napi::Value ExitNow(const Napi::CallbackInfo& info) {
  const int code = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1;
  std::fflush(nullptr);
  std::_Exit(code);
}

}  // namespace

void InitBackend(Napi::Env env, Napi::Object exports) {
  initAllocator();
  initThreads();
  initTf32();
  exports.Set("backend", Napi::Function::New(env, Backend, "backend"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("setTf32", Napi::Function::New(env, SetTf32, "setTf32"));
  exports.Set("setGradientEngine", Napi::Function::New(env, SetGradientEngine, "setGradientEngine"));
#ifdef FL_TEST_HOOKS
  exports.Set("noop", Napi::Function::New(env, Noop, "noop"));
  exports.Set("spin", Napi::Function::New(env, Spin, "spin"));
#endif
  exports.Set("exitNow", Napi::Function::New(env, ExitNow, "exitNow"));
  exports.Set("peakMemory", Napi::Function::New(env, PeakMemoryJs, "peakMemory"));
}

}  // namespace fl
