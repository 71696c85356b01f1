// Block quantization types: the table, byte layouts on hand-made blocks (expected bytes derived from
// the formats, not from the code under test), nearest-level rounding and error bounds, edge cases
// and argument errors. Quality on real weights: test_quant_quality.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "qforge/dtype.h"
#include "qforge/error.h"
#include "kernels/kernels.h"
#include "qforge/quant.h"
#include "quant/quant_util.h"

using namespace qforge;

namespace {

const QuantType& type_named(const char* name) {
  const QuantType* t = find_quant_type(name);
  if (!t) throw std::runtime_error(std::string("no type ") + name);
  return *t;
}

std::vector<uint8_t> quantize(const QuantType& t, const std::vector<float>& x, const float* importance = nullptr) {
  std::vector<uint8_t> q(t.row_bytes(int64_t(x.size())));
  t.quantize_row(x.data(), q.data(), int64_t(x.size()), importance);
  return q;
}

std::vector<float> dequantize(const QuantType& t, const std::vector<uint8_t>& q, size_t n) {
  std::vector<float> y(n);
  t.dequantize_row(q.data(), y.data(), int64_t(n));
  return y;
}

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Heavy-tailed test data: normal with a few large outliers, like trained weights.
std::vector<float> random_row(size_t n, uint32_t seed, float scale = 0.02f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, scale);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng) * (u(rng) < 0.01f ? 8.0f : 1.0f);
  return x;
}

std::vector<float> random_importance(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, 1.5f);
  std::vector<float> w(n);
  for (auto& v : w) v = std::exp(normal(rng));
  return w;
}

// ---- the levels a block can represent --------------------------------------------------------------
// For weight i of a quantized row: the values its block can give it, decoded here from the format
// description (independently of the library's dequantizers).
using Levels = std::vector<float>;

Levels linear_levels(float d, float m, int kmin, int kmax) {
  Levels v;
  for (int k = kmin; k <= kmax; ++k) v.push_back(d * k + m);
  return v;
}

int scale6_q3k(const uint8_t* s, int j) {
  const int low = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
  const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | high << 4) - 32;
}

void scale_min_q45k(const uint8_t* s, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

const float kIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

Levels levels_for(const std::string& type, const uint8_t* row, int64_t i) {
  if (type == "q8_0") {
    const uint8_t* b = row + (i / 32) * 34;
    return linear_levels(half_at(b), 0, -127, 127);
  }
  if (type == "q4_0") return linear_levels(half_at(row + (i / 32) * 18), 0, -8, 7);
  if (type == "q5_0") return linear_levels(half_at(row + (i / 32) * 22), 0, -16, 15);
  if (type == "q4_1") {
    const uint8_t* b = row + (i / 32) * 20;
    return linear_levels(half_at(b), half_at(b + 2), 0, 15);
  }
  if (type == "q5_1") {
    const uint8_t* b = row + (i / 32) * 24;
    return linear_levels(half_at(b), half_at(b + 2), 0, 31);
  }
  if (type == "iq4_nl") {
    const float d = half_at(row + (i / 32) * 18);
    Levels v;
    for (float k : kIq4nl) v.push_back(d * k);
    return v;
  }
  if (type == "nf4") {
    const uint8_t* b = row + (i / 64) * 36;
    float absmax;
    std::memcpy(&absmax, b, 4);
    Levels v;
    for (float k : nf4_codebook()) v.push_back(k * absmax);
    return v;
  }
  const int64_t j = (i % 256);
  if (type == "q2_k") {
    const uint8_t* b = row + (i / 256) * 84;
    const uint8_t sc = b[j / 16];
    return linear_levels(half_at(b + 80) * (sc & 15), -half_at(b + 82) * (sc >> 4), 0, 3);
  }
  if (type == "q3_k") {
    const uint8_t* b = row + (i / 256) * 110;
    return linear_levels(half_at(b + 108) * scale6_q3k(b + 96, int(j / 16)), 0, -4, 3);
  }
  if (type == "q4_k" || type == "q5_k") {
    const bool five = type == "q5_k";
    const uint8_t* b = row + (i / 256) * (five ? 176 : 144);
    int sc, mn;
    scale_min_q45k(b + 4, int(j / 32), &sc, &mn);
    return linear_levels(half_at(b) * sc, -half_at(b + 2) * mn, 0, five ? 31 : 15);
  }
  if (type == "q6_k") {
    const uint8_t* b = row + (i / 256) * 210;
    return linear_levels(half_at(b + 208) * int8_t(b[192 + j / 16]), 0, -32, 31);
  }
  if (type == "f16" || type == "bf16" || type == "f32") return {};
  throw std::runtime_error("no level decoder for " + type);
}

// Every dequantized value must be one of its block's levels, and the level nearest to the input (up
// to `tol`, which covers rounding done with the f32 scale before it was stored as f16). `slack_levels`
// allows that many extra level spacings: the importance-weighted searches of q4_0/q4_1/q5_0/q5_1 keep
// the integers of the winning candidate grid and only then refit the scale (llama.cpp does the same),
// so a weight near a midpoint can sit one level from the nearest.
void expect_nearest_levels(const QuantType& t, const std::vector<float>& x, const std::vector<uint8_t>& q,
                           const std::string& what, float slack_levels = 0) {
  const auto y = dequantize(t, q, x.size());
  int reported = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(std::isfinite(y[i])) << what << " " << t.name << " weight " << i;
    const Levels lv = levels_for(t.name, q.data(), int64_t(i));
    if (lv.empty()) continue;
    float best = std::numeric_limits<float>::infinity(), on_level = best, top = 0;
    float lo = lv[0], hi = lv[0];
    for (float l : lv) {
      best = std::min(best, std::fabs(x[i] - l));
      on_level = std::min(on_level, std::fabs(y[i] - l));
      top = std::max(top, std::fabs(l));
      lo = std::min(lo, l);
      hi = std::max(hi, l);
    }
    const float tol = top * 0x1p-10f + 1e-30f + slack_levels * (hi - lo) / float(lv.size() - 1);
    const float err = std::fabs(x[i] - y[i]);
    if ((on_level > top * 1e-6f || err > best + tol) && reported++ < 5)
      ADD_FAILURE() << what << " " << t.name << " weight " << i << ": x=" << x[i] << " y=" << y[i]
                    << " nearest level error " << best << " actual " << err << " (off-level by " << on_level << ")";
  }
}

