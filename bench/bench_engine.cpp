// qforge-bench: the engine's speed and memory measured against this machine's own limits, in one run.
//
//   generation        tokens/s vs the bandwidth bound: one token must read weight_bytes_per_token()
//                     bytes, so (those bytes / best streaming-read bandwidth) is the fastest a token
//                     can possibly be;
//   prompt processing the matmul FLOP rate over a 512-token prompt vs OpenBLAS SGEMM on the same shapes;
//   memory            peak RSS vs weights + KV cache, in this process and in `qforge generate`.
//
// Each figure is measured with every thread count asked for (default 1 and 2), and is the median of
// several runs (bandwidth: best and median). Where the time goes is estimated by timing the
// matrix products alone on the model's own weights (GEMV for generation, SGEMM for prompts).
#include <cblas.h>
#include <fcntl.h>
#include <immintrin.h>
#include <omp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <atomic>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "kernels/kernels.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "qforge/error.h"
#include "qforge/model.h"
#include "qforge/session.h"
#include "qforge/sysinfo.h"

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
double best_min(const std::vector<double>& v) { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }

void note(const std::string& s) {
  std::fprintf(stderr, "bench: %s\n", s.c_str());
  std::fflush(stderr);
}

// ---- machine facts --------------------------------------------------------------------------

std::string run_capture(const std::string& cmd) {
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::string commit_id() {
  const std::string src = QFORGE_SOURCE_DIR;
  std::string id = run_capture("git -C '" + src + "' rev-parse --short HEAD 2>/dev/null");
  if (id.empty()) return std::string(QFORGE_CONFIGURE_COMMIT) + " (at configure time)";
  if (!run_capture("git -C '" + src + "' status --porcelain --untracked-files=no 2>/dev/null").empty())
    id += "-dirty";
  return id;
}

// The 1-minute load average: other work on the cores makes every threaded figure meaningless.
double load_average() {
  double l[1] = {0};
  return getloadavg(l, 1) == 1 ? l[0] : -1;
}

// CPU seconds all processes have used (from /proc/stat), and this process with its children: their
// difference over a run says how much other work competed for the cores.
double system_busy_seconds() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  f >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  if (!f || cpu != "cpu") return -1;
  return double(user + nice + system + irq + softirq) / double(sysconf(_SC_CLK_TCK));
}
double own_cpu_seconds() {
  double s = 0;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    struct rusage ru {};
    getrusage(who, &ru);
    s += ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  }
  return s;
}

// Measures how many cores other processes kept busy between its construction and cores().
struct OtherWork {
  double busy0 = system_busy_seconds(), own0 = own_cpu_seconds();
  Clock::time_point t0 = Clock::now();
  double cores() const {
    if (busy0 < 0) return -1;
    const double other = (system_busy_seconds() - busy0) - (own_cpu_seconds() - own0);
    return std::max(0.0, other) / seconds_since(t0);
  }
};

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return buf;
}

uint64_t total_ram_bytes() {
  return uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
}

// Peak resident memory of this process since the last reset. Linux keeps it as VmHWM, which
// writing "5" to /proc/self/clear_refs resets; getrusage's maxrss cannot be reset.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.close();
  return bool(f);
}
uint64_t peak_rss() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return uint64_t(ru.ru_maxrss) * 1024;
}

// ---- memory bandwidth -----------------------------------------------------------------------
// A streaming read (what GEMV does with the weights) and a copy, split over `threads` threads,
// each thread touching its own contiguous part of buffers it first-touched itself.

// The read walks kReadStreams far-apart parts of the thread's range in step, as the engine's GEMVs
// do: one sequential stream per core leaves bandwidth unused. On this 2-core Zen 4 VM, when the
// memory system gives its higher level, one stream per thread read ~50 GB/s and four ~60 GB/s (a
// bound taken from one stream would be 20% low and flatter every "fraction of the bound").
constexpr int kReadStreams = 4;

