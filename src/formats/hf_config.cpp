// Hugging Face config.json -> ModelConfig, for LlamaForCausalLM (and the Mistral / Qwen2 variants,
// which share its layout) and GPT2LMHeadModel.
#include <nlohmann/json.hpp>

#include "qforge/config.h"
#include "qforge/error.h"
#include "qforge/mmap.h"

namespace qforge {

namespace {

using json = nlohmann::json;

struct Reader {
  const json& j;
  const std::string& origin;

  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }

  int64_t integer(const char* key) const {
    if (!has(key)) fail("config: {}: missing key '{}'", origin, key);
    const auto& v = j[key];
    if (!v.is_number_integer()) fail("config: {}: '{}' must be an integer, got {}", origin, key, v.dump());
    return v.get<int64_t>();
  }
  int positive(const char* key) const {
    int64_t v = integer(key);
    if (v <= 0 || v > (int64_t(1) << 30)) fail("config: {}: '{}' must be a positive integer, got {}", origin, key, v);
    return int(v);
  }
  int positive_or(const char* key, int def) const { return has(key) ? positive(key) : def; }
  double number_or(const char* key, double def) const {
    if (!has(key)) return def;
    const auto& v = j[key];
    if (!v.is_number()) fail("config: {}: '{}' must be a number, got {}", origin, key, v.dump());
    return v.get<double>();
  }
  bool boolean_or(const char* key, bool def) const {
    if (!has(key)) return def;
    const auto& v = j[key];
    if (!v.is_boolean()) fail("config: {}: '{}' must be true or false, got {}", origin, key, v.dump());
    return v.get<bool>();
  }
  std::string string_or(const char* key, const std::string& def) const {
    if (!has(key)) return def;
    if (!j[key].is_string()) fail("config: {}: '{}' must be a string, got {}", origin, key, j[key].dump());
    return j[key].get<std::string>();
  }
  // bos/eos may be an int or a list of ints (Llama 3 lists several EOS ids; the first is used).
  int token_id_or(const char* key, int def) const {
    if (!has(key)) return def;
    const auto& v = j[key];
    if (v.is_number_integer()) return v.get<int>();
    if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int>();
    fail("config: {}: '{}' must be a token id, got {}", origin, key, v.dump());
  }
};

RopeScaling parse_rope_scaling(const json& j, const std::string& origin) {
  RopeScaling rs;
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return rs;
  const json& s = j["rope_scaling"];
  if (!s.is_object()) fail("config: {}: 'rope_scaling' must be an object or null", origin);
  Reader r{s, origin};
  std::string type = r.string_or("rope_type", r.string_or("type", ""));
  if (type == "default" || type.empty()) return rs;
  if (type == "linear") {
    rs.type = RopeScaling::Type::Linear;
  } else if (type == "llama3") {
    rs.type = RopeScaling::Type::Llama3;
    rs.low_freq_factor = float(r.number_or("low_freq_factor", 1.0));
    rs.high_freq_factor = float(r.number_or("high_freq_factor", 4.0));
    rs.original_max_position_embeddings = r.positive_or("original_max_position_embeddings", 8192);
    if (!(rs.high_freq_factor > rs.low_freq_factor))
      fail("config: {}: rope_scaling: high_freq_factor ({}) must exceed low_freq_factor ({})", origin,
           rs.high_freq_factor, rs.low_freq_factor);
  } else {
    fail_unsupported("config: {}: rope_scaling type '{}' is not supported (supported: linear, llama3)", origin, type);
  }
  rs.factor = float(r.number_or("factor", 1.0));
  if (!(rs.factor > 0)) fail("config: {}: rope_scaling.factor must be positive, got {}", origin, rs.factor);
  return rs;
}

void parse_llama(const Reader& r, ModelConfig& c) {
  c.arch = Arch::Llama;
  c.n_embd = r.positive("hidden_size");
  c.n_ff = r.positive("intermediate_size");
  c.n_layer = r.positive("num_hidden_layers");
  c.n_head = r.positive("num_attention_heads");
  c.n_head_kv = r.positive_or("num_key_value_heads", c.n_head);
  c.vocab_size = r.positive("vocab_size");
  c.max_ctx = r.positive_or("max_position_embeddings", 2048);
  c.norm_eps = float(r.number_or("rms_norm_eps", 1e-6));
  c.rope_theta = float(r.number_or("rope_theta", 10000.0));
  c.rope_scaling = parse_rope_scaling(r.j, r.origin);
  if (r.has("head_dim")) {
    c.head_dim = r.positive("head_dim");
  } else {
    if (c.n_embd % c.n_head != 0)
      fail("config: {}: 'num_attention_heads' ({}) does not divide 'hidden_size' ({})", r.origin, c.n_head, c.n_embd);
    c.head_dim = c.n_embd / c.n_head;
  }
  if (c.head_dim % 2 != 0) fail("config: {}: head_dim ({}) must be even for rotary embeddings", r.origin, c.head_dim);
  if (c.n_head % c.n_head_kv != 0)
    fail("config: {}: 'num_key_value_heads' ({}) does not divide 'num_attention_heads' ({})", r.origin, c.n_head_kv,
         c.n_head);
  if (c.model_type == "qwen2") {
    c.attn_qkv_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
  } else {
    c.attn_qkv_bias = c.attn_out_bias = r.boolean_or("attention_bias", false);
  }
  c.mlp_bias = r.boolean_or("mlp_bias", false);
  c.tie_embeddings = r.boolean_or("tie_word_embeddings", c.model_type == "qwen2" ? false : false);
  const std::string act = r.string_or("hidden_act", "silu");
  if (act != "silu" && act != "swish")
    fail_unsupported("config: {}: hidden_act '{}' is not supported for {} (expected silu)", r.origin, act,
                     c.hf_architecture);
  c.act = Activation::SiLU;
  if (r.has("sliding_window") && c.model_type == "mistral") {
    // Mistral's sliding window only matters beyond its length; the engine caps context to it.
    int64_t w = r.integer("sliding_window");
    if (w > 0 && w < c.max_ctx) c.max_ctx = int(w);
  }
}

void parse_gpt2(const Reader& r, ModelConfig& c) {
  c.arch = Arch::GPT2;
  c.n_embd = r.positive("n_embd");
  c.n_layer = r.positive("n_layer");
  c.n_head = r.positive("n_head");
  c.n_head_kv = c.n_head;
  c.n_ff = r.positive_or("n_inner", 4 * c.n_embd);
  c.vocab_size = r.positive("vocab_size");
  c.max_ctx = r.positive_or("n_positions", 1024);
  c.norm_eps = float(r.number_or("layer_norm_epsilon", 1e-5));
  if (c.n_embd % c.n_head != 0)
    fail("config: {}: 'n_head' ({}) does not divide 'n_embd' ({})", r.origin, c.n_head, c.n_embd);
  c.head_dim = c.n_embd / c.n_head;
  c.attn_qkv_bias = c.attn_out_bias = c.mlp_bias = true;
  c.tie_embeddings = r.boolean_or("tie_word_embeddings", true);
  const std::string act = r.string_or("activation_function", "gelu_new");
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast")
    c.act = Activation::GeluTanh;
  else if (act == "gelu")
    c.act = Activation::Gelu;
  else
    fail_unsupported("config: {}: activation_function '{}' is not supported for GPT-2", r.origin, act);
  if (r.boolean_or("scale_attn_by_inverse_layer_idx", false) || r.boolean_or("reorder_and_upcast_attn", false))
    fail_unsupported("config: {}: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported",
                     r.origin);
}

}  // namespace

