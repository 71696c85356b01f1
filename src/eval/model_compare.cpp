// Two models over the same llama-perplexity chunks in one process: PPL of each and the KL
// divergence of the test model's next-token distribution from the base model's.
#include "qforge/model_compare.h"

#include <algorithm>

#include "qforge/error.h"
#include "qforge/kl_divergence.h"
#include "qforge/session.h"

namespace qforge {

QualityComparison compare_quality(const Model& base, const Model& test, const std::vector<int>& tokens, int n_ctx,
                                  int n_chunks, int n_threads) {
  if (base.cfg.vocab_size != test.cfg.vocab_size)
    fail("compare: vocabularies differ ({} vs {} tokens)", base.cfg.vocab_size, test.cfg.vocab_size);
  if (n_ctx < 4 || n_ctx > std::min(base.cfg.max_ctx, test.cfg.max_ctx))
    fail("compare: context {} must be between 4 and the models' context ({})", n_ctx,
         std::min(base.cfg.max_ctx, test.cfg.max_ctx));
  if (int64_t(tokens.size()) < 2 * int64_t(n_ctx))
    fail("compare: the text has {} tokens; at least 2 x ctx = {} are needed", tokens.size(), 2 * n_ctx);
  int chunks = int(tokens.size() / size_t(n_ctx));
  if (n_chunks > 0) chunks = std::min(chunks, n_chunks);
  const int bos = base.tokenizer ? base.tokenizer->bos_id() : base.cfg.bos_token_id;
  const int V = base.cfg.vocab_size;
  SessionOptions so{.n_ctx = n_ctx, .n_threads = n_threads, .n_batch = std::min(n_ctx, 512)};
  Session sb(base, so), st(test, so);
  KlAccumulator acc(V);
  std::vector<int> chunk(static_cast<size_t>(n_ctx));
  for (int c = 0; c < chunks; ++c) {
    const size_t start = size_t(c) * size_t(n_ctx);
    std::copy_n(tokens.begin() + long(start), n_ctx, chunk.begin());
    if (bos >= 0) chunk[0] = bos;
    sb.reset();
    st.reset();
    sb.eval(chunk, true);
    st.eval(chunk, true);
    for (int j = n_ctx / 2; j < n_ctx - 1; ++j)
      acc.add_logits(sb.logits(j), st.logits(j), tokens[start + size_t(j) + 1]);
  }
  const KlStats k = acc.stats();
  QualityComparison r;
  r.chunks = chunks;
  r.tokens = k.tokens;
  r.ppl_base = k.ppl_base;
  r.ppl_base_stderr = k.ppl_base_stderr;
  r.ppl_test = k.ppl;
  r.ppl_test_stderr = k.ppl_stderr;
  r.kl_mean = k.kl_mean;
  r.kl_mean_stderr = k.kl_stderr;
  r.kl_p99 = k.kl_p99;
  r.kl_max = k.kl_max;
  r.top1_agreement = k.top1_agreement;
  return r;
}

}  // namespace qforge