__attribute__((target("avx2"))) uint64_t sum_streams_avx2(const uint8_t* p, size_t bytes) {
  const size_t part = bytes / kReadStreams / 64 * 64;
  __m256i acc[kReadStreams];
  for (auto& a : acc) a = _mm256_setzero_si256();
  for (size_t o = 0; o < part; o += 64)
    for (int k = 0; k < kReadStreams; ++k) {
      const auto* q = reinterpret_cast<const __m256i*>(p + size_t(k) * part + o);
      acc[k] = _mm256_add_epi64(acc[k], _mm256_add_epi64(_mm256_loadu_si256(q), _mm256_loadu_si256(q + 1)));
    }
  alignas(32) uint64_t t[4];
  __m256i s = acc[0];
  for (int k = 1; k < kReadStreams; ++k) s = _mm256_add_epi64(s, acc[k]);
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), s);
  uint64_t total = t[0] + t[1] + t[2] + t[3];
  for (size_t i = part * kReadStreams; i < bytes; ++i) total += p[i];
  return total;
}
uint64_t sum_streams(const uint8_t* p, size_t bytes) {
  const size_t part = bytes / kReadStreams / 8 * 8;
  uint64_t acc[kReadStreams] = {};
  for (size_t o = 0; o < part; o += 8)
    for (int k = 0; k < kReadStreams; ++k) {
      uint64_t v;
      std::memcpy(&v, p + size_t(k) * part + o, 8);
      acc[k] += v;
    }
  uint64_t total = 0;
  for (uint64_t a : acc) total += a;
  for (size_t i = part * kReadStreams; i < bytes; ++i) total += p[i];
  return total;
}
uint64_t read_bytes(const void* p, size_t bytes) {
  static const bool avx2 = qforge::kernels::cpu().avx2;
  const auto* b = static_cast<const uint8_t*>(p);
  return avx2 ? sum_streams_avx2(b, bytes) : sum_streams(b, bytes);
}

struct Bandwidth {
  double read_best = 0, read_median = 0;  // bytes/s
  double copy_best = 0, copy_median = 0;  // (read + written) bytes/s, as STREAM counts a copy
};

Bandwidth measure_bandwidth(size_t bytes, int threads, int reps) {
  const size_t n = bytes / 8;
  std::unique_ptr<uint64_t[]> a(new uint64_t[n]), b(new uint64_t[n]);
  auto part = [&](int id, int nt, size_t& lo, size_t& hi) {
    lo = n * size_t(id) / size_t(nt);
    hi = n * size_t(id + 1) / size_t(nt);
  };
#pragma omp parallel num_threads(threads)
  {
    size_t lo, hi;
    part(omp_get_thread_num(), omp_get_num_threads(), lo, hi);
    for (size_t i = lo; i < hi; ++i) a[i] = i, b[i] = 0;
  }
  std::vector<double> rd, cp;
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps; ++r) {
    uint64_t total = 0;
    auto t0 = Clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      size_t lo, hi;
      part(omp_get_thread_num(), omp_get_num_threads(), lo, hi);
      total += read_bytes(a.get() + lo, (hi - lo) * 8);
    }
    rd.push_back(seconds_since(t0));
    sink = sink + total;
    t0 = Clock::now();
#pragma omp parallel num_threads(threads)
    {
      size_t lo, hi;
      part(omp_get_thread_num(), omp_get_num_threads(), lo, hi);
      std::memcpy(b.get() + lo, a.get() + lo, (hi - lo) * 8);
    }
    cp.push_back(seconds_since(t0));
    sink = sink + b[n / 2];
  }
  Bandwidth bw;
  bw.read_best = double(bytes) / best_min(rd);
  bw.read_median = double(bytes) / median(rd);
  bw.copy_best = 2.0 * double(bytes) / best_min(cp);
  bw.copy_median = 2.0 * double(bytes) / median(cp);
  return bw;
}

// ---- SGEMM ----------------------------------------------------------------------------------
// C[M, N] = A[M, K] * B[N, K]^T, as the engine multiplies activations by row-major weights.

struct GemmShape {
  std::string name;
  int64_t n, k;                 // weight rows (output features), cols (input features)
  const float* w = nullptr;     // the model's own weights, or null for random ones
};

// Median seconds of one SGEMM with M rows of activations.
double time_sgemm(const GemmShape& s, int64_t m, int threads, int reps) {
  openblas_set_num_threads(threads);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> A(size_t(m * s.k)), C(size_t(m * s.n));
  for (auto& x : A) x = u(rng);
  std::vector<float> Bown;
  const float* B = s.w;
  if (!B) {
    Bown.resize(size_t(s.n * s.k));
    for (auto& x : Bown) x = u(rng) * 0.02f;
    B = Bown.data();
  }
  std::vector<double> t;
  for (int r = 0; r < reps + 1; ++r) {  // the first run warms up OpenBLAS's threads and buffers
    auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(s.n), int(s.k), 1.0f, A.data(), int(s.k), B,
                int(s.k), 0.0f, C.data(), int(s.n));
    if (r > 0) t.push_back(seconds_since(t0));
  }
  return median(t);
}

// ---- the model ------------------------------------------------------------------------------

