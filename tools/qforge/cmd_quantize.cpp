// qforge quantize MODEL --type T -o OUT: write a smaller model (GGUF for llama.cpp, or an HF
// directory for f16/bf16), then report what it gained (size, speed) and what it cost (PPL, KL).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "commands.h"
#include "qforge/error.h"
#include "qforge/model_compare.h"
#include "qforge/quantize.h"
#include "qforge/speed.h"
#include "qforge/sysinfo.h"

namespace qforge::cli {

namespace {

struct QuantizeArgs {
  std::string model, out, type, format = "gguf", eval_text, eval_prompt, imatrix;
  std::vector<std::string> keep;
  int threads = 0, eval_ctx = 256, eval_chunks = 20, eval_runs = 3, eval_prompt_tokens = 128, eval_gen = 32;
  bool no_eval = false, allow_requantize = false, force = false, pure = false;
  JsonFlag json;
};

std::string fmt_duration(double s) {
  if (s < 60) return fmt::format("{:.0f} s", s);
  return fmt::format("{}:{:02d}", int(s) / 60, int(s) % 60);
}

// One line per tensor on a terminal (redrawn), one line per finished tensor in a log.
class ProgressBar {
 public:
  explicit ProgressBar(bool tty) : tty_(tty) {}
  void update(const QuantizeProgress& p) {
    const double frac = p.weights_total ? double(p.weights_done) / double(p.weights_total) : 1.0;
    const double eta = frac > 0.002 ? p.elapsed_s / frac * (1 - frac) : 0;
    constexpr int kWidth = 24;
    const int fill = int(frac * kWidth + 0.5);
    const std::string bar = std::string(size_t(fill), '#') + std::string(size_t(kWidth - fill), '.');
    const std::string line = fmt::format("[{:>4}/{}] {:<28} {:<7} |{}| {:5.1f}%  {} elapsed, ETA {}", p.index + 1,
                                         p.count, *p.name, p.type, bar, 100 * frac, fmt_duration(p.elapsed_s),
                                         fmt_duration(eta));
    if (tty_) {
      fmt::print(stderr, "\r{:<120}", line);
      if (p.weights_done == p.weights_total && p.index + 1 == p.count) fmt::print(stderr, "\n");
    } else if (p.index != last_index_) {
      fmt::print(stderr, "{}\n", line);
      last_index_ = p.index;
    }
  }

 private:
  bool tty_;
  size_t last_index_ = size_t(-1);
};

std::vector<int> eval_prompt_tokens(const Model& m, const QuantizeArgs& a) {
  static const char* kDefault =
      "Once upon a time, in a small village at the edge of a great forest, there lived a girl who loved to "
      "explore. Every morning she walked along the river, looking for stones, birds and the tracks of animals.";
  std::string text = a.eval_prompt.empty() ? kDefault : a.eval_prompt;
  if (a.eval_prompt.empty() && !a.eval_text.empty()) text = read_text_file(a.eval_text, size_t(1) << 20);
  if (!m.tokenizer) return {std::max(0, m.cfg.bos_token_id)};
  return m.tokenizer->encode(text, true);
}

int run_quantize(QuantizeArgs& a) {
  namespace fs = std::filesystem;
  if (a.threads <= 0) a.threads = default_threads();
  if (fs::exists(a.out) && !a.force) fail("quantize: {}: already exists (pass --force to replace it)", a.out);
  QuantizeOptions qo;
  qo.type = a.type;
  qo.keep = a.keep;
  qo.n_threads = a.threads;
  qo.allow_requantize = a.allow_requantize;
  qo.pure = a.pure;
  if (a.format == "gguf") qo.format = QuantizeFormat::Gguf;
  else if (a.format == "hf") qo.format = QuantizeFormat::Hf;
  else fail("quantize: --format {}: unknown (choose gguf or hf)", a.format);

  ImportanceMatrix im;
  if (!a.imatrix.empty()) {
    im = load_imatrix(a.imatrix);
    qo.importance = &im;
    fmt::print(stderr, "quantize: importance matrix {}: {} entries{}{}\n", a.imatrix, im.entries.size(),
               im.chunk_count ? fmt::format(", {} chunks", im.chunk_count) : "",
               im.datasets.empty() ? "" : fmt::format(" of {}", im.datasets[0]));
  }
  auto src = load_model(a.model);
  fmt::print(stderr, "quantize: {} ({}, {} of weights) -> {} ({} {}) with {} threads\n", a.model, src->source_format,
             human_bytes(src->weight_bytes()), a.out, a.format, a.type, a.threads);
  ProgressBar bar(isatty(STDERR_FILENO));
  qo.on_progress = [&](const QuantizeProgress& p) { bar.update(p); };
  const QuantizeReport r = quantize_model(*src, a.out, qo);

  std::map<std::string, int> per_type;
  for (const auto& t : r.tensors) ++per_type[t.type];
  std::string mix;
  for (const auto& [t, n] : per_type) mix += fmt::format("{}{} {}", mix.empty() ? "" : ", ", n, t);
  // Why tensors got another type than the mix's own, grouped by reason (every tensor is in --json).
  std::vector<std::pair<std::string, std::vector<std::string>>> reasons;
  for (const auto& t : r.tensors) {
    if (t.note.empty() || t.note == "1-D tensor kept f32") continue;
    auto it = std::find_if(reasons.begin(), reasons.end(), [&](const auto& p) { return p.first == t.note; });
    if (it == reasons.end()) reasons.push_back({t.note, {t.name}});
    else it->second.push_back(t.name);
  }
  for (const auto& [why, names] : reasons)
    fmt::print(stderr, "  note: {}{}\n", why,
               names.size() == 1 || why.find(names[0]) != std::string::npos
                   ? ""
                   : fmt::format(" ({} tensors: {}{})", names.size(), names[0], names.size() > 1 ? ", ..." : ""));
  for (const auto& w : r.warnings) fmt::print(stderr, "  warning: {}\n", w);
  const double reduction = r.src_file_bytes ? 100.0 * (1.0 - double(r.out_file_bytes) / double(r.src_file_bytes)) : 0;
  fmt::print("quantized {} -> {} ({}) in {:.1f} s ({:.1f} M weights/s)\n", a.model, r.output, r.type, r.seconds,
             double(r.n_weights) / std::max(r.seconds, 1e-9) / 1e6);
  fmt::print("  tensors: {}\n", mix);
  if (!r.imatrix.empty()) fmt::print("  importance matrix: {} ({} matrices quantized with it)\n", r.imatrix, r.imatrix_tensors);
  fmt::print("  size on disk: {} -> {} ({:.1f}% smaller); {:.3f} bits per weight\n", human_bytes(r.src_file_bytes),
             human_bytes(r.out_file_bytes), reduction, r.bits_per_weight());

  nlohmann::json j = {{"input", a.model},
                      {"output", r.output},
                      {"format", r.format},
                      {"type", r.type},
                      {"seconds", r.seconds},
                      {"n_weights", r.n_weights},
                      {"src_file_bytes", r.src_file_bytes},
                      {"out_file_bytes", r.out_file_bytes},
                      {"src_weight_bytes", r.src_weight_bytes},
                      {"out_weight_bytes", r.out_weight_bytes},
                      {"reduction_percent", reduction},
                      {"bits_per_weight", r.bits_per_weight()},
                      {"threads", a.threads},
                      {"warnings", r.warnings}};
  if (!r.imatrix.empty()) j["imatrix"] = {{"file", r.imatrix}, {"tensors", r.imatrix_tensors}};
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : r.tensors)
    tensors.push_back({{"name", t.name}, {"src_type", t.src_type}, {"type", t.type}, {"shape", t.shape},
                       {"bytes", t.bytes}, {"note", t.note}});
  j["tensors"] = tensors;

