#include "common/compute_thread.h"
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

namespace {

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

}  // namespace

void postCompute(std::function<void()> task) { computeThread().post(std::move(task)); }

void installForkGuard() {
  static std::once_flag once;
  std::call_once(once, [] {
    pthread_atfork([] { opRunning().lock(); }, [] { opRunning().unlock(); }, [] { opRunning().unlock(); });
  });
}

}  // namespace fl
