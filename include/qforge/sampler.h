// Token sampling: greedy, temperature, top-k, top-p, repetition penalty; reproducible with a seed.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace qforge {

struct SamplerParams {
  float temperature = 0.8f;  // <= 0: greedy
  int top_k = 40;            // <= 0: off
  float top_p = 0.95f;       // >= 1: off
  float repeat_penalty = 1.0f;  // 1: off (default, as llama.cpp); (llama.cpp convention: divide positive, multiply negative logits)
  int repeat_last_n = 64;
  uint64_t seed = 0xC0FFEE;
};

class Sampler {
 public:
  explicit Sampler(SamplerParams p);
  // Chooses the next token; `history` holds the ids seen so far (prompt + generated).
  int sample(const float* logits, int n_vocab, const std::vector<int>& history);
  const SamplerParams& params() const { return p_; }

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int>> cand_;
};

}  // namespace qforge
