// KlAccumulator: per-position comparison of two next-token distributions, and the summary figures.
// Everything is summed in double; the formulas for the uncertainties follow llama-perplexity's
// report so the figures compare one to one, except where noted.
#include "qforge/kl_divergence.h"

#include <algorithm>
#include <cmath>

#include "qforge/error.h"

namespace qforge {

namespace {

// log-softmax of n float logits into doubles; returns the index of the largest logit (the first
// one on ties). The same inputs always give the same outputs, bit for bit, which is what makes a
// model compared with itself come out at exactly 0.
int log_softmax(const float* logits, int n, double* out) {
  int top = 0;
  float mx = logits[0];
  for (int v = 1; v < n; ++v)
    if (logits[v] > mx) {
      mx = logits[v];
      top = v;
    }
  double sum = 0;
  for (int v = 0; v < n; ++v) sum += std::exp(double(logits[v]) - double(mx));
  const double lse = double(mx) + std::log(sum);
  for (int v = 0; v < n; ++v) out[v] = double(logits[v]) - lse;
  return top;
}

int argmax(const float* x, int n) {
  int top = 0;
  for (int v = 1; v < n; ++v)
    if (x[v] > x[top]) top = v;
  return top;
}

struct MeanSe {
  double mean = 0, se = 0, var = 0;  // var: population variance of the values
};
// Mean of n values from their sum and sum of squares, and the standard error of that mean.
MeanSe mean_se(double sum, double sum2, int64_t n) {
  MeanSe r;
  if (n < 1) return r;
  r.mean = sum / double(n);
  r.var = std::max(0.0, sum2 / double(n) - r.mean * r.mean);
  r.se = n > 1 ? std::sqrt(r.var / double(n - 1)) : 0.0;
  return r;
}

// Linear interpolation between the closest ranks of sorted values (fraction in [0, 1]).
double percentile(const std::vector<double>& sorted, double fraction) {
  if (sorted.empty()) return 0;
  const double pos = fraction * double(sorted.size() - 1);
  const size_t i = std::min(size_t(pos), sorted.size() - 1);
  const size_t j = std::min(i + 1, sorted.size() - 1);
  const double t = pos - double(i);
  return sorted[i] + t * (sorted[j] - sorted[i]);
}

}  // namespace

KlAccumulator::KlAccumulator(int n_vocab) : n_vocab_(n_vocab) {
  if (n_vocab < 1) fail("kl-divergence: vocabulary size must be positive, got {}", n_vocab);
  base_lp_.resize(size_t(n_vocab));
  test_lp_.resize(size_t(n_vocab));
}

double KlAccumulator::add_logits(const float* base_logits, const float* test_logits, int next_token) {
  if (next_token < 0 || next_token >= n_vocab_)
    fail("kl-divergence: next token {} is outside the vocabulary ({} tokens)", next_token, n_vocab_);
  const int base_top = log_softmax(base_logits, n_vocab_, base_lp_.data());
  const int test_top = log_softmax(test_logits, n_vocab_, test_lp_.data());
  return add_row(base_lp_[size_t(next_token)], base_top, test_top, next_token);
}

double KlAccumulator::add_log_probs(const float* base_log_probs, float floor, const float* test_logits,
                                    int next_token) {
  if (next_token < 0 || next_token >= n_vocab_)
    fail("kl-divergence: next token {} is outside the vocabulary ({} tokens)", next_token, n_vocab_);
  const int V = n_vocab_;
  const int test_top = log_softmax(test_logits, V, test_lp_.data());
  const int base_top = argmax(base_log_probs, V);
  // A row where every entry sits at the floor (only a malformed file makes one) keeps them all.
  bool any_kept = false;
  for (int v = 0; v < V && !any_kept; ++v) any_kept = base_log_probs[v] > floor;
  const double cut = any_kept ? double(floor) : -INFINITY;
  // The kept entries are the exact log-probabilities, each rounded by up to half a step, so their
  // probabilities sum to Z = (1 - tail) + (rounding error). The file only says each tail token lies
  // in [0, e^floor]; take the value in that range closest to the test model's (min(q, e^floor)).
  // That estimate is exact when the two models agree in the tail, so a model compared with itself
  // through a file comes out at ~0, and it never claims more tail than the file allows. The kept
  // entries are then scaled to the remaining 1 - tail, which removes the first-order effect of the
  // rounding, and the whole row is a proper distribution, so the KL sum can not go negative.
  double mx = -INFINITY;
  for (int v = 0; v < V; ++v)
    if (base_log_probs[v] > cut) mx = std::max(mx, double(base_log_probs[v]));
  double kept = 0, tail = 0;
  for (int v = 0; v < V; ++v) {
    if (base_log_probs[v] > cut)
      kept += std::exp(double(base_log_probs[v]) - mx);
    else
      tail += std::exp(std::min(test_lp_[size_t(v)], cut));
  }
  tail = std::min(tail, 0.5);  // a well-formed row allows far less; this only guards corrupt ones
  const double shift = std::log1p(-tail) - (mx + std::log(kept));
  for (int v = 0; v < V; ++v)
    base_lp_[size_t(v)] =
        base_log_probs[v] > cut ? double(base_log_probs[v]) + shift : std::min(test_lp_[size_t(v)], cut);
  // The base NLL uses the value as stored (llama-perplexity does the same), so PPL(base) read from a
  // file matches the PPL the base run printed.
  return add_row(double(base_log_probs[next_token]), base_top, test_top, next_token);
}

double KlAccumulator::add_row(double base_next_lp, int base_top, int test_top, int next_token) {
  const int V = n_vocab_;
  double kl = 0;
  for (int v = 0; v < V; ++v) {
    const double lp = base_lp_[size_t(v)];
    if (lp == -INFINITY) continue;  // probability 0 contributes 0
    kl += std::exp(lp) * (lp - test_lp_[size_t(v)]);
  }
  const double nll = -test_lp_[size_t(next_token)];
  const double nll_base = -base_next_lp;
  const double dp = std::exp(-nll) - std::exp(-nll_base);
  ++n_;
  n_same_top_ += base_top == test_top;
  sum_nll_ += nll;
  sum_nll2_ += nll * nll;
  sum_nll_base_ += nll_base;
  sum_nll_base2_ += nll_base * nll_base;
  sum_nll_cross_ += nll * nll_base;
  sum_dnll_ += nll - nll_base;
  sum_dnll2_ += (nll - nll_base) * (nll - nll_base);
  sum_kl_ += kl;
  sum_kl2_ += kl * kl;
  sum_dp_ += dp;
  sum_dp2_ += dp * dp;
  sum_dp4_ += dp * dp * dp * dp;
  kl_values_.push_back(kl);
  dp_values_.push_back(dp);
  return kl;
}

void KlAccumulator::merge(const KlAccumulator& o) {
  if (o.n_vocab_ != n_vocab_)
    fail("kl-divergence: cannot merge accumulators of {} and {} tokens", n_vocab_, o.n_vocab_);
  n_ += o.n_;
  n_same_top_ += o.n_same_top_;
  sum_nll_ += o.sum_nll_;
  sum_nll2_ += o.sum_nll2_;
  sum_nll_base_ += o.sum_nll_base_;
  sum_nll_base2_ += o.sum_nll_base2_;
  sum_nll_cross_ += o.sum_nll_cross_;
  sum_dnll_ += o.sum_dnll_;
  sum_dnll2_ += o.sum_dnll2_;
  sum_kl_ += o.sum_kl_;
  sum_kl2_ += o.sum_kl2_;
  sum_dp_ += o.sum_dp_;
  sum_dp2_ += o.sum_dp2_;
  sum_dp4_ += o.sum_dp4_;
  kl_values_.insert(kl_values_.end(), o.kl_values_.begin(), o.kl_values_.end());
  dp_values_.insert(dp_values_.end(), o.dp_values_.begin(), o.dp_values_.end());
}

KlStats KlAccumulator::stats() const {
  KlStats s;
  s.tokens = n_;
  if (n_ == 0) return s;
  const double n = double(n_);

  const MeanSe nll = mean_se(sum_nll_, sum_nll2_, n_);
  const MeanSe nll_base = mean_se(sum_nll_base_, sum_nll_base2_, n_);
  s.ppl = std::exp(nll.mean);
  s.ppl_stderr = s.ppl * nll.se;  // d exp(x) = exp(x) dx
  s.ppl_base = std::exp(nll_base.mean);
  s.ppl_base_stderr = s.ppl_base * nll_base.se;
  const double cov = sum_nll_cross_ / n - nll.mean * nll_base.mean;  // population covariance
  s.ln_ppl_correlation = nll.var > 0 && nll_base.var > 0 ? cov / std::sqrt(nll.var * nll_base.var) : 1.0;
  // From the per-token differences directly: the same quantity as llama-perplexity's
  // sqrt(se^2 + se_base^2 - 2 cov), without the cancellation when the models are nearly equal.
  const MeanSe dnll = mean_se(sum_dnll_, sum_dnll2_, n_);
  s.ln_ppl_ratio = dnll.mean;
  s.ln_ppl_ratio_stderr = dnll.se;
  s.ppl_ratio = std::exp(dnll.mean);
  s.ppl_ratio_stderr = s.ppl_ratio * dnll.se;
  // PPL - PPL_base by the delta method: var = (ppl se)^2 + (ppl_b se_b)^2 - 2 ppl ppl_b cov_of_means,
  // written as a square plus a non-negative term so equal models give exactly 0.
  s.ppl_diff = s.ppl - s.ppl_base;
  const double cov_of_means = n_ > 1 ? cov / (n - 1) : 0.0;
  const double a = s.ppl * nll.se, b = s.ppl_base * nll_base.se;
  const double var_diff = (a - b) * (a - b) + 2.0 * s.ppl * s.ppl_base * (nll.se * nll_base.se - cov_of_means);
  s.ppl_diff_stderr = std::sqrt(std::max(0.0, var_diff));

  const MeanSe kl = mean_se(sum_kl_, sum_kl2_, n_);
  s.kl_mean = kl.mean;
  s.kl_stderr = kl.se;
  std::vector<double> sorted = kl_values_;
  std::sort(sorted.begin(), sorted.end());
  s.kl_min = sorted.front();
  s.kl_p01 = percentile(sorted, 0.01);
  s.kl_p05 = percentile(sorted, 0.05);
  s.kl_p10 = percentile(sorted, 0.10);
  s.kl_median = percentile(sorted, 0.50);
  s.kl_p90 = percentile(sorted, 0.90);
  s.kl_p95 = percentile(sorted, 0.95);
  s.kl_p99 = percentile(sorted, 0.99);
  s.kl_p999 = percentile(sorted, 0.999);
  s.kl_max = sorted.back();

  s.top1_agreement = double(n_same_top_) / n;
  s.top1_agreement_stderr =
      n_ > 1 ? std::sqrt(std::max(0.0, s.top1_agreement * (1.0 - s.top1_agreement)) / (n - 1)) : 0.0;

  const MeanSe dp = mean_se(sum_dp_, sum_dp2_, n_);
  s.dp_mean = dp.mean;
  s.dp_stderr = dp.se;
  const MeanSe dp2 = mean_se(sum_dp2_, sum_dp4_, n_);
  s.dp_rms = std::sqrt(dp2.mean);
  s.dp_rms_stderr = s.dp_rms > 0 ? dp2.se / (2.0 * s.dp_rms) : 0.0;  // d sqrt(x) = dx / (2 sqrt(x))
  sorted = dp_values_;
  std::sort(sorted.begin(), sorted.end());
  s.dp_min = sorted.front();
  s.dp_p01 = percentile(sorted, 0.01);
  s.dp_p05 = percentile(sorted, 0.05);
  s.dp_p10 = percentile(sorted, 0.10);
  s.dp_median = percentile(sorted, 0.50);
  s.dp_p90 = percentile(sorted, 0.90);
  s.dp_p95 = percentile(sorted, 0.95);
  s.dp_p99 = percentile(sorted, 0.99);
  s.dp_max = sorted.back();
  return s;
}

}  // namespace qforge
