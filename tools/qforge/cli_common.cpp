#include <cstdio>
#include <thread>

#include <fmt/format.h>

#include "commands.h"
#include "qforge/error.h"
#include "qforge/quantize.h"
#include "qforge/sysinfo.h"

namespace qforge::cli {

void add_json_flag(CLI::App* sub, JsonFlag& flag) {
  sub->add_flag("--json", flag.enabled, "End the output with one JSON object of the figures (for scripts)");
}

void emit_json(const JsonFlag& flag, const nlohmann::json& j) {
  if (!flag.enabled) return;
  std::fflush(stderr);
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.2f} {}", v, units[u]);
}

std::string human_count(int64_t n) {
  if (n >= 1'000'000'000) return fmt::format("{:.2f}B", double(n) / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.2f}M", double(n) / 1e6);
  if (n >= 1'000) return fmt::format("{:.1f}K", double(n) / 1e3);
  return std::to_string(n);
}

void add_load_quantize_flags(CLI::App* sub, LoadQuantizeFlags& f) {
  sub->add_option("--quantize", f.type,
                  "Quantize the weights in memory after loading (any type or mix of `qforge quantize`; nf4 "
                  "runs only this way, as bitsandbytes does)");
  sub->add_option("--quantize-keep", f.keep, "REGEX=TYPE overrides for --quantize (as quantize --keep)");
  sub->add_flag("--nf4-double-quant", f.nf4_double_quant,
                "With --quantize nf4: double-quantize the block scales (bitsandbytes compress_statistics)");
}

void apply_load_quantize(Model& m, const LoadQuantizeFlags& f, int n_threads) {
  if (f.type.empty()) {
    if (f.nf4_double_quant || !f.keep.empty())
      fail("--nf4-double-quant and --quantize-keep need --quantize TYPE");
    return;
  }
  Stopwatch sw;
  InMemoryQuantizeOptions o;
  o.type = f.type;
  o.keep = f.keep;
  o.nf4_double_quant = f.nf4_double_quant;
  o.n_threads = n_threads > 0 ? n_threads : default_threads();
  const InMemoryQuantizeReport r = quantize_in_memory(m, o);
  fmt::print(stderr, "quantized {} matrices in memory to {}: {} -> {} ({:.3f} bits per weight) in {:.2f} s\n",
             r.n_tensors, f.type, human_bytes(r.bytes_before), human_bytes(r.bytes_after),
             r.n_weights ? 8.0 * double(r.bytes_after) / double(r.n_weights) : 0.0, sw.seconds());
  for (const auto& w : r.warnings) fmt::print(stderr, "  warning: {}\n", w);
}

int default_threads() { return int(std::max(1u, std::thread::hardware_concurrency())); }

}  // namespace qforge::cli
