// qforge generate MODEL -p TEXT: stream a continuation and report prompt / generation speed.
#include <fmt/format.h>

#include <cstdio>
#include <random>
#include <sstream>

#include "commands.h"
#include "qforge/error.h"
#include "qforge/model.h"
#include "qforge/sampler.h"
#include "qforge/session.h"
#include "qforge/sysinfo.h"

namespace qforge::cli {

namespace {
struct GenerateArgs {
  std::string model, prompt, prompt_file, ids, tokenizer;
  int n_predict = 128, threads = 0, ctx = 0;
  int64_t seed = -1;
  bool no_bos = false, ignore_eos = false, quiet = false;
  SamplerParams sp;
  LoadQuantizeFlags lq;
  JsonFlag json;
};

std::vector<int> parse_ids(const std::string& s, int vocab) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    char* end = nullptr;
    long v = std::strtol(item.c_str(), &end, 10);
    if (*end != '\0') fail("generate: --ids: '{}' is not a token id", item);
    if (v < 0 || v >= vocab) fail("generate: --ids: token id {} is out of range for vocabulary size {}", v, vocab);
    out.push_back(int(v));
  }
  return out;
}

int run_generate(GenerateArgs& a) {
  Stopwatch load_sw;
  LoadOptions lo;
  lo.tokenizer_path = a.tokenizer;
  auto m = load_model(a.model, lo);
  apply_load_quantize(*m, a.lq, a.threads);
  const double load_s = load_sw.seconds();
  const Tokenizer* tok = m->tokenizer.get();
  const int V = m->cfg.vocab_size;

  if (!a.prompt_file.empty()) a.prompt = read_text_file(a.prompt_file);
  std::vector<int> prompt;
  if (!a.ids.empty()) {
    prompt = parse_ids(a.ids, V);
  } else if (!a.prompt.empty()) {
    if (!tok) fail("generate: {}: the model has no tokenizer; pass token ids with --ids or a --tokenizer", a.model);
    prompt = tok->encode(a.prompt, !a.no_bos && tok->add_bos_default());
  }
  if (prompt.empty()) {  // generate from BOS alone
    const int bos = tok ? tok->bos_id() : m->cfg.bos_token_id;
    if (bos < 0) fail("generate: {}: the model has no BOS token; give a prompt with -p or --ids", a.model);
    prompt.push_back(bos);
  }
  const int eos = tok ? tok->eos_id() : m->cfg.eos_token_id;

  SessionOptions so;
  so.n_threads = a.threads;
  so.n_ctx = a.ctx > 0 ? a.ctx : std::min<int>(m->cfg.max_ctx, int(prompt.size()) + a.n_predict);
  if (so.n_ctx > m->cfg.max_ctx)
    fail("generate: context {} (prompt {} + {} new tokens) is longer than the model's {}", so.n_ctx, prompt.size(),
         a.n_predict, m->cfg.max_ctx);
  if (int(prompt.size()) >= so.n_ctx)
    fail("generate: the prompt has {} tokens, which leaves no room in a context of {}", prompt.size(), so.n_ctx);
  Session s(*m, so);

  if (a.seed < 0) a.seed = int64_t(std::random_device{}() & 0x7fffffff);
  a.sp.seed = uint64_t(a.seed);
  Sampler sampler(a.sp);

  std::string text;
  auto emit = [&](int id, int prev) {
    if (!tok) {
      std::string piece = fmt::format(" {}", id);
      std::fputs(piece.c_str(), stdout);
      text += piece;
      return;
    }
    std::string piece = tok->token_text(id, prev);
    text += piece;
    if (!a.quiet) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
  };
  if (!a.quiet && tok) {  // echo the prompt as the model sees it
    for (size_t i = 0; i < prompt.size(); ++i) {
      if (int(prompt[i]) == tok->bos_id()) continue;
      std::string p = tok->token_text(prompt[i], i ? prompt[i - 1] : -1);
      std::fwrite(p.data(), 1, p.size(), stdout);
    }
    std::fflush(stdout);
  }

  Stopwatch sw;
  s.eval(prompt);
  const double prompt_s = sw.seconds();
  std::vector<int> history = prompt;
  std::vector<int> generated;
  sw.reset();
  int next = sampler.sample(s.logits(), V, history);
  while (true) {
    if (next == eos && !a.ignore_eos) break;
    emit(next, history.back());
    history.push_back(next);
    generated.push_back(next);
    if (int(generated.size()) >= a.n_predict || s.n_past() >= s.n_ctx()) break;
    s.eval(std::span<const int>(&next, 1));
    next = sampler.sample(s.logits(), V, history);
  }
  const double gen_s = sw.seconds();
  std::printf("\n");
  std::fflush(stdout);
  const double prompt_tps = double(prompt.size()) / prompt_s;
  // The first generated token comes from the prompt's logits; each later one costs one eval.
  const int evals = std::max<int>(0, int(generated.size()) - 1);
  const double gen_tps = evals > 0 ? double(evals) / gen_s : 0.0;
  fmt::print(stderr,
             "\nprompt: {} tokens in {:.3f} s ({:.1f} tok/s) | generation: {} tokens, {:.1f} tok/s | threads {} | "
             "seed {} | load {:.2f} s | peak RSS {}\n",
             prompt.size(), prompt_s, prompt_tps, generated.size(), gen_tps, s.n_threads(), a.seed, load_s,
             human_bytes(peak_rss_bytes()));
  emit_json(a.json, {{"prompt_tokens", prompt.size()},
                     {"generated_tokens", generated.size()},
                     {"prompt_seconds", prompt_s},
                     {"prompt_tokens_per_second", prompt_tps},
                     {"generation_seconds", gen_s},
                     {"generation_tokens_per_second", gen_tps},
                     {"threads", s.n_threads()},
                     {"seed", a.seed},
                     {"load_seconds", load_s},
                     {"peak_rss_bytes", peak_rss_bytes()},
                     {"weight_bytes", m->weight_bytes()},
                     {"kv_cache_bytes", s.kv_cache_bytes()},
                     {"ids", generated},
                     {"text", text}});
  return 0;
}
}  // namespace

