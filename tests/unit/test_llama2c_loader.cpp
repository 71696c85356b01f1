// The llama2.c legacy checkpoint importer: shapes, the adjacent-pair -> rotate_half reordering of
// wq/wk, tied and untied heads, tokenizer discovery, and rejection of malformed headers and sizes.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "qforge/error.h"
#include "qforge/model.h"
#include "test_util.h"

namespace qforge {
namespace {

struct Dims {
  int32_t dim = 16, hidden = 24, layers = 2, heads = 4, kv_heads = 2, vocab = 11, seq_len = 8;
};

// Number of floats after the header in a well-formed file with these dims.
size_t float_count(const Dims& d, bool shared) {
  const size_t vocab = size_t(d.vocab < 0 ? -d.vocab : d.vocab);
  const size_t hd = size_t(d.dim / d.heads), kv_dim = hd * size_t(d.kv_heads);
  const size_t L = size_t(d.layers), dim = size_t(d.dim), hidden = size_t(d.hidden);
  size_t n = vocab * dim + L * (2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim) + dim +
             2 * size_t(d.seq_len) * (hd / 2);
  if (!shared) n += vocab * dim;
  return n;
}

// Writes a header and `n_floats` floats whose value is their index (so positions are recognisable).
void write_file(const std::string& path, const Dims& d, size_t n_floats) {
  std::ofstream f(path, std::ios::binary);
  const int32_t h[7] = {d.dim, d.hidden, d.layers, d.heads, d.kv_heads, d.vocab, d.seq_len};
  f.write(reinterpret_cast<const char*>(h), sizeof(h));
  for (size_t i = 0; i < n_floats; ++i) {
    const float v = float(i);
    f.write(reinterpret_cast<const char*>(&v), sizeof(v));
  }
}

void write_valid(const std::string& path, const Dims& d) { write_file(path, d, float_count(d, d.vocab > 0)); }

// Loading must fail with BadInput and a message naming the file and containing `needle`.
void expect_rejected(const std::string& path, const std::string& needle) {
  try {
    LoadOptions lo;
    lo.load_tokenizer = false;
    load_llama2c_model(path, lo);
    ADD_FAILURE() << "loaded " << path << " but expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::BadInput) << msg;
    EXPECT_NE(msg.find("llama2c: "), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

LoadOptions no_tokenizer() {
  LoadOptions lo;
  lo.load_tokenizer = false;
  return lo;
}

TEST(Llama2cLoader, Stories260KConfigAndTensors) {
  const std::string bin = test::shared("models/stories260K-llama2c/stories260K.bin");
  auto m = load_llama2c_model(bin, no_tokenizer());
  const ModelConfig& c = m->cfg;
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.n_embd, 64);
  EXPECT_EQ(c.n_ff, 172);
  EXPECT_EQ(c.n_layer, 5);
  EXPECT_EQ(c.n_head, 8);
  EXPECT_EQ(c.n_head_kv, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_ctx, 512);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.act, Activation::SiLU);
  EXPECT_EQ(m->source_format, "llama2c");
  EXPECT_EQ(m->size_on_disk, 1056540u);
  EXPECT_EQ(m->output.data, m->tok_embd.data);
  ASSERT_EQ(m->layers.size(), 5u);
  ASSERT_EQ(m->file_tensors.size(), 13u);  // no wcls: the classifier is shared
  EXPECT_EQ(m->file_tensors[0].name, "llama2c.token_embedding");
  EXPECT_EQ(m->file_tensors[2].name, "llama2c.wq");
  EXPECT_EQ(m->file_tensors[2].shape, (std::vector<int64_t>{5, 64, 64}));
  EXPECT_EQ(m->file_tensors[3].shape, (std::vector<int64_t>{5, 32, 64}));
  EXPECT_EQ(m->file_tensors[7].name, "llama2c.w1");
  EXPECT_EQ(m->file_tensors[7].shape, (std::vector<int64_t>{5, 172, 64}));
  uint64_t bytes = 28;
  for (const auto& t : m->file_tensors) bytes += t.nbytes;
  EXPECT_EQ(bytes, m->size_on_disk);
  const LayerWeights& l1 = m->layers[1];
  EXPECT_EQ(l1.wk.rows, 32);
  EXPECT_EQ(l1.wk.cols, 64);
  EXPECT_EQ(l1.w_gate.rows, 172);
  EXPECT_EQ(l1.w_down.rows, 64);
  EXPECT_EQ(l1.w_down.cols, 172);
  EXPECT_FALSE(l1.bq);
}

// Row 2i of each head in the file becomes row i, row 2i+1 becomes i + head_dim/2; the other
// weights are used in place.
TEST(Llama2cLoader, QueryAndKeyRowsMovedToRotateHalfOrder) {
  test::TempDir dir;
  Dims d;
  const std::string path = dir / "m.bin";
  write_valid(path, d);
  auto m = load_llama2c_model(path, no_tokenizer());
  const int hd = d.dim / d.heads, half = hd / 2;
  const auto* file = reinterpret_cast<const float*>(m->mappings.at(0)->data() + 28);
  const auto& fq = m->file_tensors[2];
  const auto& fk = m->file_tensors[3];
  ASSERT_EQ(fq.name, "llama2c.wq");
  for (int l = 0; l < d.layers; ++l) {
    const LayerWeights& lw = m->layers[size_t(l)];
    const float* src_q = reinterpret_cast<const float*>(fq.data) + size_t(l) * d.dim * d.dim;
    const float* src_k = reinterpret_cast<const float*>(fk.data) + size_t(l) * hd * d.kv_heads * d.dim;
    for (int h = 0; h < d.heads; ++h)
      for (int i = 0; i < half; ++i) {
        EXPECT_EQ(lw.wq.f32()[(h * hd + i) * d.dim], src_q[(h * hd + 2 * i) * d.dim]);
        EXPECT_EQ(lw.wq.f32()[(h * hd + i + half) * d.dim + 3], src_q[(h * hd + 2 * i + 1) * d.dim + 3]);
      }
    for (int h = 0; h < d.kv_heads; ++h)
      for (int i = 0; i < half; ++i) {
        EXPECT_EQ(lw.wk.f32()[(h * hd + i) * d.dim + 1], src_k[(h * hd + 2 * i) * d.dim + 1]);
        EXPECT_EQ(lw.wk.f32()[(h * hd + i + half) * d.dim], src_k[(h * hd + 2 * i + 1) * d.dim]);
      }
    // In place: v and the MLP point straight into the mapping.
    const auto* base = m->mappings[0]->data();
    const auto* end = base + m->mappings[0]->size();
    for (const Weight* w : {&lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down, &lw.attn_norm, &lw.ffn_norm}) {
      const auto* p = static_cast<const uint8_t*>(w->data);
      EXPECT_TRUE(p >= base && p < end) << w->name;
    }
    const auto* q = static_cast<const uint8_t*>(lw.wq.data);
    EXPECT_FALSE(q >= base && q < end) << "wq must be a reordered copy";
  }
  EXPECT_EQ(m->tok_embd.f32(), file);
}

TEST(Llama2cLoader, NegativeVocabMeansSeparateClassifier) {
  test::TempDir dir;
  Dims d;
  d.vocab = -11;
  const std::string path = dir / "untied.bin";
  write_valid(path, d);
  auto m = load_llama2c_model(path, no_tokenizer());
  EXPECT_EQ(m->cfg.vocab_size, 11);
  EXPECT_FALSE(m->cfg.tie_embeddings);
  ASSERT_EQ(m->file_tensors.size(), 14u);
  EXPECT_EQ(m->file_tensors.back().name, "llama2c.wcls");
  EXPECT_EQ(m->output.data, m->file_tensors.back().data);
  EXPECT_NE(m->output.data, m->tok_embd.data);
  EXPECT_EQ(m->output.rows, 11);
}

TEST(Llama2cLoader, FindsTokenizerBesideTheCheckpoint) {
  auto m = load_model(test::shared("models/stories260K-llama2c/stories260K.bin"));
  ASSERT_TRUE(m->tokenizer);
  EXPECT_EQ(m->tokenizer->vocab_size(), 512);
  EXPECT_EQ(m->tokenizer->kind(), "llama2c");
}

TEST(Llama2cLoader, TokenizerPathOverride) {
  LoadOptions lo;
  lo.tokenizer_path = test::shared("models/stories260K-hf/tokenizer.model");
  auto m = load_llama2c_model(test::shared("models/stories260K-llama2c/stories260K.bin"), lo);
  ASSERT_TRUE(m->tokenizer);
  EXPECT_EQ(m->tokenizer->kind(), "sentencepiece");
}

TEST(Llama2cLoader, RejectsShortFile) {
  test::TempDir dir;
  const std::string path = dir / "short.bin";
  std::ofstream(path, std::ios::binary).write("\x40\0\0\0\x10\0\0\0", 8);
  expect_rejected(path, "header");
}

TEST(Llama2cLoader, RejectsNonPositiveFields) {
  test::TempDir dir;
  struct Case {
    int32_t Dims::*field;
    int32_t value;
    const char* name;
  };
  const Case cases[] = {{&Dims::dim, 0, "'dim'"},          {&Dims::hidden, -4, "'hidden_dim'"},
                        {&Dims::layers, 0, "'n_layers'"},  {&Dims::heads, -1, "'n_heads'"},
                        {&Dims::kv_heads, 0, "'n_kv_heads'"}, {&Dims::vocab, 0, "'vocab_size'"},
                        {&Dims::seq_len, -8, "'seq_len'"}};
  for (const Case& c : cases) {
    Dims d;
    d.*(c.field) = c.value;
    const std::string path = dir / "bad.bin";
    write_file(path, d, 1000);
    expect_rejected(path, c.name);
  }
}

TEST(Llama2cLoader, RejectsHeadsThatDoNotDivide) {
  test::TempDir dir;
  Dims d;
  d.heads = 3;  // 16 % 3 != 0
  write_file(dir / "a.bin", d, 1000);
  expect_rejected(dir / "a.bin", "'n_heads' (3) does not divide 'dim' (16)");
  d = Dims();
  d.kv_heads = 3;  // 4 % 3 != 0
  write_file(dir / "b.bin", d, 1000);
  expect_rejected(dir / "b.bin", "'n_kv_heads' (3)");
  d = Dims();
  d.kv_heads = 8;  // more kv heads than query heads
  write_file(dir / "c.bin", d, 1000);
  expect_rejected(dir / "c.bin", "'n_kv_heads' (8)");
}

TEST(Llama2cLoader, RejectsWrongFileSize) {
  test::TempDir dir;
  Dims d;
  const size_t n = float_count(d, true);
  write_file(dir / "short.bin", d, n - 1);
  expect_rejected(dir / "short.bin", "implies");
  write_file(dir / "long.bin", d, n + 1);
  expect_rejected(dir / "long.bin", "implies");
  d.vocab = -d.vocab;  // untied needs wcls too: the tied-size file is now too short
  write_file(dir / "nowcls.bin", d, n);
  expect_rejected(dir / "nowcls.bin", "implies");
}

TEST(Llama2cLoader, RejectsHeaderWhoseSizeOverflows) {
  test::TempDir dir;
  Dims d;
  d.dim = 1 << 30;
  d.heads = 1 << 10;
  d.kv_heads = 1 << 10;
  d.hidden = INT32_MAX;
  d.layers = INT32_MAX;
  d.vocab = INT32_MAX;
  d.seq_len = INT32_MAX;
  write_file(dir / "huge.bin", d, 16);
  expect_rejected(dir / "huge.bin", "overflows");
}

}  // namespace
}  // namespace qforge
