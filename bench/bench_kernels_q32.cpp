// Micro-benchmarks of the integer kernels of the 32-weight block types (src/kernels/kernels_q32_*.cpp).
//
// q32_gemv/<type>/<isa>/<rows>x<cols>/t<threads>
//   Generation: one activation row quantized (quantize_act) and one GEMV, rows split over the
//   threads in blocks of 16 as matmul() splits them. Each call reads a different copy of the
//   matrix from a pool of >= 160 MiB (5x the 32 MiB L3), so the weights stream from DRAM as a
//   model's do. Every call is paired with two streaming reads of the same number of bytes, same
//   split, right before it: a plain one (64-byte vector loads summed, nothing else) and one with
//   the kernels' access pattern (4 parts read in step, prefetcht1 1 KiB ahead), which reads faster
//   on this VM; the bound is the faster of the two. This VM's bandwidth drifts by tens of percent within
//   seconds, so only paired figures compare. Counters (medians over the calls): GB/s (weight
//   bytes / kernel time), read_GB/s (plain read), bound_GB/s (faster read), of_read (kernel speed
//   / plain read speed), of_bound (kernel speed / faster read; 1.0 = at the memory bound).
//
// q32_gemm/<type>/<isa>/<rows>x<cols>/n<rows of X>/t<threads>/<kernel|sgemm>
//   Prompt processing, weights in cache (one copy): kernel = quantize the activation rows, then the
//   GEMM kernel on chunks of activation rows as matmul() runs it; sgemm = matmul()'s other path,
//   dequantize tiles of ~4 MiB of weights to F32 (dequant_row) and run OpenBLAS SGEMM on them.
//   Counter GFLOP/s = 2 * rows * cols * n per second.
//
//   qforge-bench-kernels --benchmark_filter='q32_gemv/q4_0/avx512/.*'
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
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
// TinyLlama-1.1B: q/o, k/v, gate/up, down, lm_head; Llama-3.2-1B: the same five.
constexpr Shape kTinyLlama[] = {{2048, 2048}, {256, 2048}, {5632, 2048}, {2048, 5632}, {32000, 2048}};
constexpr Shape kLlama32[] = {{2048, 2048}, {512, 2048}, {8192, 2048}, {2048, 8192}, {128256, 2048}};

constexpr size_t kColdPoolBytes = size_t(160) << 20;

// Copies of one quantized matrix, 4 KiB aligned. The rows repeat 16 distinct quantized rows (the
// content does not change these kernels' speed, and quantizing 128256 rows would take a while).
struct Pool {
  DType type{};
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0, matrix_bytes = 0, stride = 0;
  int copies = 0;
  std::unique_ptr<uint8_t, decltype(&std::free)> data{nullptr, &std::free};
  const uint8_t* copy(int64_t i) const { return data.get() + size_t(i % copies) * stride; }
};

