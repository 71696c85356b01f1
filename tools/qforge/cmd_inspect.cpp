// qforge inspect MODEL: what is in a checkpoint.
#include <fmt/format.h>

#include <map>

#include "commands.h"
#include "qforge/model.h"

namespace qforge::cli {

namespace {
struct InspectArgs {
  std::string model;
  bool summary = false;
  JsonFlag json;
};

const char* arch_name(Arch a) { return a == Arch::GPT2 ? "gpt2" : "llama"; }

const char* rope_name(RopeScaling::Type t) {
  switch (t) {
    case RopeScaling::Type::Linear: return "linear";
    case RopeScaling::Type::Llama3: return "llama3";
    default: return "none";
  }
}

int run_inspect(const InspectArgs& a) {
  LoadOptions lo;
  auto m = load_model(a.model, lo);
  const ModelConfig& c = m->cfg;
  std::map<std::string, uint64_t> bytes_by_dtype;
  uint64_t tensor_bytes = 0;
  for (const auto& t : m->file_tensors) {
    bytes_by_dtype[dtype_name(t.dtype)] += t.nbytes;
    tensor_bytes += t.nbytes;
  }
  {
    fmt::print("model        {}\n", m->source_path);
    fmt::print("format       {}\n", m->source_format);
    fmt::print("architecture {} ({}, model_type {})\n", arch_name(c.arch), c.hf_architecture, c.model_type);
    fmt::print("parameters   {} ({})\n", c.n_params(), human_count(c.n_params()));
    fmt::print("layers       {}   hidden {}   ffn {}   heads {} (kv {})   head_dim {}\n", c.n_layer, c.n_embd, c.n_ff,
               c.n_head, c.n_head_kv, c.head_dim);
    fmt::print("vocab        {}   context {}   tied embeddings {}\n", c.vocab_size, c.max_ctx,
               c.tie_embeddings ? "yes" : "no");
    if (c.arch == Arch::Llama)
      fmt::print("rope         theta {}   scaling {} (factor {})   norm eps {}\n", c.rope_theta,
                 rope_name(c.rope_scaling.type), c.rope_scaling.factor, c.norm_eps);
    if (m->tokenizer)
      fmt::print("tokenizer    {} ({} tokens, bos {}, eos {})\n", m->tokenizer->kind(), m->tokenizer->vocab_size(),
                 m->tokenizer->bos_id(), m->tokenizer->eos_id());
    else
      fmt::print("tokenizer    none found\n");
    fmt::print("size on disk {} ({} bytes)\n", human_bytes(m->size_on_disk), m->size_on_disk);
    for (const auto& [dt, b] : bytes_by_dtype) fmt::print("  {:<5} {}\n", dt, human_bytes(b));
    if (!a.summary) {
      fmt::print("\n{} tensors:\n", m->file_tensors.size());
      size_t w = 4;
      for (const auto& t : m->file_tensors) w = std::max(w, t.name.size());
      for (const auto& t : m->file_tensors)
        fmt::print("  {:<{}}  {:<5} {:<16} {:>12}\n", t.name, w, dtype_name(t.dtype), t.shape_str(), human_bytes(t.nbytes));
    }
  }
  nlohmann::json j = {{"model", m->source_path},
                      {"format", m->source_format},
                      {"architecture", arch_name(c.arch)},
                      {"hf_architecture", c.hf_architecture},
                      {"parameters", c.n_params()},
                      {"n_layer", c.n_layer},
                      {"n_embd", c.n_embd},
                      {"n_ff", c.n_ff},
                      {"n_head", c.n_head},
                      {"n_head_kv", c.n_head_kv},
                      {"vocab_size", c.vocab_size},
                      {"context", c.max_ctx},
                      {"size_on_disk", m->size_on_disk},
                      {"tensor_count", m->file_tensors.size()}};
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : m->file_tensors)
    tensors.push_back({{"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"bytes", t.nbytes}});
  j["tensors"] = tensors;
  emit_json(a.json, j);
  return 0;
}
}  // namespace

void register_inspect(CLI::App& app) {
  static InspectArgs a;
  auto* sub = app.add_subcommand("inspect", "Show a model's architecture, parameter count, tensors and size on disk");
  sub->add_option("model", a.model, "Hugging Face model directory, GGUF file or llama2.c .bin checkpoint")->required();
  sub->add_flag("--summary", a.summary, "Omit the per-tensor listing");
  add_json_flag(sub, a.json);
  add_command(app, sub, [] { return run_inspect(a); });
}

}  // namespace qforge::cli
