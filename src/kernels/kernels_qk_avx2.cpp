// AVX2 kernels for the k-quant super-block types (q2_K .. q6_K) with BlockQ8x256 activations.
//
// The unit of work is one super-block of one weight row, decoded into eight ymm registers of
// unsigned 8-bit codes u, 32 weights each, straight from the block's bytes. Unlike the AVX-512
// kernels every vector here covers 32 consecutive weights, so the activations are used in place:
//   q4_K / q5_K: low / high nibbles of qs[32c..32c+31] are weights 64c + 0..31 / 64c + 32..63
//   q2_K / q3_K: bit pair p of qs[32h..32h+31] is weights 128h + 32p + 0..31
//   q6_K:        low / high nibbles of ql[64h + 32r ..] are weights 128h + 32r + 0..31 / + 64
// vpmaddubsw multiplies the unsigned codes by the signed activation codes and adds pairs into int16
// (no saturation: |2 * 63 * 127| < 32767), and vpmaddwd multiplies each int16 by its sub-block's
// scale and adds pairs into int32. A vector holds one 32-weight sub-block (q4_K, q5_K) or two
// 16-weight ones, one per 128-bit lane (q2_K, q3_K, q6_K), so its scale vector is one word
// broadcast, or one word per lane: a vpshufb of the super-block's scale words.
// As in the AVX-512 file, everything inside a super-block is exact integer arithmetic, the zero
// points of q3_K / q6_K come off through the activation's bsums, and the mins of q2_K / q4_K / q5_K
// are a second float accumulator. GEMM decodes a few weight rows into a buffer and runs every 4
// activation rows over each decoded row.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "kernels/weight_kernels.h"
#include "qforge/dtype.h"
#include "qforge/error.h"
#include "quant/blocks_k.h"

namespace qforge::kernels {
namespace {

using quant::kBlockK;

// ---- activations --------------------------------------------------------------------------------

// Same bytes as the scalar quantize_act (see kernels_qk_scalar.cpp for the exact rule).
void quantize_act_q8x256(const float* x, void* xq, int64_t n) {
  auto* out = static_cast<BlockQ8x256*>(xq);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undoes the lane split of the packs
  for (int64_t b = 0; b < n / kBlockK; ++b, x += kBlockK) {
    // max(a, m) returns m when a is NaN, as the scalar `a > m ? a : m` does.
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < kBlockK; i += 8) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask), m);
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    auto code = [&](int i) {
      return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), idv), lo), hi));
    };
    for (int i = 0; i < kBlockK; i += 32) {
      const __m256i q01 = _mm256_packs_epi32(code(i), code(i + 8));        // int16, lanes interleaved
      const __m256i q23 = _mm256_packs_epi32(code(i + 16), code(i + 24));
      const __m256i q = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q01, q23), order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs + i), q);
    }
    // bsums: vpsadbw sums 8 unsigned bytes per qword; the sign flip adds 128 to each code.
    alignas(32) uint64_t sums[32];
    const __m256i flip = _mm256_set1_epi8(char(0x80));
    for (int k = 0; k < 8; ++k) {
      const __m256i q = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(out[b].qs + 32 * k)), flip);
      _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 4 * k), _mm256_sad_epu8(q, _mm256_setzero_si256()));
    }
    for (int j = 0; j < 16; ++j) out[b].bsums[j] = int16_t(int(sums[2 * j] + sums[2 * j + 1]) - 16 * 128);
    out[b].d = d;
  }
}

// ---- shared pieces ------------------------------------------------------------------------------

inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m128i load16(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
inline __m256i bcast128(__m128i v) { return _mm256_inserti128_si256(_mm256_castsi128_si256(v), v, 1); }

// vpshufb control that puts word w0 of each lane's 8 words in every word of lane 0 and word w1 in
// every word of lane 1.
using Bytes32 = std::array<uint8_t, 32>;
constexpr Bytes32 word_select(int w0, int w1) {
  Bytes32 c{};
  for (int i = 0; i < 32; ++i) {
    const int w = i < 16 ? w0 : w1;
    c[size_t(i)] = uint8_t(2 * w + (i % 2));
  }
  return c;
}
inline __m256i load_ctrl(const Bytes32& c) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.data())); }

// vpshufb controls for the 16-weight sub-block types: control k selects words 2k and 2k + 1.
struct SubPairCtrl {
  std::array<Bytes32, 4> c;
};
constexpr SubPairCtrl sub_pair_ctrl() {
  SubPairCtrl s{};
  for (int k = 0; k < 4; ++k) s.c[size_t(k)] = word_select(2 * k, 2 * k + 1);
  return s;
}
constexpr SubPairCtrl kSubPair = sub_pair_ctrl();

