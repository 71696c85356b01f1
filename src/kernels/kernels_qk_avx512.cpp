// AVX-512 VNNI kernels for the k-quant super-block types (q2_K .. q6_K) with BlockQ8x256 activations.
// Registered only when the CPU has AVX512-VNNI; without it only quantize_act and dequant_row are
// overridden here and the AVX2 products stay in place (registration order scalar -> avx2 -> avx512).
//
// The unit of work is one super-block of one weight row, decoded into four zmm registers of unsigned
// 8-bit codes u (64 weights each) straight from the block's bytes:
//   q4_K / q5_K: the low and high nibbles of qs[0..63] and qs[64..127] (plus the fifth bit of q5_K)
//   q2_K / q3_K: bit pair p of qs[0..63] (plus q3_K's hmask bit), p = 0..3
//   q6_K:        the low / high nibbles of ql[0..63] and ql[64..127] with their two qh bits
// None of these picks 64 consecutive weights (except q6_K's), so the activations are rearranged once
// per call (ActSB) into the order the codes come out in; the weights are never shuffled.
//
// vpdpbusd multiplies the unsigned codes by the signed activation codes, 4 pairs into each int32
// lane: t_k = 16 lanes of 4-term sums, each lane inside one sub-block. Every such sum fits int16
// (|4 * 63 * 127| = 32004 for q6_K's 6-bit codes), so two t vectors are packed to int16 (vpackssdw,
// exact) and one vpdpwssd multiplies each lane by its sub-block scale and adds pairs into int32:
// 2 instructions apply the 16 (or 8) sub-block scales to 256 products. Everything inside a
// super-block is exact integer arithmetic (at most 128 * 256 * 63 * 127 < 2^31 for q6_K); one float
// FMA per super-block applies d * dx. The zero points cost almost nothing: q3_K's -4 and q6_K's -32
// are -z * sum_j s_j * bsums_j (one vpmaddwd on the activation's bsums), and the mins of q2_K /
// q4_K / q5_K are dmin * dx * sum_j m_j * bsums_j, accumulated in a second float vector. Only the
// order of the float additions differs from the scalar twin.
//
// GEMV walks 4 far-apart rows in step (see kGemvStreams). GEMM decodes
// 4 weight rows into a buffer (codes, scale vectors, float zero-point terms), then runs every tile of
// 4 activation rows over each decoded row in K steps of 8 super-blocks, so a decoded super-block feeds
// 4 activation rows from registers and both operands of a step stay in L1.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "kernels/kernels.h"
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
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  for (int64_t b = 0; b < n / kBlockK; ++b, x += kBlockK) {
    // max(a, m) returns m when a is NaN, as the scalar `a > m ? a : m` does.
    __m512 m = _mm512_setzero_ps();
    for (int i = 0; i < kBlockK; i += 16) m = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + i), abs_mask), m);
    const float amax = _mm512_reduce_max_ps(m);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m512 idv = _mm512_set1_ps(id);
    for (int j = 0; j < 16; ++j) {
      const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * j), idv), lo), hi);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].qs + 16 * j), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
    }
    // bsums: vpsadbw sums 8 unsigned bytes per qword; the codes are made unsigned by flipping the sign
    // bit (+128 each), which is taken off again below.
    alignas(64) uint64_t sums[32];
    const __m512i flip = _mm512_set1_epi8(char(0x80));
    for (int k = 0; k < 4; ++k) {
      const __m512i q = _mm512_xor_si512(_mm512_loadu_si512(out[b].qs + 64 * k), flip);
      _mm512_store_si512(sums + 8 * k, _mm512_sad_epu8(q, _mm512_setzero_si512()));
    }
    for (int j = 0; j < 16; ++j) out[b].bsums[j] = int16_t(int(sums[2 * j] + sums[2 * j + 1]) - 16 * 128);
    out[b].d = d;
  }
}

// One activation super-block rearranged for a type (once per call, shared by every weight row).
struct alignas(64) ActSB {
  int8_t q[256];   // 32-byte chunks in the order the type's code vectors come out (ChunkOrder)
  int16_t bs[16];  // bsums per 16 values; for the 32-value sub-blocks (q4_K, q5_K): pair sums in 0..7
  float d;
  int32_t pad_[7];
  float fbs[16];   // d * bs[j] (GEMM only: its zero-point terms are float dots)
};
static_assert(sizeof(ActSB) == 384);

