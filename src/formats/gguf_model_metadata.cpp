// The metadata of a model GGUF file, key by key as llama.cpp's converter (convert_hf_to_gguf.py
// with gguf-py) writes it and llama.cpp's loader reads it:
//
//   general.architecture, general.name, {arch}.block_count, {arch}.context_length,
//   {arch}.embedding_length, {arch}.feed_forward_length, {arch}.attention.head_count,
//   llama: {arch}.attention.head_count_kv, {arch}.rope.freq_base, {arch}.attention.layer_norm_rms_epsilon,
//          {arch}.attention.key_length / value_length (only when head_dim is not embedding / heads),
//          {arch}.rope.scaling.type + factor (linear scaling), {arch}.vocab_size, {arch}.rope.dimension_count
//   gpt2:  {arch}.attention.layer_norm_epsilon
//   general.file_type, general.quantization_version, tokenizer.ggml.*
//
// Integers are u32 and floats f32, the types gguf-py uses for these keys.
#include <fmt/format.h>

#include "qforge/error.h"
#include "qforge/gguf_writer.h"

namespace qforge {

namespace {

constexpr uint32_t kQuantizationVersion = 2;  // ggml's GGML_QNT_VERSION: the block layouts qforge writes

uint32_t positive_u32(int v, std::string_view what) {
  if (v <= 0) fail("gguf-writer: model config: {} is {}, must be positive", what, v);
  return uint32_t(v);
}

}  // namespace

void write_tokenizer_metadata(GgufWriter& w, const GgufVocab& v) {
  const size_t n = v.tokens.size();
  const auto bad = [&](std::string_view what) {
    fail("gguf-writer: {}: tokenizer: {} (model {}, {} tokens)", w.path(), what, v.model, n);
  };
  if (v.model != "llama" && v.model != "gpt2") bad("model must be \"llama\" or \"gpt2\"");
  if (n == 0) bad("the vocabulary is empty");
  if (v.token_types.size() != n) bad(fmt::format("{} token types for {} tokens", v.token_types.size(), n));
  if (v.model == "llama" && v.scores.size() != n) bad(fmt::format("{} scores for {} tokens", v.scores.size(), n));
  if (v.model == "gpt2" && v.merges.empty()) bad("a byte-level BPE vocabulary needs merges");
  for (int id : {v.bos, v.eos, v.unk, v.pad})
    if (id < -1 || id >= int64_t(n)) bad(fmt::format("special token id {} is out of range", id));

  w.set_string("tokenizer.ggml.model", v.model);
  w.set_string("tokenizer.ggml.pre", v.pre.empty() ? "default" : v.pre);
  w.set_array_string("tokenizer.ggml.tokens", v.tokens);
  if (v.model == "llama") w.set_array_f32("tokenizer.ggml.scores", v.scores);
  w.set_array_i32("tokenizer.ggml.token_type", v.token_types);
  if (!v.merges.empty()) w.set_array_string("tokenizer.ggml.merges", v.merges);
  if (v.bos >= 0) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(v.bos));
  if (v.eos >= 0) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(v.eos));
  if (v.unk >= 0) w.set_u32("tokenizer.ggml.unknown_token_id", uint32_t(v.unk));
  if (v.pad >= 0) w.set_u32("tokenizer.ggml.padding_token_id", uint32_t(v.pad));
  // Written explicitly: llama.cpp's defaults differ between vocabulary types and pre-tokenizers.
  w.set_bool("tokenizer.ggml.add_bos_token", v.add_bos);
  w.set_bool("tokenizer.ggml.add_eos_token", v.add_eos);
  if (v.model == "llama" && !v.add_space_prefix) w.set_bool("tokenizer.ggml.add_space_prefix", false);
}

void write_model_metadata(GgufWriter& w, const ModelConfig& c, const Tokenizer* tokenizer, std::string_view model_name,
                          uint32_t file_type) {
  const bool gpt2 = c.arch == Arch::GPT2;
  const std::string arch = gpt2 ? "gpt2" : "llama";
  const auto key = [&](const char* k) { return arch + "." + k; };

  w.set_string("general.architecture", arch);
  w.set_string("general.name", model_name);
  w.set_u32(key("block_count"), positive_u32(c.n_layer, "n_layer"));
  w.set_u32(key("context_length"), positive_u32(c.max_ctx, "max_ctx"));
  w.set_u32(key("embedding_length"), positive_u32(c.n_embd, "n_embd"));
  w.set_u32(key("feed_forward_length"), positive_u32(c.n_ff, "n_ff"));
  w.set_u32(key("attention.head_count"), positive_u32(c.n_head, "n_head"));
  if (gpt2) {
    if (c.n_head_kv != c.n_head || c.head_dim * c.n_head != c.n_embd)
      fail_unsupported("gguf-writer: {}: a gpt2 model with grouped-query attention or head size {} x {} heads != {} "
                       "cannot be written",
                       w.path(), c.head_dim, c.n_head, c.n_embd);
    w.set_f32(key("attention.layer_norm_epsilon"), c.norm_eps);
  } else {
    w.set_u32(key("attention.head_count_kv"), positive_u32(c.n_head_kv, "n_head_kv"));
    w.set_f32(key("rope.freq_base"), c.rope_theta);
    w.set_f32(key("attention.layer_norm_rms_epsilon"), c.norm_eps);
    if (c.head_dim * c.n_head != c.n_embd) {
      // llama.cpp derives the head size from embedding / heads unless these say otherwise.
      w.set_u32(key("attention.key_length"), positive_u32(c.head_dim, "head_dim"));
      w.set_u32(key("attention.value_length"), positive_u32(c.head_dim, "head_dim"));
    }
    if (c.rope_scaling.type == RopeScaling::Type::Linear) {
      w.set_string(key("rope.scaling.type"), "linear");
      w.set_f32(key("rope.scaling.factor"), c.rope_scaling.factor);
    }
    // Llama 3 scaling (and factors read from a GGUF file): no keys; llama.cpp reads the
    // per-frequency factors from rope_freqs.weight, which the GGUF export adds.
  }
  w.set_u32("general.file_type", file_type);
  if (!gpt2) {
    w.set_u32(key("vocab_size"), positive_u32(c.vocab_size, "vocab_size"));
    w.set_u32(key("rope.dimension_count"), positive_u32(c.head_dim, "head_dim"));
  }
  w.set_u32("general.quantization_version", kQuantizationVersion);

  if (!tokenizer) {
    w.set_string("tokenizer.ggml.model", "none");
    return;
  }
  GgufVocab v = tokenizer->gguf_vocab();
  const size_t n = v.tokens.size();
  if (c.vocab_size > 0 && n > size_t(c.vocab_size))
    fail("gguf-writer: {}: the tokenizer has {} tokens but the model's embedding only {} rows", w.path(), n,
         c.vocab_size);
  // Embedding rows past the tokenizer's last token: placeholders, as the converter writes them.
  for (size_t id = n; id < size_t(c.vocab_size); ++id) {
    v.tokens.push_back(fmt::format("[PAD{}]", id));
    v.token_types.push_back(GgufVocab::kUnused);
    if (!v.scores.empty()) v.scores.push_back(-1000.0f);
  }
  write_tokenizer_metadata(w, v);
}

}  // namespace qforge