const char* kBlockTypes[] = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1",   "q2_k",
                             "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "nf4"};

}  // namespace

// ---- the table ---------------------------------------------------------------------------------

TEST(QuantTable, RowsMatchDTypesAndGgml) {
  struct Expect {
    const char* name;
    DType dtype;
    int32_t ggml;
    uint32_t elems, bytes;
    double bpw;
  };
  const Expect expect[] = {
      {"f32", DType::F32, 0, 1, 4, 32},
      {"f16", DType::F16, 1, 1, 2, 16},
      {"bf16", DType::BF16, 30, 1, 2, 16},
      {"q8_0", DType::Q8_0, 8, 32, 34, 8.5},
      {"q4_0", DType::Q4_0, 2, 32, 18, 4.5},
      {"q4_1", DType::Q4_1, 3, 32, 20, 5.0},
      {"q5_0", DType::Q5_0, 6, 32, 22, 5.5},
      {"q5_1", DType::Q5_1, 7, 32, 24, 6.0},
      {"q2_k", DType::Q2_K, 10, 256, 84, 2.625},
      {"q3_k", DType::Q3_K, 11, 256, 110, 3.4375},
      {"q4_k", DType::Q4_K, 12, 256, 144, 4.5},
      {"q5_k", DType::Q5_K, 13, 256, 176, 5.5},
      {"q6_k", DType::Q6_K, 14, 256, 210, 6.5625},
      {"iq4_nl", DType::IQ4_NL, 20, 32, 18, 4.5},
      {"nf4", DType::NF4, kNoGgmlType, 64, 36, 4.5},
  };
  ASSERT_EQ(quant_types().size(), std::size(expect));
  std::set<std::string> names;
  for (const auto& e : expect) {
    const QuantType* t = find_quant_type(e.name);
    ASSERT_NE(t, nullptr) << e.name;
    EXPECT_EQ(t->dtype, e.dtype) << e.name;
    EXPECT_EQ(t->ggml_type, e.ggml) << e.name;
    EXPECT_EQ(t->block_elems, e.elems) << e.name;
    EXPECT_EQ(t->block_bytes, e.bytes) << e.name;
    EXPECT_DOUBLE_EQ(t->bits_per_weight(), e.bpw) << e.name;
    EXPECT_EQ(find_quant_type(e.dtype), t);
    EXPECT_EQ(&quant_type(e.dtype), t);
    if (e.ggml != kNoGgmlType) {
      EXPECT_EQ(find_quant_type_by_ggml(e.ggml), t);
    }
    // The dtype table agrees (the GGUF reader and the safetensors writer size tensors from it).
    const DTypeInfo& di = dtype_info(e.dtype);
    EXPECT_STREQ(di.name, e.name);
    EXPECT_EQ(di.block_elems, e.elems);
    EXPECT_EQ(di.block_bytes, e.bytes);
    EXPECT_EQ(dtype_from_name(e.name), e.dtype);
    names.insert(e.name);
  }
  EXPECT_EQ(names.size(), std::size(expect));
  EXPECT_EQ(find_quant_type("Q4_K"), find_quant_type("q4_k"));
  EXPECT_EQ(find_quant_type("IQ4_NL"), find_quant_type("iq4_nl"));
  EXPECT_EQ(find_quant_type("q4_k_m"), nullptr);
  EXPECT_EQ(find_quant_type_by_ggml(15), nullptr);  // q8_K: ggml-internal, not written to files
  EXPECT_EQ(find_quant_type_by_ggml(kNoGgmlType), nullptr);
  EXPECT_EQ(find_quant_type(DType::I32), nullptr);
  EXPECT_THROW(quant_type(DType::I64), Error);
  EXPECT_EQ(dtype_bytes(DType::Q4_K, 512), 288u);
  EXPECT_EQ(dtype_bytes(DType::NF4, 128), 72u);
}

TEST(QuantTable, SafetensorsNamesUnaffected) {
  // Block types have no safetensors name: an empty or unknown dtype string must not match them.
  EXPECT_FALSE(dtype_from_safetensors("").has_value());
  EXPECT_FALSE(dtype_from_safetensors("Q4_K").has_value());
  EXPECT_EQ(dtype_from_safetensors("F32"), DType::F32);
  EXPECT_EQ(dtype_from_safetensors("BF16"), DType::BF16);
  EXPECT_EQ(dtype_from_safetensors("I16"), DType::I16);
}

// ---- hand-made blocks: known input -> known bytes ---------------------------------------------