// sc[k] for the vector whose lanes hold sub-blocks first + 0 and first + 1 (first even).
inline __m256i pair_scales(__m256i w16, int first) {
  // w16 words: s0..s7 in lane 0, s8..s15 in lane 1.
  const __m128i group = first < 8 ? _mm256_castsi256_si128(w16) : _mm256_extracti128_si256(w16, 1);
  return _mm256_shuffle_epi8(bcast128(group), load_ctrl(kSubPair.c[size_t((first % 8) / 2)]));
}

// S = sum over vectors of madd(maddubs(u_k, x_k), sc_k): 8 vectors, activations at act + off[k].
inline __m256i scaled_sums(const __m256i v[8], const __m256i sc[8], const int8_t* act, const int* off) {
  __m256i s = _mm256_setzero_si256();
  for (int k = 0; k < 8; ++k) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act + off[k]));
    s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(v[k], x), sc[k]));
  }
  return s;
}

inline float hsum(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---- the types ----------------------------------------------------------------------------------
//
// Each type provides kOff[8] (activation offset of each code vector), codes(p, v), scales(p, sc),
// gemv_step(p, x, acc, accm) and decode(p, DecodedSB&) as in the AVX-512 file.

struct alignas(32) DecodedSB {
  __m256i v[8];
  __m256i sc[8];
  float corr[16];  // per sub-block: -dmin * m_j, or -Z * d * s_j; paired with d_x * bsums_j
  float d;
  int32_t pad_[7];
};

template <bool Five>
struct NibbleK {
  static constexpr int kBytes = Five ? 176 : 144;
  static constexpr int kQs = Five ? 48 : 16;
  static constexpr int kOff[8] = {0, 32, 64, 96, 128, 160, 192, 224};
  static constexpr bool kPairSums = true;

  static inline void codes(const uint8_t* p, __m256i v[8]) {
    const __m256i m = _mm256_set1_epi8(0x0f);
    __m256i qh = _mm256_setzero_si256();
    if constexpr (Five) qh = load32(p + 16);
    for (int c = 0; c < 4; ++c) {
      const __m256i w = load32(p + kQs + 32 * c);
      v[2 * c] = _mm256_and_si256(w, m);
      v[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(w, 4), m);
      if constexpr (Five) {
        // Bit 2c (low nibbles) and 2c + 1 (high nibbles) of qh[l], moved to bit 4.
        const __m256i b = _mm256_set1_epi8(0x10);
        v[2 * c] = _mm256_or_si256(v[2 * c], _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(qh, 2 * c), 4), b));
        v[2 * c + 1] =
            _mm256_or_si256(v[2 * c + 1], _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(qh, 2 * c + 1), 4), b));
      }
    }
  }
  static inline void scales_mins(const uint8_t* p, uint8_t* sc, uint8_t* mn) {
    quant::unpack_scales_mins_6bit(p + 4, sc, mn);
  }
  static inline void scale_vectors(const uint8_t* sc8, __m256i sc[8]) {
    uint64_t s;
    std::memcpy(&s, sc8, 8);
    const __m256i w = bcast128(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(s))));
    for (int j = 0; j < 8; ++j) sc[j] = _mm256_shuffle_epi8(w, load_ctrl(kWordCtrl[size_t(j)]));
  }
  // Mins repeated per 16-value bsum: [m0, m0, m1, m1, ..., m7, m7].
  static inline __m256i mins_words(const uint8_t* mn8) {
    uint64_t m;
    std::memcpy(&m, mn8, 8);
    const __m128i w = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(m)));
    return _mm256_setr_m128i(_mm_unpacklo_epi16(w, w), _mm_unpackhi_epi16(w, w));
  }
  static constexpr std::array<Bytes32, 8> word_ctrls() {
    std::array<Bytes32, 8> a{};
    for (int j = 0; j < 8; ++j) a[size_t(j)] = word_select(j, j);
    return a;
  }
  static constexpr std::array<Bytes32, 8> kWordCtrl = word_ctrls();

  static inline void gemv_step(const uint8_t* p, const BlockQ8x256& x, __m256& acc, __m256& accm) {
    __m256i v[8], sc[8];
    alignas(8) uint8_t s8[8], m8[8];
    codes(p, v);
    scales_mins(p, s8, m8);
    scale_vectors(s8, sc);
    const __m256i s = scaled_sums(v, sc, x.qs, kOff);
    const __m256i mins = _mm256_madd_epi16(mins_words(m8), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsums)));
    const __m128 dd = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(int(load_u32(p)))), _mm_set1_ps(x.d));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_broadcastss_ps(dd), acc);
    accm = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_broadcastss_ps(_mm_movehdup_ps(dd)), accm);
  }
  static inline void decode(const uint8_t* p, DecodedSB& o) {
    alignas(8) uint8_t s8[8], m8[8];
    codes(p, o.v);
    scales_mins(p, s8, m8);
    scale_vectors(s8, o.sc);
    const float dmin = half_at(p + 2);
    // corr pairs with d_x * bsums_j of the 16-value bsums: the min of sub-block j / 2.
    for (int j = 0; j < 16; ++j) o.corr[j] = -dmin * float(m8[j / 2]);
    o.d = half_at(p);
  }
  static void dequant_scales(const uint8_t* p, float* scale, float* offset) {
    alignas(8) uint8_t s8[8], m8[8];
    scales_mins(p, s8, m8);
    const float d = half_at(p), dmin = half_at(p + 2);
    for (int j = 0; j < 8; ++j) {
      scale[j] = d * float(s8[j]);
      offset[j] = dmin * float(m8[j]);
    }
  }
  static constexpr int kSub = 32;
  static constexpr bool kHasOffset = true;
  static constexpr int kBias = 0;
};
using Q4K = NibbleK<false>;
using Q5K = NibbleK<true>;

