// `qforge quantize --format hf`: an F16/BF16/F32 Hugging Face directory (safetensors shards of at
// most 5 GB, config.json with torch_dtype updated, tokenizer and generation files copied), written
// as DIR.tmp and renamed into place when complete.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>

#include "qforge/error.h"
#include "qforge/safetensors.h"
#include "quant/quantize_model.h"

namespace qforge {

namespace {

constexpr uint64_t kMaxShardBytes = uint64_t(5) << 30;

const char* torch_dtype_of(DType t) {
  switch (t) {
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    default: return "float32";
  }
}

// config.json for a model that did not come from a Hugging Face directory (GGUF, llama2.c).
nlohmann::ordered_json config_from(const ModelConfig& c) {
  nlohmann::ordered_json j;
  if (c.arch == Arch::GPT2) {
    j = {{"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"}, {"n_embd", c.n_embd},
         {"n_layer", c.n_layer}, {"n_head", c.n_head}, {"n_inner", c.n_ff}, {"n_positions", c.max_ctx},
         {"n_ctx", c.max_ctx}, {"vocab_size", c.vocab_size}, {"layer_norm_epsilon", c.norm_eps},
         {"activation_function", "gelu_new"}, {"tie_word_embeddings", c.tie_embeddings}};
  } else {
    j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", c.n_embd},
         {"intermediate_size", c.n_ff}, {"num_hidden_layers", c.n_layer}, {"num_attention_heads", c.n_head},
         {"num_key_value_heads", c.n_head_kv}, {"head_dim", c.head_dim}, {"max_position_embeddings", c.max_ctx},
         {"rms_norm_eps", c.norm_eps}, {"rope_theta", c.rope_theta}, {"vocab_size", c.vocab_size},
         {"tie_word_embeddings", c.tie_embeddings}, {"attention_bias", c.attn_qkv_bias},
         {"mlp_bias", c.mlp_bias}, {"hidden_act", "silu"}};
    if (c.rope_scaling.type == RopeScaling::Type::Linear)
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
    else if (c.rope_scaling.type != RopeScaling::Type::None)
      fail_unsupported("quantize: {}: rope scaling given as per-frequency factors (GGUF rope_freqs.weight) has no config.json form; write GGUF instead", "config.json");
  }
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  return j;
}

void write_text(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

}  // namespace

void write_hf_directory(const Model& m, const std::string& out, const std::vector<ExportTensor>& tensors,
                        const std::vector<const QuantType*>& types, const QuantizeOptions& opt) {
  namespace fs = std::filesystem;
  DType dtype = DType::F32;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const DType t = types[i]->dtype;
    if (t != DType::F32 && t != DType::F16 && t != DType::BF16)
      fail("quantize: --format hf writes f32, f16 or bf16 checkpoints; tensor '{}' would be {} (use GGUF output "
           "for quantized types)",
           tensors[i].name, types[i]->name);
    if (!tensors[i].vector) dtype = t;
  }
  const std::string tmp = out + ".tmp";
  std::error_code ec;
  if (fs::exists(tmp, ec)) fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) fail_io("quantize: cannot create {}: {}", tmp, ec.message());
  try {
    // config.json: the source's own, with torch_dtype updated, or one made from the hyper-parameters.
    const bool from_hf = m.source_format == "hf-safetensors";
    nlohmann::ordered_json config;
    if (from_hf)
      config = nlohmann::ordered_json::parse(read_text_file(m.source_path + "/config.json", size_t(1) << 24));
    else
      config = config_from(m.cfg);
    config["torch_dtype"] = torch_dtype_of(dtype);
    write_text(tmp + "/config.json", config.dump(2) + "\n");
    if (from_hf)
      for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                            "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json"})
        if (fs::exists(m.source_path + "/" + f, ec)) fs::copy_file(m.source_path + "/" + f, tmp + "/" + f, ec);

    // Shards of at most 5 GB, in tensor order.
    std::vector<size_t> shard_end;
    uint64_t acc = 0, total = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const uint64_t b = types[i]->row_bytes(tensors[i].stored_cols()) * uint64_t(tensors[i].stored_rows());
      if (acc > 0 && acc + b > kMaxShardBytes) {
        shard_end.push_back(i);
        acc = 0;
      }
      acc += b;
      total += b;
    }
    shard_end.push_back(tensors.size());
    std::map<std::string, std::string> weight_map;
    size_t first = 0;
    for (size_t s = 0; s < shard_end.size(); ++s) {
      const std::string file = shard_end.size() == 1
                                   ? "model.safetensors"
                                   : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shard_end.size());
      SafetensorsWriter w(tmp + "/" + file, {{"format", "pt"}});
      std::vector<ExportTensor> part(tensors.begin() + long(first), tensors.begin() + long(shard_end[s]));
      std::vector<const QuantType*> part_types(types.begin() + long(first), types.begin() + long(shard_end[s]));
      for (size_t i = 0; i < part.size(); ++i) {
        w.declare(part[i].name, part_types[i]->dtype, part[i].shape());
        weight_map[part[i].name] = file;
      }
      SafetensorsSinkAdapter sink(w);
      stream_quantized(part, part_types, sink, opt);
      w.finish();
      first = shard_end[s];
    }
    if (shard_end.size() > 1) write_safetensors_index(tmp, weight_map, total);
    if (fs::exists(out, ec)) fs::remove_all(out, ec);
    fs::rename(tmp, out, ec);
    if (ec) fail_io("quantize: cannot rename {} to {}: {}", tmp, out, ec.message());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace qforge
