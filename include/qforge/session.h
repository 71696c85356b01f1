// Inference state for one sequence: KV cache, scratch buffers, and the forward pass.
#pragma once
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "qforge/model.h"

namespace qforge {

struct SessionOptions {
  int n_ctx = 0;       // 0: the model's max context
  int n_threads = 0;   // 0: all cores
  int n_batch = 512;   // prompt tokens processed per forward call
  // Called with the input of every weight matrix product (n rows of w.cols values) before it runs:
  // how `qforge imatrix` measures activations. Null (the default) costs nothing.
  std::function<void(const Weight& w, const float* x, int64_t n)> on_matmul_input = nullptr;
};

class Session {
 public:
  Session(const Model& model, SessionOptions opt = {});
  ~Session();
  // Runs tokens at positions n_past() .. n_past()+n-1 and appends them to the KV cache.
  // If all_logits, logits of every token are kept (perplexity); else only those of the last.
  // Throws Error when the context would overflow or an id is out of range.
  void eval(std::span<const int> tokens, bool all_logits = false);
  // Logits of the i-th token of the last eval (i = -1: the last one).
  const float* logits(int i = -1) const;
  int n_past() const { return n_past_; }
  int n_ctx() const { return n_ctx_; }
  int n_vocab() const { return model_.cfg.vocab_size; }
  int n_threads() const { return n_threads_; }
  void reset() { n_past_ = 0; }
  uint64_t kv_cache_bytes() const;
  const Model& model() const { return model_; }

 private:
  struct Impl;
  const Model& model_;
  int n_ctx_, n_threads_, n_batch_;
  int n_past_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qforge
