// Model bookkeeping and format detection.
#include "qforge/model.h"

#include <cstring>

#include "qforge/error.h"

namespace qforge {

float* Model::own(size_t n) {
  owned.emplace_back(new float[n]);
  return owned.back().get();
}

uint8_t* Model::own_bytes(size_t n) { return reinterpret_cast<uint8_t*>(own((n + sizeof(float) - 1) / sizeof(float))); }

Weight Weight::row_slice(int64_t r0, int64_t n) const {
  if (r0 < 0 || n < 0 || r0 + n > rows) fail("model: {}: rows [{}, {}) outside its {} rows", name, r0, r0 + n, rows);
  Weight w = *this;
  w.rows = n;
  w.data = row(r0);
  return w;
}

namespace {
uint64_t bytes_of(const Weight& w) { return w ? dtype_bytes(w.dtype, uint64_t(w.rows * w.cols)) : 0; }

template <typename F>
void for_each_layer_weight(const LayerWeights& l, F&& f) {
  for (const Weight* w : {&l.attn_norm, &l.attn_norm_b, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.bo,
                          &l.ffn_norm, &l.ffn_norm_b, &l.w_gate, &l.w_up, &l.w_down, &l.b_up, &l.b_down, &l.b_gate})
    f(*w);
}
}  // namespace

uint64_t Model::weight_bytes_per_token() const {
  uint64_t n = 0;
  for (const auto& l : layers) for_each_layer_weight(l, [&](const Weight& w) { n += bytes_of(w); });
  n += bytes_of(out_norm) + bytes_of(out_norm_b) + bytes_of(output);
  n += tok_embd ? dtype_bytes(tok_embd.dtype, uint64_t(tok_embd.cols)) : 0;  // one embedding row
  n += pos_embd ? dtype_bytes(pos_embd.dtype, uint64_t(pos_embd.cols)) : 0;
  return n;
}

uint64_t Model::weight_bytes() const {
  uint64_t n = 0;
  for (const auto& l : layers) for_each_layer_weight(l, [&](const Weight& w) { n += bytes_of(w); });
  n += bytes_of(out_norm) + bytes_of(out_norm_b) + bytes_of(tok_embd) + bytes_of(pos_embd);
  if (output.data != tok_embd.data) n += bytes_of(output);
  return n;
}

std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opt) {
  if (is_directory(path)) {
    if (file_exists(path + "/config.json")) return load_hf_model(path, opt);
    fail("model: {}: directory has no config.json (expected a Hugging Face model directory)", path);
  }
  if (!file_exists(path)) fail("model: {}: no such file or directory", path);
  // Sniff the first bytes: GGUF files start with "GGUF"; llama2.c files with 7 int32 dims.
  auto map = MappedFile::open(path);
  if (map->size() >= 4 && std::memcmp(map->data(), "GGUF", 4) == 0) return load_gguf_model(path, opt);
  if (path.size() > 4 && path.compare(path.size() - 4, 4, ".bin") == 0) return load_llama2c_model(path, opt);
  if (path.size() > 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0)
    fail("model: {}: pass the model directory (with config.json), not the .safetensors file", path);
  fail("model: {}: unrecognised model format (expected a Hugging Face directory, a llama2.c .bin or a GGUF file)",
       path);
}

}  // namespace qforge
