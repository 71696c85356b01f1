// qforge synth: writes a random-weight checkpoint of a real model shape (for speed and memory work).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "commands.h"
#include "qforge/error.h"
#include "qforge/synth.h"

namespace qforge::cli {
namespace {

struct SynthArgs {
  std::string shape;
  std::string out;
  std::string dtype = "f32";
  uint64_t seed = 0;
  std::string shared_dir;
  int threads = 0;
  bool list = false;
  bool force = false;
  JsonFlag json;
};

std::string shapes_table() {
  std::string s = "Shapes (parameters, size in f32 / f16 and bf16):\n";
  for (const auto& shape : synth_shapes()) {
    s += fmt::format("  {:<16} {:>6.3f} B params  {:>6.2f} GB / {:>5.2f} GB  {}\n", shape.name,
                     synth_param_count(shape) / 1e9, synth_weight_bytes(shape, DType::F32) / 1e9,
                     synth_weight_bytes(shape, DType::F16) / 1e9, shape.description);
  }
  return s;
}

// A progress line on stderr: rewritten in place on a terminal, one line every few seconds otherwise.
class ProgressLine {
 public:
  ProgressLine() : tty_(isatty(STDERR_FILENO) != 0), start_(Clock::now()), last_(start_) {}
  void update(uint64_t done, uint64_t total) {
    const auto now = Clock::now();
    const double since_last = std::chrono::duration<double>(now - last_).count();
    if (done < total && since_last < (tty_ ? 0.2 : 5.0)) return;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? done / secs : 0;
    const double eta = rate > 0 ? (total - done) / rate : 0;
    std::fprintf(stderr, "%ssynth: %8.0f / %.0f MB  %6.0f MB/s  ETA %4.0f s%s", tty_ ? "\r" : "", done / 1e6,
                 total / 1e6, rate / 1e6, eta, tty_ ? "" : "\n");
    if (tty_ && done >= total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  bool tty_;
  Clock::time_point start_, last_;
};

int run_synth(const SynthArgs& a) {
  if (a.list) {
    std::fputs(shapes_table().c_str(), stdout);
    return 0;
  }
  if (a.shape.empty()) fail("synth: --shape is required\n{}", shapes_table());
  if (a.out.empty()) fail("synth: -o/--output DIR is required");
  synth_shape(a.shape);  // unknown shape: error listing the valid ones
  auto dtype = dtype_from_name(a.dtype);
  if (!dtype || (*dtype != DType::F32 && *dtype != DType::F16 && *dtype != DType::BF16))
    fail("synth: --dtype '{}' not supported (use f32, f16 or bf16)", a.dtype);

  SynthOptions opt;
  opt.shape = a.shape;
  opt.out_dir = a.out;
  opt.dtype = *dtype;
  opt.seed = a.seed;
  opt.shared_dir = a.shared_dir;
  opt.overwrite = a.force;
  opt.n_threads = a.threads > 0 ? a.threads : default_threads();
  auto progress = std::make_shared<ProgressLine>();
  opt.progress = [progress](uint64_t done, uint64_t total) { progress->update(done, total); };
  opt.warn = [](const std::string& note) { std::fprintf(stderr, "synth: warning: %s\n", note.c_str()); };

  const SynthResult r = synth_checkpoint(opt);
  if (a.json.enabled) {
    emit_json(a.json, {{"shape", r.shape},
                       {"dtype", dtype_name(r.dtype)},
                       {"params", r.params},
                       {"bytes", r.bytes},
                       {"files", r.files},
                       {"tokenizer", r.tokenizer},
                       {"seconds", r.seconds},
                       {"output", a.out}});
  } else {
    std::printf("wrote %s: %s, %s, %.3f B params, %.2f GB in %zu file(s), %.1f s%s\n", a.out.c_str(), r.shape.c_str(),
                dtype_name(r.dtype), r.params / 1e9, r.bytes / 1e9, r.files.size(), r.seconds,
                r.tokenizer.empty() ? ", no tokenizer" : "");
  }
  return 0;
}

}  // namespace

void register_synth(CLI::App& app) {
  auto args = std::make_shared<SynthArgs>();
  CLI::App* sub = app.add_subcommand("synth", "Write a random-weight checkpoint of a real model shape");
  sub->add_option("--shape", args->shape, "Model shape (see below or --list)");
  sub->add_option("-o,--output", args->out, "Output directory (written as DIR.tmp, then renamed)");
  sub->add_option("--dtype", args->dtype, "Weight type: f32, f16 or bf16")->capture_default_str();
  sub->add_option("--seed", args->seed, "Random seed")->capture_default_str();
  sub->add_option("--shared-dir", args->shared_dir,
                  "Folder with the real tokenizers (default: $QFORGE_SHARED_DIR, else ../shared)");
  sub->add_option("-t,--threads", args->threads, "Generation threads (default: all cores)");
  sub->add_flag("--list", args->list, "List the shapes and exit");
  sub->add_flag("--force", args->force, "Replace the output directory if it exists");
  add_json_flag(sub, args->json);
  sub->footer(shapes_table());
  add_command(app, sub, [args] { return run_synth(*args); });
}

}  // namespace qforge::cli