// Which 32-weight chunks (of 8) fill code vector k: chunks order[2k] and order[2k + 1].
using ChunkOrder = std::array<uint8_t, 8>;
constexpr ChunkOrder kNaturalOrder = {0, 1, 2, 3, 4, 5, 6, 7};  // q6_K
constexpr ChunkOrder kNibbleOrder = {0, 2, 1, 3, 4, 6, 5, 7};   // q4_K, q5_K: low nibbles, then high
constexpr ChunkOrder kPlaneOrder = {0, 4, 1, 5, 2, 6, 3, 7};    // q2_K, q3_K: bit pair p of both halves

template <typename T>
void repack_activations(const BlockQ8x256* x, int64_t nsb, bool gemm, ActSB* out) {
  for (int64_t b = 0; b < nsb; ++b) {
    ActSB& a = out[b];
    for (int c = 0; c < 8; ++c) std::memcpy(a.q + 32 * c, x[b].qs + 32 * T::kOrder[size_t(c)], 32);
    std::memset(a.bs, 0, sizeof a.bs);
    const int nbs = T::kPairSums ? 8 : 16;
    for (int j = 0; j < nbs; ++j)
      a.bs[j] = T::kPairSums ? int16_t(x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]) : x[b].bsums[j];
    a.d = x[b].d;
    if (gemm)
      for (int j = 0; j < 16; ++j) a.fbs[j] = x[b].d * float(a.bs[j]);
  }
}

// ---- shared pieces ------------------------------------------------------------------------------

inline __m512i load64(const uint8_t* p) { return _mm512_loadu_si512(p); }
inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
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

using Bytes64 = std::array<uint8_t, 64>;
using Words32 = std::array<uint16_t, 32>;
inline __m512i load_table(const uint8_t* t) { return _mm512_loadu_si512(t); }
inline __m512i load_table(const uint16_t* t) { return _mm512_loadu_si512(t); }

// packs(t_a, t_b) puts, in 128-bit lane i, int16 words 0-3 = t_a lanes 4i..4i+3 and words 4-7 =
// t_b lanes 4i..4i+3. sub(vector, lane) is the sub-block a lane of a t vector belongs to; the
// scale vector for the pair (t_a, t_b) holds that sub-block's scale in each word.
template <typename SubOf>
constexpr Words32 pair_scale_words(int a, int b, SubOf sub) {
  Words32 w{};
  for (int i = 0; i < 4; ++i)
    for (int m = 0; m < 8; ++m) w[size_t(8 * i + m)] = uint16_t(sub(m < 4 ? a : b, 4 * i + m % 4));
  return w;
}
// The same as vpshufb control bytes that zero-extend byte `sub` of each 128-bit lane to a word.
constexpr Bytes64 words_to_zext_bytes(const Words32& w) {
  Bytes64 c{};
  for (int i = 0; i < 32; ++i) {
    c[size_t(2 * i)] = uint8_t(w[size_t(i)]);
    c[size_t(2 * i + 1)] = 0x80;
  }
  return c;
}

// Sub-block (of 32) of int32 lane L of code vector k, nibble order: chunks order[2k], order[2k+1].
constexpr int sub32_nibble(int k, int lane) { return kNibbleOrder[size_t(2 * k + lane / 8)]; }
// Sub-block (of 16): chunk order[2k + lane / 8], its first or second 16 values.
constexpr int sub16_planes(int k, int lane) { return 2 * kPlaneOrder[size_t(2 * k + lane / 8)] + (lane / 4) % 2; }
constexpr int sub16_natural(int k, int lane) { return 4 * k + lane / 4; }