// Bit pair p of the 32 bytes at q (half h of the 2-bit planes): weights 128h + 32p + 0..31.
inline void plane_codes(const uint8_t* q, __m256i v[8]) {
  const __m256i m = _mm256_set1_epi8(3);
  for (int h = 0; h < 2; ++h) {
    const __m256i w = load32(q + 32 * h);
    v[4 * h] = _mm256_and_si256(w, m);
    v[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(w, 2), m);
    v[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16(w, 4), m);
    v[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16(w, 6), m);
  }
}
constexpr int kPlaneOff[8] = {0, 32, 64, 96, 128, 160, 192, 224};

// Sixteen scale words to the eight pair vectors: vector k covers the weights at off[k] .. + 31,
// sub-blocks off[k] / 16 and off[k] / 16 + 1.
inline void pair_scale_vectors(__m256i w16, __m256i sc[8], const int* off) {
  for (int k = 0; k < 8; ++k) sc[k] = pair_scales(w16, off[k] / 16);
}

struct Q2K {
  static constexpr int kBytes = 84;
  static constexpr const int* kOff = kPlaneOff;
  static constexpr int kSub = 16;
  static constexpr bool kHasOffset = true;
  static constexpr int kBias = 0;

  static inline void codes(const uint8_t* p, __m256i v[8]) { plane_codes(p + 16, v); }
  static inline __m256i scale_words(const uint8_t* p) {
    return _mm256_cvtepu8_epi16(_mm_and_si128(load16(p), _mm_set1_epi8(0x0f)));
  }
  static inline __m256i min_words(const uint8_t* p) { return _mm256_srli_epi16(_mm256_cvtepu8_epi16(load16(p)), 4); }
  static inline void gemv_step(const uint8_t* p, const BlockQ8x256& x, __m256& acc, __m256& accm) {
    __m256i v[8], sc[8];
    codes(p, v);
    pair_scale_vectors(scale_words(p), sc, kOff);
    const __m256i s = scaled_sums(v, sc, x.qs, kOff);
    const __m256i mins = _mm256_madd_epi16(min_words(p), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsums)));
    const __m128 dd = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(int(load_u32(p + 80)))), _mm_set1_ps(x.d));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_broadcastss_ps(dd), acc);
    accm = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_broadcastss_ps(_mm_movehdup_ps(dd)), accm);
  }
  static inline void decode(const uint8_t* p, DecodedSB& o) {
    codes(p, o.v);
    pair_scale_vectors(scale_words(p), o.sc, kOff);
    const float dmin = half_at(p + 82);
    for (int j = 0; j < 16; ++j) o.corr[j] = -dmin * float(p[j] >> 4);
    o.d = half_at(p + 80);
  }
  static void dequant_scales(const uint8_t* p, float* scale, float* offset) {
    const float d = half_at(p + 80), dmin = half_at(p + 82);
    for (int j = 0; j < 16; ++j) {
      scale[j] = d * float(p[j] & 15);
      offset[j] = dmin * float(p[j] >> 4);
    }
  }
};

