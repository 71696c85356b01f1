// Process and machine facts for reports: memory use, wall-clock timing.
#pragma once
#include <chrono>
#include <cstdint>

namespace qforge {

uint64_t peak_rss_bytes();     // high-water mark of resident memory (getrusage)
uint64_t current_rss_bytes();  // resident memory now (/proc/self/statm)

// Makes libgomp's waiting threads sleep at once (OMP_WAIT_POLICY=passive) unless the user chose a
// policy, by setting it and re-running this program (libgomp reads it before main). Why: OpenMP
// now runs only the long prompt-processing regions; generation's short steps run on qforge's own
// pool (src/core/thread_pool.h), and libgomp's default of spinning for milliseconds after each region
// would hold the cores those steps need. Call first thing in main(); returns only if it did not
// re-run.
void prefer_passive_openmp(char** argv);

class Stopwatch {
 public:
  Stopwatch() : t0_(std::chrono::steady_clock::now()) {}
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }
  void reset() { t0_ = std::chrono::steady_clock::now(); }

 private:
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace qforge