ModelConfig parse_hf_config_text(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail("config: {}: invalid JSON: {}", origin, e.what());
  }
  if (!j.is_object()) fail("config: {}: expected a JSON object", origin);
  Reader r{j, origin};
  ModelConfig c;
  c.model_type = r.string_or("model_type", "");
  if (r.has("architectures")) {
    const auto& a = j["architectures"];
    if (!a.is_array() || a.empty() || !a[0].is_string())
      fail("config: {}: 'architectures' must be a non-empty list of strings", origin);
    c.hf_architecture = a[0].get<std::string>();
  }
  static const char* kLlamaLike[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
  bool llama = false;
  for (const char* a : kLlamaLike) llama |= c.hf_architecture == a;
  if (c.hf_architecture.empty()) llama = c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2";
  if (llama) {
    if (c.model_type.empty()) c.model_type = "llama";
    parse_llama(r, c);
  } else if (c.hf_architecture == "GPT2LMHeadModel" || (c.hf_architecture.empty() && c.model_type == "gpt2")) {
    c.model_type = "gpt2";
    parse_gpt2(r, c);
  } else {
    fail_unsupported(
        "config: {}: unknown architecture '{}' (model_type '{}'); supported: LlamaForCausalLM, MistralForCausalLM, "
        "Qwen2ForCausalLM, GPT2LMHeadModel",
        origin, c.hf_architecture, c.model_type);
  }
  if (c.hf_architecture.empty()) c.hf_architecture = c.arch == Arch::GPT2 ? "GPT2LMHeadModel" : "LlamaForCausalLM";
  c.bos_token_id = r.token_id_or("bos_token_id", -1);
  c.eos_token_id = r.token_id_or("eos_token_id", -1);
  c.torch_dtype = r.string_or("torch_dtype", r.string_or("dtype", "float32"));
  auto check_id = [&](int id, const char* key) {
    if (id >= c.vocab_size) fail("config: {}: '{}' ({}) is out of range for vocab_size {}", origin, key, id, c.vocab_size);
  };
  check_id(c.bos_token_id, "bos_token_id");
  check_id(c.eos_token_id, "eos_token_id");
  return c;
}

ModelConfig parse_hf_config(const std::string& path) { return parse_hf_config_text(read_text_file(path, 16 << 20), path); }

int64_t ModelConfig::n_params() const {
  const int64_t e = n_embd, q = int64_t(n_head) * head_dim, kv = int64_t(n_head_kv) * head_dim;
  int64_t per_layer = e * q + 2 * e * kv + q * e;  // attention projections
  if (attn_qkv_bias) per_layer += q + 2 * kv;
  if (attn_out_bias) per_layer += e;
  if (arch == Arch::GPT2) {
    per_layer += 2 * e * n_ff + n_ff + e + 4 * e;  // MLP with biases, two LayerNorms
  } else {
    per_layer += 3 * e * n_ff + 2 * e;  // gated MLP, two RMSNorms
    if (mlp_bias) per_layer += 2 * n_ff + e;
  }
  int64_t n = per_layer * n_layer + int64_t(vocab_size) * e + e;
  if (arch == Arch::GPT2) n += int64_t(max_ctx) * e + e;
  if (!tie_embeddings) n += int64_t(vocab_size) * e;
  return n;
}

}  // namespace qforge
