// `qforge synth`: Hugging Face checkpoints with real shapes and random weights.
//
// The weights are streamed: every tensor is declared to the safetensors writer first (its header
// needs all offsets), then generated and written a few MB at a time, so even llama-2-7b in f32
// (27 GB) needs only a few tens of MB of memory. Each chunk has its own random stream derived from
// (seed, tensor, chunk), so the output does not depend on how many threads made it.
#include "qforge/synth.h"

#include <omp.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "qforge/error.h"
#include "qforge/mmap.h"
#include "qforge/safetensors.h"

namespace qforge {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

// ---- shapes ---------------------------------------------------------------------------------
// Each shape is the model's config.json as published (key order included), so that what qforge
// reads from a synthetic checkpoint is what it would read from the real one. Only torch_dtype is
// changed to the dtype actually written.

ojson gpt2_config(int n_embd, int n_layer, int n_head, int n_positions, int vocab) {
  return ojson{
      {"activation_function", "gelu_new"},
      {"architectures", {"GPT2LMHeadModel"}},
      {"attn_pdrop", 0.1},
      {"bos_token_id", 50256},
      {"embd_pdrop", 0.1},
      {"eos_token_id", 50256},
      {"initializer_range", 0.02},
      {"layer_norm_epsilon", 1e-05},
      {"model_type", "gpt2"},
      {"n_ctx", n_positions},
      {"n_embd", n_embd},
      {"n_head", n_head},
      {"n_layer", n_layer},
      {"n_positions", n_positions},
      {"resid_pdrop", 0.1},
      {"summary_activation", nullptr},
      {"summary_first_dropout", 0.1},
      {"summary_proj_to_labels", true},
      {"summary_type", "cls_index"},
      {"summary_use_proj", true},
      {"task_specific_params", {{"text-generation", {{"do_sample", true}, {"max_length", 50}}}}},
      {"vocab_size", vocab},
  };
}

struct LlamaShape {
  int hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, max_pos;
  bool tied;
  double rope_theta;
  bool llama3_rope;
  int bos, eos;
};

// The published config.json files, verbatim but for torch_dtype (set when writing).
const char* kTinyLlamaConfig = R"json({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 5632,
  "max_position_embeddings": 2048,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 22,
  "num_key_value_heads": 4,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.35.0",
  "use_cache": true,
  "vocab_size": 32000
})json";

const char* kLlama32_1BConfig = R"json({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})json";

// Llama 2 has no rope_theta key (the default 10000 applies).
const char* kLlama2_7BConfig = R"json({
  "_name_or_path": "meta-llama/Llama-2-7b-hf",
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 11008,
  "max_position_embeddings": 4096,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 32,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.31.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})json";

// A published config with the numbers of `s` put in: the test shapes shrink real configs; for the
// real shapes this rewrites the same values, and keeps config.json and the tensors consistent.
ojson llama_config(const char* base, const LlamaShape& s) {
  ojson j = ojson::parse(base);
  j["bos_token_id"] = s.bos;
  j["eos_token_id"] = s.eos;
  if (j.contains("head_dim")) j["head_dim"] = s.head_dim;
  j["hidden_size"] = s.hidden;
  j["intermediate_size"] = s.intermediate;
  j["max_position_embeddings"] = s.max_pos;
  j["num_attention_heads"] = s.heads;
  j["num_hidden_layers"] = s.layers;
  j["num_key_value_heads"] = s.kv_heads;
  if (j.contains("rope_theta")) j["rope_theta"] = s.rope_theta;
  j["tie_word_embeddings"] = s.tied;
  j["vocab_size"] = s.vocab;
  return j;
}

ModelConfig llama_model_config(const LlamaShape& s) {
  ModelConfig c;
  c.arch = Arch::Llama;
  c.hf_architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.n_embd = s.hidden;
  c.n_ff = s.intermediate;
  c.n_layer = s.layers;
  c.n_head = s.heads;
  c.n_head_kv = s.kv_heads;
  c.head_dim = s.head_dim;
  c.vocab_size = s.vocab;
  c.max_ctx = s.max_pos;
  c.norm_eps = 1e-5f;
  c.rope_theta = float(s.rope_theta);
  if (s.llama3_rope) {
    c.rope_scaling.type = RopeScaling::Type::Llama3;
    c.rope_scaling.factor = 32.0f;
    c.rope_scaling.low_freq_factor = 1.0f;
    c.rope_scaling.high_freq_factor = 4.0f;
    c.rope_scaling.original_max_position_embeddings = 8192;
  }
  c.tie_embeddings = s.tied;
  c.act = Activation::SiLU;
  c.bos_token_id = s.bos;
  c.eos_token_id = s.eos;
  return c;
}