// The symmetric types: weight = d * s_j * (u - Z), sixteen signed scales.
template <typename Self, int Z>
struct SymmetricK {
  static constexpr int kSub = 16;
  static constexpr bool kHasOffset = false;
  static constexpr int kBias = Z;
  static inline void gemv_step(const uint8_t* p, const BlockQ8x256& x, __m256& acc, __m256&) {
    __m256i v[8], sc[8];
    Self::codes(p, v);
    const __m256i w16 = Self::scale_words(p);
    pair_scale_vectors(w16, sc, Self::kOff);
    __m256i s = scaled_sums(v, sc, x.qs, Self::kOff);
    const __m256i zs = _mm256_madd_epi16(w16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsums)));
    s = _mm256_sub_epi32(s, _mm256_slli_epi32(zs, __builtin_ctz(Z)));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(half_at(p + Self::kD) * x.d), acc);
  }
  static inline void decode(const uint8_t* p, DecodedSB& o) {
    Self::codes(p, o.v);
    const __m256i w16 = Self::scale_words(p);
    pair_scale_vectors(w16, o.sc, Self::kOff);
    alignas(32) int16_t s[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(s), w16);
    const float d = half_at(p + Self::kD);
    for (int j = 0; j < 16; ++j) o.corr[j] = -float(Z) * d * float(s[j]);
    o.d = d;
  }
  static void dequant_scales(const uint8_t* p, float* scale, float*) {
    alignas(32) int16_t s[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(s), Self::scale_words(p));
    const float d = half_at(p + Self::kD);
    for (int j = 0; j < 16; ++j) scale[j] = d * float(s[j]);
  }
};

struct Q3K : SymmetricK<Q3K, 4> {
  static constexpr int kBytes = 110;
  static constexpr int kD = 108;
  static constexpr const int* kOff = kPlaneOff;
  static inline void codes(const uint8_t* p, __m256i v[8]) {
    plane_codes(p + 32, v);
    // Vector 4h + k (weights 128h + 32k + l) takes bit 4h + k of hmask[l], moved to bit 2.
    const __m256i hm = load32(p), b = _mm256_set1_epi8(4);
    for (int i = 0; i < 8; ++i) {
      const __m256i bit = i < 2 ? _mm256_slli_epi16(hm, 2 - i) : _mm256_srli_epi16(hm, i - 2);
      v[i] = _mm256_or_si256(v[i], _mm256_and_si256(bit, b));
    }
  }
  static inline __m256i scale_words(const uint8_t* p) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 96));
    const __m128i low = _mm_and_si128(_mm_unpacklo_epi64(b, _mm_srli_epi16(b, 4)), _mm_set1_epi8(0x0f));
    const __m128i top = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32(int(load_u32(p + 104))), _mm_setr_epi32(0, 2, 4, 6)),
                                      _mm_set1_epi8(3));
    return _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(top, 4)), _mm_set1_epi8(32)));
  }
};

struct Q6K : SymmetricK<Q6K, 32> {
  static constexpr int kBytes = 210;
  static constexpr int kD = 208;
  // Vector 4h + 2r + n: nibble n (0 low, 1 high) of ql[64h + 32r ..]: weights 128h + 32r + 64n.
  static constexpr int kOff[8] = {0, 64, 32, 96, 128, 192, 160, 224};
  static inline void codes(const uint8_t* p, __m256i v[8]) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    for (int h = 0; h < 2; ++h) {
      const __m256i qh = load32(p + 128 + 32 * h);  // pairs 0..3 for weights +0, +32, +64, +96
      for (int r = 0; r < 2; ++r) {
        const __m256i l = load32(p + 64 * h + 32 * r);
        // Top bits: pair r (low nibbles) and pair 2 + r (high nibbles), moved to bits 4-5.
        const __m256i top_lo = _mm256_and_si256(r == 0 ? _mm256_slli_epi16(qh, 4) : _mm256_slli_epi16(qh, 2), m30);
        const __m256i top_hi = _mm256_and_si256(r == 0 ? qh : _mm256_srli_epi16(qh, 2), m30);
        v[4 * h + 2 * r] = _mm256_or_si256(_mm256_and_si256(l, m4), top_lo);
        v[4 * h + 2 * r + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l, 4), m4), top_hi);
      }
    }
  }
  static inline __m256i scale_words(const uint8_t* p) { return _mm256_cvtepi8_epi16(load16(p + 192)); }
};

// ---- GEMV ---------------------------------------------------------------------------------------