// t_k = 4-term sums of code vector k with its activations; returns sum over lanes of t * scale as
// int32 lanes, through the int16 pack (see the top of the file).
struct Products {
  __m512i t[4];
};
inline Products dot_codes(const __m512i v[4], const int8_t* a) {
  Products p;
  for (int k = 0; k < 4; ++k)
    p.t[k] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[k], _mm512_load_si512(a + 64 * k));
  return p;
}
inline __m512i apply_scales(const Products& p, __m512i sc01, __m512i sc23) {
  __m512i s = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_packs_epi32(p.t[0], p.t[1]), sc01);
  return _mm512_dpwssd_epi32(s, _mm512_packs_epi32(p.t[2], p.t[3]), sc23);
}

// ---- the types ----------------------------------------------------------------------------------
//
// Each type provides:
//   codes(p, v)            the four code vectors of the super-block at p
//   scale_vectors(p, ...)  the int16 scale words for the (t0, t1) and (t2, t3) packs, and zero-point
//                          data; gemv_step / decode use them
//   gemv_step(p, a, acc, accm)  acc (16 lanes) += d * dx * (scaled sums - z * sum s bs) and
//                          accm (8 lanes) -= dmin * dx * sum m bs
//   decode(p, DecodedSB&)  for GEMM; corr[j] * fbs[j] summed over j is the zero-point term

struct alignas(64) DecodedSB {
  __m512i v[4];
  __m512i sc01, sc23;
  float corr[16];  // per sub-block: -dmin * m_j (q2_K, q4_K, q5_K) or -z * d * s_j (q3_K, q6_K)
  float d;
  int32_t pad_[15];
};
static_assert(sizeof(DecodedSB) == 512);

// q4_K and q5_K: codes from nibble chunks (q5_K adds its fifth bit), 6-bit scales and mins.
template <bool Five>
struct NibbleK {
  static constexpr int kBytes = Five ? 176 : 144;
  static constexpr int kQs = Five ? 48 : 16;
  static constexpr ChunkOrder kOrder = kNibbleOrder;
  static constexpr bool kPairSums = true;
  static constexpr int kSub = 32;
  static constexpr Bytes64 kCtrl01 = words_to_zext_bytes(pair_scale_words(0, 1, sub32_nibble));
  static constexpr Bytes64 kCtrl23 = words_to_zext_bytes(pair_scale_words(2, 3, sub32_nibble));

  static inline void codes(const uint8_t* p, __m512i v[4]) {
    const __m512i m = _mm512_set1_epi8(0x0f);
    const __m512i w0 = load64(p + kQs), w1 = load64(p + kQs + 64);
    v[0] = _mm512_and_si512(w0, m);
    v[1] = _mm512_and_si512(_mm512_srli_epi16(w0, 4), m);
    v[2] = _mm512_and_si512(w1, m);
    v[3] = _mm512_and_si512(_mm512_srli_epi16(w1, 4), m);
    if constexpr (Five) {
      // Vector 0 takes bit 0 (chunk 0) and bit 2 (chunk 1) of qh[l]; with hh = [qh, qh >> 2] those
      // are bit 0 of either half; likewise bits 1, 4, 5 for vectors 1, 2, 3.
      const __m256i qh = load32(p + 16);
      const __m512i hh = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
      const __m512i b4 = _mm512_set1_epi8(16);
      constexpr int kBit[4] = {0x01, 0x02, 0x10, 0x20};
      for (int k = 0; k < 4; ++k)
        v[k] = _mm512_mask_add_epi8(v[k], _mm512_test_epi8_mask(hh, _mm512_set1_epi8(char(kBit[k]))), v[k], b4);
    }
  }
  // The eight 6-bit scales (bytes of *sc) and mins (*mn).
  static inline void scales_mins(const uint8_t* p, uint64_t* sc, uint64_t* mn) {
    alignas(8) uint8_t s[8], m[8];
    quant::unpack_scales_mins_6bit(p + 4, s, m);
    std::memcpy(sc, s, 8);
    std::memcpy(mn, m, 8);
  }
  static inline void scale_vectors(uint64_t sc, __m512i& sc01, __m512i& sc23) {
    const __m512i b = _mm512_set1_epi64(int64_t(sc));
    sc01 = _mm512_shuffle_epi8(b, load_table(kCtrl01.data()));
    sc23 = _mm512_shuffle_epi8(b, load_table(kCtrl23.data()));
  }
  static inline void gemv_step(const uint8_t* p, const ActSB& a, __m512& acc, __m256& accm) {
    __m512i v[4], sc01, sc23;
    codes(p, v);
    uint64_t sc, mn;
    scales_mins(p, &sc, &mn);
    scale_vectors(sc, sc01, sc23);
    const __m512i s = apply_scales(dot_codes(v, a.q), sc01, sc23);
    const __m128i mins = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(mn))),
                                        _mm_load_si128(reinterpret_cast<const __m128i*>(a.bs)));
    const __m128 dd = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(int(load_u32(p)))), _mm_set1_ps(a.d));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_broadcastss_ps(dd), acc);
    accm = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(_mm256_zextsi128_si256(mins)),
                            _mm256_broadcastss_ps(_mm_movehdup_ps(dd)), accm);
  }
  static inline void decode(const uint8_t* p, DecodedSB& o) {
    codes(p, o.v);
    uint64_t sc, mn;
    scales_mins(p, &sc, &mn);
    scale_vectors(sc, o.sc01, o.sc23);
    const float dmin = half_at(p + 2);
    for (int j = 0; j < 16; ++j) o.corr[j] = j < 8 ? -dmin * float(uint8_t(mn >> (8 * j))) : 0.0f;
    o.d = half_at(p);
  }
  static void dequant_scales(const uint8_t* p, float* scale, float* offset) {
    uint64_t sc, mn;
    scales_mins(p, &sc, &mn);
    const float d = half_at(p), dmin = half_at(p + 2);
    for (int j = 0; j < 8; ++j) {
      scale[j] = d * float(uint8_t(sc >> (8 * j)));
      offset[j] = dmin * float(uint8_t(mn >> (8 * j)));
    }
  }
  static constexpr bool kHasOffset = true;
  static constexpr int kBias = 0;
};
using Q4K = NibbleK<false>;
using Q5K = NibbleK<true>;