std::vector<const qforge::Weight*> layer_matrices(const qforge::LayerWeights& l) {
  std::vector<const qforge::Weight*> v;
  for (const qforge::Weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
    if (*w && w->rows > 1) v.push_back(w);
  return v;
}

uint64_t layer_matmul_params(const qforge::Model& m) {
  uint64_t n = 0;
  for (const auto& l : m.layers)
    for (const auto* w : layer_matrices(l)) n += uint64_t(w->rows * w->cols);
  return n;
}

std::vector<int> some_tokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(3, std::max(3, vocab - 1));
  std::vector<int> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

int argmax(const float* v, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

struct Options {
  std::string model;
  std::vector<int> threads{1, 2};
  int gen_tokens = 32, gen_runs = 5, prompt_tokens = 8;
  int pp_tokens = 512, pp_runs = 3;
  int bw_mib = 1024, bw_reps = 7, gemm_reps = 3;
  std::string cli = QFORGE_CLI;
  bool no_cli = false, json = false, quick = false;
};

struct PerThreads {
  int threads = 0;
  Bandwidth bw;               // 1 GiB buffers, measured apart from the model
  double sgemm_square = 0;    // GFLOP/s, M=512 N=2048 K=2048
  std::map<std::string, double> sgemm_by_shape;  // GFLOP/s
  // Generation, each run paired with a streaming read of the same weights and with the GEMVs alone.
  double gen_tps = 0, gen_tps_best = 0;
  double weights_read_s = 0;  // seconds to stream-read weight_bytes_per_token() in place
  double gen_vs_read = 0;     // median over runs of (read time / token time)
  double gemv_only_s = 0;     // seconds per token spent in the weight GEMVs alone
  // Prompt processing, each run paired with SGEMM on the model's own layer-0 matrices.
  double pp_s = 0, pp_tps = 0, pp_gflops = 0, pp_tps_best = 0;
  double sgemm_model = 0;       // GFLOP/s, median over runs
  double pp_vs_sgemm = 0;       // median over runs of (prompt matmul rate / SGEMM rate)
  double pp_matmul_only_s = 0;  // the layers' SGEMMs alone, for pp_tokens
  uint64_t kv_bytes = 0;
  double other_cores_engine = 0, other_cores_bw = 0;  // competing work during these measurements
};

volatile uint64_t g_sink = 0;  // keeps the reads from being optimised away

// The matrices one generated token reads: every layer matrix and the head.
std::vector<const qforge::Weight*> token_matrices(const qforge::Model& m) {
  std::vector<const qforge::Weight*> v;
  for (const auto& l : m.layers)
    for (const auto* w : layer_matrices(l)) v.push_back(w);
  v.push_back(&m.output);
  return v;
}

// Stream-reads the given matrices in place, each split over `threads` threads as the engine's GEMV
// splits it. Returns seconds.
double read_matrices(const std::vector<const qforge::Weight*>& ws, int threads) {
  std::atomic<uint64_t> total{0};
  auto t0 = Clock::now();
  for (const auto* w : ws) {
    const size_t n = w->nbytes();
    const auto* base = static_cast<const uint8_t*>(w->data);
    qforge::parallel_run(threads, [&](int id, int nt) {
      const size_t lo = n * size_t(id) / size_t(nt) / 64 * 64, hi = id + 1 == nt ? n : n * size_t(id + 1) / size_t(nt) / 64 * 64;
      total.fetch_add(read_bytes(base + lo, hi - lo), std::memory_order_relaxed);
    });
  }
  const double secs = seconds_since(t0);
  g_sink = g_sink + total.load();
  return secs;
}

// The weight GEMVs of one token alone, with the engine's own matmul. Returns seconds.
double gemv_matrices(const qforge::Model& m, const std::vector<const qforge::Weight*>& ws, int threads) {
  std::vector<float> x(static_cast<size_t>(std::max<int64_t>(m.cfg.n_ff, m.cfg.n_embd) * 2), 0.01f);
  int64_t max_rows = 0;
  for (const auto* w : ws) max_rows = std::max(max_rows, w->rows);
  std::vector<float> y(static_cast<size_t>(max_rows));
  auto t0 = Clock::now();
  for (const auto* w : ws)
    qforge::kernels::matmul(w->dtype, w->data, size_t(w->row_bytes()), w->rows, w->cols, x.data(), 1, y.data(), threads);
  return seconds_since(t0);
}

// Generation: `gen_runs` runs of a short prompt then `gen_tokens` greedy tokens. Memory bandwidth on
// this machine drifts by tens of percent within seconds, so each run is paired with a streaming read
// of the very weights a token reads (the bound) and with the GEMVs alone, taken right around it.
void bench_generation(const qforge::Model& m, const Options& o, PerThreads& r) {
  qforge::SessionOptions so;
  so.n_ctx = std::max(o.pp_tokens, o.prompt_tokens + o.gen_tokens + 1);
  so.n_threads = r.threads;
  qforge::Session s(m, so);
  r.kv_bytes = s.kv_cache_bytes();
  const int V = m.cfg.vocab_size;
  const auto prompt = some_tokens(o.prompt_tokens, V, 7);
  const auto mats = token_matrices(m);
  double mat_bytes = 0;
  for (const auto* w : mats) mat_bytes += double(w->nbytes());  // stored bytes, whatever the type
  const double read_scale = double(m.weight_bytes_per_token()) / mat_bytes;  // + norms, one embedding row
  s.eval(prompt);  // warm-up: pages the weights in, starts the thread pools
  int next = argmax(s.logits(), V);
  s.eval(std::vector<int>{next});
  read_matrices(mats, r.threads);
  std::vector<double> tps, reads, ratios, gemvs;
  for (int run = 0; run < o.gen_runs; ++run) {
    const double read_before = read_matrices(mats, r.threads) * read_scale;
    s.reset();
    s.eval(prompt);
    next = argmax(s.logits(), V);
    double total = 0;
    for (int i = 0; i < o.gen_tokens; ++i) {
      auto t0 = Clock::now();
      s.eval(std::span<const int>(&next, 1));
      next = argmax(s.logits(), V);
      total += seconds_since(t0);
    }
    const double read_after = read_matrices(mats, r.threads) * read_scale;
    const double read = 0.5 * (read_before + read_after);
    tps.push_back(o.gen_tokens / total);
    reads.push_back(read);
    ratios.push_back(read / (total / o.gen_tokens));
    gemvs.push_back(gemv_matrices(m, mats, r.threads));
  }
  r.gen_tps = median(tps);
  r.gen_tps_best = *std::max_element(tps.begin(), tps.end());
  r.weights_read_s = median(reads);
  r.gen_vs_read = median(ratios);
  r.gemv_only_s = median(gemvs);
}

// "model.layers.0.mlp.up_proj.weight" -> "mlp.up_proj"
std::string short_name(std::string n) {
  if (auto p = n.find(".0."); p != std::string::npos) n = n.substr(p + 3);
  if (n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0) n.resize(n.size() - 7);
  return n;
}

// SGEMM on the model's own layer-0 matrices at M = pp_tokens, with buffers made once.
class LayerGemm {
 public:
  LayerGemm(const qforge::Model& m, int64_t tokens) : mats_(layer_matrices(m.layers.at(0))), m_(tokens) {
    int64_t max_k = 0, max_n = 0;
    for (const auto* w : mats_) max_k = std::max(max_k, w->cols), max_n = std::max(max_n, w->rows);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1, 1);
    A_.resize(static_cast<size_t>(m_ * max_k));
    for (auto& x : A_) x = u(rng);
    C_.resize(static_cast<size_t>(m_ * max_n));
    // The SGEMM reference always multiplies F32 matrices of the model's shapes (random values when
    // the model keeps its weights in another type).
    B_.resize(static_cast<size_t>(max_k * max_n));
    for (auto& x : B_) x = u(rng);
    for (const auto* w : mats_) flops_ += 2.0 * double(m_) * double(w->rows) * double(w->cols);
  }
  double flops() const { return flops_; }
  // Seconds for all the matrices once; per-shape GFLOP/s into `by_shape` if given.
  double run(int threads, std::map<std::string, double>* by_shape = nullptr) {
    openblas_set_num_threads(threads);
    double total = 0;
    for (const auto* w : mats_) {
      auto t0 = Clock::now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m_), int(w->rows), int(w->cols), 1.0f, A_.data(),
                  int(w->cols), w->dtype == qforge::DType::F32 ? w->f32() : B_.data(), int(w->cols), 0.0f, C_.data(),
                  int(w->rows));
      const double t = seconds_since(t0);
      total += t;
      if (by_shape)
        (*by_shape)[fmt::format("{}x{}x{} ({})", m_, w->rows, w->cols, short_name(w->name))] =
            2.0 * double(m_) * double(w->rows) * double(w->cols) / t / 1e9;
    }
    return total;
  }

 private:
  std::vector<const qforge::Weight*> mats_;
  int64_t m_;
  std::vector<float> A_, B_, C_;
  double flops_ = 0;
};

