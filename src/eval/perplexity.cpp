#include "qforge/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>

#include "qforge/error.h"

namespace qforge {

int perplexity_chunks(size_t n_tokens, const PerplexityOptions& opt) {
  if (opt.n_ctx < 1) return 0;
  int n_chunks = int(std::min<size_t>(n_tokens / size_t(opt.n_ctx), size_t(INT32_MAX)));
  if (opt.n_chunks > 0) n_chunks = std::min(n_chunks, opt.n_chunks);
  return n_chunks;
}

PerplexityResult compute_perplexity(const Model& model, const std::vector<int>& tokens, const PerplexityOptions& opt,
                                    const std::function<void(int, int, double)>& progress) {
  const int n_ctx = opt.n_ctx;
  if (n_ctx < 4) fail("perplexity: --ctx must be at least 4, got {}", n_ctx);
  if (n_ctx > model.cfg.max_ctx)
    fail("perplexity: --ctx {} is longer than the model's context ({} positions)", n_ctx, model.cfg.max_ctx);
  if (opt.require_two_contexts && int64_t(tokens.size()) < 2 * int64_t(n_ctx))
    fail("perplexity: the text has {} tokens; at least 2 x ctx = {} are needed (as llama-perplexity requires)",
         tokens.size(), 2 * n_ctx);
  const int n_chunks = perplexity_chunks(tokens.size(), opt);
  if (n_chunks < 1) fail("perplexity: {} tokens do not fill one chunk of {}", tokens.size(), n_ctx);
  const int bos = model.tokenizer ? model.tokenizer->bos_id() : model.cfg.bos_token_id;

  Session s(model, {.n_ctx = n_ctx, .n_threads = opt.n_threads, .n_batch = std::min(n_ctx, 512)});
  const int V = model.cfg.vocab_size;
  const int first = n_ctx / 2;  // only the second half of each chunk is scored
  double nll = 0, nll2 = 0;
  int64_t count = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int> chunk(static_cast<size_t>(n_ctx));
  for (int c = 0; c < n_chunks; ++c) {
    const size_t start = size_t(c) * size_t(n_ctx);
    std::copy_n(tokens.begin() + long(start), n_ctx, chunk.begin());
    if (opt.bos_first && bos >= 0) chunk[0] = bos;
    s.reset();
    s.eval(chunk, /*all_logits=*/true);
    for (int j = first; j < n_ctx - 1; ++j) {
      const float* l = s.logits(j);
      float mx = l[0];
      for (int v = 1; v < V; ++v) mx = std::max(mx, l[v]);
      double sum = 0;
      for (int v = 0; v < V; ++v) sum += std::exp(double(l[v] - mx));
      const int next = tokens[start + size_t(j) + 1];
      const double lp = double(l[next] - mx) - std::log(sum);
      if (opt.on_scored_row) opt.on_scored_row(c, j, l, next);
      nll -= lp;
      nll2 += lp * lp;
      ++count;
    }
    if (progress) progress(c, n_chunks, std::exp(nll / double(count)));
  }
  PerplexityResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.chunks = n_chunks;
  r.tokens_scored = count;
  r.tokens_in_text = int64_t(tokens.size());
  r.mean_nll = nll / double(count);
  r.ppl = std::exp(r.mean_nll);
  // Standard error of the mean NLL, propagated to PPL (as llama-perplexity reports it).
  const double var = nll2 / double(count) - r.mean_nll * r.mean_nll;
  r.ppl_stderr = var > 0 && count > 1 ? std::sqrt(var / double(count - 1)) * r.ppl : 0.0;
  r.tokens_per_second = double(n_chunks) * n_ctx / r.seconds;
  return r;
}

}  // namespace qforge
