// Micro-benchmarks of the F16 / BF16 / NF4 weight kernels (src/kernels/kernels_float_*.cpp).
//
// float_gemv/<type>/<isa>/<rows>x<cols>/t<threads>/<cold|hot>
//   One GEMV per iteration, rows split over the threads in blocks of 16 as matmul() splits them.
//   Paired with a plain streaming read (64-byte vector loads, nothing else) of the same number of
//   weight bytes, split the same way, timed right before each kernel call: the memory bandwidth
//   of this VM drifts by tens of percent within seconds, so only paired figures compare.
//   Counters (medians over the iterations): GB/s (kernel, weight bytes per second), read_GB/s (the
//   paired read), of_read (per-pair kernel speed / read speed: 1.0 = the kernel runs at the bound).
//   The read bound is not a hard limit: kernels sometimes exceed it by a few percent.
//   cold: iterations rotate over copies of the matrix totalling >= 160 MiB (5x the 32 MiB L3), so
//   every call streams from DRAM, as generation does (a model's weights never fit in cache).
//   hot: the same copy every time (L3-resident when it fits).
//
// float_gemm/<type>/<isa>/<rows>x<cols>/n<activation rows>/t<threads>/<kernel|sgemm>
//   Prompt processing: kernel = the type's GEMM kernel, chunked and split as matmul() does;
//   sgemm = convert tiles of ~4 MiB of weights to F32 and run OpenBLAS SGEMM (matmul()'s other path).
//   Counter GFLOP/s (2 * rows * cols * n per wall second). QF_CHUNK=<rows> overrides the number of
//   activation rows per kernel call (matmul() derives it from the row length).
//
//   qforge-bench-kernels --benchmark_filter='float_gemv/f16/avx512/.*/cold'
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/matmul.h"
#include "kernels/weight_kernels.h"
#include "qforge/dtype.h"
#include "qforge/quant.h"

namespace {

using namespace qforge;
using namespace qforge::kernels;
using Clock = std::chrono::steady_clock;

struct Shape {
  int64_t rows, cols;
};
// TinyLlama-1.1B / Llama-7B layer shapes (q/o, k/v, gate/up, down, lm_head) and 8192-wide ones.
constexpr Shape kShapes[] = {{2048, 2048}, {256, 2048}, {5632, 2048}, {2048, 5632},
                             {32000, 2048}, {8192, 2048}, {2048, 8192}};

constexpr size_t kColdPoolBytes = size_t(160) << 20;

// Copies of one weight matrix, 64-byte aligned. Rows repeat a few random rows (content does not
// change the speed of these kernels; quantizing 32000 distinct NF4 rows would take seconds).
struct Pool {
  DType type{};
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0, matrix_bytes = 0, stride = 0;
  int copies = 0;
  std::unique_ptr<uint8_t, decltype(&std::free)> data{nullptr, &std::free};
  const uint8_t* copy(int i) const { return data.get() + size_t(i % copies) * stride; }
};

const Pool& pool(DType t, int64_t rows, int64_t cols, bool cold) {
  static Pool p;  // one at a time: benchmarks of one shape run one after another
  const int copies = cold ? 0 : 1;
  if (p.data && p.type == t && p.rows == rows && p.cols == cols && (cold ? p.copies > 1 : p.copies == 1)) return p;
  p.data.reset();
  const QuantType& q = quant_type(t);
  p.type = t;
  p.rows = rows;
  p.cols = cols;
  p.row_bytes = size_t(q.row_bytes(cols));
  p.matrix_bytes = p.row_bytes * size_t(rows);
  p.stride = (p.matrix_bytes + 4095) / 4096 * 4096;
  p.copies = copies ? copies : int(std::max<size_t>(2, (kColdPoolBytes + p.stride - 1) / p.stride));
  p.data.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, p.stride * size_t(p.copies))));
  constexpr int64_t kDistinctRows = 16;
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> src(static_cast<size_t>(cols));
  std::vector<uint8_t> quantized(p.row_bytes * kDistinctRows);
  for (int64_t r = 0; r < kDistinctRows; ++r) {
    for (auto& v : src) v = nd(rng);
    q.quantize_row(src.data(), quantized.data() + size_t(r) * p.row_bytes, cols, nullptr);
  }
  for (int c = 0; c < p.copies; ++c)
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(p.data.get() + size_t(c) * p.stride + size_t(r) * p.row_bytes,
                  quantized.data() + size_t(r % kDistinctRows) * p.row_bytes, p.row_bytes);
  return p;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// Rows [r0, r1) of thread `id` of `tn`, in blocks of 16 (matmul.cpp's split).