// Prompt processing: one eval of pp_tokens per run, each paired with SGEMM on the same shapes.
void bench_prompt(const qforge::Model& m, const Options& o, PerThreads& r) {
  qforge::SessionOptions so;
  so.n_ctx = o.pp_tokens;
  so.n_threads = r.threads;
  so.n_batch = o.pp_tokens;
  qforge::Session s(m, so);
  const auto tokens = some_tokens(o.pp_tokens, m.cfg.vocab_size, 11);
  LayerGemm gemm(m, o.pp_tokens);
  // Matmul FLOPs: every layer matrix for every prompt token; the head only for the last token
  // (the engine computes logits only where they are asked for).
  const double flops = 2.0 * double(layer_matmul_params(m)) * o.pp_tokens +
                       2.0 * double(m.output.rows) * double(m.output.cols);
  std::vector<double> t, rates, ratios, gemm_s;
  for (int run = 0; run < o.pp_runs + 1; ++run) {  // the first run is a warm-up
    s.reset();
    auto t0 = Clock::now();
    s.eval(tokens);
    const double secs = seconds_since(t0);
    const double g = gemm.run(r.threads, run == o.pp_runs ? &r.sgemm_by_shape : nullptr);
    if (run == 0) continue;
    t.push_back(secs);
    rates.push_back(gemm.flops() / g);
    ratios.push_back((flops / secs) / (gemm.flops() / g));
    gemm_s.push_back(g * double(m.layers.size()));
  }
  r.pp_s = median(t);
  r.pp_tps = o.pp_tokens / r.pp_s;
  r.pp_tps_best = o.pp_tokens / best_min(t);
  r.pp_gflops = flops / r.pp_s / 1e9;
  r.sgemm_model = median(rates) / 1e9;
  r.pp_vs_sgemm = median(ratios);
  r.pp_matmul_only_s = median(gemm_s);
}