// The dot product of one weight row with the activations, as 8 float lanes to be summed.
template <typename T>
inline __m256 dot_row(const uint8_t* row, const BlockQ8x256* x, int64_t nsb) {
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t b = 0; b < nsb; ++b) T::gemv_step(row + b * T::kBytes, x[b], acc, accm);
  return _mm256_add_ps(acc, accm);
}

// Sums of the 8 lanes of a, b, c, d.
inline __m128 reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

// One row after the other. The AVX-512 GEMV walks 4 far-apart rows in step for more misses in flight
// (see kernels_qk_avx512.cpp); with AVX2's 16 registers that cut the hot-cache rate of q4_K from 26
// to 21 GB/s per core (2 streams: 24), and from DRAM it was not measurably faster on Zen 4.
template <typename T>
void gemv(const void* W, size_t row_bytes, const void* xq, float* y, int64_t r0, int64_t r1, int64_t cols) {
  const int64_t nsb = cols / kBlockK;
  const auto* w = static_cast<const uint8_t*>(W);
  const auto* x = static_cast<const BlockQ8x256*>(xq);
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint8_t* row = w + size_t(r) * row_bytes;
    const __m256 a = dot_row<T>(row, x, nsb), b = dot_row<T>(row + row_bytes, x, nsb);
    const __m256 c = dot_row<T>(row + 2 * row_bytes, x, nsb), d = dot_row<T>(row + 3 * row_bytes, x, nsb);
    _mm_storeu_ps(y + r, reduce4(a, b, c, d));
  }
  for (; r < r1; ++r) y[r] = hsum(dot_row<T>(w + size_t(r) * row_bytes, x, nsb));
}

// ---- GEMM ---------------------------------------------------------------------------------------

template <typename E>
E* scratch(std::vector<E>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

constexpr int kTileActs = 4;     // activation rows per register tile
constexpr int kDecodedRows = 4;  // weight rows decoded per pass
// Super-blocks per K step: 4 activation rows and 4 decoded weight rows of one step (about 25 KiB)
// stay in L1 while the weight rows take their turns.
constexpr int64_t kKStep = 8;

// Float d_x * bsums_j of each activation super-block (the GEMM's zero-point terms are float dots).
struct alignas(32) ActExtra {
  float fbs[16];
  float d;
  int32_t pad_[7];
};

// out[j] += dot(decoded super-blocks D[0..n), super-blocks k0 .. k0 + n of activation row j).
template <typename T>
inline void tile_kernel(const DecodedSB* D, const BlockQ8x256* const* X, const ActExtra* const* E, int64_t k0,
                        int64_t n, float* out) {
  __m256 acc[kTileActs];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t b = 0; b < n; ++b) {
    const DecodedSB& w = D[b];
    const __m256 dw = _mm256_set1_ps(w.d);
    const __m256 c0 = _mm256_load_ps(w.corr), c1 = _mm256_load_ps(w.corr + 8);
#pragma GCC unroll 4
    for (int j = 0; j < kTileActs; ++j) {
      const int8_t* q = X[j][k0 + b].qs;
      __m256i s = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + T::kOff[k]));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_load_si256(&w.v[k]), xv),
                                                  _mm256_load_si256(&w.sc[k])));
      }
      const ActExtra& e = E[j][k0 + b];
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(e.d)), acc[j]);
      acc[j] = _mm256_fmadd_ps(c0, _mm256_load_ps(e.fbs), acc[j]);
      acc[j] = _mm256_fmadd_ps(c1, _mm256_load_ps(e.fbs + 8), acc[j]);
    }
  }
  for (int j = 0; j < kTileActs; ++j) out[j] += hsum(acc[j]);
}