void my_rows(int64_t rows, int id, int tn, int64_t& r0, int64_t& r1) {
  const int64_t blocks = (rows + 15) / 16;
  r0 = blocks * id / tn * 16;
  r1 = std::min(rows, blocks * (id + 1) / tn * 16);
}

// A plain streaming read: sums the bytes as 64-bit words, nothing else, so it runs at the bandwidth
// bound. Two 32-byte loads per cache line: on Zen 4 this read 5-30% faster than 64-byte loads with
// one to four accumulators (8 MiB and 131 MiB, 1 and 2 threads), so it is the stricter reference.
__attribute__((target("avx2"))) uint64_t read_bytes(const uint8_t* p, size_t n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm256_add_epi64(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(s0, s1));
  uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) s += p[i];
  return s;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + ptrdiff_t(v.size() / 2), v.end());
  return v[v.size() / 2];
}

struct GemvArgs {
  DType type;
  std::string isa;
  Shape shape;
  int threads;
  bool cold;
};

void bm_gemv(benchmark::State& st, GemvArgs a) {
  const WeightKernels* k = weight_kernels(a.type, a.isa);
  const Pool& p = pool(a.type, a.shape.rows, a.shape.cols, a.cold);
  const auto x = random_floats(size_t(a.shape.cols), 7);
  std::vector<float> y(static_cast<size_t>(a.shape.rows));
  const int nt = a.threads;
  volatile uint64_t sink = 0;
  std::vector<double> kernel_s, read_s, ratio;
  int op = 0;
  auto run_read = [&](const uint8_t* W) {
    uint64_t total = 0;
#pragma omp parallel num_threads(nt) reduction(+ : total)
    {
      int64_t r0, r1;
      my_rows(p.rows, omp_get_thread_num(), omp_get_num_threads(), r0, r1);
      if (r0 < r1) total += read_bytes(W + size_t(r0) * p.row_bytes, size_t(r1 - r0) * p.row_bytes);
    }
    sink = sink + total;
  };
  auto run_kernel = [&](const uint8_t* W) {
#pragma omp parallel num_threads(nt)
    {
      int64_t r0, r1;
      my_rows(p.rows, omp_get_thread_num(), omp_get_num_threads(), r0, r1);
      if (r0 < r1) k->gemv(W, p.row_bytes, x.data(), y.data(), r0, r1, p.cols);
    }
  };
  for (auto _ : st) {
    // Alternate copies so that neither the read nor the kernel finds the other's bytes in cache.
    auto t0 = Clock::now();
    run_read(p.copy(op++));
    auto t1 = Clock::now();
    run_kernel(p.copy(op++));
    auto t2 = Clock::now();
    const double rs = std::chrono::duration<double>(t1 - t0).count(), ks = std::chrono::duration<double>(t2 - t1).count();
    read_s.push_back(rs);
    kernel_s.push_back(ks);
    ratio.push_back(rs / ks);
    st.SetIterationTime(ks);
  }
  // Medians: a burst of another process's memory traffic spoils single pairs, not the median.
  const double gb = double(p.matrix_bytes) / 1e9;
  st.counters["GB/s"] = gb / median(kernel_s);
  st.counters["read_GB/s"] = gb / median(read_s);
  st.counters["of_read"] = median(ratio);
  st.SetLabel(cpu().brand);
}

struct GemmArgs {
  DType type;
  std::string isa;
  Shape shape;
  int64_t n;
  int threads;
  bool sgemm;
};

void gemm_kernel_path(const WeightKernels& k, const Pool& p, const float* X, int64_t n, float* Y, int nt) {
  const size_t stride = size_t(p.cols) * 4;
  int64_t chunk = 64;  // as matmul() for F32 activations
  if (const char* e = std::getenv("QF_CHUNK")) chunk = std::atoi(e);
  const uint8_t* W = p.copy(0);
#pragma omp parallel num_threads(nt)
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t nc = std::min(chunk, n - c0);
    int64_t r0, r1;
    my_rows(p.rows, omp_get_thread_num(), omp_get_num_threads(), r0, r1);
    if (r0 < r1) k.gemm(W, p.row_bytes, X + c0 * p.cols, stride, nc, Y + c0 * p.rows, p.rows, r0, r1, p.cols);
  }
}