TEST(QuantLayout, Q8_0) {
  // The largest magnitude is 127, so d = 127 / 127 = 1 (f16 0x3C00) and q = x.
  std::vector<float> x(32);
  x[0] = -127;
  for (int i = 1; i < 32; ++i) x[i] = float(i * 3 - 50);
  std::vector<uint8_t> want = {0x00, 0x3C, uint8_t(int8_t(-127))};
  for (int i = 1; i < 32; ++i) want.push_back(uint8_t(int8_t(i * 3 - 50)));
  const auto q = quantize(type_named("q8_0"), x);
  EXPECT_EQ(q, want);
  EXPECT_EQ(dequantize(type_named("q8_0"), q, 32), x);
}

TEST(QuantLayout, Q4_0) {
  // x[i] = i % 16 - 8: the largest magnitude is -8 (first at i = 0), so d = -8 / -8 = 1 and
  // q = x + 8 = i % 16. Byte j = q[j] | q[j + 16] << 4 = j * 0x11.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = float(i % 16 - 8);
  const std::vector<uint8_t> want = {0x00, 0x3C, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
                                     0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF};
  const auto q = quantize(type_named("q4_0"), x);
  EXPECT_EQ(q, want);
  EXPECT_EQ(dequantize(type_named("q4_0"), q, 32), x);
  // A positive extreme gets a negative scale: x = 8 * [1, 0, ...] -> d = 8 / -8 = -1 (0xBC00), q[0] = 0.
  std::vector<float> pos(32, 0.0f);
  pos[0] = 8;
  const auto qp = quantize(type_named("q4_0"), pos);
  EXPECT_EQ(qp[0], 0x00);
  EXPECT_EQ(qp[1], 0xBC);
  EXPECT_EQ(qp[2], 0x80);  // q[0] = 0 (low nibble), q[16] = 8 (zero)
  EXPECT_EQ(qp[3], 0x88);
}

TEST(QuantLayout, Q4_1) {
  // x[i] = i % 16 - 2: min -2, max 13, d = 15 / 15 = 1, m = -2 (0xC000), q = i % 16.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = float(i % 16 - 2);
  std::vector<uint8_t> want = {0x00, 0x3C, 0x00, 0xC0};
  for (int j = 0; j < 16; ++j) want.push_back(uint8_t(j * 0x11));
  const auto q = quantize(type_named("q4_1"), x);
  EXPECT_EQ(q, want);
  EXPECT_EQ(dequantize(type_named("q4_1"), q, 32), x);
}

TEST(QuantLayout, Q5_0) {
  // x[i] = i - 16: the extreme -16 gives d = 1 and q = i. Low nibbles: byte j = (j & 15) | (j & 15) << 4;
  // qh bit i = bit 4 of q[i], set for i >= 16: u32 0xFFFF0000 little-endian.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = float(i - 16);
  std::vector<uint8_t> want = {0x00, 0x3C, 0x00, 0x00, 0xFF, 0xFF};
  for (int j = 0; j < 16; ++j) want.push_back(uint8_t(j * 0x11));
  const auto q = quantize(type_named("q5_0"), x);
  EXPECT_EQ(q, want);
  EXPECT_EQ(dequantize(type_named("q5_0"), q, 32), x);
}

TEST(QuantLayout, Q5_1) {
  // x[i] = 1 + i / 2: min 1 (0x3C00), d = 15.5 / 31 = 0.5 (0x3800), q = i.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = 1.0f + 0.5f * float(i);
  std::vector<uint8_t> want = {0x00, 0x38, 0x00, 0x3C, 0x00, 0x00, 0xFF, 0xFF};
  for (int j = 0; j < 16; ++j) want.push_back(uint8_t(j * 0x11));
  const auto q = quantize(type_named("q5_1"), x);
  EXPECT_EQ(q, want);
  EXPECT_EQ(dequantize(type_named("q5_1"), q, 32), x);
}

TEST(QuantLayout, IQ4_NL) {
  // x on the levels at d = 1/64: the least-squares fit recovers d exactly (f16 0x2400) and every
  // weight its own level: q = i % 16, byte j = j * 0x11.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = kIq4nl[i % 16] / 64.0f;
  std::vector<uint8_t> want = {0x00, 0x24};
  for (int j = 0; j < 16; ++j) want.push_back(uint8_t(j * 0x11));
  const auto q = quantize(type_named("iq4_nl"), x);
  EXPECT_EQ(q, want);
  EXPECT_EQ(dequantize(type_named("iq4_nl"), q, 32), x);
}

TEST(QuantLayout, NF4) {
  // x = 2 * level[i % 16]: absmax 2 (f32 0x40000000), codes i % 16, first of each pair in the high nibble.
  const auto cb = nf4_codebook();
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[i] = 2.0f * cb[i % 16];
  std::vector<uint8_t> want = {0x00, 0x00, 0x00, 0x40};
  for (int j = 0; j < 32; ++j) want.push_back(uint8_t(((2 * j) % 16) << 4 | (2 * j + 1) % 16));
  const auto q = quantize(type_named("nf4"), x);
  EXPECT_EQ(q, want);
  EXPECT_EQ(dequantize(type_named("nf4"), q, 64), x);
}

// The k-quant blocks below hold 256 weights that lie exactly on a grid with the same scale (and min)
// in every sub-block, so the search recovers that grid, every 6-bit (or 4-bit) sub-block level is the
// top one, and the bytes follow from the layout alone.