ModelConfig gpt2_model_config(int n_embd, int n_layer, int n_head, int n_positions, int vocab) {
  ModelConfig c;
  c.arch = Arch::GPT2;
  c.hf_architecture = "GPT2LMHeadModel";
  c.model_type = "gpt2";
  c.n_embd = n_embd;
  c.n_ff = 4 * n_embd;
  c.n_layer = n_layer;
  c.n_head = n_head;
  c.n_head_kv = n_head;
  c.head_dim = n_embd / n_head;
  c.vocab_size = vocab;
  c.max_ctx = n_positions;
  c.norm_eps = 1e-5f;
  c.attn_qkv_bias = c.attn_out_bias = c.mlp_bias = true;
  c.tie_embeddings = true;
  c.act = Activation::GeluTanh;
  c.bos_token_id = c.eos_token_id = 50256;
  return c;
}

// The full table: shape, config.json, and which tokenizer fits it.
enum class TokenizerKind { None, Llama2, GPT2 };

struct ShapeEntry {
  SynthShape shape;
  ojson config;
  TokenizerKind tokenizer;
};

const std::vector<ShapeEntry>& shape_table() {
  static const std::vector<ShapeEntry> table = [] {
    std::vector<ShapeEntry> t;
    auto add_llama = [&](const char* name, const char* desc, const char* base, const LlamaShape& s, bool internal) {
      TokenizerKind tok = s.vocab == 32000 ? TokenizerKind::Llama2 : TokenizerKind::None;
      t.push_back({SynthShape{name, desc, llama_model_config(s), internal}, llama_config(base, s), tok});
    };
    auto add_gpt2 = [&](const char* name, const char* desc, int e, int l, int h, int p, int v, bool internal) {
      t.push_back({SynthShape{name, desc, gpt2_model_config(e, l, h, p, v), internal}, gpt2_config(e, l, h, p, v),
                   TokenizerKind::GPT2});
    };
    add_gpt2("gpt2-124m", "GPT-2 small (GPT2LMHeadModel, 768 wide, 12 layers, 12 heads, tied)", 768, 12, 12, 1024,
             50257, false);
    add_llama("tinyllama-1.1b", "TinyLlama-1.1B (2048 wide, 22 layers, 32 heads / 4 KV, vocab 32000, untied)",
              kTinyLlamaConfig,
              {2048, 5632, 22, 32, 4, 64, 32000, 2048, false, 10000.0, false, 1, 2}, false);
    add_llama("llama-3.2-1b",
              "Llama-3.2-1B (2048 wide, 16 layers, 32 heads / 8 KV, vocab 128256, tied, llama3 rope; no tokenizer)",
              kLlama32_1BConfig,
              {2048, 8192, 16, 32, 8, 64, 128256, 131072, true, 500000.0, true, 128000, 128001}, false);
    add_llama("llama-2-7b", "Llama-2-7B (4096 wide, 32 layers, 32 heads, vocab 32000, untied)", kLlama2_7BConfig,
              {4096, 11008, 32, 32, 32, 128, 32000, 4096, false, 10000.0, false, 1, 2}, false);
    // Small shapes for the tests: real vocabularies (so the real tokenizers apply), tiny bodies.
    add_llama("tiny-llama-test", "test shape: llama, 64 wide, 2 layers, vocab 32000 (llama2 tokenizer)", kTinyLlamaConfig,
              {64, 128, 2, 4, 2, 16, 32000, 256, false, 10000.0, false, 1, 2}, true);
    add_llama("tiny-llama3-test", "test shape: llama3 rope, tied, 64 wide, 2 layers, vocab 1024, no tokenizer",
              kLlama32_1BConfig,
              {64, 128, 2, 4, 2, 16, 1024, 4096, true, 500000.0, true, 1, 2}, true);
    add_gpt2("tiny-gpt2-test", "test shape: gpt2, 64 wide, 2 layers, vocab 50257 (gpt2 tokenizer)", 64, 2, 4, 128,
             50257, true);
    return t;
  }();
  return table;
}

const ShapeEntry& find_entry(const std::string& name) {
  for (const auto& e : shape_table())
    if (e.shape.name == name) return e;
  std::string valid;
  for (const auto& e : shape_table())
    if (!e.shape.internal) valid += (valid.empty() ? "" : ", ") + e.shape.name;
  fail("synth: unknown shape '{}' (valid shapes: {})", name, valid);
}