void gemm_sgemm_path(const WeightKernels& k, const Pool& p, const float* X, int64_t n, float* Y, int nt,
                     std::vector<float>& buf) {
  const int64_t tile = std::max<int64_t>(16, (int64_t(1) << 20) / p.cols / 16 * 16);  // as matmul()
  buf.resize(size_t(std::min(tile, p.rows)) * size_t(p.cols));
  set_blas_threads(nt);
  const uint8_t* W = p.copy(0);
  for (int64_t r0 = 0; r0 < p.rows; r0 += tile) {
    const int64_t nr = std::min(tile, p.rows - r0);
    float* T = buf.data();
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < nr; ++r) k.dequant_row(W + size_t(r0 + r) * p.row_bytes, T + r * p.cols, p.cols);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(nr), int(p.cols), 1.0f, X, int(p.cols), T,
                int(p.cols), 0.0f, Y + r0, int(p.rows));
  }
}

void bm_gemm(benchmark::State& st, GemmArgs a) {
  const WeightKernels* k = weight_kernels(a.type, a.isa);
  const Pool& p = pool(a.type, a.shape.rows, a.shape.cols, false);
  const auto X = random_floats(size_t(a.n * a.shape.cols), 9);
  std::vector<float> Y(size_t(a.n * a.shape.rows)), buf;
  for (auto _ : st) {
    if (a.sgemm)
      gemm_sgemm_path(*k, p, X.data(), a.n, Y.data(), a.threads, buf);
    else
      gemm_kernel_path(*k, p, X.data(), a.n, Y.data(), a.threads);
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(a.shape.rows) * double(a.shape.cols) * double(a.n) *
                                                  double(st.iterations()),
                                              benchmark::Counter::kIsRate);
  st.SetLabel(cpu().brand);
}

std::string shape_name(Shape s) { return std::to_string(s.rows) + "x" + std::to_string(s.cols); }

bool register_all() {
  benchmark::AddCustomContext("float_kernels_cpu", cpu().summary());
  const DType types[] = {DType::F16, DType::BF16, DType::NF4};
  for (DType t : types)
    for (const char* isa : {"avx2", "avx512"}) {
      if (!weight_kernels(t, isa)) continue;
      for (Shape s : kShapes)
        for (int threads : {1, 2})
          for (bool cold : {true, false}) {
            const std::string name = std::string("float_gemv/") + dtype_name(t) + "/" + isa + "/" + shape_name(s) +
                                     "/t" + std::to_string(threads) + (cold ? "/cold" : "/hot");
            benchmark::RegisterBenchmark(name.c_str(), bm_gemv, GemvArgs{t, isa, s, threads, cold})
                ->UseManualTime()
                ->Unit(benchmark::kMicrosecond)
                ->MinTime(0.3);
          }
    }
  for (DType t : types)
    for (const char* isa : {"avx2", "avx512"}) {
      if (!weight_kernels(t, isa)) continue;
      for (Shape s : {Shape{2048, 2048}, Shape{5632, 2048}, Shape{2048, 5632}})
        for (int64_t n : {4, 8, 16, 32, 128, 512})
          for (int threads : {1, 2})
            for (bool sgemm : {false, true}) {
              const std::string name = std::string("float_gemm/") + dtype_name(t) + "/" + isa + "/" + shape_name(s) +
                                       "/n" + std::to_string(n) + "/t" + std::to_string(threads) +
                                       (sgemm ? "/sgemm" : "/kernel");
              benchmark::RegisterBenchmark(name.c_str(), bm_gemm, GemmArgs{t, isa, s, n, threads, sgemm})
                  ->UseRealTime()  // rates per wall second (CPU time of the main thread alone undercounts)
                  ->Unit(benchmark::kMillisecond)
                  ->MinTime(0.3);
            }
    }
  return true;
}

const bool registered = register_all();

}  // namespace