// Bit pair p (0..3) of the 64 bytes at q: vector p.
inline void plane_codes(const uint8_t* q, __m512i v[4]) {
  const __m512i m = _mm512_set1_epi8(3);
  const __m512i w = load64(q);
  v[0] = _mm512_and_si512(w, m);
  v[1] = _mm512_and_si512(_mm512_srli_epi16(w, 2), m);
  v[2] = _mm512_and_si512(_mm512_srli_epi16(w, 4), m);
  v[3] = _mm512_and_si512(_mm512_srli_epi16(w, 6), m);
}

struct Q2K {
  static constexpr int kBytes = 84;
  static constexpr ChunkOrder kOrder = kPlaneOrder;
  static constexpr bool kPairSums = false;
  static constexpr int kSub = 16;
  static constexpr Bytes64 kCtrl01 = words_to_zext_bytes(pair_scale_words(0, 1, sub16_planes));
  static constexpr Bytes64 kCtrl23 = words_to_zext_bytes(pair_scale_words(2, 3, sub16_planes));

  static inline void codes(const uint8_t* p, __m512i v[4]) { plane_codes(p + 16, v); }
  static inline void scale_vectors(const uint8_t* p, __m512i& sc01, __m512i& sc23) {
    const __m512i b = _mm512_and_si512(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
                                       _mm512_set1_epi8(0x0f));
    sc01 = _mm512_shuffle_epi8(b, load_table(kCtrl01.data()));
    sc23 = _mm512_shuffle_epi8(b, load_table(kCtrl23.data()));
  }
  // The 16 mins as int16 words.
  static inline __m256i mins16(const uint8_t* p) {
    return _mm256_srli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 4);
  }
  static inline void gemv_step(const uint8_t* p, const ActSB& a, __m512& acc, __m256& accm) {
    __m512i v[4], sc01, sc23;
    codes(p, v);
    scale_vectors(p, sc01, sc23);
    const __m512i s = apply_scales(dot_codes(v, a.q), sc01, sc23);
    const __m256i mins = _mm256_madd_epi16(mins16(p), _mm256_load_si256(reinterpret_cast<const __m256i*>(a.bs)));
    const __m128 dd = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(int(load_u32(p + 80)))), _mm_set1_ps(a.d));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_broadcastss_ps(dd), acc);
    accm = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_broadcastss_ps(_mm_movehdup_ps(dd)), accm);
  }
  static inline void decode(const uint8_t* p, DecodedSB& o) {
    codes(p, o.v);
    scale_vectors(p, o.sc01, o.sc23);
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
  static constexpr bool kHasOffset = true;
  static constexpr int kBias = 0;
};

