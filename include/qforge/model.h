// The in-memory model: hyper-parameters, weights (mapped in place where the file layout allows),
// tokenizer. Every importer (HF safetensors, llama2.c, GGUF) produces this one structure.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "qforge/config.h"
#include "qforge/mmap.h"
#include "qforge/tensor.h"
#include "qforge/tokenizer.h"

namespace qforge {

// A weight matrix of `rows` output features by `cols` input features, row-major, or a vector
// (rows == 1). Data is not owned: it points into a mapped file or into Model::owned_.
// Matrices keep the storage type of their file (F32, F16, BF16 or a block-quantized type: each row
// is cols / block_elems whole blocks); the kernels convert as they read. Vectors (norms, biases) are
// always F32.
struct Weight {
  std::string name;  // name in the source file, for messages and reports
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;
  explicit operator bool() const { return data != nullptr; }
  const float* f32() const { return static_cast<const float*>(data); }
  const uint8_t* bytes() const { return static_cast<const uint8_t*>(data); }
  uint64_t row_bytes() const { return dtype_bytes(dtype, uint64_t(cols)); }
  uint64_t nbytes() const { return row_bytes() * uint64_t(rows); }
  const uint8_t* row(int64_t r) const { return bytes() + row_bytes() * uint64_t(r); }
  // Rows [r0, r0 + n) as a weight of their own (no copy).
  Weight row_slice(int64_t r0, int64_t n) const;
};

struct LayerWeights {
  Weight attn_norm, attn_norm_b;  // RMSNorm weight (Llama) or LayerNorm weight+bias (GPT-2)
  Weight wq, wk, wv, wo;          // [n_head*hd, n_embd], [n_kv*hd, n_embd] x2, [n_embd, n_head*hd]
  Weight bq, bk, bv, bo;          // optional biases
  Weight ffn_norm, ffn_norm_b;
  Weight w_gate, w_up, w_down;    // Llama: gate/up [n_ff, n_embd], down [n_embd, n_ff]; GPT-2: up/down
  Weight b_up, b_down, b_gate;    // optional biases
};

struct Model {
  ModelConfig cfg;
  Weight tok_embd;  // [vocab, n_embd]
  Weight pos_embd;  // GPT-2 learned positions [max_ctx, n_embd]
  Weight out_norm, out_norm_b;
  Weight output;  // lm head [vocab, n_embd]; same data as tok_embd when tied
  std::vector<LayerWeights> layers;
  std::unique_ptr<Tokenizer> tokenizer;

  // Provenance, for `inspect` and reports.
  std::string source_path;
  std::string source_format;           // "hf-safetensors", "llama2c", "gguf"
  std::vector<TensorView> file_tensors;  // every tensor as stored in the source files
  uint64_t size_on_disk = 0;

  // Keep-alive for the memory the weights point into.
  std::vector<std::shared_ptr<MappedFile>> mappings;
  std::vector<std::shared_ptr<void>> keepalive;  // e.g. the SafetensorsCheckpoint of an HF model
  std::vector<std::unique_ptr<float[]>> owned;
  float* own(size_t n);  // allocates a buffer that lives as long as the model
  uint8_t* own_bytes(size_t n);  // the same, in bytes (aligned for any element type)

  uint64_t weight_bytes() const;  // bytes of all distinct weights the engine reads
  // Bytes of weights read to produce one token (excludes the embedding table, of which one row is read).
  uint64_t weight_bytes_per_token() const;
};

struct LoadOptions {
  bool load_tokenizer = true;
  std::string tokenizer_path;  // override (tokenizer.model / tokenizer.json / tokenizer.bin)
};

// Detects the format of `path` (HF directory, llama2.c .bin, GGUF) and loads it.
std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opt = {});
std::unique_ptr<Model> load_hf_model(const std::string& dir, const LoadOptions& opt = {});
std::unique_ptr<Model> load_llama2c_model(const std::string& bin_path, const LoadOptions& opt = {});
std::unique_ptr<Model> load_gguf_model(const std::string& path, const LoadOptions& opt = {});

}  // namespace qforge