// The reference square SGEMM shape, on random matrices.
void bench_sgemm(const Options& o, PerThreads& r) {
  r.sgemm_square = 2.0 * 512 * 2048 * 2048 / time_sgemm({"512x2048x2048", 2048, 2048}, 512, r.threads, o.gemm_reps) / 1e9;
}

// `qforge generate` as a child process: its peak RSS (wait4) and its own report (--json).
struct CliRun {
  bool ok = false;
  uint64_t peak_rss = 0, weight_bytes = 0, kv_bytes = 0;
  double gen_tps = 0;
  std::string command, error;
};

CliRun run_cli_generate(const Options& o, int threads, int vocab) {
  CliRun r;
  std::string id_list;
  for (int id : some_tokens(o.prompt_tokens, vocab, 7)) id_list += (id_list.empty() ? "" : ",") + std::to_string(id);
  std::vector<std::string> args = {o.cli,   "generate", o.model,        "--ids", id_list, "-n", std::to_string(o.gen_tokens),
                                   "--temp", "0",       "--ignore-eos", "-q",    "-t",    std::to_string(threads), "--json"};
  for (const auto& a : args) r.command += (r.command.empty() ? "" : " ") + a;
  char tmpl[] = "/tmp/qforge-bench-cli-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) {
    r.error = "cannot create a temporary file";
    return r;
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fd, STDOUT_FILENO);
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, STDERR_FILENO);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fd);
  int status = 0;
  struct rusage ru {};
  if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) {
    r.error = "cannot run " + o.cli;
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    r.error = fmt::format("{} exited with status {}", o.cli, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  } else {
    r.peak_rss = uint64_t(ru.ru_maxrss) * 1024;
    std::ifstream f(tmpl);
    std::string line, last;
    while (std::getline(f, line))
      if (!line.empty() && line[0] == '{') last = line;
    try {
      auto j = nlohmann::json::parse(last);
      r.weight_bytes = j.at("weight_bytes").get<uint64_t>();
      r.kv_bytes = j.at("kv_cache_bytes").get<uint64_t>();
      r.gen_tps = j.value("generation_tokens_per_second", 0.0);
      r.ok = true;
    } catch (const std::exception& e) {
      r.error = std::string("could not read its --json output: ") + e.what();
    }
  }
  unlink(tmpl);
  return r;
}

// ---- report ---------------------------------------------------------------------------------

std::string gb(double bytes) { return fmt::format("{:.2f}", bytes / 1e9); }
std::string pct(double x) { return fmt::format("{:.0f}%", 100 * x); }

}  // namespace