TEST(QuantLayout, Q4_K) {
  // Sub-blocks of 32: x = s * q - m with q = i % 16, s = 63 * 2^-10, m = 63 * 2^-12.
  // Scale levels and min levels are all 63 -> d = s / 63 = 2^-10 (0x1400), dmin = 2^-12 (0x0C00);
  // the 12 scale bytes are all 0xFF (63 in 6 bits, plus the top bits of the 63s in bits 6-7);
  // qs byte 32c + l = q[64c + l] | q[64c + 32 + l] << 4 = (l % 16) * 0x11.
  const float s = 63.0f / 1024, m = 63.0f / 4096;
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) x[i] = s * float(i % 16) - m;
  std::vector<uint8_t> want = {0x00, 0x14, 0x00, 0x0C};
  want.insert(want.end(), 12, 0xFF);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) want.push_back(uint8_t((l % 16) * 0x11));
  const auto q = quantize(type_named("q4_k"), x);
  EXPECT_EQ(q, want);
  const auto y = dequantize(type_named("q4_k"), q, 256);
  for (int i = 0; i < 256; ++i) EXPECT_NEAR(y[i], x[i], 1e-7f) << i;
}

TEST(QuantLayout, Q5_K) {
  // As q4_K with q = i % 32: the fifth bit (q >= 16) is set for l >= 16 in both halves of every
  // chunk, so qh[l] = 0xFF for l >= 16 and 0 below; qs byte 32c + l = (l % 16) * 0x11.
  const float s = 63.0f / 1024, m = 63.0f / 4096;
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) x[i] = s * float(i % 32) - m;
  std::vector<uint8_t> want = {0x00, 0x14, 0x00, 0x0C};
  want.insert(want.end(), 12, 0xFF);
  for (int l = 0; l < 32; ++l) want.push_back(l >= 16 ? 0xFF : 0x00);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) want.push_back(uint8_t((l % 16) * 0x11));
  const auto q = quantize(type_named("q5_k"), x);
  EXPECT_EQ(q, want);
  const auto y = dequantize(type_named("q5_k"), q, 256);
  for (int i = 0; i < 256; ++i) EXPECT_NEAR(y[i], x[i], 1e-7f) << i;
}

TEST(QuantLayout, Q6_K) {
  // Sub-blocks of 16: x = s * (q - 32), q = 4 * (i % 16), s = 1/16. Each sub-block's extreme is -32 s,
  // so its scale fits as +s; the scales' extreme (s) goes to -128: d = s / -128 = -2^-11 (0x9000),
  // every scale byte is 0x80 (-128). ql byte 64h + l (and 64h + 32 + l) = v | v << 4 with
  // v = (4 * (l % 16)) & 15; qh byte 32h + l = t * 0x55 with t = (4 * (l % 16)) >> 4.
  const float s = 1.0f / 16;
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) x[i] = s * float(4 * (i % 16) - 32);
  std::vector<uint8_t> want;
  for (int h = 0; h < 2; ++h)
    for (int half = 0; half < 2; ++half)
      for (int l = 0; l < 32; ++l) {
        const int v = (4 * (l % 16)) & 15;
        want.push_back(uint8_t(v | v << 4));
      }
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) want.push_back(uint8_t(((4 * (l % 16)) >> 4) * 0x55));
  want.insert(want.end(), 16, 0x80);
  want.push_back(0x00);
  want.push_back(0x90);
  const auto q = quantize(type_named("q6_k"), x);
  EXPECT_EQ(q, want);
  EXPECT_EQ(dequantize(type_named("q6_k"), q, 256), x);
}

TEST(QuantLayout, Q3_K) {
  // Sub-blocks of 16: x = s * (q - 4), q = i % 8, s = 1/8. Every sub-block scale fits as +s, the
  // extreme goes to -32: stored level 0 everywhere (12 zero scale bytes), d = s / -32 = -2^-8 (0x9C00).
  // hmask byte b: bit k is the third bit of weight 32k + b, q = b % 8 -> 0xFF when b % 8 >= 4.
  // qs byte 32h + l: low bits (l % 8) & 3 of four weights -> t * 0x55.
  const float s = 1.0f / 8;
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) x[i] = s * float(i % 8 - 4);
  std::vector<uint8_t> want;
  for (int b = 0; b < 32; ++b) want.push_back(b % 8 >= 4 ? 0xFF : 0x00);
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) want.push_back(uint8_t(((l % 8) & 3) * 0x55));
  want.insert(want.end(), 12, 0x00);
  want.push_back(0x00);
  want.push_back(0x9C);
  const auto q = quantize(type_named("q3_k"), x);
  EXPECT_EQ(q, want);
  EXPECT_EQ(dequantize(type_named("q3_k"), q, 256), x);
}

TEST(QuantLayout, Q2_K) {
  // Sub-blocks of 16: x = s * q - m, q = i % 4, s = 15 * 2^-8, m = 15 * 2^-9. Scale and min levels
  // are all 15: scales bytes 0xFF, d = s / 15 = 2^-8 (0x1C00), dmin = 2^-9 (0x1800).
  // qs byte 32h + l = (l % 4) * 0x55.
  const float s = 15.0f / 256, m = 15.0f / 512;
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) x[i] = s * float(i % 4) - m;
  std::vector<uint8_t> want(16, 0xFF);
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) want.push_back(uint8_t((l % 4) * 0x55));
  for (uint8_t b : {0x00, 0x1C, 0x00, 0x18}) want.push_back(b);
  const auto q = quantize(type_named("q2_k"), x);
  EXPECT_EQ(q, want);
  const auto y = dequantize(type_named("q2_k"), q, 256);
  for (int i = 0; i < 256; ++i) EXPECT_NEAR(y[i], x[i], 1e-7f) << i;
}

