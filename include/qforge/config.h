// Model hyper-parameters, read from a Hugging Face config.json (or filled by other importers).
#pragma once
#include <string>
#include <vector>

namespace qforge {

enum class Arch { Llama, GPT2 };
enum class Activation { SiLU, GeluTanh, Gelu };

struct RopeScaling {
  // Factors: per-frequency divisors given as such (a GGUF file's rope_freqs.weight, which is how
  // llama.cpp stores Llama 3 scaling).
  enum class Type { None, Linear, Llama3, Factors } type = Type::None;
  std::vector<float> freq_factors;  // Factors: head_dim / 2 divisors of the rotary frequencies
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string hf_architecture;  // "LlamaForCausalLM", "GPT2LMHeadModel", ...
  std::string model_type;       // "llama", "mistral", "qwen2", "gpt2"
  int n_embd = 0;               // hidden size
  int n_ff = 0;                 // MLP intermediate size
  int n_layer = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int max_ctx = 0;  // max_position_embeddings / n_positions
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool attn_qkv_bias = false;  // q/k/v projections have biases (Llama attention_bias, Qwen2)
  bool attn_out_bias = false;  // o_proj has a bias (Llama attention_bias)
  bool mlp_bias = false;
  bool tie_embeddings = false;
  Activation act = Activation::SiLU;
  int bos_token_id = -1;
  int eos_token_id = -1;
  std::string torch_dtype = "float32";

  int64_t n_params() const;  // parameter count implied by the shapes above
};

// Parses and validates config.json. Throws Error naming the file and the key at fault
// ("config: DIR/config.json: 'num_attention_heads' (7) does not divide 'hidden_size' (64)").
ModelConfig parse_hf_config(const std::string& path);
// Same, from JSON text already read (`origin` is used in messages).
ModelConfig parse_hf_config_text(const std::string& text, const std::string& origin);

}  // namespace qforge
