// `qforge quantize`: a loaded model -> a GGUF file (any ggml type or llama.cpp mix) or, for f16/bf16,
// a Hugging Face directory. Streams one tensor (one chunk of rows) at a time: the source stays
// memory-mapped and the output is written through a temporary file renamed into place at the end.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qforge/imatrix.h"
#include "qforge/model.h"

namespace qforge {

enum class QuantizeFormat { Gguf, Hf };

struct QuantizeProgress {
  size_t index = 0, count = 0;   // tensor index (0-based) and number of tensors
  const std::string* name = nullptr;
  const char* type = "";         // target type name
  uint64_t weights_done = 0, weights_total = 0;  // over the whole model, including this tensor's rows so far
  double elapsed_s = 0;
};

struct QuantizeOptions {
  std::string type = "q4_k_m";      // a mix (q4_k_m, ...) or a plain type (q8_0, f16, ...)
  std::vector<std::string> keep;    // "REGEX=TYPE" per-tensor overrides, first match wins
  QuantizeFormat format = QuantizeFormat::Gguf;
  bool pure = false;                // llama-quantize --pure: the type in every matrix (no mix rules)
  bool allow_requantize = false;    // accept an already-quantized source (quality loss compounds)
  // llama-imatrix's per-column importance, by GGUF tensor name (qforge/imatrix.h); GGUF output only.
  // Matrices it covers are quantized with it (as llama-quantize --imatrix), and the mix rules that
  // depend on it apply (q4_0/q5_0 guard the first ffn_down layers, iq4_nl keeps them).
  const ImportanceMatrix* importance = nullptr;
  int n_threads = 1;
  std::function<void(const QuantizeProgress&)> on_progress;  // called as rows are written
};

struct QuantizedTensor {
  std::string name;        // name in the output
  std::string src_type;    // type in the source
  std::string type;        // type written
  std::vector<int64_t> shape;  // outermost first
  uint64_t n_weights = 0, src_bytes = 0, bytes = 0;
  std::string note;        // why the type differs from the mix default (fallback, override, 1-D)
};

struct QuantizeReport {
  std::string output, format, type;
  uint64_t n_weights = 0;
  uint64_t src_weight_bytes = 0, out_weight_bytes = 0;  // tensor data only
  uint64_t src_file_bytes = 0, out_file_bytes = 0;      // on disk
  double seconds = 0;
  std::vector<QuantizedTensor> tensors;
  std::vector<std::string> warnings;  // where the plan departs from what llama-quantize would do
  std::string imatrix;                // the importance matrix used, if any
  int imatrix_tensors = 0;            // matrices quantized with it
  double bits_per_weight() const { return n_weights ? 8.0 * double(out_weight_bytes) / double(n_weights) : 0; }
};

QuantizeReport quantize_model(const Model& model, const std::string& out_path, const QuantizeOptions& opt);

// ---- load-time quantization (--quantize TYPE on generate / perplexity) -------------------------

struct InMemoryQuantizeOptions {
  std::string type;                // mix or type, as for quantize_model; nf4 runs only this way
  std::vector<std::string> keep;
  bool pure = false;
  bool nf4_double_quant = false;   // bitsandbytes' compress_statistics for nf4's absmax values
  int n_threads = 1;
};
struct InMemoryQuantizeReport {
  int n_tensors = 0;  // matrices converted
  uint64_t n_weights = 0, bytes_before = 0, bytes_after = 0;  // over the model's matrices
  std::vector<std::string> warnings;
};
// Quantizes the model's matrices in memory (owned buffers replace the mapped ones).
InMemoryQuantizeReport quantize_in_memory(Model& model, const InMemoryQuantizeOptions& opt);

}  // namespace qforge