// The symmetric types (q3_K, q6_K): weight = d * s_j * (u - Z), s_j signed.
template <typename Self, int Z>
struct SymmetricK {
  static constexpr bool kPairSums = false;
  static constexpr int kSub = 16;
  static constexpr bool kHasOffset = false;
  static constexpr int kBias = Z;
  static inline void scale_vectors(__m256i s16, __m512i& sc01, __m512i& sc23) {
    const __m512i s = _mm512_zextsi256_si512(s16);
    sc01 = _mm512_permutexvar_epi16(load_table(Self::kIdx01.data()), s);
    sc23 = _mm512_permutexvar_epi16(load_table(Self::kIdx23.data()), s);
  }
  static inline void gemv_step(const uint8_t* p, const ActSB& a, __m512& acc, __m256&) {
    __m512i v[4], sc01, sc23;
    Self::codes(p, v);
    const __m256i s16 = Self::scales16(p);
    scale_vectors(s16, sc01, sc23);
    __m512i s = apply_scales(dot_codes(v, a.q), sc01, sc23);
    // - Z * sum_j s_j * bsums_j (Z is a power of two)
    const __m256i zs = _mm256_madd_epi16(s16, _mm256_load_si256(reinterpret_cast<const __m256i*>(a.bs)));
    s = _mm512_sub_epi32(s, _mm512_zextsi256_si512(_mm256_slli_epi32(zs, __builtin_ctz(Z))));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(half_at(p + Self::kD) * a.d), acc);
  }
  static inline void decode(const uint8_t* p, DecodedSB& o) {
    Self::codes(p, o.v);
    const __m256i s16 = Self::scales16(p);
    scale_vectors(s16, o.sc01, o.sc23);
    alignas(32) int16_t s[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(s), s16);
    const float d = half_at(p + Self::kD);
    for (int j = 0; j < 16; ++j) o.corr[j] = -float(Z) * d * float(s[j]);
    o.d = d;
  }
  static void dequant_scales(const uint8_t* p, float* scale, float*) {
    alignas(32) int16_t s[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(s), Self::scales16(p));
    const float d = half_at(p + Self::kD);
    for (int j = 0; j < 16; ++j) scale[j] = d * float(s[j]);
  }
};

struct Q3K : SymmetricK<Q3K, 4> {
  static constexpr int kBytes = 110;
  static constexpr int kD = 108;
  static constexpr ChunkOrder kOrder = kPlaneOrder;
  static constexpr Words32 kIdx01 = pair_scale_words(0, 1, sub16_planes);
  static constexpr Words32 kIdx23 = pair_scale_words(2, 3, sub16_planes);

  static inline void codes(const uint8_t* p, __m512i v[4]) {
    plane_codes(p + 32, v);
    // Vector k, first half: weight 32k + l takes bit k of hmask[l]; second half: weight 128 + 32k + l
    // takes bit 4 + k. With hh = [hmask, hmask >> 4] that is bit k of either half.
    const __m256i hm = load32(p);
    const __m512i hh = _mm512_inserti64x4(_mm512_castsi256_si512(hm), _mm256_srli_epi16(hm, 4), 1);
    const __m512i b2 = _mm512_set1_epi8(4);
    for (int k = 0; k < 4; ++k)
      v[k] = _mm512_mask_add_epi8(v[k], _mm512_test_epi8_mask(hh, _mm512_set1_epi8(char(1 << k))), v[k], b2);
  }
  // The sixteen signed 6-bit scales as int16 words (layout: BlockQ3_K in blocks_k.h).
  static inline __m256i scales16(const uint8_t* p) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 96));  // bytes 0-7
    const __m128i low = _mm_and_si128(_mm_unpacklo_epi64(b, _mm_srli_epi16(b, 4)), _mm_set1_epi8(0x0f));
    const __m128i top = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32(int(load_u32(p + 104))), _mm_setr_epi32(0, 2, 4, 6)),
                                      _mm_set1_epi8(3));
    const __m128i s = _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(top, 4)), _mm_set1_epi8(32));
    return _mm256_cvtepi8_epi16(s);
  }
};

