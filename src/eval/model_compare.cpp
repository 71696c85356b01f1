// Two models over the same llama-perplexity chunks in one process: PPL of each and the KL
// divergence of the test model's next-token distribution from the base model's.
#include "qforge/model_compare.h"

#include <algorithm>
#include <cmath>

#include "qforge/error.h"
#include "qforge/session.h"

namespace qforge {

namespace {
// log-softmax of n logits, in double.
void log_softmax(const float* l, int n, std::vector<double>& out) {
  out.resize(size_t(n));
  const float mx = *std::max_element(l, l + n);
  double sum = 0;
  for (int v = 0; v < n; ++v) sum += std::exp(double(l[v] - mx));
  const double lse = double(mx) + std::log(sum);
  for (int v = 0; v < n; ++v) out[size_t(v)] = double(l[v]) - lse;
}

struct Mean {
  double sum = 0, sum2 = 0;
  int64_t n = 0;
  void add(double x) {
    sum += x;
    sum2 += x * x;
    ++n;
  }
  double mean() const { return n ? sum / double(n) : 0; }
  double stderr_of_mean() const {
    if (n < 2) return 0;
    const double m = mean(), var = sum2 / double(n) - m * m;
    return var > 0 ? std::sqrt(var / double(n - 1)) : 0;
  }
};
}  // namespace

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
  Mean nll_b, nll_t, kl;
  std::vector<double> kls;
  int64_t agree = 0;
  std::vector<double> lb, lt;
  std::vector<int> chunk(static_cast<size_t>(n_ctx));
  for (int c = 0; c < chunks; ++c) {
    const size_t start = size_t(c) * size_t(n_ctx);
    std::copy_n(tokens.begin() + long(start), n_ctx, chunk.begin());
    if (bos >= 0) chunk[0] = bos;
    sb.reset();
    st.reset();
    sb.eval(chunk, true);
    st.eval(chunk, true);
    for (int j = n_ctx / 2; j < n_ctx - 1; ++j) {
      log_softmax(sb.logits(j), V, lb);
      log_softmax(st.logits(j), V, lt);
      const int next = tokens[start + size_t(j) + 1];
      nll_b.add(-lb[size_t(next)]);
      nll_t.add(-lt[size_t(next)]);
      double d = 0;
      for (int v = 0; v < V; ++v) d += std::exp(lb[size_t(v)]) * (lb[size_t(v)] - lt[size_t(v)]);
      d = std::max(d, 0.0);  // rounding can leave -1e-17 for identical distributions
      kl.add(d);
      kls.push_back(d);
      const auto top_b = std::max_element(lb.begin(), lb.end()) - lb.begin();
      const auto top_t = std::max_element(lt.begin(), lt.end()) - lt.begin();
      agree += top_b == top_t;
    }
  }
  QualityComparison r;
  r.chunks = chunks;
  r.tokens = kl.n;
  r.ppl_base = std::exp(nll_b.mean());
  r.ppl_base_stderr = nll_b.stderr_of_mean() * r.ppl_base;
  r.ppl_test = std::exp(nll_t.mean());
  r.ppl_test_stderr = nll_t.stderr_of_mean() * r.ppl_test;
  r.kl_mean = kl.mean();
  r.kl_mean_stderr = kl.stderr_of_mean();
  std::sort(kls.begin(), kls.end());
  if (!kls.empty()) {
    r.kl_p99 = kls[std::min(kls.size() - 1, size_t(0.99 * double(kls.size())))];
    r.kl_max = kls.back();
  }
  r.top1_agreement = kl.n ? double(agree) / double(kl.n) : 0;
  return r;
}

}  // namespace qforge