void register_generate(CLI::App& app) {
  static GenerateArgs a;
  auto* sub = app.add_subcommand("generate", "Generate text from a prompt, streaming tokens as they come");
  sub->add_option("model", a.model, "Hugging Face model directory, GGUF file or llama2.c .bin checkpoint")->required();
  sub->add_option("-p,--prompt", a.prompt, "Prompt text (default: start from BOS alone)");
  sub->add_option("-f,--file", a.prompt_file, "Read the prompt from a file");
  sub->add_option("--ids", a.ids, "Prompt as comma-separated token ids (for models without a tokenizer)");
  sub->add_option("-n,--n-predict", a.n_predict, "Number of tokens to generate")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  sub->add_option("--temp", a.sp.temperature, "Temperature; 0 = greedy")->capture_default_str()->check(CLI::Range(0.0, 100.0));
  sub->add_option("--top-k", a.sp.top_k, "Keep the k most likely tokens; 0 = off")->capture_default_str()->check(CLI::NonNegativeNumber);
  sub->add_option("--top-p", a.sp.top_p, "Nucleus sampling mass; 1 = off")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  sub->add_option("--repeat-penalty", a.sp.repeat_penalty, "Penalty for recently seen tokens; 1 = off")->capture_default_str()->check(CLI::Range(0.0, 10.0));
  sub->add_option("--repeat-last-n", a.sp.repeat_last_n, "How many recent tokens the penalty looks at (-1 = all)")->capture_default_str();
  sub->add_option("-s,--seed", a.seed, "Random seed (-1 = random; the seed used is printed)")->capture_default_str();
  sub->add_option("-t,--threads", a.threads, "Threads (0 = all cores)")->capture_default_str()->check(CLI::Range(0, 1024));
  sub->add_option("-c,--ctx", a.ctx, "Context size (0 = prompt + n-predict, capped by the model)")->capture_default_str()->check(CLI::NonNegativeNumber);
  sub->add_option("--tokenizer", a.tokenizer, "Use this tokenizer file (tokenizer.model, tokenizer.json, llama2.c tokenizer.bin or a .gguf)");
  sub->add_flag("--no-bos", a.no_bos, "Do not prepend BOS to the prompt");
  sub->add_flag("--ignore-eos", a.ignore_eos, "Keep generating past the end-of-sequence token");
  sub->add_flag("-q,--quiet", a.quiet, "Do not stream the text (timing only)");
  add_load_quantize_flags(sub, a.lq);
  add_json_flag(sub, a.json);
  add_command(app, sub, [] { return run_generate(a); });
}

}  // namespace qforge::cli
