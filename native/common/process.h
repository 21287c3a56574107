// Process-wide facts and settings of the backend (binding/backend.cc reports and sets them):
// the BLAS library mapped, the allocator policy, intra-op threads, TF32, resident memory. No N-API.
#pragma once
#include <string>

namespace fl {

// The BLAS shared library this process mapped (e.g. .../openblas-pthread/libblas.so.3), or "unknown"
std::string loadedBlas();

// The allocator policy applied at load: "glibc-reuse" or "system" (initAllocator)
const std::string& allocatorPolicy();

// Applied once when the addon loads: the allocator policy (FISHERLENS_MALLOC), intra-op threads
// (FISHERLENS_THREADS, else the cores) and TF32 (FISHERLENS_TF32=1 allows it; off otherwise).
void initAllocator();
void initThreads();
void initTf32();

// Intra-op threads for every op that starts after this call (1..1024; ERR_ARG otherwise)
void setThreads(int n);
// Allow TF32 matrix products and convolutions on CUDA (they change λ_max in the 3rd digit)
void setTf32(bool on);

// Resident memory in bytes (Linux: VmRSS / VmHWM of /proc/self/status; zeros where unavailable).
// reset: first return freed heap memory to the system (malloc_trim) and clear the high-water mark.
struct MemoryUse {
  double rss = 0, peak = 0;
};
MemoryUse peakMemory(bool reset);

}  // namespace fl
