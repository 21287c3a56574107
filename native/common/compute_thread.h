// The one compute thread every op's LibTorch work runs on (binding/worker.cc posts the ops here).
// OpenMP keeps a thread team per calling thread: ops spread over several threads would make
// several teams whose idle workers spin against the busy one (docs/fisher.md has the measured
// cost). No N-API here: the thread runs plain tasks in FIFO order.
#pragma once
#include <atomic>
#include <functional>

namespace fl {

// Intra-op threads every task runs with (0: LibTorch's default); set by setThreads().
std::atomic<int>& desiredThreads();

// Queues `task` on the compute thread (started on first use, joined at process exit). Tasks run
// one at a time in the order they were posted; a fork waits for the running one (installForkGuard).
void postCompute(std::function<void()> task);

// Makes fork() (child_process.spawn goes through fork in libuv) wait while a task runs: call once
// when the addon loads, after the BLAS library has registered its own fork handlers.
void installForkGuard();

}  // namespace fl
