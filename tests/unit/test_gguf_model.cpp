// GGUF -> Model: the real stories260K GGUF (written by llama.cpp's converter) gives the logits of
// the same model in Hugging Face form and reproduces run.c's greedy output; GGUF files written
// here from Hugging Face models (llama with F16/BF16 weights, GPT-2 with fused QKV) load back to
// the same weights and logits; and bad model files are errors naming the file and key or tensor.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <span>

#include "kernels/matmul.h"
#include "qforge/dtype.h"
#include "qforge/error.h"
#include "qforge/gguf.h"
#include "qforge/quant.h"
#include "qforge/model.h"
#include "qforge/session.h"
#include "qforge/synth.h"
#include "test_gguf_writer.h"
#include "test_util.h"

namespace qforge {
namespace {

using test::GgufBuilder;
using test::shared;

#define EXPECT_CONTAINS(haystack, needle) EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

std::string stories_gguf() { return shared("models/stories260K-gguf/stories260K.gguf"); }
std::string stories_hf() { return shared("models/stories260K-hf"); }

std::unique_ptr<Model> load(const std::string& path, bool tokenizer = false) {
  LoadOptions lo;
  lo.load_tokenizer = tokenizer;
  return load_model(path, lo);
}

std::vector<int> reference_greedy_ids() {
  std::ifstream f(shared("models/stories260K-hf/reference/greedy-from-bos.ids"));
  std::vector<int> ids;
  for (int id; f >> id;) ids.push_back(id);
  return ids;
}

std::vector<std::vector<float>> all_logits(const Model& m, const std::vector<int>& tokens) {
  SessionOptions o;
  o.n_threads = 2;
  o.n_ctx = int(tokens.size());
  Session s(m, o);
  s.eval(tokens, /*all_logits=*/true);
  std::vector<std::vector<float>> rows;
  for (size_t i = 0; i < tokens.size(); ++i) rows.emplace_back(s.logits(int(i)), s.logits(int(i)) + s.n_vocab());
  return rows;
}

// |actual - expected| <= tol * max(1, |expected|) everywhere; at most a few reports.
void expect_rows_near(const std::vector<std::vector<float>>& actual, const std::vector<std::vector<float>>& expected,
                      double tol, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int reported = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_EQ(actual[i].size(), expected[i].size()) << what;
    for (size_t v = 0; v < actual[i].size(); ++v) {
      const double a = actual[i][v], b = expected[i][v];
      if (!(std::fabs(a - b) <= tol * std::max(1.0, std::fabs(b))) && reported++ < 5)
        ADD_FAILURE() << what << ": token index " << i << ", vocab index " << v << ": expected " << b << ", actual " << a;
    }
  }
}

// ---- the real file ----------------------------------------------------------------------------

TEST(GgufModel, Stories260KLoads) {
  const auto g = load(stories_gguf(), true);
  const auto hf = load(stories_hf());
  EXPECT_EQ(g->source_format, "gguf");
  EXPECT_EQ(g->source_path, stories_gguf());
  EXPECT_EQ(g->size_on_disk, 1185376u);
  EXPECT_EQ(g->file_tensors.size(), 48u);
  EXPECT_EQ(g->file_tensors[0].name, "token_embd.weight");
  EXPECT_EQ(g->file_tensors[0].shape, (std::vector<int64_t>{512, 64}));
  const ModelConfig &a = g->cfg, &b = hf->cfg;
  EXPECT_EQ(a.arch, Arch::Llama);
  EXPECT_EQ(a.n_embd, b.n_embd);
  EXPECT_EQ(a.n_ff, b.n_ff);
  EXPECT_EQ(a.n_layer, b.n_layer);
  EXPECT_EQ(a.n_head, b.n_head);
  EXPECT_EQ(a.n_head_kv, b.n_head_kv);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_FLOAT_EQ(a.norm_eps, b.norm_eps);
  EXPECT_FLOAT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.bos_token_id, 1);
  EXPECT_EQ(a.eos_token_id, 2);
  EXPECT_FALSE(a.tie_embeddings);  // llama.cpp's converter wrote output.weight
  // F32 weights that need no reordering are used in place from the mapping.
  const uint8_t* base = g->mappings.at(0)->data();
  const auto in_file = [&](const void* p) {
    return p >= base && p < base + g->mappings[0]->size();
  };
  EXPECT_TRUE(in_file(g->layers[0].wv.data));
  EXPECT_TRUE(in_file(g->tok_embd.data));
  EXPECT_FALSE(in_file(g->layers[0].wq.data));  // reordered copy
  ASSERT_NE(g->tokenizer, nullptr);
  EXPECT_EQ(g->tokenizer->vocab_size(), 512);
  EXPECT_EQ(g->tokenizer->encode("Once upon a time", true),
            load_sentencepiece(stories_hf() + "/tokenizer.model")->encode("Once upon a time", true));
}