// ---- rounding and error bounds -----------------------------------------------------------------

TEST(QuantBounds, NearestLevelOnRandomRows) {
  for (const char* name : kBlockTypes) {
    const QuantType& t = type_named(name);
    for (uint32_t seed = 1; seed <= 3; ++seed) {
      const auto x = random_row(1024, seed);
      expect_nearest_levels(t, x, quantize(t, x), "plain seed " + std::to_string(seed));
      const auto imp = random_importance(1024, seed + 100);
      const bool refit_last = t.block_elems == 32 && t.dtype != DType::IQ4_NL && t.dtype != DType::Q8_0;
      expect_nearest_levels(t, x, quantize(t, x, imp.data()), "importance seed " + std::to_string(seed),
                            refit_last ? 1.0f : 0.0f);
    }
  }
}

TEST(QuantBounds, LinearTypesWithinHalfAStep) {
  // Without importance the error is at most half a step, plus the part of the scale lost to f16 storage
  // (up to the top level times half an f16 ulp). The one exception is built into q4_0/q5_0: their grid
  // is -8..7 (-16..15) steps with the extreme weight on the -8 end, so a weight of the opposite sign
  // within half a step of the extreme's magnitude lies past the +7 end; it gets the end level, at most
  // one step away.
  struct Spec {
    const char* name;
    int block, bytes, top_level;
  };
  for (const Spec& sp : {Spec{"q8_0", 32, 34, 127}, Spec{"q4_0", 32, 18, 8}, Spec{"q5_0", 32, 22, 16},
                         Spec{"q4_1", 32, 20, 15}, Spec{"q5_1", 32, 24, 31}}) {
    const QuantType& t = type_named(sp.name);
    const auto x = random_row(4096, 7, 0.5f);
    const auto q = quantize(t, x);
    const auto y = dequantize(t, q, x.size());
    const bool has_min = sp.name[3] == '1';
    for (size_t i = 0; i < x.size(); ++i) {
      const uint8_t* b = q.data() + (i / sp.block) * sp.bytes;
      const float d = std::fabs(half_at(b));
      const float m = has_min ? std::fabs(half_at(b + 2)) : 0.0f;
      const float f16_loss = (sp.top_level * d + m) * 0x1p-11f + 1e-7f;
      const Levels lv = levels_for(sp.name, q.data(), int64_t(i));
      const float lo = std::min(lv.front(), lv.back()), hi = std::max(lv.front(), lv.back());
      const float outside = std::max(0.0f, std::max(lo - x[i], x[i] - hi));
      ASSERT_LE(outside, d + f16_loss) << sp.name << " weight " << i;
      ASSERT_LE(std::fabs(x[i] - y[i]), std::max(d / 2, outside) + f16_loss) << sp.name << " weight " << i;
    }
  }
}

TEST(QuantBounds, KQuantsWithinHalfASubBlockStep) {
  // For data without outliers every weight falls inside its sub-block's grid, so the error is at most
  // half of that sub-block's step (the search picks the scale; the final rounding is to the nearest).
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> x(2048);
  for (auto& v : x) v = u(rng);
  for (const char* name : {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k"}) {
    const QuantType& t = type_named(name);
    const auto q = quantize(t, x);
    const auto y = dequantize(t, q, x.size());
    double max_err_over_step = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const Levels lv = levels_for(name, q.data(), int64_t(i));
      const float lo = *std::min_element(lv.begin(), lv.end()), hi = *std::max_element(lv.begin(), lv.end());
      const float step = (hi - lo) / float(lv.size() - 1);
      const float outside = std::max(0.0f, std::max(lo - x[i], x[i] - hi));
      ASSERT_LE(std::fabs(x[i] - y[i]), std::max(step / 2, outside) + step * 1e-5f) << name << " weight " << i;
      if (step > 0) max_err_over_step = std::max(max_err_over_step, double(std::fabs(x[i] - y[i]) / step));
    }
    // Clipping at a grid's ends (the fit may trade the extremes for a finer step) stays small.
    EXPECT_LE(max_err_over_step, 1.0) << name;
  }
}

TEST(QuantBounds, ImportanceLowersWeightedError) {
  // Summed over rows, the importance-weighted squared error is lower when the quantizer is told the
  // importance; types that ignore it produce the same bytes either way.
  for (const auto& t : quant_types()) {
    if (t.block_elems == 1) continue;
    double plain = 0, aware = 0;
    for (uint32_t seed = 20; seed < 28; ++seed) {
      const auto x = random_row(1024, seed);
      const auto imp = random_importance(1024, seed + 50);
      const auto q0 = quantize(t, x), q1 = quantize(t, x, imp.data());
      if (!t.uses_importance) {
        EXPECT_EQ(q0, q1) << t.name;
        continue;
      }
      const auto y0 = dequantize(t, q0, x.size()), y1 = dequantize(t, q1, x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        plain += imp[i] * double(x[i] - y0[i]) * double(x[i] - y0[i]);
        aware += imp[i] * double(x[i] - y1[i]) * double(x[i] - y1[i]);
      }
    }
    if (t.uses_importance) {
      EXPECT_LT(aware, 0.95 * plain) << t.name;
    }
  }
}

