// qforge CLI: each subcommand lives in its own cmd_*.cpp and registers itself here.
// A subcommand's run function returns the process exit code; errors are qforge::Error exceptions,
// which main() turns into one message on stderr and the error's exit code.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace qforge::cli {

// Registers a subcommand; `run` is called when it is selected.
using Runner = std::function<int()>;
void add_command(CLI::App& app, CLI::App* sub, Runner run);

void register_inspect(CLI::App& app);
void register_generate(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_imatrix(CLI::App& app);
void register_quantize(CLI::App& app);
void register_synth(CLI::App& app);

// Common flags.
struct JsonFlag {
  bool enabled = false;
};
void add_json_flag(CLI::App* sub, JsonFlag& flag);
// Prints the final JSON object (one line) when --json was given.
void emit_json(const JsonFlag& flag, const nlohmann::json& j);
int default_threads();

// --quantize TYPE (load-time quantization in memory; how nf4 runs) for commands that run a model.
struct LoadQuantizeFlags {
  std::string type;
  std::vector<std::string> keep;
  bool nf4_double_quant = false;
};
void add_load_quantize_flags(CLI::App* sub, LoadQuantizeFlags& f);
}  // namespace qforge::cli
namespace qforge {
struct Model;
}
namespace qforge::cli {
// Applies the flags to a loaded model (no-op without --quantize); prints one line to stderr.
void apply_load_quantize(Model& m, const LoadQuantizeFlags& f, int n_threads);

// Human-readable sizes: "1.23 MiB".
std::string human_bytes(uint64_t n);
// "3.2M", "1.10B" parameter counts.
std::string human_count(int64_t n);

}  // namespace qforge::cli