TEST(GgufModel, Stories260KLogitsMatchHuggingFaceForm) {
  const auto g = load(stories_gguf());
  const auto hf = load(stories_hf());
  const std::vector<int> ref = reference_greedy_ids();
  ASSERT_GE(ref.size(), 29u);
  std::vector<int> tokens = {1};
  tokens.insert(tokens.end(), ref.begin(), ref.begin() + 29);
  expect_rows_near(all_logits(*g, tokens), all_logits(*hf, tokens), 1e-4, "GGUF vs HF");
}

TEST(GgufModel, Stories260KGreedyFromBosMatchesRunC) {
  const auto g = load(stories_gguf());
  const std::vector<int> ref = reference_greedy_ids();
  ASSERT_EQ(ref.size(), 256u);
  SessionOptions o;
  o.n_threads = 1;  // a 64-wide model: threads only add synchronisation
  Session s(*g, o);
  std::vector<int> out;
  int token = 1;
  for (size_t step = 0; step < ref.size(); ++step) {
    s.eval(std::span<const int>(&token, 1));
    const float* l = s.logits();
    token = int(std::max_element(l, l + s.n_vocab()) - l);
    out.push_back(token);
  }
  const auto mismatch = std::mismatch(out.begin(), out.end(), ref.begin());
  EXPECT_TRUE(mismatch.first == out.end()) << "first difference at step " << (mismatch.first - out.begin());
}

// ---- files written here -----------------------------------------------------------------------

// Tensor bytes of a weight in a ggml type (F32, F16, BF16); rows reordered to llama.cpp's
// adjacent-pair rotary order when n_heads > 0: converted row h*hd + 2i + j holds row h*hd + j*hd/2 + i.
std::string weight_bytes(const Weight& w, uint32_t ggml_type, int n_heads = 0) {
  const int64_t rows = w.rows, cols = w.cols;
  std::string out;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t src = r;
    if (n_heads > 0) {
      const int64_t hd = rows / n_heads, h = r / hd, k = r % hd;
      src = h * hd + (k % 2) * (hd / 2) + k / 2;
    }
    for (int64_t c = 0; c < cols; ++c) {
      const float x = w.f32()[src * cols + c];
      if (ggml_type == kGgmlTypeF16) GgufBuilder::put(out, f32_to_f16(x));
      else if (ggml_type == kGgmlTypeBF16) GgufBuilder::put(out, f32_to_bf16(x));
      else GgufBuilder::put(out, x);
    }
  }
  return out;
}

void add_weight(GgufBuilder& b, const std::string& name, const Weight& w, uint32_t type, int n_heads = 0) {
  const bool vector = name.find(".bias") != std::string::npos || name.find("norm") != std::string::npos;
  if (vector && name.find("norm") != std::string::npos) type = kGgmlTypeF32;  // llama.cpp keeps norms in F32
  const std::vector<uint64_t> ne = vector ? std::vector<uint64_t>{uint64_t(w.rows * w.cols)}
                                          : std::vector<uint64_t>{uint64_t(w.cols), uint64_t(w.rows)};
  b.tensor(name, type, ne, weight_bytes(w, type, n_heads));
}