// ---- edge cases --------------------------------------------------------------------------------

TEST(QuantEdge, ZerosGiveZeros) {
  const std::vector<float> x(512, 0.0f);
  for (const char* name : kBlockTypes) {
    const QuantType& t = type_named(name);
    const auto imp = random_importance(512, 3);
    for (const float* w : {static_cast<const float*>(nullptr), imp.data()}) {
      const auto y = dequantize(t, quantize(t, x, w), x.size());
      for (float v : y) ASSERT_EQ(v, 0.0f) << name;
    }
  }
  // Exact bytes of an all-zero block where the format pins them down (q4_0: d = 0 / -8 = -0.0, 0x8000).
  EXPECT_EQ(quantize(type_named("q4_0"), std::vector<float>(32, 0.0f)),
            std::vector<uint8_t>({0, 0x80, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88,
                                  0x88, 0x88, 0x88}));
  EXPECT_EQ(quantize(type_named("q8_0"), std::vector<float>(32, 0.0f)), std::vector<uint8_t>(34, 0));
  EXPECT_EQ(quantize(type_named("q6_k"), std::vector<float>(256, 0.0f)), std::vector<uint8_t>(210, 0));
  const auto nf = quantize(type_named("nf4"), std::vector<float>(64, 0.0f));
  EXPECT_EQ(std::vector<uint8_t>(nf.begin() + 4, nf.end()), std::vector<uint8_t>(32, 0x77));  // level 7 = 0.0
}

TEST(QuantEdge, ConstantOutlierTinyAndLargeRows) {
  std::vector<std::pair<std::string, std::vector<float>>> rows;
  rows.push_back({"constant +0.3", std::vector<float>(512, 0.3f)});
  rows.push_back({"constant -7", std::vector<float>(512, -7.0f)});
  std::vector<float> outlier(512, 0.0f);
  outlier[100] = 300.0f;
  rows.push_back({"lone outlier", outlier});
  auto noisy = random_row(512, 5);
  noisy[257] = -40.0f;
  rows.push_back({"outlier in noise", noisy});
  auto tiny = random_row(512, 6, 1e-9f);  // below f16's smallest subnormal scale
  rows.push_back({"tiny", tiny});
  auto large = random_row(512, 8, 2000.0f);
  for (auto& v : large) v = std::clamp(v, -65504.0f, 65504.0f);
  rows.push_back({"large", large});
  std::vector<float> alternating(512);
  for (int i = 0; i < 512; ++i) alternating[i] = i % 2 ? 1.0f : -1.0f;
  rows.push_back({"alternating", alternating});
  for (const auto& [what, x] : rows)
    for (const char* name : kBlockTypes) {
      const QuantType& t = type_named(name);
      expect_nearest_levels(t, x, quantize(t, x), what);
    }
  // A constant block of a type with a min is reproduced almost exactly (d = 0, m = f16(c)).
  const auto yc = dequantize(type_named("q4_1"), quantize(type_named("q4_1"), rows[0].second), 512);
  for (float v : yc) EXPECT_NEAR(v, 0.3f, 0.3f * 0x1p-11f);
  // A lone outlier is kept to within half a step of its block.
  for (const char* name : kBlockTypes) {
    const QuantType& t = type_named(name);
    const auto y = dequantize(t, quantize(t, outlier), 512);
    EXPECT_NEAR(y[100], 300.0f, 300.0f / 7) << name;
    for (int i = 0; i < 512; ++i) {
      if (i != 100) {
        EXPECT_LE(std::fabs(y[i]), 300.0f / 7) << name << " " << i;
      }
    }
  }
}

TEST(QuantEdge, PlainFloatRows) {
  const std::vector<float> x = {1.0f, -2.5f, 3.14159f, 65504.0f, 1e-8f, -0.0f, 70000.0f, 1.0009765625f};
  const auto f32 = quantize(type_named("f32"), x);
  EXPECT_EQ(dequantize(type_named("f32"), f32, x.size()), x);
  const auto f16 = quantize(type_named("f16"), x);
  uint16_t h[8];
  std::memcpy(h, f16.data(), 16);
  EXPECT_EQ(h[0], 0x3C00);
  EXPECT_EQ(h[1], 0xC100);
  EXPECT_EQ(h[3], 0x7BFF);
  EXPECT_EQ(h[6], 0x7C00);  // beyond f16: infinity, as ggml and numpy give
  const auto bf = quantize(type_named("bf16"), x);
  std::memcpy(h, bf.data(), 16);
  EXPECT_EQ(h[0], 0x3F80);
  EXPECT_EQ(h[7], 0x3F80);  // 1 + 2^-10 rounds to 1 in bf16 (8 significant bits)
}

// ---- argument errors ---------------------------------------------------------------------------

