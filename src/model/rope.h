// Rotary position embeddings in Hugging Face's rotate_half convention: within each head, element i
// pairs with element i + head_dim/2. Frequencies include linear and llama3 scaling.
#pragma once
#include <vector>

#include "qforge/config.h"

namespace qforge {

// What each of the head_dim / 2 rotary frequencies is divided by under the model's rope scaling
// (all 1 without scaling). GGUF writers store these as rope_freqs.weight for Llama 3 scaling.
std::vector<double> rope_frequency_divisors(const ModelConfig& c);

class Rope {
 public:
  explicit Rope(const ModelConfig& c);
  // Rotates n_heads heads of head_dim values at x (contiguous) for position pos.
  void apply(float* x, int n_heads, int pos) const;

 private:
  int head_dim_;
  std::vector<double> inv_freq_;
};

}  // namespace qforge
