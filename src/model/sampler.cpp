// Sampling pipeline, in llama.cpp's order: repetition penalty, top-k, temperature, top-p.
#include "qforge/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace qforge {

Sampler::Sampler(SamplerParams p) : p_(p), rng_(p.seed) {}

int Sampler::sample(const float* logits, int n_vocab, const std::vector<int>& history) {
  cand_.resize(size_t(n_vocab));
  for (int i = 0; i < n_vocab; ++i) cand_[size_t(i)] = {logits[i], i};

  if (p_.repeat_penalty != 1.0f && p_.repeat_last_n != 0) {
    const size_t n = p_.repeat_last_n < 0 ? history.size() : std::min(history.size(), size_t(p_.repeat_last_n));
    std::unordered_set<int> seen(history.end() - long(n), history.end());
    for (int id : seen) {
      if (id < 0 || id >= n_vocab) continue;
      float& l = cand_[size_t(id)].first;
      l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    }
  }

  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  if (p_.temperature <= 0) return std::min_element(cand_.begin(), cand_.end(), by_logit)->second;

  size_t k = cand_.size();
  if (p_.top_k > 0 && size_t(p_.top_k) < k) k = size_t(p_.top_k);
  std::partial_sort(cand_.begin(), cand_.begin() + long(k), cand_.end(), by_logit);
  cand_.resize(k);

  // Softmax with temperature (max-subtracted), then keep the smallest prefix with mass >= top_p.
  const float mx = cand_[0].first;
  double sum = 0;
  for (auto& c : cand_) {
    c.first = float(std::exp(double(c.first - mx) / p_.temperature));
    sum += c.first;
  }
  size_t keep = cand_.size();
  if (p_.top_p < 1.0f) {
    double acc = 0;
    for (size_t i = 0; i < cand_.size(); ++i) {
      acc += cand_[i].first / sum;
      if (acc >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += cand_[i].first;
  // 53 random bits -> [0, 1): the same sequence on every platform, unlike std::uniform_real_distribution.
  double r = double(rng_() >> 11) * 0x1.0p-53 * kept;
  for (size_t i = 0; i < keep; ++i) {
    r -= cand_[i].first;
    if (r <= 0) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

}  // namespace qforge
