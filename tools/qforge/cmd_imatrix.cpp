// qforge imatrix MODEL --text FILE -o OUT.gguf: an importance matrix measured with qforge's engine,
// in llama-imatrix's GGUF format (`qforge quantize --imatrix` and llama-quantize --imatrix read it).
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>

#include "commands.h"
#include "qforge/error.h"
#include "qforge/imatrix.h"
#include "qforge/mmap.h"
#include "qforge/sysinfo.h"

namespace qforge::cli {

namespace {
struct ImatrixArgs {
  std::string model, text, out, tokenizer;
  int ctx = 512, chunks = -1, threads = 0;
  bool process_output = false, force = false;
  JsonFlag json;
};

int run_imatrix(ImatrixArgs& a) {
  if (a.threads <= 0) a.threads = default_threads();
  if (std::filesystem::exists(a.out) && !a.force)
    fail("imatrix: {}: already exists (pass --force to replace it)", a.out);
  LoadOptions lo;
  lo.tokenizer_path = a.tokenizer;
  auto m = load_model(a.model, lo);
  if (!m->tokenizer) fail("imatrix: {}: the model has no tokenizer; pass one with --tokenizer", a.model);
  const std::string text = read_text_file(a.text, size_t(1) << 30);
  const std::vector<int> tokens = m->tokenizer->encode(text, /*add_bos=*/true);
  ImatrixOptions o;
  o.n_ctx = a.ctx;
  o.n_chunks = a.chunks;
  o.n_threads = a.threads;
  o.process_output = a.process_output;
  o.dataset = std::filesystem::path(a.text).filename().string();
  fmt::print(stderr, "imatrix: {} tokens from {}; chunks of {} with {} threads\n", tokens.size(), a.text, a.ctx,
             a.threads);
  const bool tty = isatty(STDERR_FILENO);
  Stopwatch sw;
  const ImatrixSums sums = collect_imatrix(*m, tokens, o, [&](int c, int n) {
    const double eta = sw.seconds() / (c + 1) * (n - c - 1);
    if (tty || c + 1 == n || (c + 1) % 10 == 0)
      fmt::print(stderr, "{}  chunk {:>4}/{}  {:.0f} s elapsed, ETA {:.0f} s{}", tty ? "\r" : "", c + 1, n,
                 sw.seconds(), eta, tty && c + 1 < n ? "   " : "\n");
  });
  write_imatrix_gguf(sums, a.out);
  fmt::print("imatrix: wrote {}: {} matrices, {} chunks of {} tokens, in {:.1f} s\n", a.out, sums.entries.size(),
             sums.chunk_count, sums.chunk_size, sw.seconds());
  emit_json(a.json, {{"output", a.out},
                     {"matrices", sums.entries.size()},
                     {"chunks", sums.chunk_count},
                     {"chunk_size", sums.chunk_size},
                     {"seconds", sw.seconds()}});
  return 0;
}
}  // namespace

void register_imatrix(CLI::App& app) {
  static ImatrixArgs a;
  auto* sub = app.add_subcommand(
      "imatrix",
      "Measure an importance matrix on calibration text, for quantize --imatrix\n"
      "For every weight matrix of the model, the mean square of each input column over the tokens of the\n"
      "text (chunks of --ctx tokens, each starting with BOS), as llama.cpp's llama-imatrix measures it and\n"
      "in its GGUF format, so llama-quantize --imatrix reads the file too. The quantizers then spend their\n"
      "precision where the activations are large. Example:\n"
      "  qforge imatrix ./my-hf-model --text calibration.txt -o imatrix.gguf --chunks 100\n"
      "  qforge quantize ./my-hf-model --type q4_k_m --imatrix imatrix.gguf -o model-q4_k_m.gguf");
  sub->add_option("model", a.model, "Hugging Face model directory, GGUF file or llama2.c .bin checkpoint")->required();
  sub->add_option("--text", a.text, "Calibration text (e.g. a slice of the training data or wiki.train.raw)")
      ->required();
  sub->add_option("-o,--output", a.out, "Output file (GGUF, as llama-imatrix writes)")->required();
  sub->add_option("-c,--ctx", a.ctx, "Tokens per chunk")->capture_default_str()->check(CLI::Range(16, 1 << 20));
  sub->add_option("--chunks", a.chunks, "Use at most this many chunks (-1 = the whole text)")->capture_default_str();
  sub->add_option("-t,--threads", a.threads, "Threads (0 = all cores)")->capture_default_str()->check(CLI::Range(0, 1024));
  sub->add_option("--tokenizer", a.tokenizer, "Use this tokenizer file instead of the model's");
  sub->add_flag("--process-output", a.process_output, "Also measure the output matrix (llama-imatrix --process-output)");
  sub->add_flag("-f,--force", a.force, "Replace the output if it exists");
  add_json_flag(sub, a.json);
  add_command(app, sub, [] { return run_imatrix(a); });
}

}  // namespace qforge::cli