template <typename T>
void gemm(const void* W, size_t row_bytes, const void* X, size_t x_stride, int64_t nx, float* Y, int64_t ldy,
          int64_t r0, int64_t r1, int64_t cols) {
  const int64_t nsb = cols / kBlockK;
  const int64_t nxp = (nx + kTileActs - 1) / kTileActs * kTileActs;
  thread_local std::vector<ActExtra> extra;
  thread_local std::vector<BlockQ8x256> zero_rows;
  thread_local std::vector<DecodedSB> dec;
  ActExtra* E = scratch(extra, size_t(nxp * nsb));
  DecodedSB* D = scratch(dec, size_t(kDecodedRows * nsb));
  const auto* xs = static_cast<const uint8_t*>(X);
  thread_local std::vector<const BlockQ8x256*> row_ptrs;
  const BlockQ8x256** rows = scratch(row_ptrs, size_t(nxp));
  if (nxp > nx) {  // padding rows: zero activations
    if (zero_rows.size() < size_t(nsb)) zero_rows.assign(size_t(nsb), BlockQ8x256{});
  }
  for (int64_t c = 0; c < nxp; ++c) {
    const BlockQ8x256* x = c < nx ? reinterpret_cast<const BlockQ8x256*>(xs + size_t(c) * x_stride) : zero_rows.data();
    rows[c] = x;
    for (int64_t b = 0; b < nsb; ++b) {
      ActExtra& e = E[c * nsb + b];
      e.d = x[b].d;
      for (int j = 0; j < 16; ++j) e.fbs[j] = x[b].d * float(x[b].bsums[j]);
    }
  }
  const auto* w = static_cast<const uint8_t*>(W);
  for (int64_t r = r0; r < r1; r += kDecodedRows) {
    const int nr = int(std::min<int64_t>(kDecodedRows, r1 - r));
    for (int i = 0; i < nr; ++i) {
      const uint8_t* row = w + size_t(r + i) * row_bytes;
      for (int64_t b = 0; b < nsb; ++b) T::decode(row + b * T::kBytes, D[i * nsb + b]);
    }
    for (int64_t c = 0; c < nxp; c += kTileActs) {
      const ActExtra* ep[kTileActs];
      for (int j = 0; j < kTileActs; ++j) ep[j] = E + (c + j) * nsb;
      float out[kDecodedRows][kTileActs] = {};
      for (int64_t k0 = 0; k0 < nsb; k0 += kKStep) {
        const int64_t kn = std::min(kKStep, nsb - k0);
        for (int i = 0; i < nr; ++i) tile_kernel<T>(D + i * nsb + k0, rows + c, ep, k0, kn, out[i]);
      }
      for (int i = 0; i < nr; ++i)
        for (int j = 0; j < kTileActs && c + j < nx; ++j) Y[(c + j) * ldy + r + i] = out[i][j];
    }
  }
}

// ---- dequantization -------------------------------------------------------------------------------
// The IEEE operations of the quantizer's dequantize_row: scale = d * s_j (and offset = dmin * m_j)
// in float, then scale * (u - bias) - offset; every product is exact, so the floats are identical.

template <typename T>
void dequant_row(const void* row, float* y, int64_t cols) {
  if (cols < 0 || cols % kBlockK != 0)
    fail("dequant_row: a row of {} values is not a whole number of 256-value super-blocks", cols);
  const auto* p = static_cast<const uint8_t*>(row);
  const __m256 bias = _mm256_set1_ps(float(T::kBias));
  for (int64_t b = 0; b < cols / kBlockK; ++b, p += T::kBytes, y += kBlockK) {
    __m256i v[8];
    T::codes(p, v);
    alignas(32) uint8_t codes[kBlockK];
    for (int k = 0; k < 8; ++k) _mm256_store_si256(reinterpret_cast<__m256i*>(codes + 32 * k), v[k]);
    float scale[16], offset[16];
    T::dequant_scales(p, scale, offset);
    for (int k = 0; k < 8; ++k)
      for (int e = 0; e < 4; ++e) {
        const int pos = T::kOff[k] + 8 * e, j = pos / T::kSub;
        const __m128i part = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + 32 * k + 8 * e));
        __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part));
        if constexpr (T::kBias != 0) f = _mm256_sub_ps(f, bias);
        f = _mm256_mul_ps(f, _mm256_set1_ps(scale[j]));
        if constexpr (T::kHasOffset) f = _mm256_sub_ps(f, _mm256_set1_ps(offset[j]));
        _mm256_storeu_ps(y + pos, f);
      }
  }
}

template <typename T>
WeightKernels make() {
  WeightKernels k;
  k.act = ActFormat::Q8x256;
  k.quantize_act = quantize_act_q8x256;
  k.gemv = gemv<T>;
  k.gemm = gemm<T>;
  k.dequant_row = dequant_row<T>;
  return k;
}

}  // namespace

void register_qk_kernels_avx2(WeightKernelSet& s) {
  entry(s, DType::Q2_K) = make<Q2K>();
  entry(s, DType::Q3_K) = make<Q3K>();
  entry(s, DType::Q4_K) = make<Q4K>();
  entry(s, DType::Q5_K) = make<Q5K>();
  entry(s, DType::Q6_K) = make<Q6K>();
}

}  // namespace qforge::kernels