  if (!a.no_eval) {
    auto q = load_model(r.output);
    SpeedOptions so{.n_prompt = a.eval_prompt_tokens, .n_gen = a.eval_gen, .runs = a.eval_runs, .n_threads = a.threads};
    const std::vector<int> prompt = eval_prompt_tokens(*src, a);
    fmt::print(stderr, "quantize: timing {} prompt tokens + {} generated, median of {} runs, each model...\n",
               so.n_prompt, so.n_gen, so.runs);
    const SpeedResult s0 = measure_speed(*src, prompt, so), s1 = measure_speed(*q, prompt, so);
    auto pct = [](double base, double x) { return base > 0 ? 100.0 * (x / base - 1.0) : 0.0; };
    fmt::print("  speed ({} threads, median of {} runs):\n", a.threads, so.runs);
    fmt::print("    original   prompt {:8.1f} tok/s   generation {:7.2f} tok/s\n", s0.prompt_tps, s0.gen_tps);
    fmt::print("    quantized  prompt {:8.1f} tok/s   generation {:7.2f} tok/s   speed-up: prompt {:+.0f}%, "
               "generation {:+.0f}%\n",
               s1.prompt_tps, s1.gen_tps, pct(s0.prompt_tps, s1.prompt_tps), pct(s0.gen_tps, s1.gen_tps));
    j["speed"] = {{"runs", so.runs},
                  {"prompt_tokens", s0.n_prompt},
                  {"gen_tokens", s0.n_gen},
                  {"original", {{"prompt_tps", s0.prompt_tps}, {"gen_tps", s0.gen_tps}}},
                  {"quantized", {{"prompt_tps", s1.prompt_tps}, {"gen_tps", s1.gen_tps}}},
                  {"prompt_speedup_percent", pct(s0.prompt_tps, s1.prompt_tps)},
                  {"gen_speedup_percent", pct(s0.gen_tps, s1.gen_tps)}};
    if (!a.eval_text.empty()) {
      if (!src->tokenizer) fail("quantize: {}: --eval-text needs the model's tokenizer", a.model);
      const std::string text = read_text_file(a.eval_text, size_t(1) << 30);
      const std::vector<int> tokens = src->tokenizer->encode(text, true);
      fmt::print(stderr, "quantize: scoring {} chunks of {} tokens of {} with both models...\n", a.eval_chunks,
                 a.eval_ctx, a.eval_text);
      const QualityComparison c = compare_quality(*src, *q, tokens, a.eval_ctx, a.eval_chunks, a.threads);
      fmt::print("  quality ({}, {} chunks of {} tokens, {} tokens scored):\n", a.eval_text, c.chunks, a.eval_ctx,
                 c.tokens);
      fmt::print("    PPL {:.4f} +/- {:.4f} -> {:.4f} +/- {:.4f}  (delta {:+.4f}, {:+.2f}%)\n", c.ppl_base,
                 c.ppl_base_stderr, c.ppl_test, c.ppl_test_stderr, c.ppl_test - c.ppl_base,
                 100.0 * (c.ppl_test / c.ppl_base - 1.0));
      fmt::print("    KL divergence: mean {:.6f} +/- {:.6f}, p99 {:.6f}, max {:.6f}; top-1 agreement {:.2f}%\n",
                 c.kl_mean, c.kl_mean_stderr, c.kl_p99, c.kl_max, 100.0 * c.top1_agreement);
      j["quality"] = {{"text", a.eval_text},       {"ctx", a.eval_ctx},
                      {"chunks", c.chunks},         {"tokens_scored", c.tokens},
                      {"ppl_original", c.ppl_base}, {"ppl_original_stderr", c.ppl_base_stderr},
                      {"ppl_quantized", c.ppl_test}, {"ppl_quantized_stderr", c.ppl_test_stderr},
                      {"delta_ppl", c.ppl_test - c.ppl_base},
                      {"kl_mean", c.kl_mean},       {"kl_mean_stderr", c.kl_mean_stderr},
                      {"kl_p99", c.kl_p99},         {"kl_max", c.kl_max},
                      {"top1_agreement", c.top1_agreement}};
    }
  }
  j["peak_rss_bytes"] = peak_rss_bytes();
  emit_json(a.json, j);
  return 0;
}

}  // namespace