struct Q6K : SymmetricK<Q6K, 32> {
  static constexpr int kBytes = 210;
  static constexpr int kD = 208;
  static constexpr ChunkOrder kOrder = kNaturalOrder;
  static constexpr Words32 kIdx01 = pair_scale_words(0, 1, sub16_natural);
  static constexpr Words32 kIdx23 = pair_scale_words(2, 3, sub16_natural);

  static inline void codes(const uint8_t* p, __m512i v[4]) {
    // Half h: ql[64h..64h+63] holds weights 128h + 0..63 in its low nibbles and 128h + 64..127 in
    // its high ones. Their top bits are bit pairs 0, 1 (low nibbles, bytes 0-31 / 32-63) and 2, 3
    // (high nibbles) of qh[32h + l]: with q = [qh half, qh half >> 2] they are bits 0-1 and 4-5.
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    const __m512i qh = load64(p + 128), qh2 = _mm512_srli_epi16(qh, 2);
    const __m512i q0 = _mm512_shuffle_i64x2(qh, qh2, 0x44), q1 = _mm512_shuffle_i64x2(qh, qh2, 0xee);
    const __m512i l0 = load64(p), l1 = load64(p + 64);
    // top | (low & 0x0f), top already confined to bits 4-5: vpternlogd with truth table A | (B & C).
    auto merge = [&](__m512i low, __m512i top) { return _mm512_ternarylogic_epi32(top, low, m4, 0xf8); };
    v[0] = merge(l0, _mm512_and_si512(_mm512_slli_epi16(q0, 4), m30));
    v[1] = merge(_mm512_srli_epi16(l0, 4), _mm512_and_si512(q0, m30));
    v[2] = merge(l1, _mm512_and_si512(_mm512_slli_epi16(q1, 4), m30));
    v[3] = merge(_mm512_srli_epi16(l1, 4), _mm512_and_si512(q1, m30));
  }
  static inline __m256i scales16(const uint8_t* p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192)));
  }
};

// ---- GEMV ---------------------------------------------------------------------------------------

// Sums of the 16 lanes of a, b, c, d.
inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
  const __m512 s = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
                                 _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

template <typename E>
E* scratch(std::vector<E>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// GEMV from DRAM is limited by how many cache misses a core keeps in flight while it also computes.
// A thread's rows are cut into kGemvStreams parts walked in step (one row of each at a time), so the
// prefetchers follow 4 sequential streams, and each super-block's bytes are prefetched into L2
// kPrefetchAhead bytes ahead. Measured on Zen 4 (q4_K, 2 threads, 420 MB, against a plain 2-thread
// read of the same bytes in the same run): one row after the other 0.77-0.81 of the read rate when
// the memory system gives ~50 GB/s; 4 streams 0.99-1.08, 4 streams + prefetch 0.98-1.19. At ~33
// GB/s all three read at the bound. The 4 streams also share each activation load. (Neighbouring
// rows in step are slow: their streams overlap and the prefetchers lose track of them.)
constexpr int kGemvStreams = 4;
constexpr int64_t kPrefetchAhead = 1024;

// *y[i] = dot(row i, activations) for NR rows at once.
template <typename T, int NR>
inline void dot_rows(const uint8_t* const* rows, const ActSB* A, int64_t nsb, float* const* y) {
  __m512 acc[NR];
  __m256 accm[NR];
  for (int i = 0; i < NR; ++i) {
    acc[i] = _mm512_setzero_ps();
    accm[i] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < nsb; ++b) {
#pragma GCC unroll 4
    for (int i = 0; i < NR; ++i) {
      const uint8_t* p = rows[i] + b * T::kBytes;
      _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetchAhead, _MM_HINT_T1);  // never faults
      T::gemv_step(p, A[b], acc[i], accm[i]);
    }
  }
  for (int i = 0; i < NR; ++i) acc[i] = _mm512_add_ps(acc[i], _mm512_zextps256_ps512(accm[i]));
  if constexpr (NR == 4) {
    alignas(16) float s[4];
    _mm_store_ps(s, reduce4(acc[0], acc[1], acc[2], acc[3]));
    for (int i = 0; i < 4; ++i) *y[i] = s[i];
  } else {
    for (int i = 0; i < NR; ++i) *y[i] = _mm512_reduce_add_ps(acc[i]);
  }
}