TEST(QuantErrors, BadLengthsAndValues) {
  std::vector<float> x(300, 0.5f), y(300);
  std::vector<uint8_t> q(2000);
  for (const char* name : kBlockTypes) {
    const QuantType& t = type_named(name);
    const int64_t bad = t.block_elems + 1;
    EXPECT_THROW(t.quantize_row(x.data(), q.data(), bad, nullptr), Error) << name;
    EXPECT_THROW(t.dequantize_row(q.data(), y.data(), bad), Error) << name;
    EXPECT_THROW(t.quantize_row(x.data(), q.data(), -int64_t(t.block_elems), nullptr), Error) << name;
    EXPECT_THROW((void)t.row_bytes(bad), Error) << name;
    EXPECT_THROW(quantize_matrix(t, x.data(), q.data(), 2, bad), Error) << name;
    try {
      t.quantize_row(x.data(), q.data(), bad, nullptr);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("multiple of the block size"), std::string::npos) << e.what();
      EXPECT_EQ(e.exit_code(), 2);
    }
    const int64_t n = t.block_elems;
    std::vector<float> bad_x(x.begin(), x.begin() + n);
    bad_x[3] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THROW(t.quantize_row(bad_x.data(), q.data(), n, nullptr), Error) << name;
    bad_x[3] = std::numeric_limits<float>::infinity();
    EXPECT_THROW(t.quantize_row(bad_x.data(), q.data(), n, nullptr), Error) << name;
    std::vector<float> imp(size_t(n), 1.0f);
    imp[1] = -1;
    EXPECT_THROW(t.quantize_row(x.data(), q.data(), n, imp.data()), Error) << name;
    imp[1] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THROW(t.quantize_row(x.data(), q.data(), n, imp.data()), Error) << name;
    // Zero-length rows are fine and write nothing.
    EXPECT_NO_THROW(t.quantize_row(x.data(), q.data(), 0, nullptr));
  }
  // Beyond the f16 range the ggml types refuse (their scales would overflow); nf4 keeps an f32 absmax.
  std::vector<float> big(256, 1.0f);
  big[9] = 70000.0f;
  EXPECT_THROW(type_named("q4_k").quantize_row(big.data(), q.data(), 256, nullptr), Error);
  EXPECT_THROW(type_named("q8_0").quantize_row(big.data(), q.data(), 256, nullptr), Error);
  EXPECT_NO_THROW(type_named("nf4").quantize_row(big.data(), q.data(), 256, nullptr));
}

// ---- nf4 double quantization -------------------------------------------------------------------

TEST(QuantNf4, DynamicMap) {
  const auto map = nf4_dynamic_map();
  for (int i = 1; i < 256; ++i) EXPECT_LT(map[i - 1], map[i]) << i;
  EXPECT_EQ(map[127], 0.0f);
  EXPECT_EQ(map[255], 1.0f);
  for (int k = 0; k < 127; ++k) EXPECT_EQ(map[128 + k], -map[126 - k]) << k;
  // Values recomputed with torch 1.13 from bitsandbytes' create_dynamic_map() (entries where float32
  // evaluation order does not matter; see src/quant/nf4.cpp).
  EXPECT_EQ(map[0], -0x1.fc6666p-1f);    // -0.99296875: midpoint of the last two of 65 points on [0.1, 1]
  EXPECT_EQ(map[128], 0x1.27476ep-21f);  // 5.5e-7: the smallest magnitude, 10^-6 * 0.55
  EXPECT_EQ(map[254], 0x1.fc6666p-1f);
  const auto cb = nf4_codebook();
  EXPECT_EQ(cb[0], -1.0f);
  EXPECT_EQ(cb[7], 0.0f);
  EXPECT_EQ(cb[15], 1.0f);
}

TEST(QuantNf4, DoubleQuantizationRoundTrip) {
  const QuantType& t = type_named("nf4");
  const int64_t n = 64 * 700;  // 700 blocks: two full groups of 256 and a partial one
  const auto x = random_row(size_t(n), 31);
  auto q = quantize(t, x);
  const auto absmax = nf4_block_absmax(q.data(), n / 64);
  ASSERT_EQ(absmax.size(), 700u);
  const Nf4NestedAbsmax nested = nf4_double_quantize(absmax);
  ASSERT_EQ(nested.codes.size(), 700u);
  ASSERT_EQ(nested.group_scale.size(), 3u);
  double mean = 0;
  for (float a : absmax) mean += a;
  EXPECT_NEAR(nested.offset, mean / 700, 1e-7);
  const auto decoded = nf4_double_dequantize(nested);
  ASSERT_EQ(decoded.size(), absmax.size());
  // The map's widest gap is 0.9 / 64 (its top decade), so a code is off by at most half of that times
  // the group's scale.
  for (size_t i = 0; i < absmax.size(); ++i)
    EXPECT_LE(std::fabs(decoded[i] - absmax[i]), nested.group_scale[i / 256] * (0.9f / 128) + 1e-7f) << i;
  // Putting the decoded scales back costs little accuracy.
  const auto y_plain = dequantize(t, q, size_t(n));
  nf4_set_block_absmax(q.data(), n / 64, decoded.data());
  EXPECT_EQ(nf4_block_absmax(q.data(), n / 64), decoded);
  const auto y_dq = dequantize(t, q, size_t(n));
  double e_plain = 0, e_dq = 0;
  for (int64_t i = 0; i < n; ++i) {
    e_plain += double(x[size_t(i)] - y_plain[size_t(i)]) * double(x[size_t(i)] - y_plain[size_t(i)]);
    e_dq += double(x[size_t(i)] - y_dq[size_t(i)]) * double(x[size_t(i)] - y_dq[size_t(i)]);
  }
  EXPECT_LT(e_dq, 1.02 * e_plain);

  // Equal absmax values (zero spread) decode to the offset exactly; empty input gives an empty state.
  const std::vector<float> same(10, 0.25f);
  for (float v : nf4_double_dequantize(nf4_double_quantize(same))) EXPECT_EQ(v, 0.25f);
  EXPECT_TRUE(nf4_double_quantize(std::span<const float>()).codes.empty());
  Nf4NestedAbsmax broken = nested;
  broken.group_scale.pop_back();
  EXPECT_THROW(nf4_double_dequantize(broken), Error);
  std::vector<float> nan_absmax = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_THROW(nf4_double_quantize(nan_absmax), Error);
}