void register_quantize(CLI::App& app) {
  static QuantizeArgs a;
  auto* sub = app.add_subcommand(
      "quantize",
      "Quantize a model and report what it gained and what it cost.\n"
      "  qforge quantize ./my-hf-model --type q4_k_m -o model.gguf\n"
      "  qforge quantize ./my-hf-model --type q4_k_m -o model.gguf --keep 'output\\.weight=q8_0' --eval-text wiki.txt\n"
      "  qforge quantize ./my-hf-model --type bf16 --format hf -o ./my-model-bf16\n"
      "Types: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k iq4_nl, and llama.cpp's mixes\n"
      "q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k (which keep sensitive tensors at more bits).\n"
      "Rows that do not fit a type's block fall back as llama.cpp does; each fallback is reported.");
  sub->add_option("model", a.model, "Hugging Face directory, GGUF (f32/f16/bf16) or llama2.c .bin checkpoint")
      ->required();
  sub->add_option("-o,--output", a.out, "Output GGUF file (or directory with --format hf)")->required();
  sub->add_option("--type", a.type, "Storage type or mix (see above)")->required();
  sub->add_option("--keep", a.keep,
                  "Per-tensor override REGEX=TYPE on the output tensor name, repeatable, first match wins "
                  "(e.g. 'output\\.weight=q8_0', 'blk\\.0\\..*=f16')");
  sub->add_option("--format", a.format, "Output format: gguf, or hf (f16/bf16/f32 only)")->capture_default_str();
  sub->add_option("-t,--threads", a.threads, "Threads (0 = all cores)")->capture_default_str()->check(CLI::Range(0, 1024));
  sub->add_option("--imatrix", a.imatrix,
                  "Importance matrix from llama.cpp's llama-imatrix (GGUF or legacy .dat): matrices it covers are "
                  "quantized to lower weighted error, as llama-quantize --imatrix does (GGUF output only)");
  sub->add_flag("--pure", a.pure, "One type in every matrix, without the mix's per-tensor rules (llama-quantize --pure)");
  sub->add_flag("--allow-requantize", a.allow_requantize, "Accept an already-quantized source (errors compound)");
  sub->add_flag("-f,--force", a.force, "Replace the output if it exists");
  sub->add_flag("--no-eval", a.no_eval, "Skip the speed comparison (and --eval-text) after writing");
  sub->add_option("--eval-text", a.eval_text,
                  "Also compare quality on this text: PPL of both models, KL divergence and top-1 agreement");
  sub->add_option("--eval-ctx", a.eval_ctx, "Tokens per chunk for --eval-text")->capture_default_str()->check(CLI::Range(8, 1 << 20));
  sub->add_option("--eval-chunks", a.eval_chunks, "Chunks scored for --eval-text (-1 = all)")->capture_default_str();
  sub->add_option("--eval-runs", a.eval_runs, "Repetitions of the timing run (medians are reported)")
      ->capture_default_str()->check(CLI::Range(1, 1000));
  sub->add_option("--eval-prompt-tokens", a.eval_prompt_tokens, "Prompt tokens in the timing run")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  sub->add_option("--eval-gen", a.eval_gen, "Generated tokens in the timing run")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  add_json_flag(sub, a.json);
  add_command(app, sub, [] { return run_quantize(a); });
}

}  // namespace qforge::cli
