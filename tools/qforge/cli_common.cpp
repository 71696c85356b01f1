#include <cstdio>
#include <thread>

#include <fmt/format.h>

#include "commands.h"

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

int default_threads() { return int(std::max(1u, std::thread::hardware_concurrency())); }

}  // namespace qforge::cli