// ---- tensors --------------------------------------------------------------------------------

enum class Fill { Normal, Ones, Zeros };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  Fill fill = Fill::Normal;
  uint64_t numel() const {
    uint64_t n = 1;
    for (auto d : shape) n *= uint64_t(d);
    return n;
  }
};

// Tensor names and shapes as the published checkpoints store them, in the model's own order
// (embeddings, layer by layer, final norm, head), which is also the order the engine reads them.
std::vector<TensorSpec> tensors_of(const SynthShape& s) {
  const ModelConfig& c = s.cfg;
  const int64_t E = c.n_embd, F = c.n_ff, V = c.vocab_size;
  std::vector<TensorSpec> t;
  if (c.arch == Arch::GPT2) {
    // GPT-2 uses Conv1D: weights are stored [in, out]. Names as in the hub's model.safetensors.
    // (The hub file also stores the constant causal masks h.N.attn.bias; no loader needs them.)
    t.push_back({"wte.weight", {V, E}});
    t.push_back({"wpe.weight", {int64_t(c.max_ctx), E}});
    for (int l = 0; l < c.n_layer; ++l) {
      const std::string p = "h." + std::to_string(l) + ".";
      t.push_back({p + "ln_1.weight", {E}, Fill::Ones});
      t.push_back({p + "ln_1.bias", {E}, Fill::Zeros});
      t.push_back({p + "attn.c_attn.weight", {E, 3 * E}});
      t.push_back({p + "attn.c_attn.bias", {3 * E}});
      t.push_back({p + "attn.c_proj.weight", {E, E}});
      t.push_back({p + "attn.c_proj.bias", {E}});
      t.push_back({p + "ln_2.weight", {E}, Fill::Ones});
      t.push_back({p + "ln_2.bias", {E}, Fill::Zeros});
      t.push_back({p + "mlp.c_fc.weight", {E, F}});
      t.push_back({p + "mlp.c_fc.bias", {F}});
      t.push_back({p + "mlp.c_proj.weight", {F, E}});
      t.push_back({p + "mlp.c_proj.bias", {E}});
    }
    t.push_back({"ln_f.weight", {E}, Fill::Ones});
    t.push_back({"ln_f.bias", {E}, Fill::Zeros});
    return t;
  }
  const int64_t Q = int64_t(c.n_head) * c.head_dim, KV = int64_t(c.n_head_kv) * c.head_dim;
  t.push_back({"model.embed_tokens.weight", {V, E}});
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {E}, Fill::Ones});
    t.push_back({p + "self_attn.q_proj.weight", {Q, E}});
    t.push_back({p + "self_attn.k_proj.weight", {KV, E}});
    t.push_back({p + "self_attn.v_proj.weight", {KV, E}});
    t.push_back({p + "self_attn.o_proj.weight", {E, Q}});
    t.push_back({p + "post_attention_layernorm.weight", {E}, Fill::Ones});
    t.push_back({p + "mlp.gate_proj.weight", {F, E}});
    t.push_back({p + "mlp.up_proj.weight", {F, E}});
    t.push_back({p + "mlp.down_proj.weight", {E, F}});
  }
  t.push_back({"model.norm.weight", {E}, Fill::Ones});
  if (!c.tie_embeddings) t.push_back({"lm_head.weight", {V, E}});
  return t;
}

// ---- random numbers -------------------------------------------------------------------------
// xoshiro256+ seeded through splitmix64; normal-ish values as the sum of four 16-bit uniforms
// (Irwin-Hall, n = 4): mean 0, the requested standard deviation, tails cut at about 3.5 sigma,
// and one generator step per value, which keeps generation far faster than the disk.

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

