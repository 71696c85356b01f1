// Hugging Face checkpoint directory -> Model. F32, F16 and BF16 matrices are used in place from the
// mapped safetensors files (the kernels convert as they read); vectors are widened to F32, and
// GPT-2's Conv1D weights, stored [in, out], are transposed to [out, in] into owned F32 buffers.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <set>

#include "kernels/weight_kernels.h"
#include "qforge/error.h"
#include "qforge/model.h"
#include "qforge/safetensors.h"

namespace qforge {

namespace {

class Binder {
 public:
  Binder(Model& m, const SafetensorsCheckpoint& ck) : m_(m), ck_(ck) {}

  const TensorView* find(const std::string& name) const { return ck_.find(name); }

  // The tensor `name`, checked against `shape`, as an F32 weight of rows x cols.
  Weight bind(const std::string& name, std::vector<int64_t> shape, bool transpose = false) {
    const TensorView& t = ck_.get(name);
    check_shape(t, shape);
    used_.insert(name);
    Weight w;
    w.name = name;
    w.dtype = DType::F32;
    if (shape.size() == 1) {
      w.rows = 1;
      w.cols = shape[0];
    } else {
      w.rows = transpose ? shape[1] : shape[0];
      w.cols = transpose ? shape[0] : shape[1];
    }
    const size_t n = size_t(w.rows * w.cols);
    if (t.dtype == DType::F32 && !transpose) {
      if (reinterpret_cast<uintptr_t>(t.data) % alignof(float) != 0) {
        float* dst = m_.own(n);
        std::memcpy(dst, t.data, n * 4);
        w.data = dst;
      } else {
        w.data = t.data;
      }
      return w;
    }
    if (!dtype_info(t.dtype).is_float)
      fail("model: {}: tensor '{}' has dtype {}, expected a float type", t.file, name, dtype_name(t.dtype));
    // F16/BF16 matrices stay as stored (the kernels convert as they read); vectors become F32.
    if (shape.size() == 2 && !transpose && kernels::weight_kernels(t.dtype) &&
        reinterpret_cast<uintptr_t>(t.data) % dtype_info(t.dtype).block_bytes == 0) {
      w.dtype = t.dtype;
      w.data = t.data;
      return w;
    }
    float* dst = m_.own(n);
    if (!transpose) {
      convert_to_f32(t.dtype, t.data, dst, n);
    } else {  // [in, out] -> [out, in], converting one input row at a time
      std::vector<float> row(size_t(w.rows));
      const size_t elem = dtype_info(t.dtype).block_bytes;
      for (int64_t i = 0; i < w.cols; ++i) {
        convert_to_f32(t.dtype, t.data + size_t(i) * size_t(w.rows) * elem, row.data(), size_t(w.rows));
        for (int64_t o = 0; o < w.rows; ++o) dst[o * w.cols + i] = row[size_t(o)];
      }
    }
    w.data = dst;
    release_mapped_pages(t.data, size_t(t.nbytes));  // the copy replaces it: keep only one resident
    return w;
  }

  Weight bind_optional(const std::string& name, std::vector<int64_t> shape) {
    return find(name) ? bind(name, std::move(shape)) : Weight{};
  }

  // Tensors the architecture does not use (buffers like rotary inv_freq or attn.masked_bias are fine).
  std::vector<std::string> unused() const {
    std::vector<std::string> out;
    for (const TensorView* t : ck_.tensors())
      if (!used_.count(t->name)) out.push_back(t->name);
    return out;
  }

