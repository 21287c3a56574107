#include "common/process.h"
#include <torch/torch.h>
#include <ATen/Parallel.h>
#include <cstdlib>
#include <fstream>
#include <thread>
#include "common/compute_thread.h"
#include "common/errors.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fl {

namespace {
std::string& policy() {
  static std::string p = "system";
  return p;
}
}  // namespace

const std::string& allocatorPolicy() { return policy(); }

std::string loadedBlas() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto pos = line.find('/');
    if (pos == std::string::npos) continue;
    std::string path = line.substr(pos);
    if (path.find("blas") != std::string::npos || path.find("mkl_") != std::string::npos) return path;
  }
  return "unknown";
}

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
  if (ok) policy() = "glibc-reuse";
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

void initTf32() {
  // Fisher spectra and attack gradients need full float32 precision: TF32 matrix products and
  // convolutions (on by default for cuDNN) change λ_max in the 3rd digit. FISHERLENS_TF32=1 allows them.
  const char* tf32 = std::getenv("FISHERLENS_TF32");
  setTf32(tf32 && std::string(tf32) == "1");
}

void setThreads(int n) {
  FL_CHECK(n >= 1 && n <= 1024, ERR_ARG, "setThreads(n): expected 1..1024, got ", n);
  desiredThreads().store(n);
  at::set_num_threads(n);
}

void setTf32(bool on) {
  at::globalContext().setAllowTF32CuDNN(on);
  at::globalContext().setAllowTF32CuBLAS(on);
}

MemoryUse peakMemory(bool reset) {
  if (reset) {
#if defined(__GLIBC__)
    // the allocator policy (initAllocator) keeps freed blocks resident: hand them back first, so
    // the high-water mark measures what the next computation touches, not what earlier ones left
    malloc_trim(0);
#endif
    std::ofstream f("/proc/self/clear_refs");
    if (f.good()) f << "5";
  }
  MemoryUse m;
  std::ifstream s("/proc/self/status");
  std::string line;
  while (std::getline(s, line)) {
    if (line.rfind("VmRSS:", 0) == 0) m.rss = std::stod(line.substr(6)) * 1024;
    if (line.rfind("VmHWM:", 0) == 0) m.peak = std::stod(line.substr(6)) * 1024;
  }
  return m;
}

}  // namespace fl
