// The tensors a model is written as: names in the output format, and for each output row the
// source row it comes from (Q/K rows go back to llama.cpp's rotary order in GGUF; GPT-2's q, k and
// v projections are one fused tensor in both GGUF and Hugging Face files).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "qforge/model.h"

namespace qforge {

struct ExportTensor {
  std::string name;
  std::vector<Weight> parts;  // stacked along rows (GPT-2's fused qkv); usually one
  int64_t rows = 0, cols = 0;
  bool vector = false;        // 1-D in the output (norms, biases): rows == 1
  int layer = -1;             // block index, -1 outside the blocks
  // >0: the output is in adjacent-pair rotary order with this many heads (llama Q/K in GGUF).
  int permute_heads = 0;
  bool transpose = false;     // GPT-2 Conv1D in Hugging Face files: stored [cols, rows]
  std::vector<float> values;  // a computed vector instead of parts (GGUF rope_freqs.weight)

  // Rows as stored in the output and their length (transposed: cols rows of `rows` values).
  int64_t stored_rows() const { return transpose ? cols : rows; }
  int64_t stored_cols() const { return transpose ? rows : cols; }
  // Copies stored row r (for vectors: the whole vector) as F32 into y (stored_cols() values).
  // Not for transposed tensors, which are read whole with materialize_f32.
  void row_f32(int64_t r, float* y) const;
  // Whether stored rows can be copied as bytes into `type` (same type, one row per source row).
  bool raw_copy_possible(DType type) const;
  // The source bytes of stored row r (when raw_copy_possible).
  const uint8_t* row_raw(int64_t r) const;
  // The whole stored tensor as F32 (small tensors and transposed ones).
  std::vector<float> materialize_f32() const;
  // The source's storage type (of the first part).
  DType src_dtype() const { return parts.empty() ? DType::F32 : parts.front().dtype; }
  uint64_t n_weights() const { return uint64_t(rows) * uint64_t(cols); }
  std::vector<int64_t> shape() const {  // outermost first, as stored
    if (vector) return {cols};
    return transpose ? std::vector<int64_t>{cols, rows} : std::vector<int64_t>{rows, cols};
  }
};

// llama.cpp's tensor names and row order (llama, gpt2).
std::vector<ExportTensor> gguf_export_tensors(const Model& m);
// Hugging Face names (LlamaForCausalLM / GPT2LMHeadModel layout).
std::vector<ExportTensor> hf_export_tensors(const Model& m);

}  // namespace qforge
