// Quality of a model against another on the same text (a quantized model against its original):
// both run the llama-perplexity chunks side by side in one process, so no logits file is needed.
#pragma once
#include <vector>

#include "qforge/model.h"

namespace qforge {

struct QualityComparison {
  int chunks = 0;
  int64_t tokens = 0;  // positions scored
  double ppl_base = 0, ppl_base_stderr = 0, ppl_test = 0, ppl_test_stderr = 0;
  double kl_mean = 0, kl_mean_stderr = 0, kl_p99 = 0, kl_max = 0;  // KL(base || test), nats per token
  double top1_agreement = 0;  // fraction of positions where both models' most likely token agree
};

// n_chunks -1: all chunks of the text.
QualityComparison compare_quality(const Model& base, const Model& test, const std::vector<int>& tokens, int n_ctx,
                                  int n_chunks, int n_threads);

}  // namespace qforge
