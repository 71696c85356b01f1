// Micro-benchmarks of the kernel variants (scalar vs avx2 vs avx512) through their dispatch tables.
// Variants the CPU does not support are skipped. Bytes/s counts the bytes each call must read
// (and write, for axpy), so GEMV figures compare directly with the memory bandwidth.
//
//   qforge-bench-kernels --benchmark_filter=gemv
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace {

using qforge::kernels::Table;

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

void bm_dot(benchmark::State& st, const Table* t) {
  const int64_t n = st.range(0);
  auto a = random_floats(size_t(n), 1), b = random_floats(size_t(n), 2);
  for (auto _ : st) benchmark::DoNotOptimize(t->dot_f32(a.data(), b.data(), n));
  st.SetBytesProcessed(int64_t(st.iterations()) * n * 8);
  st.counters["GFLOP/s"] = benchmark::Counter(double(st.iterations()) * 2.0 * double(n), benchmark::Counter::kIsRate);
}

// rows x cols: 512 x 1024 (2 MiB) stays in cache; 4096 x 4096 (64 MiB) streams from memory, as the
// model's weights do in generation.
void bm_gemv(benchmark::State& st, const Table* t) {
  const int64_t rows = st.range(0), cols = st.range(1);
  auto W = random_floats(size_t(rows * cols), 3), x = random_floats(size_t(cols), 4);
  std::vector<float> y(static_cast<size_t>(rows));
  for (auto _ : st) {
    t->gemv_f32(W.data(), cols, x.data(), y.data(), 0, rows, cols);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * rows * cols * 4);
  st.counters["GFLOP/s"] =
      benchmark::Counter(double(st.iterations()) * 2.0 * double(rows) * double(cols), benchmark::Counter::kIsRate);
}

void bm_axpy(benchmark::State& st, const Table* t) {
  const int64_t n = st.range(0);
  auto x = random_floats(size_t(n), 5), y = random_floats(size_t(n), 6);
  for (auto _ : st) {
    t->axpy_f32(1e-3f, x.data(), y.data(), n);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * n * 12);
}

}  // namespace

int main(int argc, char** argv) {
  for (const char* isa : {"scalar", "avx2", "avx512"}) {
    const Table* t = qforge::kernels::table_for(isa);
    if (!t) continue;
    const std::string s = isa;
    benchmark::RegisterBenchmark(("dot_f32/" + s).c_str(), bm_dot, t)->Arg(64)->Arg(4096);
    benchmark::RegisterBenchmark(("gemv_f32/" + s).c_str(), bm_gemv, t)->Args({512, 1024})->Args({4096, 4096});
    benchmark::RegisterBenchmark(("axpy_f32/" + s).c_str(), bm_axpy, t)->Arg(4096);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