template <typename T>
void gemv(const void* W, size_t row_bytes, const void* xq, float* y, int64_t r0, int64_t r1, int64_t cols) {
  const int64_t nsb = cols / kBlockK;
  thread_local std::vector<ActSB> act;
  ActSB* A = scratch(act, size_t(nsb));
  repack_activations<T>(static_cast<const BlockQ8x256*>(xq), nsb, false, A);
  const auto* w = static_cast<const uint8_t*>(W);
  constexpr int P = kGemvStreams;
  const int64_t part = (r1 - r0) / P;  // rows per part; the remainder goes after the last part
  for (int64_t i = 0; i < part; ++i) {
    const uint8_t* rows[P];
    float* ys[P];
    for (int k = 0; k < P; ++k) {
      rows[k] = w + size_t(r0 + k * part + i) * row_bytes;
      ys[k] = y + r0 + k * part + i;
    }
    dot_rows<T, P>(rows, A, nsb, ys);
  }
  for (int64_t r = r0 + P * part; r < r1; ++r) {
    const uint8_t* rows[1] = {w + size_t(r) * row_bytes};
    float* ys[1] = {y + r};
    dot_rows<T, 1>(rows, A, nsb, ys);
  }
}

// ---- GEMM ---------------------------------------------------------------------------------------

constexpr int kTileActs = 4;     // activation rows per register tile
constexpr int kDecodedRows = 4;  // weight rows decoded per pass
// Super-blocks per K step: a tile of 4 activation rows (12 KiB) and the 4 decoded weight rows
// (16 KiB) of one step stay in L1 while the weight rows take their turns.
constexpr int64_t kKStep = 8;

// out[j] += dot(decoded super-blocks D[0..n), activation row j of A) for j < kTileActs; activation
// rows are a_stride super-blocks apart.
inline void tile_kernel(const DecodedSB* D, const ActSB* A, int64_t a_stride, int64_t n, float* out) {
  __m512 acc[kTileActs];
  for (auto& a : acc) a = _mm512_setzero_ps();
  for (int64_t b = 0; b < n; ++b) {
    const DecodedSB& w = D[b];
    const __m512i v[4] = {_mm512_load_si512(&w.v[0]), _mm512_load_si512(&w.v[1]), _mm512_load_si512(&w.v[2]),
                          _mm512_load_si512(&w.v[3])};
    const __m512i sc01 = _mm512_load_si512(&w.sc01), sc23 = _mm512_load_si512(&w.sc23);
    const __m512 dw = _mm512_set1_ps(w.d), corr = _mm512_load_ps(w.corr);
#pragma GCC unroll 4
    for (int j = 0; j < kTileActs; ++j) {
      const ActSB& a = A[j * a_stride + b];
      const __m512i s = apply_scales(dot_codes(v, a.q), sc01, sc23);
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(a.d)), acc[j]);
      acc[j] = _mm512_fmadd_ps(corr, _mm512_load_ps(a.fbs), acc[j]);
    }
  }
  for (int j = 0; j < kTileActs; ++j) out[j] += _mm512_reduce_add_ps(acc[j]);
}