const Pool& pool(DType t, Shape s, bool cold) {
  static Pool p;  // one at a time: the benchmarks of one matrix run one after another
  if (p.data && p.type == t && p.rows == s.rows && p.cols == s.cols && (p.copies > 1) == cold) return p;
  p.data.reset();
  const QuantType& q = quant_type(t);
  p.type = t;
  p.rows = s.rows;
  p.cols = s.cols;
  p.row_bytes = size_t(q.row_bytes(s.cols));
  p.matrix_bytes = p.row_bytes * size_t(s.rows);
  p.stride = (p.matrix_bytes + 4095) / 4096 * 4096;
  p.copies = cold ? int(std::max<size_t>(2, (kColdPoolBytes + p.stride - 1) / p.stride)) : 1;
  p.data.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, p.stride * size_t(p.copies))));
  constexpr int64_t kDistinct = 16;
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> src(static_cast<size_t>(s.cols));
  std::vector<uint8_t> rows(p.row_bytes * kDistinct);
  for (int64_t r = 0; r < kDistinct; ++r) {
    for (auto& v : src) v = nd(rng);
    q.quantize_row(src.data(), rows.data() + size_t(r) * p.row_bytes, s.cols, nullptr);
  }
  for (int c = 0; c < p.copies; ++c)
    for (int64_t r = 0; r < s.rows; ++r)
      std::memcpy(p.data.get() + size_t(c) * p.stride + size_t(r) * p.row_bytes,
                  rows.data() + size_t(r % kDistinct) * p.row_bytes, p.row_bytes);
  return p;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Rows [r0, r1) of thread id of tn, in blocks of 16 (matmul()'s split).
void thread_rows(int64_t rows, int id, int tn, int64_t& r0, int64_t& r1) {
  const int64_t blocks = (rows + 15) / 16;
  r0 = blocks * id / tn * 16;
  r1 = std::min(rows, blocks * (id + 1) / tn * 16);
}

// The read bound: 64-byte loads summed, four independent chains.
__attribute__((target("avx512f"))) uint64_t stream_read_avx512(const uint8_t* p, size_t n) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    a = _mm512_add_epi64(a, _mm512_loadu_si512(p + i));
    b = _mm512_add_epi64(b, _mm512_loadu_si512(p + i + 64));
    c = _mm512_add_epi64(c, _mm512_loadu_si512(p + i + 128));
    d = _mm512_add_epi64(d, _mm512_loadu_si512(p + i + 192));
  }
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d)));
  uint64_t s = 0;
  for (uint64_t l : lanes) s += l;
  for (; i < n; ++i) s += p[i];
  return s;
}
__attribute__((target("avx2"))) uint64_t stream_read_avx2(const uint8_t* p, size_t n) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    a = _mm256_add_epi64(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    b = _mm256_add_epi64(b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    c = _mm256_add_epi64(c, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    d = _mm256_add_epi64(d, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d)));
  uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) s += p[i];
  return s;
}
uint64_t stream_read(const uint8_t* p, size_t n) { return cpu().avx512f ? stream_read_avx512(p, n) : stream_read_avx2(p, n); }

// The read the kernels' access pattern allows: the bytes cut into 4 parts read in step (4
// sequential streams) with prefetcht1 1 KiB ahead, as the GEMV kernels walk their rows. On this VM
// it is faster than the plain read; it is the bound the kernels are measured against.
__attribute__((target("avx512f"))) uint64_t stream_read_4x_prefetch(const uint8_t* p, size_t n) {
  const size_t part = n / 4 / 256 * 256;
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  for (size_t i = 0; i < part; i += 128) {
    for (size_t k = 0; k < 4; ++k) _mm_prefetch(reinterpret_cast<const char*>(p + k * part + i + 1024), _MM_HINT_T1);
    for (size_t k = 0; k < 4; ++k) _mm_prefetch(reinterpret_cast<const char*>(p + k * part + i + 1088), _MM_HINT_T1);
    a = _mm512_add_epi64(a, _mm512_add_epi64(_mm512_loadu_si512(p + i), _mm512_loadu_si512(p + i + 64)));
    b = _mm512_add_epi64(b, _mm512_add_epi64(_mm512_loadu_si512(p + part + i), _mm512_loadu_si512(p + part + i + 64)));
    c = _mm512_add_epi64(c, _mm512_add_epi64(_mm512_loadu_si512(p + 2 * part + i),
                                             _mm512_loadu_si512(p + 2 * part + i + 64)));
    d = _mm512_add_epi64(d, _mm512_add_epi64(_mm512_loadu_si512(p + 3 * part + i),
                                             _mm512_loadu_si512(p + 3 * part + i + 64)));
  }
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d)));
  uint64_t s = 0;
  for (uint64_t l : lanes) s += l;
  for (size_t i = 4 * part; i < n; ++i) s += p[i];
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

struct GemvArgs {
  DType type;
  std::string isa;
  Shape shape;
  int threads;
};

