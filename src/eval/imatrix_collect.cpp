// `qforge imatrix`: importance matrices measured with qforge's own engine, written in llama-imatrix's
// GGUF format so that llama-quantize can use them too.
//
// What is measured is what llama-imatrix measures: for every weight matrix, over every token of the
// calibration chunks, the squared value of each input column; the importance of a column is the mean
// (sum / tokens). The text is cut into chunks of n_ctx tokens whose first token is BOS, each run as
// one sequence from an empty cache.
#include <algorithm>
#include <map>

#include "qforge/error.h"
#include "qforge/gguf.h"
#include "qforge/gguf_writer.h"
#include "qforge/imatrix.h"
#include "qforge/perplexity.h"
#include "qforge/session.h"
#include "quant/export_tensors.h"

namespace qforge {

ImatrixSums collect_imatrix(const Model& model, const std::vector<int>& tokens, const ImatrixOptions& opt,
                            const std::function<void(int, int)>& progress) {
  const int n_ctx = opt.n_ctx;
  if (n_ctx < 4) fail("imatrix: --ctx must be at least 4, got {}", n_ctx);
  if (n_ctx > model.cfg.max_ctx)
    fail("imatrix: --ctx {} is longer than the model's context ({} positions)", n_ctx, model.cfg.max_ctx);
  PerplexityOptions chunking;  // the same cut into chunks as perplexity's
  chunking.n_ctx = n_ctx;
  chunking.n_chunks = opt.n_chunks;
  const int n_chunks = perplexity_chunks(tokens.size(), chunking);
  if (n_chunks < 1) fail("imatrix: the text has {} tokens, not one chunk of {}", tokens.size(), n_ctx);

  // Each matrix by its data pointer -> its GGUF name (fused GPT-2 qkv: three parts, one name; they
  // see the same input, so summing all three keeps the mean).
  std::map<const void*, std::string> names;
  for (const ExportTensor& t : gguf_export_tensors(model)) {
    // As llama-imatrix: the blocks' matrices, and the output matrix only when asked (a tied output
    // shares token_embd's data and is never measured).
    const bool block = t.name.rfind("blk.", 0) == 0, output = t.name == "output.weight";
    if (t.vector || !(block || (output && opt.process_output))) continue;
    for (const Weight& w : t.parts) names[w.data] = t.name;
  }
  ImatrixSums r;
  r.chunk_size = n_ctx;
  r.dataset = opt.dataset;
  SessionOptions so{.n_ctx = n_ctx, .n_threads = opt.n_threads, .n_batch = std::min(n_ctx, 512)};
  so.on_matmul_input = [&](const Weight& w, const float* x, int64_t n) {
    if (n < 16) return;  // llama-imatrix ignores products of fewer than 16 tokens, and so do we
    auto it = names.find(w.data);
    if (it == names.end()) return;
    ImatrixSums::Entry& e = r.entries[it->second];
    if (e.sum2.empty()) e.sum2.assign(size_t(w.cols), 0.0);
    double* s = e.sum2.data();
    for (int64_t t = 0; t < n; ++t) {
      const float* row = x + t * w.cols;
      for (int64_t i = 0; i < w.cols; ++i) s[i] += double(row[i]) * double(row[i]);
    }
    e.count += n;
  };
  Session s(model, so);
  const int bos = model.tokenizer ? model.tokenizer->bos_id() : model.cfg.bos_token_id;
  std::vector<int> chunk(static_cast<size_t>(n_ctx));
  for (int c = 0; c < n_chunks; ++c) {
    std::copy_n(tokens.begin() + long(size_t(c) * size_t(n_ctx)), n_ctx, chunk.begin());
    if (bos >= 0) chunk[0] = bos;
    s.reset();
    s.eval(chunk);
    r.chunk_count = c + 1;
    if (progress) progress(c, n_chunks);
  }
  return r;
}

void write_imatrix_gguf(const ImatrixSums& sums, const std::string& path) {
  GgufWriter w(path, kGgufDefaultAlignment);
  w.set_string("general.type", "imatrix");
  w.set_array_string("imatrix.datasets", sums.dataset.empty() ? std::vector<std::string>{}
                                                              : std::vector<std::string>{sums.dataset});
  w.set_u32("imatrix.chunk_count", uint32_t(sums.chunk_count));
  w.set_u32("imatrix.chunk_size", uint32_t(sums.chunk_size));
  for (const auto& [name, e] : sums.entries) {
    w.add_tensor(name + ".in_sum2", kGgmlTypeF32, {uint64_t(e.sum2.size()), 1});
    w.add_tensor(name + ".counts", kGgmlTypeF32, {1, 1});
  }
  for (const auto& [name, e] : sums.entries) {
    std::vector<float> f(e.sum2.begin(), e.sum2.end());
    w.write(f.data(), f.size() * sizeof(float));
    const float count = float(e.count);
    w.write(&count, sizeof count);
  }
  w.commit();
}

}  // namespace qforge