// A llama GGUF laid out as llama.cpp's converter writes it, from a loaded model.
GgufBuilder llama_gguf(const Model& m, uint32_t type) {
  const ModelConfig& c = m.cfg;
  GgufBuilder b;
  b.str("general.architecture", "llama");
  b.u32("llama.context_length", uint32_t(c.max_ctx));
  b.u32("llama.embedding_length", uint32_t(c.n_embd));
  b.u32("llama.feed_forward_length", uint32_t(c.n_ff));
  b.u32("llama.block_count", uint32_t(c.n_layer));
  b.u32("llama.attention.head_count", uint32_t(c.n_head));
  b.u32("llama.attention.head_count_kv", uint32_t(c.n_head_kv));
  b.f32("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
  b.u32("llama.rope.dimension_count", uint32_t(c.head_dim));
  b.f32("llama.rope.freq_base", c.rope_theta);
  add_weight(b, "token_embd.weight", m.tok_embd, type);
  for (int i = 0; i < c.n_layer; ++i) {
    const LayerWeights& l = m.layers[size_t(i)];
    const std::string p = "blk." + std::to_string(i) + ".";
    add_weight(b, p + "attn_norm.weight", l.attn_norm, type);
    add_weight(b, p + "attn_q.weight", l.wq, type, c.n_head);
    add_weight(b, p + "attn_k.weight", l.wk, type, c.n_head_kv);
    add_weight(b, p + "attn_v.weight", l.wv, type);
    add_weight(b, p + "attn_output.weight", l.wo, type);
    add_weight(b, p + "ffn_norm.weight", l.ffn_norm, type);
    add_weight(b, p + "ffn_gate.weight", l.w_gate, type);
    add_weight(b, p + "ffn_up.weight", l.w_up, type);
    add_weight(b, p + "ffn_down.weight", l.w_down, type);
  }
  add_weight(b, "output_norm.weight", m.out_norm, type);
  if (!c.tie_embeddings) add_weight(b, "output.weight", m.output, type);
  return b;
}

// Every value of `got` (in whatever type it is kept) equals `want` rounded through the ggml type.
void expect_rounded_equal(const Weight& got, const Weight& want, uint32_t type, const std::string& what) {
  ASSERT_EQ(got.rows, want.rows) << what;
  ASSERT_EQ(got.cols, want.cols) << what;
  int bad = 0;
  std::vector<float> row(static_cast<size_t>(got.cols));
  for (int64_t r = 0; r < got.rows; ++r) {
    kernels::weight_row_to_f32(got.dtype, got.row(r), row.data(), got.cols);
    for (int64_t c = 0; c < got.cols; ++c) {
      const float x = want.f32()[r * got.cols + c];
      const float e = type == kGgmlTypeF16 ? f16_to_f32(f32_to_f16(x)) : type == kGgmlTypeBF16 ? bf16_to_f32(f32_to_bf16(x)) : x;
      if (row[size_t(c)] != e && bad++ < 3)
        ADD_FAILURE() << what << " row " << r << " col " << c << ": " << row[size_t(c)] << " != " << e;
    }
  }
}

TEST(GgufModel, HalfPrecisionLlamaWeightsAreKeptAndReordered) {
  const auto hf = load(stories_hf());
  test::TempDir dir;
  for (uint32_t type : {kGgmlTypeF32, kGgmlTypeF16, kGgmlTypeBF16}) {
    const std::string name = ggml_type_info(type)->name;
    SCOPED_TRACE(name);
    const std::string path = dir / (name + ".gguf");
    llama_gguf(*hf, type).write(path);
    const auto g = load(path);
    EXPECT_TRUE(g->cfg.tie_embeddings);
    EXPECT_EQ(g->output.data, g->tok_embd.data);
    for (int i = 0; i < hf->cfg.n_layer; ++i) {
      const LayerWeights &a = g->layers[size_t(i)], &b = hf->layers[size_t(i)];
      expect_rounded_equal(a.wq, b.wq, type, "wq");
      expect_rounded_equal(a.wk, b.wk, type, "wk");
      expect_rounded_equal(a.wv, b.wv, type, "wv");
      expect_rounded_equal(a.w_down, b.w_down, type, "w_down");
      expect_rounded_equal(a.attn_norm, b.attn_norm, kGgmlTypeF32, "attn_norm");
    }
    expect_rounded_equal(g->tok_embd, hf->tok_embd, type, "tok_embd");
    const std::vector<int> tokens = {1, 403, 407, 261, 378, 432, 383};
    // Exact for F32; half precision moves the logits a little.
    expect_rows_near(all_logits(*g, tokens), all_logits(*hf, tokens), type == kGgmlTypeF32 ? 1e-4 : 0.1, name);
  }
}

TEST(GgufModel, Gpt2WithFusedQkvMatchesHuggingFaceForm) {
  test::TempDir dir;
  SynthOptions opt;
  opt.shape = "tiny-gpt2-test";
  opt.out_dir = dir / "hf";
  opt.seed = 3;
  opt.n_threads = 2;
  opt.shared_dir = dir / "no-shared-folder";  // no tokenizer: not needed here
  synth_checkpoint(opt);
  const auto hf = load(opt.out_dir);
  const ModelConfig& c = hf->cfg;
  ASSERT_EQ(c.arch, Arch::GPT2);

  for (bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    GgufBuilder b;
    b.str("general.architecture", "gpt2");
    b.u32("gpt2.context_length", uint32_t(c.max_ctx));
    b.u32("gpt2.embedding_length", uint32_t(c.n_embd));
    b.u32("gpt2.feed_forward_length", uint32_t(c.n_ff));
    b.u32("gpt2.block_count", uint32_t(c.n_layer));
    b.u32("gpt2.attention.head_count", uint32_t(c.n_head));
    b.f32("gpt2.attention.layer_norm_epsilon", c.norm_eps);
    add_weight(b, "token_embd.weight", hf->tok_embd, 0);
    add_weight(b, "position_embd.weight", hf->pos_embd, 0);
    for (int i = 0; i < c.n_layer; ++i) {
      const LayerWeights& l = hf->layers[size_t(i)];
      const std::string p = "blk." + std::to_string(i) + ".";
      add_weight(b, p + "attn_norm.weight", l.attn_norm, 0);
      add_weight(b, p + "attn_norm.bias", l.attn_norm_b, 0);
      // q, k and v stacked along the output axis, as llama.cpp's attn_qkv.
      std::string qkv, qkv_b;
      for (const Weight* w : {&l.wq, &l.wk, &l.wv}) qkv += weight_bytes(*w, 0);
      for (const Weight* w : {&l.bq, &l.bk, &l.bv}) qkv_b += weight_bytes(*w, 0);
      b.tensor(p + "attn_qkv.weight", 0, {uint64_t(c.n_embd), uint64_t(3 * c.n_embd)}, qkv);
      b.tensor(p + "attn_qkv.bias", 0, {uint64_t(3 * c.n_embd)}, qkv_b);
      add_weight(b, p + "attn_output.weight", l.wo, 0);
      add_weight(b, p + "attn_output.bias", l.bo, 0);
      add_weight(b, p + "ffn_norm.weight", l.ffn_norm, 0);
      add_weight(b, p + "ffn_norm.bias", l.ffn_norm_b, 0);
      add_weight(b, p + "ffn_up.weight", l.w_up, 0);
      add_weight(b, p + "ffn_up.bias", l.b_up, 0);
      add_weight(b, p + "ffn_down.weight", l.w_down, 0);
      add_weight(b, p + "ffn_down.bias", l.b_down, 0);
    }
    add_weight(b, "output_norm.weight", hf->out_norm, 0);
    add_weight(b, "output_norm.bias", hf->out_norm_b, 0);
    if (!tied) add_weight(b, "output.weight", hf->tok_embd, 0);  // same values, stored twice
    const std::string path = dir / "gpt2.gguf";
    b.write(path);
    const auto g = load(path);
    EXPECT_EQ(g->cfg.arch, Arch::GPT2);
    EXPECT_EQ(g->cfg.act, Activation::GeluTanh);
    EXPECT_EQ(g->cfg.vocab_size, c.vocab_size);
    EXPECT_EQ(g->cfg.max_ctx, c.max_ctx);
    EXPECT_EQ(g->cfg.tie_embeddings, tied);
    const std::vector<int> tokens = {50256, 464, 3290, 318, 257, 1332, 13, 0, 50000};
    expect_rows_near(all_logits(*g, tokens), all_logits(*hf, tokens), 1e-5, "GPT-2 GGUF vs HF");
  }
}

// ---- bad model files --------------------------------------------------------------------------

// A tiny valid llama GGUF (E 32, 2 heads, ffn 64, vocab 10, one layer) that tests then break.
struct TinyLlama {
  std::map<std::string, std::pair<std::vector<uint64_t>, uint32_t>> tensors;  // name -> (ne, type)
  std::vector<std::function<void(GgufBuilder&)>> extra_kv;
  std::string arch = "llama";
  bool block_count_as_string = false;
  uint32_t alignment = 32;

  TinyLlama() {
    for (const char* n : {"token_embd.weight", "output.weight"}) tensors[n] = {{32, 10}, 0};
    for (const char* n : {"output_norm.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight"}) tensors[n] = {{32}, 0};
    for (const char* n : {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight"})
      tensors[n] = {{32, 32}, 0};
    for (const char* n : {"blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"}) tensors[n] = {{32, 64}, 0};
    tensors["blk.0.ffn_down.weight"] = {{64, 32}, 0};
  }
  std::string write(const test::TempDir& dir) const {
    GgufBuilder b;
    b.alignment = alignment;
    if (alignment != 32) b.u32("general.alignment", alignment);
    b.str("general.architecture", arch);
    b.u32(arch + ".embedding_length", 32);
    b.u32(arch + ".feed_forward_length", 64);
    if (block_count_as_string) b.str(arch + ".block_count", "1");
    else b.u32(arch + ".block_count", 1);
    b.u32(arch + ".attention.head_count", 2);
    b.u32(arch + ".context_length", 32);
    for (const auto& f : extra_kv) f(b);
    for (const auto& [name, spec] : tensors) {
      const auto& [ne, type] = spec;
      const GgmlTypeInfo* ti = ggml_type_info(type);
      uint64_t n = 1;
      for (uint64_t d : ne) n *= d;
      std::string bytes;
      if (type == kGgmlTypeF32 || type == kGgmlTypeF16) {  // small values that differ element to element
        for (uint64_t i = 0; i < n; ++i) {
          const float x = float(int((i * 2654435761u) % 201) - 100) * 0.002f;
          if (type == kGgmlTypeF32) GgufBuilder::put(bytes, x);
          else GgufBuilder::put(bytes, f32_to_f16(x));
        }
      } else {
        bytes.assign(n / ti->block_elems * ti->block_bytes, '\0');
      }
      b.tensor(name, type, ne, bytes);
    }
    const std::string path = dir / "tiny.gguf";
    b.write(path);
    return path;
  }
};

std::string load_error(const TinyLlama& t, ErrorKind kind = ErrorKind::BadInput) {
  test::TempDir dir;
  const std::string path = t.write(dir);
  try {
    load(path);
  } catch (const Error& e) {
    EXPECT_EQ(int(e.kind()), int(kind)) << e.what();
    EXPECT_CONTAINS(e.what(), "gguf: " + path + ": ");
    return e.what();
  }
  ADD_FAILURE() << "loaded";
  return "";
}

TEST(GgufModel, TinyLlamaLoads) {
  test::TempDir dir;
  const auto m = load(TinyLlama().write(dir));
  EXPECT_EQ(m->cfg.head_dim, 16);
  EXPECT_EQ(m->cfg.vocab_size, 10);
  EXPECT_EQ(m->tokenizer, nullptr);
  Session s(*m);
  s.eval(std::vector<int>{1, 2, 3});
  EXPECT_TRUE(std::isfinite(s.logits()[0]));
}

// With general.alignment 1, tensors start at any byte: F16 and F32 data that is not naturally
// aligned is copied before it is read, and gives the same model.
TEST(GgufModel, UnalignedTensorData) {
  TinyLlama aligned;
  aligned.tensors["blk.0.attn_k.weight"].second = kGgmlTypeF16;
  aligned.tensors["blk.0.ffn_up.weight"].second = kGgmlTypeF16;
  test::TempDir d1, d2;
  const auto reference = load(aligned.write(d1));

  TinyLlama packed = aligned;
  packed.alignment = 1;
  // A name string of the right length puts the data section at an odd offset.
  std::string path;
  for (int pad = 1; pad <= 4 && path.empty(); ++pad) {
    packed.extra_kv = {[pad](GgufBuilder& b) { b.str("general.name", std::string(size_t(pad), 'x')); }};
    const std::string p = packed.write(d2);
    if (GgufFile::open(p)->data_offset() % 2 == 1) path = p;
  }
  ASSERT_FALSE(path.empty());
  const auto m = load(path);
  const std::vector<int> tokens = {1, 2, 3, 9, 0};
  expect_rows_near(all_logits(*m, tokens), all_logits(*reference, tokens), 0.0, "alignment 1 vs 32");
}

TEST(GgufModel, BadModelFiles) {
  {
    TinyLlama t;
    t.arch = "falcon";
    EXPECT_CONTAINS(load_error(t, ErrorKind::Unsupported),
                    "key 'general.architecture': architecture 'falcon' is not supported (supported: llama, gpt2)");
  }
  {
    TinyLlama t;
    t.block_count_as_string = true;
    EXPECT_CONTAINS(load_error(t), "key 'llama.block_count': expected u32, found string");
  }
  {
    TinyLlama t;
    t.tensors["blk.0.attn_q.weight"].second = 9;  // Q8_1: ggml's activation type, never a weight type here
    EXPECT_CONTAINS(load_error(t, ErrorKind::Unsupported),
                    "tensor 'blk.0.attn_q.weight': ggml type Q8_1 is not supported yet");
  }
  {
    TinyLlama t;
    t.tensors["blk.0.attn_k.weight"].second = 26;  // I32
    EXPECT_CONTAINS(load_error(t), "tensor 'blk.0.attn_k.weight': ggml type I32 is not a floating-point type");
  }
  {
    TinyLlama t;
    t.tensors.erase("blk.0.ffn_up.weight");
    EXPECT_CONTAINS(load_error(t), "missing tensor 'blk.0.ffn_up.weight'");
  }
  {
    TinyLlama t;
    t.tensors["blk.0.ffn_down.weight"].first = {32, 64};
    EXPECT_CONTAINS(load_error(t), "tensor 'blk.0.ffn_down.weight': shape [64, 32] (outermost first), expected [32, 64]");
  }
  {
    TinyLlama t;
    t.tensors["rope_freqs.weight"] = {{3}, 0};
    EXPECT_CONTAINS(load_error(t), "tensor 'rope_freqs.weight': shape [3] (outermost first), expected [8]");
    t.tensors["rope_freqs.weight"] = {{8}, 0};  // the builder fills -0.2, 0.x, ...: a negative divisor is hostile
    EXPECT_CONTAINS(load_error(t), "tensor 'rope_freqs.weight': factor 0 is -0.2, not a positive number");
  }
  {
    TinyLlama t;
    t.tensors["blk.0.attn_q_norm.weight"] = {{16}, 0};
    EXPECT_CONTAINS(load_error(t, ErrorKind::Unsupported), "tensor 'blk.0.attn_q_norm.weight': not used by qforge's llama model");
  }
  {
    TinyLlama t;
    t.extra_kv.push_back([](GgufBuilder& b) { b.u32("llama.rope.dimension_count", 2); });
    EXPECT_CONTAINS(load_error(t, ErrorKind::Unsupported), "key 'llama.rope.dimension_count': rotary embeddings over 2 of 16");
  }
  {
    TinyLlama t;
    t.extra_kv.push_back([](GgufBuilder& b) { b.u32("llama.attention.head_count_kv", 3); });
    EXPECT_CONTAINS(load_error(t), "key 'llama.attention.head_count_kv': 3 does not divide llama.attention.head_count (2)");
  }
  {
    TinyLlama t;
    t.extra_kv.push_back([](GgufBuilder& b) { b.u32("llama.vocab_size", 11); });
    EXPECT_CONTAINS(load_error(t), "key 'llama.vocab_size': 11 differs from the 10 rows of token_embd.weight");
  }
  {
    TinyLlama t;
    t.extra_kv.push_back([](GgufBuilder& b) { b.str("llama.rope.scaling.type", "yarn"); });
    EXPECT_CONTAINS(load_error(t, ErrorKind::Unsupported), "key 'llama.rope.scaling.type': rope scaling 'yarn' is not supported");
  }
  {
    TinyLlama t;
    t.extra_kv.push_back([](GgufBuilder& b) { b.u32("llama.embedding_length", 0); });
    EXPECT_CONTAINS(load_error(t), "key 'llama.embedding_length': appears twice");
  }
}

TEST(GgufModel, LinearRopeScalingIsRead) {
  TinyLlama t;
  t.extra_kv.push_back([](GgufBuilder& b) {
    b.str("llama.rope.scaling.type", "linear");
    b.f32("llama.rope.scaling.factor", 4.0f);
    b.f32("llama.rope.freq_base", 500000.0f);
  });
  test::TempDir dir;
  const auto m = load(t.write(dir));
  EXPECT_EQ(m->cfg.rope_scaling.type, RopeScaling::Type::Linear);
  EXPECT_FLOAT_EQ(m->cfg.rope_scaling.factor, 4.0f);
  EXPECT_FLOAT_EQ(m->cfg.rope_theta, 500000.0f);
}

}  // namespace
}  // namespace qforge

namespace qforge {
namespace {

// ---- quantized GGUF weights (kept quantized in memory; their rows dequantize to the round trip) --

// A weight row-quantized to a ggml block type, rows in llama.cpp's rotary order when n_heads > 0.
std::string quantized_bytes(const Weight& w, const QuantType& q, int n_heads) {
  const std::string f32 = weight_bytes(w, kGgmlTypeF32, n_heads);
  const auto* x = reinterpret_cast<const float*>(f32.data());
  std::string out(size_t(w.rows) * q.row_bytes(w.cols), '\0');
  for (int64_t r = 0; r < w.rows; ++r)
    q.quantize_row(x + r * w.cols, out.data() + size_t(r) * q.row_bytes(w.cols), w.cols, nullptr);
  return out;
}

// Dequantize(quantize(row)) of one weight, in qforge's own row order: what the loader must yield.
std::vector<float> round_trip(const Weight& w, const QuantType& q) {
  std::vector<float> out(size_t(w.rows * w.cols));
  std::string buf(q.row_bytes(w.cols), '\0');
  for (int64_t r = 0; r < w.rows; ++r) {
    q.quantize_row(w.f32() + r * w.cols, buf.data(), w.cols, nullptr);
    q.dequantize_row(buf.data(), out.data() + r * w.cols, w.cols);
  }
  return out;
}

TEST(GgufModel, QuantizedWeightsLoadAsTheirQuantizedRows) {
  const auto hf = load(test::shared("models/tinystories-llama-7M-hf"));  // rows of 256 and 768
  const ModelConfig& c = hf->cfg;
  test::TempDir dir;
  for (DType dt : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
    const QuantType& q = quant_type(dt);
    SCOPED_TRACE(q.name);
    const uint32_t type = uint32_t(q.ggml_type);
    GgufBuilder b = llama_gguf(*hf, kGgmlTypeF32);
    // Replace the matrices by quantized copies (norms stay F32, as llama.cpp keeps them).
    GgufBuilder qb;
    qb = b;
    qb.clear_tensors();
    auto add = [&](const std::string& name, const Weight& w, int n_heads) {
      qb.tensor(name, type, {uint64_t(w.cols), uint64_t(w.rows)}, quantized_bytes(w, q, n_heads));
    };
    auto add_f32 = [&](const std::string& name, const Weight& w) { add_weight(qb, name, w, kGgmlTypeF32); };
    add("token_embd.weight", hf->tok_embd, 0);
    for (int i = 0; i < c.n_layer; ++i) {
      const LayerWeights& l = hf->layers[size_t(i)];
      const std::string p = "blk." + std::to_string(i) + ".";
      add_f32(p + "attn_norm.weight", l.attn_norm);
      add(p + "attn_q.weight", l.wq, c.n_head);
      add(p + "attn_k.weight", l.wk, c.n_head_kv);
      add(p + "attn_v.weight", l.wv, 0);
      add(p + "attn_output.weight", l.wo, 0);
      add_f32(p + "ffn_norm.weight", l.ffn_norm);
      add(p + "ffn_gate.weight", l.w_gate, 0);
      add(p + "ffn_up.weight", l.w_up, 0);
      add(p + "ffn_down.weight", l.w_down, 0);
    }
    add_f32("output_norm.weight", hf->out_norm);
    add("output.weight", hf->output, 0);
    const std::string path = dir / (std::string(q.name) + ".gguf");
    qb.write(path);
    const auto g = load(path);
    for (int i = 0; i < c.n_layer; i += 3) {
      const LayerWeights &a = g->layers[size_t(i)], &h = hf->layers[size_t(i)];
      for (auto [got, want, what] : {std::tuple{&a.wq, &h.wq, "wq"}, {&a.wk, &h.wk, "wk"}, {&a.w_down, &h.w_down, "w_down"}}) {
        const std::vector<float> expect = round_trip(*want, q);
        ASSERT_EQ(got->rows * got->cols, int64_t(expect.size())) << what;
        EXPECT_EQ(got->dtype, dt) << what << ": kept in the file's type, not widened";
        std::vector<float> row(static_cast<size_t>(got->cols));
        for (int64_t r = 0; r < got->rows; ++r) {
          kernels::weight_row_to_f32(got->dtype, got->row(r), row.data(), got->cols);
          for (int64_t k = 0; k < got->cols; ++k)
            ASSERT_EQ(row[size_t(k)], expect[size_t(r * got->cols + k)]) << what << " layer " << i << " row " << r << " col " << k;
        }
      }
    }
    // The quantized model still predicts like the original: the logits' error is small next to their spread.
    const std::vector<int> tokens = {1, 403, 407, 261, 378, 432, 383};
    const auto lq = all_logits(*g, tokens), lo = all_logits(*hf, tokens);
    double err = 0, norm = 0;
    for (size_t t = 0; t < lo.size(); ++t)
      for (size_t v = 0; v < lo[t].size(); ++v) {
        err += (lq[t][v] - lo[t][v]) * (lq[t][v] - lo[t][v]);
        norm += lo[t][v] * lo[t][v];
      }
    EXPECT_LT(std::sqrt(err / norm), dt == DType::Q8_0 ? 0.01 : 0.1) << "relative RMS logit error";
  }
}

}  // namespace
}  // namespace qforge
