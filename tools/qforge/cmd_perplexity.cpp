// qforge perplexity MODEL --text FILE: llama-perplexity's protocol, so figures compare one to one.
#include <fmt/format.h>
#include <unistd.h>

#include "commands.h"
#include "qforge/error.h"
#include "qforge/perplexity.h"
#include "qforge/sysinfo.h"

namespace qforge::cli {

namespace {
struct PerplexityArgs {
  std::string model, text, tokenizer;
  int ctx = 512, chunks = -1, threads = 0;
  JsonFlag json;
};

int run_perplexity(const PerplexityArgs& a) {
  LoadOptions lo;
  lo.tokenizer_path = a.tokenizer;
  auto m = load_model(a.model, lo);
  if (!m->tokenizer) fail("perplexity: {}: the model has no tokenizer; pass one with --tokenizer", a.model);
  const std::string text = read_text_file(a.text, size_t(1) << 30);
  Stopwatch tsw;
  const std::vector<int> tokens = m->tokenizer->encode(text, /*add_bos=*/true);
  fmt::print(stderr, "perplexity: {} tokens from {} ({} bytes) in {:.2f} s\n", tokens.size(), a.text, text.size(),
             tsw.seconds());
  PerplexityOptions po{.n_ctx = a.ctx, .n_chunks = a.chunks, .n_threads = a.threads};
  const bool tty = isatty(STDERR_FILENO);
  Stopwatch sw;
  auto progress = [&](int c, int n, double ppl) {
    const double eta = sw.seconds() / (c + 1) * (n - c - 1);
    if (tty)
      fmt::print(stderr, "\r  chunk {:>4}/{}  running PPL {:.4f}  ETA {:.0f} s   ", c + 1, n, ppl, eta);
    else
      fmt::print(stderr, "[{}]{:.4f}{}", c + 1, ppl, c + 1 == n ? "\n" : ",");
  };
  PerplexityResult r = compute_perplexity(*m, tokens, po, progress);
  if (tty) fmt::print(stderr, "\n");
  fmt::print("PPL = {:.4f} +/- {:.5f}  ({} chunks of {} tokens, {} tokens scored, {:.1f} tok/s)\n", r.ppl,
             r.ppl_stderr, r.chunks, a.ctx, r.tokens_scored, r.tokens_per_second);
  emit_json(a.json, {{"ppl", r.ppl},
                     {"ppl_stderr", r.ppl_stderr},
                     {"mean_nll", r.mean_nll},
                     {"tokens_scored", r.tokens_scored},
                     {"tokens_in_text", r.tokens_in_text},
                     {"chunks", r.chunks},
                     {"ctx", a.ctx},
                     {"seconds", r.seconds},
                     {"tokens_per_second", r.tokens_per_second},
                     {"peak_rss_bytes", peak_rss_bytes()}});
  return 0;
}
}  // namespace

void register_perplexity(CLI::App& app) {
  static PerplexityArgs a;
  auto* sub = app.add_subcommand(
      "perplexity",
      "Perplexity of a text, with llama-perplexity's protocol: the text tokenized with BOS, cut into\n"
      "non-overlapping chunks of --ctx tokens, the first token of each chunk set to BOS, and only the\n"
      "second half of each chunk scored");
  sub->add_option("model", a.model, "Hugging Face model directory, GGUF file or llama2.c .bin checkpoint")->required();
  sub->add_option("--text", a.text, "Text file to score (e.g. wiki.test.raw)")->required();
  sub->add_option("-c,--ctx", a.ctx, "Tokens per chunk")->capture_default_str()->check(CLI::Range(4, 1 << 20));
  sub->add_option("--chunks", a.chunks, "Score at most this many chunks (-1 = all)")->capture_default_str();
  sub->add_option("-t,--threads", a.threads, "Threads (0 = all cores)")->capture_default_str()->check(CLI::Range(0, 1024));
  sub->add_option("--tokenizer", a.tokenizer, "Use this tokenizer file instead of the model's");
  add_json_flag(sub, a.json);
  add_command(app, sub, [] { return run_perplexity(a); });
}

}  // namespace qforge::cli
