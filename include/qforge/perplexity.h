// Perplexity with llama.cpp's llama-perplexity protocol: the whole text tokenized with BOS,
// non-overlapping chunks of n_ctx tokens, the first token of each chunk replaced by BOS, and only
// the second half of each chunk scored.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "qforge/session.h"

namespace qforge {

struct PerplexityOptions {
  int n_ctx = 512;
  int n_chunks = -1;  // -1: all
  int n_threads = 0;
  bool bos_first = true;  // replace the first token of each chunk with BOS (llama.cpp default)
};

struct PerplexityResult {
  double ppl = 0, ppl_stderr = 0;
  double mean_nll = 0;
  int64_t tokens_scored = 0;
  int chunks = 0;
  int64_t tokens_in_text = 0;
  double seconds = 0;
  double tokens_per_second = 0;  // all tokens evaluated / seconds
};

// progress(chunk_index, n_chunks, running_ppl) is called after each chunk.
PerplexityResult compute_perplexity(const Model& model, const std::vector<int>& tokens, const PerplexityOptions& opt,
                                    const std::function<void(int, int, double)>& progress = {});

}  // namespace qforge