template <typename T>
void gemm(const void* W, size_t row_bytes, const void* X, size_t x_stride, int64_t nx, float* Y, int64_t ldy,
          int64_t r0, int64_t r1, int64_t cols) {
  const int64_t nsb = cols / kBlockK;
  const int64_t nxp = (nx + kTileActs - 1) / kTileActs * kTileActs;  // padding rows are zero
  thread_local std::vector<ActSB> act;
  thread_local std::vector<DecodedSB> dec;
  ActSB* A = scratch(act, size_t(nxp * nsb));
  DecodedSB* D = scratch(dec, size_t(kDecodedRows * nsb));
  const auto* xs = static_cast<const uint8_t*>(X);
  for (int64_t c = 0; c < nx; ++c)
    repack_activations<T>(reinterpret_cast<const BlockQ8x256*>(xs + size_t(c) * x_stride), nsb, true, A + c * nsb);
  std::memset(static_cast<void*>(A + nx * nsb), 0, size_t((nxp - nx) * nsb) * sizeof(ActSB));
  const auto* w = static_cast<const uint8_t*>(W);
  for (int64_t r = r0; r < r1; r += kDecodedRows) {
    const int nr = int(std::min<int64_t>(kDecodedRows, r1 - r));
    for (int i = 0; i < nr; ++i) {
      const uint8_t* row = w + size_t(r + i) * row_bytes;
      for (int64_t b = 0; b < nsb; ++b) T::decode(row + b * T::kBytes, D[i * nsb + b]);
    }
    for (int64_t c = 0; c < nxp; c += kTileActs) {
      float out[kDecodedRows][kTileActs] = {};
      for (int64_t k0 = 0; k0 < nsb; k0 += kKStep) {
        const int64_t kn = std::min(kKStep, nsb - k0);
        for (int i = 0; i < nr; ++i) tile_kernel(D + i * nsb + k0, A + c * nsb + k0, nsb, kn, out[i]);
      }
      for (int i = 0; i < nr; ++i)
        for (int j = 0; j < kTileActs && c + j < nx; ++j) Y[(c + j) * ldy + r + i] = out[i][j];
    }
  }
}

// ---- dequantization -------------------------------------------------------------------------------
// Each value is computed with the IEEE operations of the quantizer's dequantize_row: scale = d * s_j
// (and offset = dmin * m_j) in float, then scale * (u - bias) - offset. Every product here is exact
// (at most 11 + 6 + 6 significant bits), so the only rounding is the subtraction, as in the scalar code.

template <typename T>
void dequant_row(const void* row, float* y, int64_t cols) {
  if (cols < 0 || cols % kBlockK != 0)
    fail("dequant_row: a row of {} values is not a whole number of 256-value super-blocks", cols);
  const auto* p = static_cast<const uint8_t*>(row);
  const __m512 bias = _mm512_set1_ps(float(T::kBias));
  for (int64_t b = 0; b < cols / kBlockK; ++b, p += T::kBytes, y += kBlockK) {
    __m512i v[4];
    T::codes(p, v);
    alignas(64) uint8_t codes[kBlockK];
    for (int k = 0; k < 4; ++k) _mm512_store_si512(codes + 64 * k, v[k]);
    float scale[16], offset[16];
    T::dequant_scales(p, scale, offset);
    for (int k = 0; k < 4; ++k)
      for (int q = 0; q < 4; ++q) {
        // Quarter q of vector k: 16 weights of chunk order[2k + q / 2], first or second half.
        const int pos = 32 * T::kOrder[size_t(2 * k + q / 2)] + 16 * (q % 2), j = pos / T::kSub;
        const __m128i part = _mm_load_si128(reinterpret_cast<const __m128i*>(codes + 64 * k + 16 * q));
        __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(part));
        if constexpr (T::kBias != 0) f = _mm512_sub_ps(f, bias);
        f = _mm512_mul_ps(f, _mm512_set1_ps(scale[j]));
        if constexpr (T::kHasOffset) f = _mm512_sub_ps(f, _mm512_set1_ps(offset[j]));
        _mm512_storeu_ps(y + pos, f);
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

template <typename T>
void set(WeightKernelSet& s, DType t) {
  WeightKernels& e = entry(s, t);
  if (cpu().avx512vnni) {
    e = make<T>();
  } else {  // the products use vpdpbusd / vpdpwssd: keep the AVX2 ones
    e.quantize_act = quantize_act_q8x256;
    e.dequant_row = dequant_row<T>;
  }
}

}  // namespace

void register_qk_kernels_avx512(WeightKernelSet& s) {
  set<Q2K>(s, DType::Q2_K);
  set<Q3K>(s, DType::Q3_K);
  set<Q4K>(s, DType::Q4_K);
  set<Q5K>(s, DType::Q5_K);
  set<Q6K>(s, DType::Q6_K);
}

}  // namespace qforge::kernels
