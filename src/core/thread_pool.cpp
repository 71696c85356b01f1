#include "core/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QFORGE_CPU_RELAX() _mm_pause()
#else
#define QFORGE_CPU_RELAX() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

namespace qforge::detail {
namespace {

using Clock = std::chrono::steady_clock;

// How a thread waits for a value to change: spin for kSpin (between two GEMVs of a token the caller
// does a few microseconds of serial work, and threads finish a GEMV within ~20 us of each other),
// then yield the core while polling until kYield has passed (a thread of another process that needs
// this core gets it; on a quiet machine sched_yield returns at once, so this is still a poll with
// microsecond latency), then sleep on the futex. Two 2-thread generate processes on 2 cores: 25-28
// tok/s each with a 5-30 us spin, as with passive OpenMP, but 16-18 with 100 us.
constexpr auto kSpin = std::chrono::microseconds(20);
constexpr auto kYield = std::chrono::milliseconds(2);

// Waits until `word` differs from `old`. `sleepers` counts threads asleep on `word` so that the
// writer only pays for a wake-up call when someone sleeps.
void wait_change(const std::atomic<uint32_t>& word, uint32_t old, std::atomic<int>& sleepers) {
  if (word.load(std::memory_order_acquire) != old) return;
  const auto start = Clock::now();
  for (int i = 1;; ++i) {
    QFORGE_CPU_RELAX();
    if (word.load(std::memory_order_acquire) != old) return;
    if (i % 64 == 0 && Clock::now() - start > kSpin) break;
  }
  while (Clock::now() - start < kYield) {
    sched_yield();
    if (word.load(std::memory_order_acquire) != old) return;
  }
  sleepers.fetch_add(1, std::memory_order_seq_cst);
  while (word.load(std::memory_order_seq_cst) == old) word.wait(old, std::memory_order_seq_cst);
  sleepers.fetch_sub(1, std::memory_order_relaxed);
}

void publish(std::atomic<uint32_t>& word, uint32_t value, const std::atomic<int>& sleepers) {
  word.store(value, std::memory_order_seq_cst);
  if (sleepers.load(std::memory_order_seq_cst) > 0) word.notify_all();
}

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      publish(epoch_, epoch_.load() + 1, sleepers_);
    }
    for (auto& t : workers_) t.join();
  }

  void run(int n, PoolTask task, void* ctx) {
    // One job at a time: a second caller (another Session on another thread) waits its turn.
    std::lock_guard<std::mutex> lock(mu_);
    while (int(workers_.size()) < n - 1) {
      const int index = int(workers_.size()) + 1;
      workers_.emplace_back([this, index] { work(index); });
    }
    task_ = task;
    ctx_ = ctx;
    count_ = n;
    // Every worker acknowledges every job, also those with nothing to do in it: then none can still
    // be looking at this job's fields when the next job writes them.
    pending_.store(uint32_t(workers_.size()), std::memory_order_relaxed);
    publish(epoch_, epoch_.load(std::memory_order_relaxed) + 1, sleepers_);
    std::exception_ptr error;
    in_job = true;
    try {
      task(ctx, 0, n);
    } catch (...) {
      error = std::current_exception();  // rethrown once the workers are done with ctx
    }
    in_job = false;
    for (uint32_t left = pending_.load(std::memory_order_acquire); left != 0;
         left = pending_.load(std::memory_order_acquire))
      wait_change(pending_, left, done_sleepers_);
    if (error) std::rethrow_exception(error);
  }

  static thread_local bool in_job;

 private:
  void work(int index) {
    in_job = true;
    uint32_t seen = 0;
    for (;;) {
      wait_change(epoch_, seen, sleepers_);
      seen = epoch_.load(std::memory_order_acquire);
      if (stop_) return;
      if (index < count_) task_(ctx_, index, count_);  // fn must not throw (see parallel_run)
      if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1 && done_sleepers_.load() > 0) pending_.notify_all();
    }
  }

  std::mutex mu_;
  std::vector<std::thread> workers_;
  // Written by run() before the epoch is published, read by workers after they see it.
  PoolTask task_ = nullptr;
  void* ctx_ = nullptr;
  int count_ = 0;
  bool stop_ = false;
  std::atomic<uint32_t> epoch_{0};
  std::atomic<uint32_t> pending_{0};  // workers of the current job still running
  std::atomic<int> sleepers_{0}, done_sleepers_{0};
};

thread_local bool Pool::in_job = false;

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

void pool_run(int n_threads, PoolTask task, void* ctx) {
  if (n_threads <= 1 || Pool::in_job) {
    for (int i = 0; i < std::max(n_threads, 1); ++i) task(ctx, i, std::max(n_threads, 1));
    return;
  }
  pool().run(n_threads, task, ctx);
}

}  // namespace qforge::detail