void bm_gemv(benchmark::State& st, GemvArgs a) {
  const WeightKernels& k = *weight_kernels(a.type, a.isa);
  const Pool& p = pool(a.type, a.shape, true);
  const auto x = random_floats(size_t(p.cols), 7);
  std::vector<uint8_t> xq(act_row_bytes(k.act, p.cols));
  std::vector<float> y(static_cast<size_t>(p.rows));
  const int nt = a.threads;
  const bool prefetch_read = cpu().avx512f;
  volatile uint64_t sink = 0;
  std::vector<double> kernel_s, read_s, bound_s, of_read, of_bound;
  int64_t copy = 0;
  auto split = [&](auto&& f) {
#pragma omp parallel num_threads(nt)
    {
      int64_t r0, r1;
      thread_rows(p.rows, omp_get_thread_num(), omp_get_num_threads(), r0, r1);
      if (r0 < r1) f(r0, r1);
    }
  };
  for (auto _ : st) {
    // Three different copies: none finds another's bytes in cache.
    const uint8_t* R = p.copy(copy++);
    const uint8_t* Q = p.copy(copy++);
    const uint8_t* W = p.copy(copy++);
    const auto t0 = Clock::now();
    split([&](int64_t r0, int64_t r1) { sink = sink + stream_read(R + size_t(r0) * p.row_bytes, size_t(r1 - r0) * p.row_bytes); });
    const auto t1 = Clock::now();
    if (prefetch_read)
      split([&](int64_t r0, int64_t r1) {
        sink = sink + stream_read_4x_prefetch(Q + size_t(r0) * p.row_bytes, size_t(r1 - r0) * p.row_bytes);
      });
    const auto t2 = Clock::now();
    k.quantize_act(x.data(), xq.data(), p.cols);  // part of every generation step
    split([&](int64_t r0, int64_t r1) { k.gemv(W, p.row_bytes, xq.data(), y.data(), r0, r1, p.cols); });
    const auto t3 = Clock::now();
    const double rs = std::chrono::duration<double>(t1 - t0).count();
    const double bs = prefetch_read ? std::min(rs, std::chrono::duration<double>(t2 - t1).count()) : rs;
    const double ks = std::chrono::duration<double>(t3 - t2).count();
    read_s.push_back(rs);
    bound_s.push_back(bs);
    kernel_s.push_back(ks);
    of_read.push_back(rs / ks);
    of_bound.push_back(bs / ks);
    st.SetIterationTime(ks);
  }
  const double gb = double(p.matrix_bytes) / 1e9;
  st.counters["GB/s"] = gb / median(kernel_s);
  st.counters["read_GB/s"] = gb / median(read_s);
  st.counters["bound_GB/s"] = gb / median(bound_s);
  st.counters["of_read"] = median(of_read);
  st.counters["of_bound"] = median(of_bound);
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

// As matmul() runs a prompt through the GEMM kernel.
void run_gemm_kernel(const WeightKernels& k, const Pool& p, const float* X, int64_t n, float* Y, int nt,
                     std::vector<uint8_t>& act) {
  const size_t stride = act_row_bytes(k.act, p.cols);
  act.resize(stride * size_t(n));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t c = 0; c < n; ++c) k.quantize_act(X + c * p.cols, act.data() + size_t(c) * stride, p.cols);
  const int64_t chunk = std::max<int64_t>(8, int64_t(256 << 10) / int64_t(stride) / 8 * 8);
  const uint8_t* W = p.copy(0);
#pragma omp parallel num_threads(nt)
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t nc = std::min(chunk, n - c0);
    int64_t r0, r1;
    thread_rows(p.rows, omp_get_thread_num(), omp_get_num_threads(), r0, r1);
    if (r0 < r1) k.gemm(W, p.row_bytes, act.data() + size_t(c0) * stride, stride, nc, Y + c0 * p.rows, p.rows, r0, r1, p.cols);
  }
}

