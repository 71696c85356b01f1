// Perplexity with llama.cpp's llama-perplexity protocol: the whole text tokenized with BOS,
// non-overlapping chunks of n_ctx tokens, the first token of each chunk replaced by BOS, and only
// the second half of each chunk scored.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "qforge/session.h"

namespace qforge {

// Called for every scored position, in order (chunk by chunk, position n_ctx/2 .. n_ctx-2 within a
// chunk): the model's logits there (n_vocab floats, valid during the call) and the token that
// follows, the one being scored. The KL-divergence base file and comparison hook in here.
using ScoredRowCallback = std::function<void(int chunk, int position, const float* logits, int next_token)>;

struct PerplexityOptions {
  int n_ctx = 512;
  int n_chunks = -1;  // -1: all
  int n_threads = 0;
  bool bos_first = true;  // replace the first token of each chunk with BOS (llama.cpp default)
  // A text must hold at least 2 x n_ctx tokens, as llama-perplexity requires. Off when the tokens
  // come from a KL-divergence base file, which holds exactly the chunks its run scored.
  bool require_two_contexts = true;
  ScoredRowCallback on_scored_row;
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

// How many chunks compute_perplexity scores for a text of n_tokens tokens.
int perplexity_chunks(size_t n_tokens, const PerplexityOptions& opt);

// progress(chunk_index, n_chunks, running_ppl) is called after each chunk.
PerplexityResult compute_perplexity(const Model& model, const std::vector<int>& tokens, const PerplexityOptions& opt,
                                    const std::function<void(int, int, double)>& progress = {});

}  // namespace qforge