int main(int argc, char** argv) {
  qforge::prefer_passive_openmp(argv);  // as the CLI runs: see src/core/thread_pool.h
  Options o;
  CLI::App app{"qforge-bench: engine speed and memory against this machine's bandwidth and SGEMM rate"};
  app.add_option("model", o.model, "Model (Hugging Face directory, e.g. from `qforge synth`)")->required();
  app.add_option("-t,--threads", o.threads, "Thread counts to measure")->delimiter(',')->capture_default_str();
  app.add_option("--gen-tokens", o.gen_tokens, "Tokens generated per run")->capture_default_str();
  app.add_option("--gen-runs", o.gen_runs, "Generation runs (median)")->capture_default_str();
  app.add_option("--pp-tokens", o.pp_tokens, "Prompt length for prompt processing")->capture_default_str();
  app.add_option("--pp-runs", o.pp_runs, "Prompt-processing runs (median)")->capture_default_str();
  app.add_option("--bw-mib", o.bw_mib, "Bandwidth buffer size in MiB")->capture_default_str();
  app.add_option("--bw-reps", o.bw_reps, "Bandwidth repetitions")->capture_default_str();
  app.add_option("--gemm-reps", o.gemm_reps, "SGEMM repetitions per shape (median)")->capture_default_str();
  app.add_option("--cli", o.cli, "qforge binary whose `generate` peak RSS is measured")->capture_default_str();
  app.add_flag("--no-cli", o.no_cli, "Skip the `qforge generate` memory run");
  app.add_flag("--quick", o.quick, "Few short runs (a smoke test, not figures to report)");
  app.add_flag("--json", o.json, "Also print one JSON object with every figure");
  CLI11_PARSE(app, argc, argv);
  if (o.quick) {
    o.gen_tokens = 4, o.gen_runs = 2, o.pp_tokens = std::min(o.pp_tokens, 64), o.pp_runs = 1;
    o.bw_mib = 64, o.bw_reps = 2, o.gemm_reps = 1;
  }
  for (int t : o.threads)
    if (t < 1 || t > 1024) {
      std::fprintf(stderr, "qforge-bench: bad thread count %d\n", t);
      return 2;
    }
  if (o.gen_tokens < 1 || o.gen_runs < 1 || o.pp_tokens < 4 || o.pp_runs < 1 || o.bw_mib < 1 || o.bw_reps < 1 ||
      o.gemm_reps < 1) {
    std::fprintf(stderr, "qforge-bench: run counts and sizes must be positive (prompt >= 4 tokens)\n");
    return 2;
  }

  try {
    const auto& cpu = qforge::kernels::cpu();
    const std::string commit = commit_id();
    const std::string date = now_utc();
    const double load_before = load_average();
    const OtherWork other_whole_run;
    note(fmt::format("CPU {} | kernels {} | {}", cpu.summary(), qforge::kernels::table().isa, openblas_get_config()));

    // Phase 1: everything that needs the model, with the peak RSS of this phase recorded.
    const bool hwm_reset = reset_peak_rss();
    auto t_load = Clock::now();
    qforge::LoadOptions load_opt;
    load_opt.load_tokenizer = false;
    auto model = qforge::load_model(o.model, load_opt);
    const double load_s = seconds_since(t_load);
    const qforge::Model& m = *model;
    if (m.layers.empty() || !m.output) qforge::fail("bench: {}: model has no layers or no output head", o.model);
    if (o.pp_tokens > m.cfg.max_ctx || o.prompt_tokens + o.gen_tokens + 1 > m.cfg.max_ctx)
      qforge::fail("bench: {}: context {} is too short for the runs asked for", o.model, m.cfg.max_ctx);
    const uint64_t params = uint64_t(m.cfg.n_params());
    note(fmt::format("loaded {} in {:.2f} s: {:.3f} B params, {} GB weights, {} GB read per token", o.model, load_s,
                     params / 1e9, gb(m.weight_bytes()), gb(m.weight_bytes_per_token())));

    std::vector<PerThreads> res;
    for (int t : o.threads) {
      PerThreads r;
      r.threads = t;
      const OtherWork other;
      note(fmt::format("threads {}: generation ({} runs x {} tokens)", t, o.gen_runs, o.gen_tokens));
      bench_generation(m, o, r);
      note(fmt::format("threads {}: {:.2f} tok/s", t, r.gen_tps));
      note(fmt::format("threads {}: prompt processing ({} runs x {} tokens)", t, o.pp_runs, o.pp_tokens));
      bench_prompt(m, o, r);
      note(fmt::format("threads {}: {:.1f} tok/s; SGEMM", t, r.pp_tps));
      bench_sgemm(o, r);
      r.other_cores_engine = other.cores();
      res.push_back(r);
    }
    const uint64_t model_phase_peak = peak_rss();
    uint64_t max_kv = 0;
    for (const auto& r : res) max_kv = std::max(max_kv, r.kv_bytes);
    const uint64_t weight_bytes = m.weight_bytes(), bytes_per_token = m.weight_bytes_per_token();
    const std::string arch = m.cfg.hf_architecture;
    const uint64_t matmul_params = layer_matmul_params(m);
    const int n_layer = m.cfg.n_layer, vocab = m.cfg.vocab_size;
    model.reset();

    // Phase 2: the machine's limits.
    for (auto& r : res) {
      note(fmt::format("threads {}: memory bandwidth ({} MiB x {})", r.threads, o.bw_mib, o.bw_reps));
      const OtherWork other;
      r.bw = measure_bandwidth(size_t(o.bw_mib) << 20, r.threads, o.bw_reps);
      r.other_cores_bw = other.cores();
    }

    // Phase 3: `qforge generate` in its own process.
    CliRun cli;
    if (!o.no_cli) {
      note("qforge generate: peak RSS");
      cli = run_cli_generate(o, o.threads.back(), vocab);
      if (!cli.ok) note("qforge generate run failed: " + cli.error);
    }

    // Average number of cores that other processes kept busy during the run.
    const double other_cores = other_whole_run.cores();
    // ---- report ----
    std::printf("# qforge-bench\n\n");
    const std::string param_str =
        params >= 1e9 ? fmt::format("{:.3f} B", params / 1e9) : fmt::format("{:.3f} M", params / 1e6);
    std::printf("- model: `%s` (%s, %s params, %d layers; weights %s GB, %s GB read per token)\n", o.model.c_str(),
                arch.c_str(), param_str.c_str(), n_layer, gb(weight_bytes).c_str(), gb(bytes_per_token).c_str());
    std::printf("- CPU: %s; %u logical cores; %.1f GiB RAM\n", cpu.summary().c_str(),
                std::thread::hardware_concurrency(), total_ram_bytes() / double(1ull << 30));
    std::printf("- kernels: %s; BLAS: %s\n", qforge::kernels::table().isa, openblas_get_config());
    std::printf("- commit: %s; date: %s; model load %.2f s\n", commit.c_str(), date.c_str(), load_s);
    std::printf("- other processes: load average %.2f at the start; they kept %.2f cores busy on average during the "
                "run%s\n",
                load_before, other_cores,
                other_cores > 0.1 ? " (OTHER WORK COMPETED FOR THE CORES: the figures are not clean)" : "");
    std::printf("- runs: generation %d x %d tokens after a %d-token prompt (median); prompt processing %d tokens x %d "
                "(median); bandwidth %d MiB x %d; SGEMM median of %d\n\n",
                o.gen_runs, o.gen_tokens, o.prompt_tokens, o.pp_tokens, o.pp_runs, o.bw_mib, o.bw_reps, o.gemm_reps);

    std::string head = "| figure |", rule = "|---|";
    for (const auto& r : res) head += fmt::format(" {} thread{} |", r.threads, r.threads > 1 ? "s" : ""), rule += "---|";
    std::printf("%s target |\n%s---|\n", head.c_str(), rule.c_str());
    auto row = [&](const std::string& label, auto&& cell, const std::string& target = "") {
      std::string line = "| " + label + " |";
      for (const auto& r : res) line += " " + cell(r) + " |";
      std::printf("%s %s |\n", line.c_str(), target.c_str());
    };
    auto bound_tps = [&](const PerThreads& r) { return r.bw.read_best / double(bytes_per_token); };
    row("cores other processes kept busy (engine + SGEMM / bandwidth)", [](const PerThreads& r) {
      return fmt::format("{:.2f} / {:.2f}", r.other_cores_engine, r.other_cores_bw);
    }, "0 (clean)");
    row("read bandwidth (1 GiB), GB/s (best / median)",
        [](const PerThreads& r) { return fmt::format("{:.1f} / {:.1f}", r.bw.read_best / 1e9, r.bw.read_median / 1e9); });
    row("copy bandwidth (1 GiB), GB/s read+written (best / median)",
        [](const PerThreads& r) { return fmt::format("{:.1f} / {:.1f}", r.bw.copy_best / 1e9, r.bw.copy_median / 1e9); });
    row("SGEMM 512x2048x2048, GFLOP/s", [](const PerThreads& r) { return fmt::format("{:.1f}", r.sgemm_square); });
    row(fmt::format("SGEMM on the model's layer matrices (M={}), GFLOP/s", o.pp_tokens),
        [](const PerThreads& r) { return fmt::format("{:.1f}", r.sgemm_model); });
    row("generation, tokens/s (median; best)",
        [](const PerThreads& r) { return fmt::format("{:.2f}; {:.2f}", r.gen_tps, r.gen_tps_best); });
    row("bound from the 1 GiB read bandwidth, tokens/s (generation / it)", [&](const PerThreads& r) {
      return fmt::format("{:.2f} ({})", bound_tps(r), pct(r.gen_tps / bound_tps(r)));
    });
    row("bound from reading the token's weights in place, tokens/s (GB/s)", [&](const PerThreads& r) {
      return fmt::format("{:.2f} ({:.1f})", 1 / r.weights_read_s, double(bytes_per_token) / r.weights_read_s / 1e9);
    });
    row("**generation / bound** (paired runs)", [&](const PerThreads& r) { return "**" + pct(r.gen_vs_read) + "**"; },
        ">= 70%");
    row("weight GEMVs alone, ms per token (share of a token)", [](const PerThreads& r) {
      return fmt::format("{:.1f} ({})", 1e3 * r.gemv_only_s, pct(r.gemv_only_s * r.gen_tps));
    });
    row(fmt::format("prompt processing ({} tokens), tokens/s (median; best)", o.pp_tokens),
        [](const PerThreads& r) { return fmt::format("{:.1f}; {:.1f}", r.pp_tps, r.pp_tps_best); });
    row("prompt processing, matmul GFLOP/s", [](const PerThreads& r) { return fmt::format("{:.1f}", r.pp_gflops); });
    row("**prompt processing / SGEMM (model shapes)** (paired runs)",
        [](const PerThreads& r) { return "**" + pct(r.pp_vs_sgemm) + "**"; }, ">= 60%");
    row("layer SGEMMs alone, s per prompt (share of the prompt)", [](const PerThreads& r) {
      return fmt::format("{:.2f} ({})", r.pp_matmul_only_s, pct(r.pp_matmul_only_s / r.pp_s));
    });

    std::printf("\n| memory | bytes | vs weights + KV cache | target |\n|---|---|---|---|\n");
    std::printf("| weights | %s GB | | |\n", gb(weight_bytes).c_str());
    std::printf("| KV cache (bench sessions, largest) | %s GB | | |\n", gb(max_kv).c_str());
    std::printf("| bench process peak RSS (load + all sessions)%s | %s GB | %.3fx | |\n",
                hwm_reset ? "" : " (incl. start-up)", gb(model_phase_peak).c_str(),
                model_phase_peak / double(weight_bytes + max_kv));
    if (cli.ok)
      std::printf("| `qforge generate` peak RSS (%d thread%s, KV %s GB) | %s GB | **%.3fx** | < 1.1x |\n",
                  o.threads.back(), o.threads.back() > 1 ? "s" : "", gb(cli.kv_bytes).c_str(), gb(cli.peak_rss).c_str(),
                  cli.peak_rss / double(cli.weight_bytes + cli.kv_bytes));
    else if (!o.no_cli)
      std::printf("| `qforge generate` peak RSS | not measured: %s | | < 1.1x |\n", cli.error.c_str());
    std::printf("\nSGEMM by shape (M x N x K), GFLOP/s:");
    for (const auto& r : res) {
      std::printf(" [%d thread%s]", r.threads, r.threads > 1 ? "s" : "");
      for (const auto& [shape, g] : r.sgemm_by_shape) std::printf(" %s %.1f;", shape.c_str(), g);
    }
    std::printf("\n");

    if (o.json) {
      json j;
      j["model"] = o.model;
      j["architecture"] = arch;
      j["params"] = params;
      j["layer_matmul_params"] = matmul_params;
      j["weight_bytes"] = weight_bytes;
      j["weight_bytes_per_token"] = bytes_per_token;
      j["cpu"] = cpu.summary();
      j["kernels"] = qforge::kernels::table().isa;
      j["blas"] = openblas_get_config();
      j["commit"] = commit;
      j["date"] = date;
      j["load_seconds"] = load_s;
      j["load_average_at_start"] = load_before;
      j["other_processes_cores"] = other_cores;
      j["settings"] = {{"gen_tokens", o.gen_tokens}, {"gen_runs", o.gen_runs},   {"prompt_tokens", o.prompt_tokens},
                       {"pp_tokens", o.pp_tokens},   {"pp_runs", o.pp_runs},     {"bw_mib", o.bw_mib},
                       {"bw_reps", o.bw_reps},       {"gemm_reps", o.gemm_reps}};
      json runs = json::array();
      for (const auto& r : res) {
        runs.push_back({{"threads", r.threads},
                        {"read_bandwidth_best", r.bw.read_best},
                        {"read_bandwidth_median", r.bw.read_median},
                        {"copy_bandwidth_best", r.bw.copy_best},
                        {"copy_bandwidth_median", r.bw.copy_median},
                        {"sgemm_512x2048x2048_gflops", r.sgemm_square},
                        {"sgemm_model_gflops", r.sgemm_model},
                        {"sgemm_by_shape_gflops", r.sgemm_by_shape},
                        {"generation_tokens_per_second", r.gen_tps},
                        {"generation_tokens_per_second_best", r.gen_tps_best},
                        {"bandwidth_bound_tokens_per_second", bound_tps(r)},
                        {"generation_vs_bandwidth_bound", r.gen_tps / bound_tps(r)},
                        {"weights_read_seconds", r.weights_read_s},
                        {"generation_vs_bound", r.gen_vs_read},
                        {"gemv_only_seconds_per_token", r.gemv_only_s},
                        {"prompt_seconds", r.pp_s},
                        {"prompt_tokens_per_second", r.pp_tps},
                        {"prompt_tokens_per_second_best", r.pp_tps_best},
                        {"prompt_matmul_gflops", r.pp_gflops},
                        {"prompt_vs_sgemm", r.pp_vs_sgemm},
                        {"prompt_sgemm_only_seconds", r.pp_matmul_only_s},
                        {"kv_cache_bytes", r.kv_bytes},
                        {"other_processes_cores_engine", r.other_cores_engine},
                        {"other_processes_cores_bandwidth", r.other_cores_bw}});
      }
      j["runs"] = runs;
      j["memory"] = {{"bench_peak_rss", model_phase_peak}, {"bench_kv_cache_bytes", max_kv}};
      if (cli.ok)
        j["memory"]["generate"] = {{"peak_rss", cli.peak_rss},
                                   {"weight_bytes", cli.weight_bytes},
                                   {"kv_cache_bytes", cli.kv_bytes},
                                   {"ratio", cli.peak_rss / double(cli.weight_bytes + cli.kv_bytes)},
                                   {"generation_tokens_per_second", cli.gen_tps},
                                   {"command", cli.command}};
      std::printf("%s\n", j.dump().c_str());
    }
  } catch (const qforge::Error& e) {
    std::fprintf(stderr, "qforge-bench: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qforge-bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