// As matmul() runs a prompt without a GEMM kernel: F32 tiles of ~4 MiB, then SGEMM.
void run_dequant_sgemm(const WeightKernels& k, const Pool& p, const float* X, int64_t n, float* Y, int nt,
                       std::vector<float>& buf) {
  const int64_t tile = std::max<int64_t>(16, (int64_t(1) << 20) / p.cols / 16 * 16);
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
  const WeightKernels& k = *weight_kernels(a.type, a.isa);
  const Pool& p = pool(a.type, a.shape, false);
  const auto X = random_floats(size_t(a.n * p.cols), 9);
  std::vector<float> Y(size_t(a.n * p.rows)), buf;
  std::vector<uint8_t> act;
  for (auto _ : st) {
    if (a.sgemm)
      run_dequant_sgemm(k, p, X.data(), a.n, Y.data(), a.threads, buf);
    else
      run_gemm_kernel(k, p, X.data(), a.n, Y.data(), a.threads, act);
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(p.rows) * double(p.cols) * double(a.n) *
                                                  double(st.iterations()),
                                              benchmark::Counter::kIsRate);
  st.SetLabel(cpu().brand);
}

std::string shape_name(Shape s) { return std::to_string(s.rows) + "x" + std::to_string(s.cols); }

bool register_q32() {
  benchmark::AddCustomContext("q32_kernels_cpu", cpu().summary());
  constexpr DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::IQ4_NL};
  std::vector<Shape> shapes(std::begin(kTinyLlama), std::end(kTinyLlama));
  for (Shape s : kLlama32)
    if (std::none_of(shapes.begin(), shapes.end(), [&](Shape o) { return o.rows == s.rows && o.cols == s.cols; }))
      shapes.push_back(s);
  const std::vector<Shape> few = {{2048, 2048}, {5632, 2048}, {32000, 2048}};
  // AVX-512 on every model shape; AVX2 (the set CPUs without AVX-512 get) on a few; scalar on one.
  for (DType t : kTypes)
    for (const char* isa : {"avx512", "avx2", "scalar"}) {
      if (!weight_kernels(t, isa)) continue;
      const std::string i = isa;
      const std::vector<Shape>& ss = i == "avx512" ? shapes : i == "avx2" ? few : std::vector<Shape>{{2048, 2048}};
      for (Shape s : ss)
        for (int threads : {1, 2}) {
          const std::string name = std::string("q32_gemv/") + dtype_name(t) + "/" + isa + "/" + shape_name(s) + "/t" +
                                   std::to_string(threads);
          benchmark::RegisterBenchmark(name.c_str(), bm_gemv, GemvArgs{t, isa, s, threads})
              ->UseManualTime()
              ->Unit(benchmark::kMicrosecond)
              ->MinTime(0.5);
        }
    }
  for (DType t : kTypes)
    for (const char* isa : {"avx512", "avx2"}) {
      if (!weight_kernels(t, isa) || (std::string(isa) == "avx2" && t != DType::Q4_0 && t != DType::Q8_0)) continue;
      for (Shape s : {Shape{2048, 2048}, Shape{5632, 2048}, Shape{2048, 5632}})
        for (int64_t n : {4, 64, 512})
          for (int threads : {1, 2})
            for (bool sgemm : {false, true}) {
              const std::string name = std::string("q32_gemm/") + dtype_name(t) + "/" + isa + "/" + shape_name(s) +
                                       "/n" + std::to_string(n) + "/t" + std::to_string(threads) +
                                       (sgemm ? "/sgemm" : "/kernel");
              benchmark::RegisterBenchmark(name.c_str(), bm_gemm, GemmArgs{t, isa, s, n, threads, sgemm})
                  ->Unit(benchmark::kMillisecond)
                  ->MinTime(0.3);
            }
    }
  return true;
}

const bool registered = register_q32();

}  // namespace
