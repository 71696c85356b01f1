// Random-weight checkpoints of real model shapes ("qforge synth"): a Hugging Face directory with the
// real model's config.json, random weights of the right shapes, and a real tokenizer where one is
// available offline. Used to measure speed and memory at sizes for which no real weights exist here.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qforge/config.h"
#include "qforge/dtype.h"

namespace qforge {

struct SynthShape {
  std::string name;         // "tinyllama-1.1b"
  std::string description;  // "TinyLlama-1.1B (LlamaForCausalLM, ...)"
  ModelConfig cfg;          // what config.json says
  bool internal = false;    // small shapes for tests, not listed in --help
};

// Shapes that `qforge synth` knows; internal test shapes only when asked for.
std::vector<SynthShape> synth_shapes(bool include_internal = false);
// Looks a shape up by name (internal ones included); throws Error (BadInput) listing the valid names.
const SynthShape& synth_shape(const std::string& name);

// Parameters and bytes of the tensors a shape stores (tied embeddings counted once).
uint64_t synth_param_count(const SynthShape& shape);
uint64_t synth_weight_bytes(const SynthShape& shape, DType dtype);

// The config.json written for a shape (the published one, torch_dtype set to `dtype`).
std::string synth_config_json(const SynthShape& shape, DType dtype);

struct SynthOptions {
  std::string shape;    // a name from synth_shapes()
  std::string out_dir;  // created; must not exist unless `overwrite`
  DType dtype = DType::F32;  // F32, F16 or BF16
  uint64_t seed = 0;
  // Where the real tokenizers are (the shared data folder). Empty: $QFORGE_SHARED_DIR, else ../shared.
  std::string shared_dir;
  bool overwrite = false;  // replace an existing out_dir
  int n_threads = 0;       // generation threads; 0: all cores
  // Shards are files of at most this many bytes (Hugging Face's default "5GB").
  uint64_t max_shard_bytes = 5'000'000'000ull;
  // Called after each chunk is written with bytes done and bytes in all. May be empty.
  std::function<void(uint64_t done, uint64_t total)> progress;
  // Called with non-fatal notes ("no tokenizer written: ..."). May be empty.
  std::function<void(const std::string&)> warn;
};

struct SynthResult {
  std::string shape;
  DType dtype = DType::F32;
  uint64_t params = 0;
  uint64_t bytes = 0;              // tensor data bytes written
  std::vector<std::string> files;  // weight files written (relative to out_dir)
  std::string tokenizer;           // "llama2 sentencepiece", "gpt2 tokenizer.json", or "" for none
  double seconds = 0;
};

// Writes the checkpoint into OUT.tmp (streamed, a few MB per thread in memory at a time), then
// renames it to OUT. Deterministic for a given (shape, dtype, seed), whatever the thread count.
SynthResult synth_checkpoint(const SynthOptions& opt);

}  // namespace qforge
