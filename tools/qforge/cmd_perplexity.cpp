// qforge perplexity MODEL --text FILE: llama-perplexity's protocol, so figures compare one to one.
// With --kl-divergence-base FILE it also saves the model's log-probabilities at every scored
// position; a second run with --kl-divergence compares another model against that file.
#include <fmt/format.h>
#include <unistd.h>

#include "commands.h"
#include "qforge/error.h"
#include "qforge/kl_divergence.h"
#include "qforge/mmap.h"
#include "qforge/perplexity.h"
#include "qforge/sysinfo.h"

namespace qforge::cli {

namespace {
struct PerplexityArgs {
  std::string model, text, tokenizer, kl_base;
  int ctx = 512, chunks = -1, threads = 0;
  bool kl = false, force = false;
  LoadQuantizeFlags lq;
  JsonFlag json;
  CLI::Option* ctx_option = nullptr;  // to tell a -c the user gave from the default
};

std::unique_ptr<Model> load(const PerplexityArgs& a) {
  LoadOptions lo;
  lo.tokenizer_path = a.tokenizer;
  auto m = load_model(a.model, lo);
  apply_load_quantize(*m, a.lq, a.threads);
  return m;
}

std::vector<int> tokenize_text(const Model& m, const PerplexityArgs& a) {
  if (!m.tokenizer) fail("perplexity: {}: the model has no tokenizer; pass one with --tokenizer", a.model);
  const std::string text = read_text_file(a.text, size_t(1) << 30);
  Stopwatch sw;
  std::vector<int> tokens = m.tokenizer->encode(text, /*add_bos=*/true);
  fmt::print(stderr, "perplexity: {} tokens from {} ({} bytes) in {:.2f} s\n", tokens.size(), a.text, text.size(),
             sw.seconds());
  return tokens;
}

// Per-chunk progress on stderr: a line that rewrites itself on a terminal, llama-perplexity's
// "[1]6.4854,[2]..." otherwise. `extra` adds to each entry (the running KL).
auto make_progress(std::function<std::string()> extra = {}) {
  const bool tty = isatty(STDERR_FILENO);
  return [tty, extra, sw = Stopwatch()](int c, int n, double ppl) {
    const double eta = sw.seconds() / (c + 1) * (n - c - 1);
    const std::string more = extra ? extra() : std::string();
    if (tty)
      fmt::print(stderr, "\r  chunk {:>4}/{}  running PPL {:.4f}{}  ETA {:.0f} s   ", c + 1, n, ppl, more, eta);
    else
      fmt::print(stderr, "[{}]{:.4f}{}{}", c + 1, ppl, more, c + 1 == n ? "\n" : ",");
    if (tty && c + 1 == n) fmt::print(stderr, "\n");
  };
}

int run_perplexity(const PerplexityArgs& a) {
  if (a.text.empty())
    fail("perplexity: --text FILE is required (only --kl-divergence can take its tokens from the base file)");
  // A base file can take hours to make; a run that forgot --kl-divergence must not replace it.
  if (!a.kl_base.empty() && file_exists(a.kl_base) && !a.force)
    fail("perplexity: {}: already exists; add --kl-divergence to compare with it, or -f to replace it", a.kl_base);
  auto m = load(a);
  const std::vector<int> tokens = tokenize_text(*m, a);
  PerplexityOptions po;
  po.n_ctx = a.ctx;
  po.n_chunks = a.chunks;
  po.n_threads = a.threads;

  // --kl-divergence-base: stream the scored rows to the file as they come.
  std::unique_ptr<KlBaseWriter> writer;
  if (!a.kl_base.empty() && int64_t(tokens.size()) >= 2 * int64_t(a.ctx)) {
    const int n_chunks = perplexity_chunks(tokens.size(), po);
    const int V = m->cfg.vocab_size;
    fmt::print(stderr, "perplexity: saving the log-probabilities of {} positions to {} ({})\n",
               int64_t(n_chunks) * kl_rows_per_chunk(a.ctx), a.kl_base,
               human_bytes(kl_base_file_size(a.ctx, V, n_chunks)));
    writer = std::make_unique<KlBaseWriter>(a.kl_base, a.ctx, V,
                                            std::span<const int>(tokens.data(), size_t(n_chunks) * size_t(a.ctx)));
    po.on_scored_row = [w = writer.get()](int, int, const float* logits, int next) { w->add_row(logits, next); };
  }
  PerplexityResult r = compute_perplexity(*m, tokens, po, make_progress());
  fmt::print("PPL = {:.4f} +/- {:.5f}  ({} chunks of {} tokens, {} tokens scored, {:.1f} tok/s)\n", r.ppl, r.ppl_stderr,
             r.chunks, a.ctx, r.tokens_scored, r.tokens_per_second);
  nlohmann::json j = {{"ppl", r.ppl},
                      {"ppl_stderr", r.ppl_stderr},
                      {"mean_nll", r.mean_nll},
                      {"tokens_scored", r.tokens_scored},
                      {"tokens_in_text", r.tokens_in_text},
                      {"chunks", r.chunks},
                      {"ctx", a.ctx},
                      {"seconds", r.seconds},
                      {"tokens_per_second", r.tokens_per_second}};
  if (writer) {
    const uint64_t bytes = writer->bytes_written();
    writer->commit();
    fmt::print("KL-divergence base: {} ({} positions, {})\n", a.kl_base, writer->rows_written(), human_bytes(bytes));
    j["kl_divergence_base"] = a.kl_base;
    j["kl_divergence_base_bytes"] = bytes;
  }
  j["peak_rss_bytes"] = peak_rss_bytes();
  emit_json(a.json, j);
  return 0;
}

// Checks that this run scores what the base run scored: same context, chunks, vocabulary and tokens.
void check_base_matches(const KlBaseFile& base, const Model& m, const PerplexityArgs& a) {
  const std::string& f = base.path();
  if (a.ctx_option->count() > 0 && a.ctx != base.n_ctx())
    fail(
        "perplexity: {}: the base file was written with --ctx {}, this run asks for --ctx {} (leave -c out to use "
        "the file's)",
        f, base.n_ctx(), a.ctx);
  if (a.chunks > 0 && a.chunks != base.n_chunks())
    fail(
        "perplexity: {}: the base file holds {} chunks, this run asks for --chunks {} (leave --chunks out to use "
        "the file's)",
        f, base.n_chunks(), a.chunks);
  if (base.n_ctx() > m.cfg.max_ctx)
    fail("perplexity: {}: the base file was written with --ctx {}, longer than {}'s context ({} positions)", f,
         base.n_ctx(), a.model, m.cfg.max_ctx);
  if (m.cfg.vocab_size != base.n_vocab())
    fail("perplexity: {}: the base model's vocabulary has {} tokens, {} has {}: the models do not share a tokenizer", f,
         base.n_vocab(), a.model, m.cfg.vocab_size);
  if (a.text.empty()) return;
  const std::vector<int> text = tokenize_text(m, a);
  const std::vector<int>& want = base.tokens();
  if (text.size() < want.size())
    fail(
        "perplexity: {}: --text {} has {} tokens, fewer than the {} ({} chunks of {}) the base file scored: not the "
        "same text",
        f, a.text, text.size(), want.size(), base.n_chunks(), base.n_ctx());
  for (size_t i = 0; i < want.size(); ++i)
    if (text[i] != want[i])
      fail(
          "perplexity: {}: token {} (chunk {}, position {}) is {} in the base file but {} in --text {}: not the "
          "same text or tokenizer",
          f, i, i / size_t(base.n_ctx()), i % size_t(base.n_ctx()), want[i], text[i], a.text);
}

int run_kl_divergence(const PerplexityArgs& a) {
  if (a.kl_base.empty())
    fail(
        "perplexity: --kl-divergence needs --kl-divergence-base FILE, written by an earlier run of the base model "
        "without --kl-divergence");
  auto base = KlBaseFile::open(a.kl_base);  // validated before the model is loaded: fail fast
  auto m = load(a);
  check_base_matches(*base, *m, a);
  const int n_ctx = base->n_ctx(), V = base->n_vocab();
  fmt::print(stderr, "perplexity: comparing {} with the base in {}: {} chunks of {} tokens, {} positions\n", a.model,
             a.kl_base, base->n_chunks(), n_ctx, int64_t(base->n_chunks()) * base->rows_per_chunk());

  KlAccumulator acc(V);
  std::vector<float> base_row(static_cast<size_t>(V));
  PerplexityOptions po;
  po.n_ctx = n_ctx;
  po.n_chunks = base->n_chunks();
  po.n_threads = a.threads;
  po.require_two_contexts = false;
  po.on_scored_row = [&](int c, int j, const float* logits, int next) {
    const float floor = base->decode_row(c, j - n_ctx / 2, base_row.data());
    acc.add_log_probs(base_row.data(), floor, logits, next);
    if (j == n_ctx - 2) base->release_chunk(c);
  };
  const PerplexityResult r = compute_perplexity(
      *m, base->tokens(), po, make_progress([&] { return fmt::format(" KL {:.6f}", acc.mean_kl()); }));
  const KlStats s = acc.stats();

  fmt::print("KL divergence of {} from the base in {}\n", a.model, a.kl_base);
  fmt::print("  {} chunks of {} tokens, {} positions scored, {:.1f} tok/s\n", r.chunks, n_ctx, s.tokens,
             r.tokens_per_second);
  fmt::print("  PPL         test {:.4f} +/- {:.5f}   base {:.4f} +/- {:.5f}\n", s.ppl, s.ppl_stderr, s.ppl_base,
             s.ppl_base_stderr);
  fmt::print("  delta PPL   {:+.6f} +/- {:.6f}   ratio {:.6f} +/- {:.6f}   ln ratio {:+.6f} +/- {:.6f}\n", s.ppl_diff,
             s.ppl_diff_stderr, s.ppl_ratio, s.ppl_ratio_stderr, s.ln_ppl_ratio, s.ln_ppl_ratio_stderr);
  fmt::print("              correlation of the per-token log-likelihoods {:.2f}%\n", 100.0 * s.ln_ppl_correlation);
  fmt::print("  KL (nats)   mean {:.6f} +/- {:.6f}\n", s.kl_mean, s.kl_stderr);
  fmt::print("              median {:.6f}   p90 {:.6f}   p95 {:.6f}   p99 {:.6f}   p99.9 {:.6f}   max {:.6f}\n",
             s.kl_median, s.kl_p90, s.kl_p95, s.kl_p99, s.kl_p999, s.kl_max);
  fmt::print("              min {:.6f}   p1 {:.6f}   p5 {:.6f}   p10 {:.6f}\n", s.kl_min, s.kl_p01, s.kl_p05, s.kl_p10);
  fmt::print("  top-1       same token {:.3f}% +/- {:.3f}%\n", 100.0 * s.top1_agreement,
             100.0 * s.top1_agreement_stderr);
  fmt::print("  delta p     RMS {:.3f}% +/- {:.3f}%   mean {:+.3f}% +/- {:.3f}%\n", 100.0 * s.dp_rms,
             100.0 * s.dp_rms_stderr, 100.0 * s.dp_mean, 100.0 * s.dp_stderr);
  fmt::print(
      "              min {:+.3f}%   p1 {:+.3f}%   p5 {:+.3f}%   median {:+.3f}%   p95 {:+.3f}%   p99 {:+.3f}%   "
      "max {:+.3f}%\n",
      100.0 * s.dp_min, 100.0 * s.dp_p01, 100.0 * s.dp_p05, 100.0 * s.dp_median, 100.0 * s.dp_p95, 100.0 * s.dp_p99,
      100.0 * s.dp_max);
  emit_json(a.json, {{"kl_divergence_base", a.kl_base},
                     {"tokens_scored", s.tokens},
                     {"chunks", r.chunks},
                     {"ctx", n_ctx},
                     {"ppl", s.ppl},
                     {"ppl_stderr", s.ppl_stderr},
                     {"ppl_base", s.ppl_base},
                     {"ppl_base_stderr", s.ppl_base_stderr},
                     {"ln_ppl_correlation", s.ln_ppl_correlation},
                     {"ln_ppl_ratio", s.ln_ppl_ratio},
                     {"ln_ppl_ratio_stderr", s.ln_ppl_ratio_stderr},
                     {"ppl_ratio", s.ppl_ratio},
                     {"ppl_ratio_stderr", s.ppl_ratio_stderr},
                     {"ppl_diff", s.ppl_diff},
                     {"ppl_diff_stderr", s.ppl_diff_stderr},
                     {"kl_mean", s.kl_mean},
                     {"kl_stderr", s.kl_stderr},
                     {"kl_min", s.kl_min},
                     {"kl_p01", s.kl_p01},
                     {"kl_p05", s.kl_p05},
                     {"kl_p10", s.kl_p10},
                     {"kl_median", s.kl_median},
                     {"kl_p90", s.kl_p90},
                     {"kl_p95", s.kl_p95},
                     {"kl_p99", s.kl_p99},
                     {"kl_p999", s.kl_p999},
                     {"kl_max", s.kl_max},
                     {"top1_agreement", s.top1_agreement},
                     {"top1_agreement_stderr", s.top1_agreement_stderr},
                     {"dp_mean", s.dp_mean},
                     {"dp_stderr", s.dp_stderr},
                     {"dp_rms", s.dp_rms},
                     {"dp_rms_stderr", s.dp_rms_stderr},
                     {"dp_min", s.dp_min},
                     {"dp_p01", s.dp_p01},
                     {"dp_p05", s.dp_p05},
                     {"dp_p10", s.dp_p10},
                     {"dp_median", s.dp_median},
                     {"dp_p90", s.dp_p90},
                     {"dp_p95", s.dp_p95},
                     {"dp_p99", s.dp_p99},
                     {"dp_max", s.dp_max},
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
      "second half of each chunk scored. Also compares a model with a base model by KL divergence.");
  sub->footer(
      "KL divergence (e.g. a quantized model against its original) takes two runs:\n"
      "  1. qforge perplexity BASE_MODEL --text FILE [-c N --chunks N] --kl-divergence-base BASE.kld\n"
      "     the usual perplexity run; it also saves the base model's log-probabilities at every scored\n"
      "     position (about 2 bytes x vocabulary size per position: ctx/2 positions per chunk).\n"
      "  2. qforge perplexity TEST_MODEL --kl-divergence-base BASE.kld --kl-divergence [--text FILE]\n"
      "     runs TEST_MODEL on the tokens saved in BASE.kld (-c and --chunks come from the file; --text,\n"
      "     -c, --chunks, if given, are checked against it) and reports PPL of both models, delta PPL and\n"
      "     ln(PPL/PPL_base) with their uncertainties, mean KL divergence +/- its standard error with its\n"
      "     percentiles (median, p90, p95, p99, max), the top-1 token agreement and the change in the\n"
      "     probability of the right token (RMS delta p).\n"
      "BASE.kld has llama-perplexity's --kl-divergence-base layout: each program reads the other's files.\n"
      "It stores log-probabilities with 16-bit steps over the top 16 nats (within 1.2e-4 nats).");
  sub->add_option("model", a.model, "Hugging Face model directory, GGUF file or llama2.c .bin checkpoint")->required();
  sub->add_option("--text", a.text, "Text file to score (e.g. wiki.test.raw); optional with --kl-divergence");
  a.ctx_option =
      sub->add_option("-c,--ctx", a.ctx, "Tokens per chunk")->capture_default_str()->check(CLI::Range(4, 1 << 20));
  sub->add_option("--chunks", a.chunks, "Score at most this many chunks (-1 = all)")->capture_default_str();
  sub->add_option("-t,--threads", a.threads, "Threads (0 = all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  sub->add_option("--tokenizer", a.tokenizer, "Use this tokenizer file instead of the model's");
  sub->add_option("--kl-divergence-base", a.kl_base,
                  "Save the log-probabilities to FILE; with --kl-divergence,\nthe base model's FILE to compare with")
      ->type_name("FILE");
  sub->add_flag("--kl-divergence", a.kl, "Compare the model with the --kl-divergence-base FILE\n(see below)");
  sub->add_flag("-f,--force", a.force, "Replace an existing --kl-divergence-base FILE");
  add_load_quantize_flags(sub, a.lq);
  add_json_flag(sub, a.json);
  add_command(app, sub, [] { return a.kl ? run_kl_divergence(a) : run_perplexity(a); });
}

}  // namespace qforge::cli