 private:
  void check_shape(const TensorView& t, const std::vector<int64_t>& want) const {
    if (t.shape != want)
      fail("model: {}: tensor '{}' has shape {}, expected [{}] from config.json", t.file, t.name, t.shape_str(),
           fmt::join(want, ", "));
  }
  Model& m_;
  const SafetensorsCheckpoint& ck_;
  std::set<std::string> used_;
};

void bind_llama(Model& m, Binder& b) {
  const auto& c = m.cfg;
  const int64_t E = c.n_embd, Q = int64_t(c.n_head) * c.head_dim, KV = int64_t(c.n_head_kv) * c.head_dim, F = c.n_ff;
  m.tok_embd = b.bind("model.embed_tokens.weight", {c.vocab_size, E});
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    LayerWeights& l = m.layers[size_t(i)];
    l.attn_norm = b.bind(p + "input_layernorm.weight", {E});
    l.wq = b.bind(p + "self_attn.q_proj.weight", {Q, E});
    l.wk = b.bind(p + "self_attn.k_proj.weight", {KV, E});
    l.wv = b.bind(p + "self_attn.v_proj.weight", {KV, E});
    l.wo = b.bind(p + "self_attn.o_proj.weight", {E, Q});
    if (c.attn_qkv_bias) {
      l.bq = b.bind(p + "self_attn.q_proj.bias", {Q});
      l.bk = b.bind(p + "self_attn.k_proj.bias", {KV});
      l.bv = b.bind(p + "self_attn.v_proj.bias", {KV});
    }
    if (c.attn_out_bias) l.bo = b.bind(p + "self_attn.o_proj.bias", {E});
    l.ffn_norm = b.bind(p + "post_attention_layernorm.weight", {E});
    l.w_gate = b.bind(p + "mlp.gate_proj.weight", {F, E});
    l.w_up = b.bind(p + "mlp.up_proj.weight", {F, E});
    l.w_down = b.bind(p + "mlp.down_proj.weight", {E, F});
    if (c.mlp_bias) {
      l.b_gate = b.bind(p + "mlp.gate_proj.bias", {F});
      l.b_up = b.bind(p + "mlp.up_proj.bias", {F});
      l.b_down = b.bind(p + "mlp.down_proj.bias", {E});
    }
  }
  m.out_norm = b.bind("model.norm.weight", {E});
  if (b.find("lm_head.weight") && !c.tie_embeddings)
    m.output = b.bind("lm_head.weight", {c.vocab_size, E});
  else if (!c.tie_embeddings)
    m.output = b.bind("lm_head.weight", {c.vocab_size, E});  // reports the missing tensor
  else
    m.output = m.tok_embd;
}

void bind_gpt2(Model& m, Binder& b) {
  const auto& c = m.cfg;
  const int64_t E = c.n_embd, F = c.n_ff;
  // GPT2LMHeadModel prefixes everything with "transformer."; GPT2Model checkpoints do not.
  const std::string pre = b.find("transformer.wte.weight") ? "transformer." : "";
  m.tok_embd = b.bind(pre + "wte.weight", {c.vocab_size, E});
  m.pos_embd = b.bind(pre + "wpe.weight", {c.max_ctx, E});
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = fmt::format("{}h.{}.", pre, i);
    LayerWeights& l = m.layers[size_t(i)];
    l.attn_norm = b.bind(p + "ln_1.weight", {E});
    l.attn_norm_b = b.bind(p + "ln_1.bias", {E});
    // c_attn fuses q, k, v along its output axis: transpose once, then view three row blocks.
    Weight qkv = b.bind(p + "attn.c_attn.weight", {E, 3 * E}, /*transpose=*/true);
    Weight qkv_b = b.bind(p + "attn.c_attn.bias", {3 * E});
    Weight* parts[] = {&l.wq, &l.wk, &l.wv};
    Weight* biases[] = {&l.bq, &l.bk, &l.bv};
    for (int k = 0; k < 3; ++k) {
      *parts[k] = qkv.row_slice(k * E, E);
      *biases[k] = qkv_b;
      biases[k]->cols = E;
      biases[k]->data = qkv_b.f32() + k * E;
    }
    l.wo = b.bind(p + "attn.c_proj.weight", {E, E}, true);
    l.bo = b.bind(p + "attn.c_proj.bias", {E});
    l.ffn_norm = b.bind(p + "ln_2.weight", {E});
    l.ffn_norm_b = b.bind(p + "ln_2.bias", {E});
    l.w_up = b.bind(p + "mlp.c_fc.weight", {E, F}, true);
    l.b_up = b.bind(p + "mlp.c_fc.bias", {F});
    l.w_down = b.bind(p + "mlp.c_proj.weight", {F, E}, true);
    l.b_down = b.bind(p + "mlp.c_proj.bias", {E});
  }
  m.out_norm = b.bind(pre + "ln_f.weight", {E});
  m.out_norm_b = b.bind(pre + "ln_f.bias", {E});
  if (b.find("lm_head.weight") && !c.tie_embeddings)
    m.output = b.bind("lm_head.weight", {c.vocab_size, E});
  else
    m.output = m.tok_embd;
}

}  // namespace

std::unique_ptr<Model> load_hf_model(const std::string& dir, const LoadOptions& opt) {
  auto m = std::make_unique<Model>();
  m->cfg = parse_hf_config(dir + "/config.json");
  m->source_path = dir;
  m->source_format = "hf-safetensors";
  auto ck_owner = std::make_shared<SafetensorsCheckpoint>(SafetensorsCheckpoint::open(dir));
  m->keepalive.push_back(ck_owner);  // the weights point into its mapped files
  const SafetensorsCheckpoint& ck = *ck_owner;
  m->size_on_disk = ck.size_on_disk();
  for (const TensorView* t : ck.tensors()) m->file_tensors.push_back(*t);
  m->layers.resize(size_t(m->cfg.n_layer));
  Binder b(*m, ck);
  if (m->cfg.arch == Arch::GPT2)
    bind_gpt2(*m, b);
  else
    bind_llama(*m, b);
  if (opt.load_tokenizer) {
    if (!opt.tokenizer_path.empty()) {
      const std::string& p = opt.tokenizer_path;
      if (p.size() >= 5 && p.compare(p.size() - 5, 5, ".json") == 0)
        m->tokenizer = load_hf_tokenizer_json(p, dir);
      else if (p.size() >= 4 && p.compare(p.size() - 4, 4, ".bin") == 0)
        m->tokenizer = load_llama2c_tokenizer(p);
      else
        m->tokenizer = load_sentencepiece(p, dir);
    } else if (file_exists(dir + "/tokenizer.json") || file_exists(dir + "/tokenizer.model")) {
      m->tokenizer = load_tokenizer_dir(dir);
    }
    if (m->tokenizer && m->tokenizer->vocab_size() > m->cfg.vocab_size)
      fail("model: {}: tokenizer has {} tokens but config.json vocab_size is {}", dir, m->tokenizer->vocab_size(),
           m->cfg.vocab_size);
  }
  return m;
}

}  // namespace qforge
