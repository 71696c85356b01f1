#include "quant/export_tensors.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "kernels/matmul.h"
#include "model/rope.h"
#include "qforge/error.h"

namespace qforge {

namespace {

// Element j of a head in adjacent-pair order holds rotate_half element j/2 (even j) or
// j/2 + head_dim/2 (odd j): the inverse of what the GGUF importer does.
int64_t rotate_half_source(int64_t j, int64_t head_dim) {
  const int64_t h = j / head_dim, i = j % head_dim;
  return h * head_dim + (i % 2 == 0 ? i / 2 : i / 2 + head_dim / 2);
}

ExportTensor matrix(std::string name, const Weight& w, int layer, int permute_heads = 0) {
  ExportTensor t;
  t.name = std::move(name);
  t.parts = {w};
  t.rows = w.rows;
  t.cols = w.cols;
  t.layer = layer;
  t.permute_heads = permute_heads;
  return t;
}

ExportTensor vec(std::string name, const Weight& w, int layer, int permute_heads = 0) {
  ExportTensor t = matrix(std::move(name), w, layer, permute_heads);
  t.vector = true;
  t.rows = 1;
  t.cols = w.rows * w.cols;
  return t;
}

ExportTensor stacked(std::string name, std::vector<Weight> parts, int layer, bool is_vector) {
  ExportTensor t;
  t.name = std::move(name);
  t.layer = layer;
  t.vector = is_vector;
  t.cols = parts.front().cols;
  for (const Weight& w : parts) t.rows += w.rows;
  if (is_vector) {
    t.cols *= t.rows;
    t.rows = 1;
  }
  t.parts = std::move(parts);
  return t;
}

}  // namespace

void ExportTensor::row_f32(int64_t r, float* y) const {
  if (!values.empty()) {
    std::copy(values.begin(), values.end(), y);
    return;
  }
  if (vector) {
    int64_t off = 0;
    for (const Weight& w : parts) {
      const int64_t n = w.rows * w.cols;
      kernels::weight_row_to_f32(w.dtype, w.data, y + off, n);
      off += n;
    }
    if (permute_heads > 0) {
      std::vector<float> src(y, y + cols);
      const int64_t hd = cols / permute_heads;
      for (int64_t j = 0; j < cols; ++j) y[j] = src[size_t(rotate_half_source(j, hd))];
    }
    return;
  }
  if (transpose) fail("export: tensor '{}': transposed tensors are read whole (materialize_f32)", name);
  if (permute_heads > 0) r = rotate_half_source(r, rows / permute_heads);
  for (const Weight& w : parts) {
    if (r < w.rows) return kernels::weight_row_to_f32(w.dtype, w.row(r), y, w.cols);
    r -= w.rows;
  }
  fail("export: tensor '{}': row out of range", name);
}

bool ExportTensor::raw_copy_possible(DType type) const {
  if (vector || transpose || !values.empty() || parts.empty()) return false;
  for (const Weight& w : parts)
    if (w.dtype != type) return false;
  return true;
}

const uint8_t* ExportTensor::row_raw(int64_t r) const {
  if (permute_heads > 0) r = rotate_half_source(r, rows / permute_heads);
  for (const Weight& w : parts) {
    if (r < w.rows) return w.row(r);
    r -= w.rows;
  }
  fail("export: tensor '{}': row out of range", name);
}

std::vector<float> ExportTensor::materialize_f32() const {
  std::vector<float> out(size_t(rows) * size_t(cols));
  if (!transpose) {
    for (int64_t r = 0; r < stored_rows(); ++r) row_f32(r, out.data() + r * stored_cols());
    return out;
  }
  std::vector<float> src_row(static_cast<size_t>(cols));
  int64_t o = 0;  // source row = stored column
  for (const Weight& w : parts)
    for (int64_t i = 0; i < w.rows; ++i, ++o) {
      kernels::weight_row_to_f32(w.dtype, w.row(i), src_row.data(), w.cols);
      for (int64_t c = 0; c < cols; ++c) out[size_t(c * rows + o)] = src_row[size_t(c)];
    }
  return out;
}

std::vector<ExportTensor> gguf_export_tensors(const Model& m) {
  const ModelConfig& c = m.cfg;
  std::vector<ExportTensor> out;
  out.push_back(matrix("token_embd.weight", m.tok_embd, -1));
  if (c.arch == Arch::GPT2) out.push_back(matrix("position_embd.weight", m.pos_embd, -1));
  // llama.cpp reads Llama 3-style rope scaling from per-frequency divisors in a tensor.
  if (c.arch == Arch::Llama &&
      (c.rope_scaling.type == RopeScaling::Type::Llama3 || c.rope_scaling.type == RopeScaling::Type::Factors)) {
    ExportTensor t;
    t.name = "rope_freqs.weight";
    t.vector = true;
    t.rows = 1;
    t.cols = c.head_dim / 2;
    for (double d : rope_frequency_divisors(c)) t.values.push_back(float(d));
    out.push_back(std::move(t));
  }
  for (int i = 0; i < c.n_layer; ++i) {
    const LayerWeights& l = m.layers[size_t(i)];
    auto name = [i](const char* what) { return fmt::format("blk.{}.{}", i, what); };
    auto opt_vec = [&](const char* what, const Weight& w, int permute = 0) {
      if (w) out.push_back(vec(name(what), w, i, permute));
    };
    opt_vec("attn_norm.weight", l.attn_norm);
    opt_vec("attn_norm.bias", l.attn_norm_b);
    if (c.arch == Arch::GPT2) {
      out.push_back(stacked(name("attn_qkv.weight"), {l.wq, l.wk, l.wv}, i, false));
      out.push_back(stacked(name("attn_qkv.bias"), {l.bq, l.bk, l.bv}, i, true));
    } else {
      out.push_back(matrix(name("attn_q.weight"), l.wq, i, c.n_head));
      out.push_back(matrix(name("attn_k.weight"), l.wk, i, c.n_head_kv));
      out.push_back(matrix(name("attn_v.weight"), l.wv, i));
      opt_vec("attn_q.bias", l.bq, c.n_head);
      opt_vec("attn_k.bias", l.bk, c.n_head_kv);
      opt_vec("attn_v.bias", l.bv);
    }
    out.push_back(matrix(name("attn_output.weight"), l.wo, i));
    opt_vec("attn_output.bias", l.bo);
    opt_vec("ffn_norm.weight", l.ffn_norm);
    opt_vec("ffn_norm.bias", l.ffn_norm_b);
    if (l.w_gate) out.push_back(matrix(name("ffn_gate.weight"), l.w_gate, i));
    opt_vec("ffn_gate.bias", l.b_gate);
    out.push_back(matrix(name("ffn_up.weight"), l.w_up, i));
    opt_vec("ffn_up.bias", l.b_up);
    out.push_back(matrix(name("ffn_down.weight"), l.w_down, i));
    opt_vec("ffn_down.bias", l.b_down);
  }
  out.push_back(vec("output_norm.weight", m.out_norm, -1));
  if (m.out_norm_b) out.push_back(vec("output_norm.bias", m.out_norm_b, -1));
  if (!c.tie_embeddings) out.push_back(matrix("output.weight", m.output, -1));
  return out;
}

std::vector<ExportTensor> hf_export_tensors(const Model& m) {
  const ModelConfig& c = m.cfg;
  std::vector<ExportTensor> out;
  const bool gpt2 = c.arch == Arch::GPT2;
  auto add = [&](ExportTensor t) { out.push_back(std::move(t)); };
  auto add_opt_vec = [&](std::string n, const Weight& w, int layer) {
    if (w) add(vec(std::move(n), w, layer));
  };
  if (gpt2) {
    add(matrix("transformer.wte.weight", m.tok_embd, -1));
    add(matrix("transformer.wpe.weight", m.pos_embd, -1));
  } else {
    add(matrix("model.embed_tokens.weight", m.tok_embd, -1));
  }
  for (int i = 0; i < c.n_layer; ++i) {
    const LayerWeights& l = m.layers[size_t(i)];
    if (gpt2) {
      const std::string p = fmt::format("transformer.h.{}.", i);
      auto conv1d = [&](std::string n, std::vector<Weight> parts) {
        ExportTensor t = stacked(std::move(n), std::move(parts), i, false);
        t.transpose = true;
        return t;
      };
      add(vec(p + "ln_1.weight", l.attn_norm, i));
      add(vec(p + "ln_1.bias", l.attn_norm_b, i));
      // GPT-2's Conv1D stores [in, out]; the fused q|k|v columns need all three parts in one matrix.
      add(conv1d(p + "attn.c_attn.weight", {l.wq, l.wk, l.wv}));
      add(stacked(p + "attn.c_attn.bias", {l.bq, l.bk, l.bv}, i, true));
      add(conv1d(p + "attn.c_proj.weight", {l.wo}));
      add(vec(p + "attn.c_proj.bias", l.bo, i));
      add(vec(p + "ln_2.weight", l.ffn_norm, i));
      add(vec(p + "ln_2.bias", l.ffn_norm_b, i));
      add(conv1d(p + "mlp.c_fc.weight", {l.w_up}));
      add(vec(p + "mlp.c_fc.bias", l.b_up, i));
      add(conv1d(p + "mlp.c_proj.weight", {l.w_down}));
      add(vec(p + "mlp.c_proj.bias", l.b_down, i));
      continue;
    }
    const std::string p = fmt::format("model.layers.{}.", i);
    add(vec(p + "input_layernorm.weight", l.attn_norm, i));
    add(matrix(p + "self_attn.q_proj.weight", l.wq, i));
    add(matrix(p + "self_attn.k_proj.weight", l.wk, i));
    add(matrix(p + "self_attn.v_proj.weight", l.wv, i));
    add_opt_vec(p + "self_attn.q_proj.bias", l.bq, i);
    add_opt_vec(p + "self_attn.k_proj.bias", l.bk, i);
    add_opt_vec(p + "self_attn.v_proj.bias", l.bv, i);
    add(matrix(p + "self_attn.o_proj.weight", l.wo, i));
    add_opt_vec(p + "self_attn.o_proj.bias", l.bo, i);
    add(vec(p + "post_attention_layernorm.weight", l.ffn_norm, i));
    add(matrix(p + "mlp.gate_proj.weight", l.w_gate, i));
    add(matrix(p + "mlp.up_proj.weight", l.w_up, i));
    add(matrix(p + "mlp.down_proj.weight", l.w_down, i));
    add_opt_vec(p + "mlp.gate_proj.bias", l.b_gate, i);
    add_opt_vec(p + "mlp.up_proj.bias", l.b_up, i);
    add_opt_vec(p + "mlp.down_proj.bias", l.b_down, i);
  }
  if (gpt2) {
    add(vec("transformer.ln_f.weight", m.out_norm, -1));
    add(vec("transformer.ln_f.bias", m.out_norm_b, -1));
  } else {
    add(vec("model.norm.weight", m.out_norm, -1));
  }
  if (!c.tie_embeddings) add(matrix("lm_head.weight", m.output, -1));
  return out;
}

}  // namespace qforge