// ---- SIMD twin of the k-quant scale search -----------------------------------------------------

TEST(QuantSearch, ScaleMinLanesBitIdenticalToScalar) {
  if (!kernels::cpu().avx2) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  const quant::ScaleFan fans[] = {{-1.0f, 0.1f, 20}, {-0.5f, 0.1f, 15}, {-0.9f, 0.05f, 36}, {0.0f, 0.0f, 0}};
  const int qmaxes[] = {15, 31, 3};
  for (int trial = 0; trial < 3000; ++trial) {
    float x[256], w[256];
    const float spread = std::pow(10.0f, float(trial % 13) - 6.0f);  // 1e-6 .. 1e6
    for (int i = 0; i < 256; ++i) {
      x[i] = spread * normal(rng);
      w[i] = (trial % 3 == 0) ? 1.0f : uniform(rng) * 4.0f + float(trial % 5 == 0 ? 0 : 1e-3);
    }
    // Awkward sub-blocks: all zero, constant, positive only, negative only, one outlier, zero weights.
    const int kind = trial % 7;
    for (int i = 0; i < 32; ++i) {
      if (kind == 1) x[i] = 0.0f;
      if (kind == 2) x[32 + i] = 0.25f * spread;
      if (kind == 3) x[64 + i] = std::fabs(x[64 + i]);
      if (kind == 4) x[96 + i] = -std::fabs(x[96 + i]);
      if (kind == 5) x[128 + i] = i == 7 ? 1e4f * spread : 1e-3f * spread;
      if (kind == 6) w[160 + i] = 0.0f;
    }
    if (kind == 0) x[200] = -0.0f;
    const int qmax = qmaxes[trial % 3];
    const quant::ScaleFan fan = fans[trial % 4];
    // q4_K/q5_K: 32 values, squared error; q2_K: 16 values, absolute or squared error.
    const int n = trial % 5 < 3 ? 32 : 16;
    const auto norm = trial % 5 == 4 ? quant::ErrorNorm::Absolute : quant::ErrorNorm::Squared;
    uint8_t q_lanes[256], q_ref[256], scratch[32];
    float s_lanes[8], o_lanes[8];
    quant::fit_scale_min_x8_avx2(n, qmax, x, w, q_lanes, s_lanes, o_lanes, fan, norm);
    for (int j = 0; j < 8; ++j) {
      float o_ref = 0;
      const float s_ref =
          quant::fit_scale_min(n, qmax, x + n * j, w + n * j, q_ref + n * j, &o_ref, scratch, fan, norm);
      ASSERT_EQ(std::memcmp(&s_ref, &s_lanes[j], 4), 0)
          << "trial " << trial << " sub-block " << j << ": scale expected " << s_ref << " actual " << s_lanes[j];
      ASSERT_EQ(std::memcmp(&o_ref, &o_lanes[j], 4), 0)
          << "trial " << trial << " sub-block " << j << ": offset expected " << o_ref << " actual " << o_lanes[j];
      for (int i = 0; i < n; ++i)
        ASSERT_EQ(q_ref[n * j + i], q_lanes[n * j + i]) << "trial " << trial << " index " << n * j + i;
    }
  }
}

TEST(QuantSearch, SymmetricLanesBitIdenticalToScalar) {
  if (!kernels::cpu().avx2) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(12);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  const int sizes[] = {16, 32, 7};
  const int qhalves[] = {32, 4, 8, 16};
  for (int trial = 0; trial < 3000; ++trial) {
    const int n = sizes[trial % 3], qhalf = qhalves[trial % 4];
    float x[256], w[256];
    const float spread = std::pow(10.0f, float(trial % 13) - 6.0f);
    for (int i = 0; i < 8 * n; ++i) {
      x[i] = spread * normal(rng);
      w[i] = trial % 3 == 0 ? x[i] * x[i] : uniform(rng) * 4.0f;
    }
    // Awkward groups: all zero, below the all-zero limit, constant, a tie for the peak, zero weights.
    const int kind = trial % 6;
    for (int i = 0; i < n; ++i) {
      if (kind == 1) x[i] = 0.0f;
      if (kind == 2) x[n + i] = 1e-16f;
      if (kind == 3) x[2 * n + i] = -0.5f * spread;
      if (kind == 4 && i < 2) x[3 * n + i] = i == 0 ? 2 * spread : -2 * spread;
      if (kind == 5) w[4 * n + i] = 0.0f;
    }
    uint8_t q_lanes[256], q_ref[256];
    float s_lanes[8];
    quant::fit_symmetric_x8_avx2(n, qhalf, x, w, q_lanes, s_lanes);
    for (int j = 0; j < 8; ++j) {
      const float s_ref = quant::fit_symmetric(n, qhalf, x + n * j, w + n * j, q_ref + n * j);
      ASSERT_EQ(std::memcmp(&s_ref, &s_lanes[j], 4), 0)
          << "trial " << trial << " group " << j << ": scale expected " << s_ref << " actual " << s_lanes[j];
      for (int i = 0; i < n; ++i)
        ASSERT_EQ(q_ref[n * j + i], q_lanes[n * j + i]) << "trial " << trial << " index " << n * j + i;
    }
  }
}
