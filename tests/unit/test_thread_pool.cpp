// The engine's thread pool (src/core/thread_pool.h): every index runs exactly once per job, on
// distinct threads, jobs never overlap, and nesting, exceptions and concurrent callers are safe.
#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace qforge;

namespace {

TEST(ThreadPool, EveryIndexOnceOnItsOwnThread) {
  for (int n : {1, 2, 3, 5, 2, 1, 4}) {
    for (int job = 0; job < 300; ++job) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::mutex mu;
      std::set<std::thread::id> threads;
      parallel_run(n, [&](int i, int count) {
        ASSERT_EQ(count, n);
        ASSERT_GE(i, 0);
        ASSERT_LT(i, n);
        hits[size_t(i)].fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        threads.insert(std::this_thread::get_id());
      });
      for (int i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "n " << n << " job " << job << " index " << i;
      ASSERT_EQ(int(threads.size()), n) << "n " << n << " job " << job;
      ASSERT_TRUE(threads.count(std::this_thread::get_id())) << "the caller runs index 0";
    }
  }
}

// Results written by the workers are visible to the caller when parallel_run returns, and a job's
// work does not leak into the next one.
TEST(ThreadPool, JobsAreOrdered) {
  std::vector<int64_t> slot(2, 0);
  for (int64_t job = 1; job <= 20000; ++job) {
    parallel_run(2, [&](int i, int) { slot[size_t(i)] = job * 10 + i; });
    ASSERT_EQ(slot[0], job * 10) << "job " << job;
    ASSERT_EQ(slot[1], job * 10 + 1) << "job " << job;
  }
}

TEST(ThreadPool, NestedCallsRunOnTheCallingThread) {
  std::atomic<int> inner{0};
  parallel_run(2, [&](int, int) {
    const auto me = std::this_thread::get_id();
    parallel_run(3, [&](int, int n) {
      EXPECT_EQ(n, 3);
      EXPECT_EQ(std::this_thread::get_id(), me);
      inner.fetch_add(1);
    });
  });
  EXPECT_EQ(inner.load(), 6);
}

TEST(ThreadPool, ExceptionOfTheCallerPropagatesAfterTheWorkersFinish) {
  std::atomic<int> done{0};
  EXPECT_THROW(parallel_run(3,
                            [&](int i, int) {
                              if (i == 0) throw std::runtime_error("boom");
                              std::this_thread::sleep_for(std::chrono::milliseconds(20));
                              done.fetch_add(1);
                            }),
               std::runtime_error);
  EXPECT_EQ(done.load(), 2);
  int after = 0;
  parallel_run(2, [&](int i, int) {
    if (i == 0) after = 1;
  });
  EXPECT_EQ(after, 1);
}

// Two callers (two sessions on two threads) take turns; neither sees the other's indexes.
TEST(ThreadPool, ConcurrentCallersTakeTurns) {
  std::atomic<int64_t> a{0}, b{0};
  auto caller = [](std::atomic<int64_t>& sum, int n) {
    for (int job = 0; job < 2000; ++job) parallel_run(n, [&](int i, int) { sum.fetch_add(i + 1); });
  };
  std::thread t1(caller, std::ref(a), 2), t2(caller, std::ref(b), 3);
  t1.join();
  t2.join();
  EXPECT_EQ(a.load(), 2000 * 3);
  EXPECT_EQ(b.load(), 2000 * 6);
}

// After a long idle gap the workers sleep on the futex; the next job must still wake them.
TEST(ThreadPool, WakesSleepingWorkers) {
  for (int k = 0; k < 3; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // past the spin and yield phases
    std::atomic<int> hits{0};
    parallel_run(3, [&](int, int) { hits.fetch_add(1); });
    EXPECT_EQ(hits.load(), 3);
  }
}

}  // namespace