struct Xoshiro256 {
  uint64_t s[4];
  explicit Xoshiro256(uint64_t seed) {
    for (auto& v : s) v = splitmix64(seed);
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    const uint64_t result = s[0] + s[3];
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
};

constexpr float kInitStd = 0.02f;

void fill_chunk(const TensorSpec& spec, uint64_t seed, uint64_t tensor_index, uint64_t chunk_index, float* out,
                size_t n) {
  if (spec.fill != Fill::Normal) {
    std::fill(out, out + n, spec.fill == Fill::Ones ? 1.0f : 0.0f);
    return;
  }
  uint64_t mix = seed ^ (tensor_index * 0xd1b54a32d192ed03ull) ^ (chunk_index * 0x8cb92ba72f3d8dd7ull);
  Xoshiro256 rng(splitmix64(mix));
  // Sum of four U(0, 65535): mean 131070, variance 4 * (65536^2 - 1) / 12.
  const float scale = kInitStd / float(std::sqrt(4.0 * (65536.0 * 65536.0 - 1.0) / 12.0));
  for (size_t i = 0; i < n; ++i) {
    uint64_t r = rng.next();
    int32_t sum = int32_t(r & 0xffff) + int32_t((r >> 16) & 0xffff) + int32_t((r >> 32) & 0xffff) +
                  int32_t(r >> 48);
    out[i] = float(sum - 131070) * scale;
  }
}

void convert_chunk(const float* src, void* dst, size_t n, DType dtype) {
  if (dtype == DType::F32) {
    std::copy(src, src + n, static_cast<float*>(dst));
  } else if (dtype == DType::F16) {
    auto* d = static_cast<uint16_t*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
  } else {
    auto* d = static_cast<uint16_t*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
  }
}

// ---- output ---------------------------------------------------------------------------------

const char* kPartialMarker = ".qforge-synth-partial";

void write_text(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

void copy_file_to(const std::string& src, const std::string& dst) {
  std::error_code ec;
  fs::copy_file(src, dst, fs::copy_options::overwrite_existing, ec);
  if (ec) fail_io("synth: cannot copy {} to {}: {}", src, dst, ec.message());
  // The shared folder is read-only; the copy should be writable like any other output.
  fs::permissions(dst, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read,
                  ec);
}

std::string default_shared_dir() {
  const char* env = std::getenv("QFORGE_SHARED_DIR");
  return env && *env ? std::string(env) : std::string("../shared");
}

const char* torch_dtype_name(DType d) {
  switch (d) {
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    default: return "float32";
  }
}

// Copies the real tokenizer that fits the shape. Returns what was written ("" if nothing).
std::string write_tokenizer(const ShapeEntry& e, const std::string& dir, const SynthOptions& opt,
                            std::vector<std::string>& notes) {
  const std::string shared = opt.shared_dir.empty() ? default_shared_dir() : opt.shared_dir;
  const ModelConfig& c = e.shape.cfg;
  if (e.tokenizer == TokenizerKind::None) {
    notes.push_back(fmt::format(
        "no tokenizer written: no real tokenizer with vocabulary {} is available offline; give token ids instead "
        "of text",
        c.vocab_size));
    return "";
  }
  if (e.tokenizer == TokenizerKind::Llama2) {
    const std::string src = shared + "/models/llama2-tokenizer/tokenizer.model";
    if (!file_exists(src)) {
      notes.push_back(fmt::format("no tokenizer written: {} not found (set --shared-dir or QFORGE_SHARED_DIR)", src));
      return "";
    }
    copy_file_to(src, dir + "/tokenizer.model");
    // As the Llama 2 / TinyLlama repositories ship it (chat template left out).
    ojson tc{{"add_bos_token", true},
             {"add_eos_token", false},
             {"bos_token", "<s>"},
             {"clean_up_tokenization_spaces", false},
             {"eos_token", "</s>"},
             {"legacy", false},
             {"model_max_length", c.max_ctx},
             {"pad_token", nullptr},
             {"padding_side", "right"},
             {"sp_model_kwargs", ojson::object()},
             {"tokenizer_class", "LlamaTokenizer"},
             {"unk_token", "<unk>"},
             {"use_default_system_prompt", false}};
    write_text(dir + "/tokenizer_config.json", tc.dump(2) + "\n");
    ojson sm{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}};
    write_text(dir + "/special_tokens_map.json", sm.dump(2) + "\n");
    return "llama2 sentencepiece (tokenizer.model)";
  }
  const std::string src = shared + "/tokenizers/gpt2-hf";
  if (!file_exists(src + "/tokenizer.json") || !file_exists(src + "/tokenizer_config.json")) {
    notes.push_back(
        fmt::format("no tokenizer written: {}/tokenizer.json not found (set --shared-dir or QFORGE_SHARED_DIR)", src));
    return "";
  }
  copy_file_to(src + "/tokenizer.json", dir + "/tokenizer.json");
  copy_file_to(src + "/tokenizer_config.json", dir + "/tokenizer_config.json");
  return "gpt2 byte-level BPE (tokenizer.json)";
}

std::string readme_text(const ShapeEntry& e, const SynthOptions& opt, const SynthResult& r,
                        const std::vector<std::string>& notes) {
  std::string s = fmt::format(
      "# Synthetic checkpoint: {}\n\n"
      "Written by `qforge synth --shape {} --dtype {} --seed {}`.\n\n"
      "{}\n\n"
      "The weights are RANDOM (normal-like, std {}, norm weights 1): the shapes, names and config.json are\n"
      "those of the real model, so speed and memory match it, but the output text is meaningless.\n\n"
      "- parameters: {}\n- dtype: {}\n- weight bytes: {}\n- files: {}\n",
      e.shape.name, e.shape.name, dtype_name(opt.dtype), opt.seed, e.shape.description, kInitStd, r.params,
      dtype_name(opt.dtype), r.bytes, fmt::join(r.files, ", "));
  s += r.tokenizer.empty() ? "- tokenizer: NONE\n" : "- tokenizer: " + r.tokenizer + " (the real one)\n";
  for (const auto& n : notes) s += "\nNote: " + n + "\n";
  return s;
}

struct ShardPlan {
  std::string file;
  size_t first, last;  // tensor index range [first, last)
  uint64_t bytes;
};

std::vector<ShardPlan> plan_shards(const std::vector<TensorSpec>& specs, DType dtype, uint64_t max_bytes) {
  uint64_t total = 0;
  for (const auto& s : specs) total += dtype_bytes(dtype, s.numel());
  std::vector<ShardPlan> shards;
  if (total <= max_bytes) {
    shards.push_back({"model.safetensors", 0, specs.size(), total});
    return shards;
  }
  ShardPlan cur{"", 0, 0, 0};
  for (size_t i = 0; i < specs.size(); ++i) {
    uint64_t b = dtype_bytes(dtype, specs[i].numel());
    if (cur.last > cur.first && cur.bytes + b > max_bytes) {
      shards.push_back(cur);
      cur = {"", i, i, 0};
    }
    cur.last = i + 1;
    cur.bytes += b;
  }
  shards.push_back(cur);
  for (size_t k = 0; k < shards.size(); ++k)
    shards[k].file = fmt::format("model-{:05d}-of-{:05d}.safetensors", k + 1, shards.size());
  return shards;
}

void check_free_space(const std::string& dir, uint64_t need) {
  struct statvfs st {};
  if (statvfs(dir.c_str(), &st) != 0) return;  // cannot tell; the writes will fail loudly if full
  uint64_t avail = uint64_t(st.f_bavail) * uint64_t(st.f_frsize);
  if (avail < need + (64ull << 20))
    fail_io("synth: {}: not enough free disk space: need {:.1f} GB, {:.1f} GB available", dir, need / 1e9,
            avail / 1e9);
}

}  // namespace

