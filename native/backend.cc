// Backend facts and settings: versions, CUDA, intra-op threads, BLAS; diagnostic ops used by
// tests and benchmarks of the async mechanism (noop round trip, abortable spin).
#include "backend.h"
#include "attacks.h"
#include "common/errors.h"
#include "common/tensor.h"
#include "common/worker.h"
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <chrono>
#include <fstream>
#include <thread>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fl {
namespace {

// The allocator policy applied at load ("glibc-reuse" or "system"; see initAllocator)
std::string& allocatorPolicy() {
  static std::string p = "system";
  return p;
}


// The CPU BLAS this process uses: the shared library it mapped (e.g. .../openblas-pthread/libblas.so.3;
// cuBLAS, mapped by a CUDA LibTorch, is not it), else LibTorch's build setting (pip wheels link
// MKL into libtorch_cpu): "BLAS_INFO=mkl (linked into libtorch_cpu)"
std::string loadedBlas() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto pos = line.find('/');
    if (pos == std::string::npos) continue;
    std::string path = line.substr(pos);
    if (path.find("cublas") != std::string::npos) continue;
    if (path.find("blas") != std::string::npos || path.find("mkl_") != std::string::npos) return path;
  }
  const std::string config = at::show_config();
  auto i = config.find("BLAS_INFO=");
  if (i == std::string::npos) return "unknown";
  auto end = config.find_first_of(", \n", i);
  return config.substr(i, end - i) + " (linked into libtorch_cpu)";
}

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
    bool on = info[0].As<Napi::Boolean>().Value();
    at::globalContext().setAllowTF32CuDNN(on);
    at::globalContext().setAllowTF32CuBLAS(on);
    return info.Env().Undefined();
  });
}

// setGradientEngine(engine): how attacks compute input gradients (attacks.h setGradientEngine)
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
    int n = info[0].As<Napi::Number>().Int32Value();
    FL_CHECK(n >= 1 && n <= 1024, ERR_ARG, "setThreads(n): expected 1..1024, got ", n);
    desiredThreads().store(n);
    at::set_num_threads(n);
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
    bool reset = info.Length() > 0 && info[0].ToBoolean().Value();
    if (reset) {
#if defined(__GLIBC__)
      // the allocator policy (backend.cc) keeps freed blocks resident: hand them back first, so
      // the high-water mark measures what the next computation touches, not what earlier ones left
      malloc_trim(0);
#endif
      std::ofstream f("/proc/self/clear_refs");
      if (f.good()) f << "5";
    }
    double rss = 0, peak = 0;
    std::ifstream s("/proc/self/status");
    std::string line;
    while (std::getline(s, line)) {
      if (line.rfind("VmRSS:", 0) == 0) rss = std::stod(line.substr(6)) * 1024;
      if (line.rfind("VmHWM:", 0) == 0) peak = std::stod(line.substr(6)) * 1024;
    }
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("rss", Napi::Number::New(info.Env(), rss));
    o.Set("peak", Napi::Number::New(info.Env(), peak));
    return o;
  });
}

}  // namespace

// glibc serves every allocation over its mmap threshold (128 KiB, rising dynamically) with a fresh
// mmap and returns it to the kernel on free, so each new activation tensor of a few MB is
// page-faulted in again, every op, every iteration. This policy keeps freed blocks up to 32 MiB in
// the heap for reuse (docs/fisher.md, "The process allocator", has the measured effect). The cost:
// the process keeps its high-water mark of freed memory (blocks over 32 MiB are still returned at
// once). FISHERLENS_MALLOC=system keeps glibc's defaults.
void initAllocator() {
#if defined(__GLIBC__)
  const char* env = std::getenv("FISHERLENS_MALLOC");
  if (env && std::string(env) == "system") return;
  bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  ok = mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 && ok;
  ok = mallopt(M_TOP_PAD, 64 << 20) == 1 && ok;
  if (ok) allocatorPolicy() = "glibc-reuse";
#endif
}

void initThreads() {
  // LibTorch here defaults to 1 intra-op thread; use the cores unless FISHERLENS_THREADS says
  int n = static_cast<int>(std::thread::hardware_concurrency());
  if (const char* env = std::getenv("FISHERLENS_THREADS")) {
    int v = std::atoi(env);
    if (v > 0) n = v;
  }
  if (n > 0) {
    desiredThreads().store(n);
    at::set_num_threads(n);
  }
}

void InitBackend(Napi::Env env, Napi::Object exports) {
  initAllocator();
  initThreads();
  // Fisher spectra and attack gradients need full float32 precision: TF32 matrix products and
  // convolutions (on by default for cuDNN) change λ_max in the 3rd digit. FISHERLENS_TF32=1 allows them.
  const char* tf32 = std::getenv("FISHERLENS_TF32");
  bool allow = tf32 && std::string(tf32) == "1";
  at::globalContext().setAllowTF32CuDNN(allow);
  at::globalContext().setAllowTF32CuBLAS(allow);
  exports.Set("backend", Napi::Function::New(env, Backend, "backend"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("setTf32", Napi::Function::New(env, SetTf32, "setTf32"));
  exports.Set("setGradientEngine", Napi::Function::New(env, SetGradientEngine, "setGradientEngine"));
#ifdef FL_TEST_HOOKS
  exports.Set("noop", Napi::Function::New(env, Noop, "noop"));
  exports.Set("spin", Napi::Function::New(env, Spin, "spin"));
#endif
  exports.Set("peakMemory", Napi::Function::New(env, PeakMemoryJs, "peakMemory"));
}

}  // namespace fl