// ---- public API -----------------------------------------------------------------------------

std::vector<SynthShape> synth_shapes(bool include_internal) {
  std::vector<SynthShape> out;
  for (const auto& e : shape_table())
    if (include_internal || !e.shape.internal) out.push_back(e.shape);
  return out;
}

const SynthShape& synth_shape(const std::string& name) { return find_entry(name).shape; }

uint64_t synth_param_count(const SynthShape& shape) {
  uint64_t n = 0;
  for (const auto& t : tensors_of(shape)) n += t.numel();
  return n;
}

uint64_t synth_weight_bytes(const SynthShape& shape, DType dtype) {
  uint64_t n = 0;
  for (const auto& t : tensors_of(shape)) n += dtype_bytes(dtype, t.numel());
  return n;
}

std::string synth_config_json(const SynthShape& shape, DType dtype) {
  ojson config = find_entry(shape.name).config;
  config["torch_dtype"] = torch_dtype_name(dtype);
  return config.dump(2) + "\n";
}

SynthResult synth_checkpoint(const SynthOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const ShapeEntry& entry = find_entry(opt.shape);
  if (opt.dtype != DType::F32 && opt.dtype != DType::F16 && opt.dtype != DType::BF16)
    fail("synth: dtype {} not supported (use f32, f16 or bf16)", dtype_name(opt.dtype));
  if (opt.out_dir.empty()) fail("synth: no output directory given");

  std::string out = opt.out_dir;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  const std::string tmp = out + ".tmp";
  std::error_code ec;
  if (fs::exists(out, ec) && !opt.overwrite) fail("synth: {}: already exists (use --force to replace it)", out);
  if (fs::exists(tmp, ec)) {
    // Only a directory that an interrupted synth left behind is ours to remove.
    if (!fs::exists(tmp + "/" + kPartialMarker, ec))
      fail("synth: {}: exists and was not made by qforge synth; remove it first", tmp);
    fs::remove_all(tmp, ec);
  }
  const fs::path parent = fs::absolute(fs::path(out)).parent_path();
  if (!fs::is_directory(parent, ec)) fail("synth: {}: parent directory {} does not exist", out, parent.string());

  const auto specs = tensors_of(entry.shape);
  SynthResult result;
  result.shape = entry.shape.name;
  result.dtype = opt.dtype;
  for (const auto& s : specs) {
    result.params += s.numel();
    result.bytes += dtype_bytes(opt.dtype, s.numel());
  }
  check_free_space(parent.string(), result.bytes);

  if (!fs::create_directory(tmp, ec)) fail_io("synth: cannot create {}: {}", tmp, ec.message());
  try {
    write_text(tmp + "/" + kPartialMarker, "incomplete qforge synth output\n");

    write_text(tmp + "/config.json", synth_config_json(entry.shape, opt.dtype));
    const ModelConfig& c = entry.shape.cfg;
    ojson gen{{"_from_model_config", true}, {"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id}};
    write_text(tmp + "/generation_config.json", gen.dump(2) + "\n");

    std::vector<std::string> notes;
    result.tokenizer = write_tokenizer(entry, tmp, opt, notes);

    // Weights, shard by shard, chunk by chunk.
    const int threads = std::max(1, opt.n_threads > 0 ? opt.n_threads : int(std::thread::hardware_concurrency()));
    constexpr size_t kChunkElems = size_t(1) << 20;  // 4 MB of f32 per chunk
    const size_t elem_bytes = dtype_bytes(opt.dtype, 1);
    std::vector<std::vector<float>> scratch(static_cast<size_t>(threads), std::vector<float>(kChunkElems));
    std::vector<uint8_t> out_buf(size_t(threads) * kChunkElems * elem_bytes);
    const auto shards = plan_shards(specs, opt.dtype, opt.max_shard_bytes);
    std::map<std::string, std::string> weight_map;
    uint64_t done = 0;
    for (const auto& shard : shards) {
      SafetensorsWriter writer(tmp + "/" + shard.file, {{"format", "pt"}});
      for (size_t i = shard.first; i < shard.last; ++i) {
        writer.declare(specs[i].name, opt.dtype, specs[i].shape);
        weight_map[specs[i].name] = shard.file;
      }
      for (size_t i = shard.first; i < shard.last; ++i) {
        const TensorSpec& spec = specs[i];
        const uint64_t n = spec.numel();
        const uint64_t n_chunks = (n + kChunkElems - 1) / kChunkElems;
        // Up to `threads` chunks are generated in parallel, then written in order.
        for (uint64_t c0 = 0; c0 < n_chunks; c0 += uint64_t(threads)) {
          const int batch = int(std::min<uint64_t>(uint64_t(threads), n_chunks - c0));
#pragma omp parallel for num_threads(threads) schedule(static, 1) if (batch > 1)
          for (int b = 0; b < batch; ++b) {
            const uint64_t chunk = c0 + uint64_t(b);
            const size_t len = size_t(std::min<uint64_t>(kChunkElems, n - chunk * kChunkElems));
            float* f = scratch[size_t(b)].data();
            fill_chunk(spec, opt.seed, i, chunk, f, len);
            convert_chunk(f, out_buf.data() + size_t(b) * kChunkElems * elem_bytes, len, opt.dtype);
          }
          const uint64_t elems = std::min<uint64_t>(uint64_t(batch) * kChunkElems, n - c0 * kChunkElems);
          writer.write(out_buf.data(), size_t(elems * elem_bytes));
          done += elems * elem_bytes;
          if (opt.progress) opt.progress(done, result.bytes);
        }
      }
      writer.finish();
      result.files.push_back(shard.file);
    }
    if (shards.size() > 1) write_safetensors_index(tmp, weight_map, result.bytes);

    write_text(tmp + "/README.md", readme_text(entry, opt, result, notes));
    if (opt.warn)
      for (const auto& n : notes) opt.warn(n);

    fs::remove(tmp + "/" + kPartialMarker, ec);
    if (fs::exists(out, ec)) {
      fs::remove_all(out, ec);
      if (ec) fail_io("synth: cannot remove the old {}: {}", out, ec.message());
    }
    fs::rename(tmp, out, ec);
    if (ec) fail_io("synth: cannot rename {} to {}: {}", tmp, out, ec.message());
  } catch (...) {
    std::error_code ignore;
    fs::remove_all(tmp, ignore);
    throw;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace qforge
