// AVX2 kernels for the 32-weight block types (q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl) with BlockQ8x32
// activations (compiled with -mavx2 -mfma -mf16c).
//
// One block of 32 weights is one ymm of 8-bit codes in natural order (nibble types: the low
// nibbles are codes 0-15 and the high nibbles 16-31, so one shift and one lane insert put them in
// order). vpmaddubsw multiplies unsigned codes by signed activation codes into 16-bit pair sums and
// vpmaddwd with ones widens them to 8 int32 lanes. vpmaddubsw saturates pair sums beyond 32767, so:
//   q4_0, q5_0, q4_1, q5_1: the unsigned codes go in directly (at most 31 * 127 * 2 = 7874); the
//     zero point of q4_0 / q5_0 is removed with the activation sum: sum((u - z) x) = sum(u x) - z sum(x),
//     -z sum(x) being added to lane 0 of the block's int32 lanes;
//   q8_0, iq4_nl (signed codes up to 128 in magnitude): |w| times x with w's sign moved onto x
//     (vpsignb), at most 128 * 127 * 2 = 32512.
// Per block the int32 lanes are converted to float and multiplied by d_w * d_x (vcvtph2ps of the
// broadcast f16 scale) into a float accumulator; the affine types add m * d_x * sum(x).
//
// GEMV walks 4 parts of its rows in step (4 sequential streams) with a software prefetch ahead; for
// the 4- and 5-bit types it decodes blocks two at a time (see "block pairs"), which measured 40%
// faster on Zen 4 than one at a time. GEMM decodes a tile of 2 weight rows into a buffer once and
// runs groups of 4 activation rows over it.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/weight_kernels.h"
#include "qforge/dtype.h"
#include "qforge/error.h"
#include "quant/blocks_32.h"

namespace qforge::kernels {
namespace {

using quant::kBlock32;

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
inline int32_t hsum_epi32(__m256i v) {
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i t = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  return _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1)));
}
inline float hmax(__m256 v) {  // exact: the order of max operations does not change the result
  const __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(t, _mm_movehdup_ps(t)));
}

// ---- activations --------------------------------------------------------------------------------

// Same bytes as the scalar quantize_act (see kernels_q32_scalar.cpp for the exact rule).
void quantize_act_q8x32(const float* x, void* xq, int64_t n) {
  auto* out = static_cast<BlockQ8x32*>(xq);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undoes the per-lane packs
  for (int64_t b = 0; b < n / kBlock32; ++b, x += kBlock32) {
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(x + 8 * i);
      m = _mm256_max_ps(_mm256_and_ps(v[i], abs_mask), m);  // a NaN |x| leaves m as it was
    }
    const float d = hmax(m) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int i = 0; i < 4; ++i)
      q[i] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v[i], idv), lo), hi));
    const __m256i q16a = _mm256_packs_epi32(q[0], q[1]), q16b = _mm256_packs_epi32(q[2], q[3]);
    const __m256i q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16a, q16b), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs), q8);
    out[b].d = d;
    out[b].sum = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
  }
}

// One activation block as the kernels read it (96 bytes): corr is only in lane 0: -z * sum (int32)
// for the types with a zero point, dx * sum (float) for the affine types.
struct alignas(32) ActBlock {
  int8_t qs[32];
  float dx[8];
  union {
    int32_t zsum[8];
    float dxsum[8];
  };
};

void repack_activations(const BlockQ8x32* x, int64_t nb, int zero_point, bool affine, ActBlock* out) {
  std::memset(static_cast<void*>(out), 0, size_t(nb) * sizeof(ActBlock));
  for (int64_t b = 0; b < nb; ++b) {
    std::memcpy(out[b].qs, x[b].qs, 32);
    for (int i = 0; i < 8; ++i) out[b].dx[i] = x[b].d;
    if (affine)
      out[b].dxsum[0] = x[b].d * float(x[b].sum);
    else
      out[b].zsum[0] = -zero_point * x[b].sum;
  }
}

// ---- weight blocks ------------------------------------------------------------------------------

struct Decoded {
  __m256i u;   // unsigned codes (|w| for the signed types)
  __m256i s;   // the signed codes, whose signs go onto x (signed types only)
  __m256 dw;   // d in every lane
  __m256 mw;   // m in every lane (affine types)
};

inline __m256 half_broadcast(const void* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _mm256_cvtph_ps(_mm_set1_epi16(short(h)));
}

// The 32 codes of the shared nibble packing, in order.
inline __m256i nibbles(const uint8_t* qs) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0f));
}

// 0x10 in byte i where bit i of h is set.
inline __m256i high_bits(uint32_t h) {
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(int(h)), _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2,
                                                  2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t h;
  std::memcpy(&h, p, 4);
  return h;
}

struct Q8_0 {
  using Block = quant::BlockQ8_0;
  static constexpr bool kSigned = true, kAffine = false, kPairs = false, kHigh = false;
  static constexpr int kZeroPoint = 0;
  static inline Decoded decode(const Block& b) {
    Decoded r;
    r.s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.q));
    r.u = _mm256_abs_epi8(r.s);  // -128 becomes 0x80 = 128 as unsigned: still exact
    r.dw = half_broadcast(&b.d);
    return r;
  }
};

struct IQ4_NL {
  using Block = quant::BlockIQ4_NL;
  static constexpr bool kSigned = true, kAffine = false, kPairs = true, kHigh = false;
  static constexpr int kZeroPoint = 0;
  static inline Decoded decode(const Block& b) {
    const __m256i levels = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113));
    Decoded r;
    r.s = _mm256_shuffle_epi8(levels, nibbles(b.qs));
    r.u = _mm256_abs_epi8(r.s);
    r.dw = half_broadcast(&b.d);
    return r;
  }
};

constexpr bool iq4nl_table_matches() {
  constexpr int bytes[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  for (int i = 0; i < 16; ++i)
    if (float(bytes[i]) != quant::kIQ4NLLevels[i]) return false;
  return true;
}
static_assert(iq4nl_table_matches(), "iq4_nl byte table out of step with kIQ4NLLevels");

struct Q4_0 {
  using Block = quant::BlockQ4_0;
  static constexpr bool kSigned = false, kAffine = false, kPairs = true, kHigh = false;
  static constexpr int kZeroPoint = 8;
  static inline Decoded decode(const Block& b) {
    Decoded r;
    r.u = nibbles(b.qs);
    r.dw = half_broadcast(&b.d);
    return r;
  }
};

struct Q4_1 {
  using Block = quant::BlockQ4_1;
  static constexpr bool kSigned = false, kAffine = true, kPairs = true, kHigh = false;
  static constexpr int kZeroPoint = 0;
  static inline Decoded decode(const Block& b) {
    Decoded r;
    r.u = nibbles(b.qs);
    r.dw = half_broadcast(&b.d);
    r.mw = half_broadcast(&b.m);
    return r;
  }
};

struct Q5_0 {
  using Block = quant::BlockQ5_0;
  static constexpr bool kSigned = false, kAffine = false, kPairs = true, kHigh = true;
  static constexpr int kZeroPoint = 16;
  static inline Decoded decode(const Block& b) {
    Decoded r;
    r.u = _mm256_or_si256(nibbles(b.qs), high_bits(load_u32(b.qh)));
    r.dw = half_broadcast(&b.d);
    return r;
  }
};

struct Q5_1 {
  using Block = quant::BlockQ5_1;
  static constexpr bool kSigned = false, kAffine = true, kPairs = true, kHigh = true;
  static constexpr int kZeroPoint = 0;
  static inline Decoded decode(const Block& b) {
    Decoded r;
    r.u = _mm256_or_si256(nibbles(b.qs), high_bits(load_u32(b.qh)));
    r.dw = half_broadcast(&b.d);
    r.mw = half_broadcast(&b.m);
    return r;
  }
};

// acc += the block's contribution: dw * dx * (sum(u x) - z sum(x)) [+ m * dx * sum(x)].
template <typename T>
inline __m256 accumulate(const Decoded& w, const ActBlock& a, __m256 acc) {
  const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.qs));
  const __m256i p16 = _mm256_maddubs_epi16(w.u, T::kSigned ? _mm256_sign_epi8(x, w.s) : x);
  __m256i p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
  if constexpr (T::kZeroPoint != 0)
    p32 = _mm256_add_epi32(p32, _mm256_load_si256(reinterpret_cast<const __m256i*>(a.zsum)));
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_mul_ps(w.dw, _mm256_load_ps(a.dx)), acc);
  if constexpr (T::kAffine) acc = _mm256_fmadd_ps(w.mw, _mm256_load_ps(a.dxsum), acc);
  return acc;
}

// ---- block pairs (GEMV of the 4- and 5-bit types) ------------------------------------------------
//
// Two blocks A, B share one pair of ymm: lo = codes 0-15 of A | codes 0-15 of B, hi = codes 16-31
// likewise, so one 32-byte load and two ANDs decode 2 blocks (instead of a shift, an insert and an
// AND per block), and the int32 lanes 0-3 / 4-7 belong to A / B.

struct alignas(32) ActPair {
  int8_t lo[32];  // qs[0..15] of block A, then of block B
  int8_t hi[32];  // qs[16..31]
  union {
    int32_t zsum[8];  // -z * sum: A in lane 0, B in lane 4
    float dxsum[8];   // dx * sum (affine types), same lanes
  };
  float dx[8];  // A in lanes 0-3, B in 4-7
};

void repack_pairs(const BlockQ8x32* x, int64_t nb, int zero_point, bool affine, ActPair* out) {
  std::memset(static_cast<void*>(out), 0, size_t((nb + 1) / 2) * sizeof(ActPair));
  for (int64_t b = 0; b < nb; ++b) {
    ActPair& p = out[b / 2];
    const int k = int(b % 2);
    std::memcpy(p.lo + 16 * k, x[b].qs, 16);
    std::memcpy(p.hi + 16 * k, x[b].qs + 16, 16);
    for (int i = 0; i < 4; ++i) p.dx[4 * k + i] = x[b].d;
    if (affine)
      p.dxsum[4 * k] = x[b].d * float(x[b].sum);
    else
      p.zsum[4 * k] = -zero_point * x[b].sum;
  }
}

struct DecodedPair {
  __m256i lo, hi;  // codes (iq4_nl: signed levels)
  __m256 dw, mw;   // A's d (m) in lanes 0-3, B's in 4-7
};

inline __m256 half_pair(const void* a, const void* b) {  // b may be null: zero
  uint16_t ha, hb = 0;
  std::memcpy(&ha, a, 2);
  if (b) std::memcpy(&hb, b, 2);
  return _mm256_cvtph_ps(_mm_unpacklo_epi64(_mm_set1_epi16(short(ha)), _mm_set1_epi16(short(hb))));
}

// Blocks a[0] and a[1] (HasB), or a[0] alone with B all zero (the odd last block of a row).
template <typename T, bool HasB>
inline DecodedPair decode_pair(const typename T::Block* a) {
  const __m128i qa = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[0].qs));
  const __m256i q = HasB ? _mm256_inserti128_si256(_mm256_castsi128_si256(qa),
                                                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[1].qs)), 1)
                         : _mm256_zextsi128_si256(qa);
  const __m256i nib = _mm256_set1_epi8(0x0f);
  DecodedPair r;
  r.lo = _mm256_and_si256(q, nib);
  r.hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), nib);
  if constexpr (T::kHigh) {
    const uint32_t ha = load_u32(a[0].qh), hb = HasB ? load_u32(a[1].qh) : 0;
    r.lo = _mm256_or_si256(r.lo, high_bits((ha & 0xffff) | (hb << 16)));
    r.hi = _mm256_or_si256(r.hi, high_bits((ha >> 16) | (hb & 0xffff0000u)));
  }
  if constexpr (T::kSigned) {  // iq4_nl
    const __m256i levels = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113));
    r.lo = _mm256_shuffle_epi8(levels, r.lo);
    r.hi = _mm256_shuffle_epi8(levels, r.hi);
  }
  r.dw = half_pair(&a[0].d, HasB ? &a[1].d : nullptr);
  if constexpr (T::kAffine) r.mw = half_pair(&a[0].m, HasB ? &a[1].m : nullptr);
  return r;
}

template <typename T>
inline __m256 accumulate_pair(const DecodedPair& w, const ActPair& a, __m256 acc) {
  const __m256i xl = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.lo));
  const __m256i xh = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.hi));
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i p32;
  if constexpr (T::kSigned) {  // |level| <= 127: a pair sum reaches 32258, so lo and hi widen apart
    const __m256i pl = _mm256_maddubs_epi16(_mm256_abs_epi8(w.lo), _mm256_sign_epi8(xl, w.lo));
    const __m256i ph = _mm256_maddubs_epi16(_mm256_abs_epi8(w.hi), _mm256_sign_epi8(xh, w.hi));
    p32 = _mm256_add_epi32(_mm256_madd_epi16(pl, ones), _mm256_madd_epi16(ph, ones));
  } else {  // codes <= 31: each pair sum <= 7874, the two together fit 16 bits
    p32 = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w.lo, xl), _mm256_maddubs_epi16(w.hi, xh)), ones);
  }
  if constexpr (T::kZeroPoint != 0)
    p32 = _mm256_add_epi32(p32, _mm256_load_si256(reinterpret_cast<const __m256i*>(a.zsum)));
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_mul_ps(w.dw, _mm256_load_ps(a.dx)), acc);
  if constexpr (T::kAffine) acc = _mm256_fmadd_ps(w.mw, _mm256_load_ps(a.dxsum), acc);
  return acc;
}

template <typename E>
E* scratch(std::vector<E>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// ---- GEMV -------------------------------------------------------------------------------------

// Software prefetch into L2 this many bytes ahead, and the rows of a thread cut into kGemvStreams
// parts walked in step, one row of each at a time: several sequential streams keep enough memory
// requests in flight for a core that also computes (see kernels_q32_avx512.cpp for the figures).
constexpr int64_t kPrefetchAhead = 1024;
constexpr int kGemvStreams = 4;

// y[i] = dot of the row at w[i] with the activations, NR rows at once (the activation loads shared).
template <typename T, int NR>
void dot_rows(const uint8_t* const* w, const ActBlock* A, int64_t nb, float* const* y) {
  using Block = typename T::Block;
  __m256 acc[NR];
  for (int i = 0; i < NR; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 4
    for (int i = 0; i < NR; ++i) {
      const auto* blk = reinterpret_cast<const Block*>(w[i]) + b;
      if (b % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(blk) + kPrefetchAhead, _MM_HINT_T1);
      acc[i] = accumulate<T>(T::decode(*blk), A[b], acc[i]);
    }
  }
  for (int i = 0; i < NR; ++i) *y[i] = hsum(acc[i]);
}

// The same for the pair types.
template <typename T, int NR>
void dot_rows_pairs(const uint8_t* const* w, const ActPair* A, int64_t nb, float* const* y) {
  using Block = typename T::Block;
  __m256 acc[NR];
  for (int i = 0; i < NR; ++i) acc[i] = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p < nb / 2; ++p) {
#pragma GCC unroll 4
    for (int i = 0; i < NR; ++i) {
      const auto* blk = reinterpret_cast<const Block*>(w[i]) + 2 * p;
      _mm_prefetch(reinterpret_cast<const char*>(blk) + kPrefetchAhead, _MM_HINT_T1);
      acc[i] = accumulate_pair<T>(decode_pair<T, true>(blk), A[p], acc[i]);
    }
  }
  if (nb % 2)
    for (int i = 0; i < NR; ++i)
      acc[i] = accumulate_pair<T>(decode_pair<T, false>(reinterpret_cast<const Block*>(w[i]) + 2 * p), A[p], acc[i]);
  for (int i = 0; i < NR; ++i) *y[i] = hsum(acc[i]);
}

template <typename T>
void gemv(const void* W, size_t row_bytes, const void* xq, float* y, int64_t r0, int64_t r1, int64_t cols) {
  const int64_t nb = cols / kBlock32;
  thread_local std::vector<ActBlock> act;
  thread_local std::vector<ActPair> act_pairs;
  const ActBlock* A = nullptr;
  const ActPair* AP = nullptr;
  if constexpr (T::kPairs) {
    ActPair* p = scratch(act_pairs, size_t((nb + 1) / 2));
    repack_pairs(static_cast<const BlockQ8x32*>(xq), nb, T::kZeroPoint, T::kAffine, p);
    AP = p;
  } else {
    ActBlock* a = scratch(act, size_t(nb));
    repack_activations(static_cast<const BlockQ8x32*>(xq), nb, T::kZeroPoint, T::kAffine, a);
    A = a;
  }
  auto rows = [&]<int NR>(const uint8_t* const* w, float* const* ys) {
    if constexpr (T::kPairs)
      dot_rows_pairs<T, NR>(w, AP, nb, ys);
    else
      dot_rows<T, NR>(w, A, nb, ys);
  };
  const auto* w = static_cast<const uint8_t*>(W);
  constexpr int P = kGemvStreams;
  const int64_t part = (r1 - r0) / P;
  for (int64_t i = 0; i < part; ++i) {
    const uint8_t* ws[P];
    float* ys[P];
    for (int k = 0; k < P; ++k) {
      ws[k] = w + size_t(r0 + k * part + i) * row_bytes;
      ys[k] = y + r0 + k * part + i;
    }
    rows.template operator()<P>(ws, ys);
  }
  for (int64_t r = r0 + P * part; r < r1; ++r) {  // the remainder
    const uint8_t* ws[1] = {w + size_t(r) * row_bytes};
    float* ys[1] = {y + r};
    rows.template operator()<1>(ws, ys);
  }
}

// ---- GEMM -------------------------------------------------------------------------------------

constexpr int kTileRows = 2;  // weight rows decoded together
constexpr int kTileCols = 4;  // activation rows per register tile

struct alignas(32) DecodedBlock {
  __m256i u, s;
  __m256 dw, mw;
};

// out[j * kTileRows + i] = dot(weight row i of D, activation row j of A) for the whole row.
template <typename T>
void tile_kernel(const DecodedBlock* D, const ActBlock* A, int64_t nb, float* out) {
  __m256 acc[kTileCols][kTileRows];
  for (auto& row : acc)
    for (auto& a : row) a = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    Decoded w[kTileRows];
    for (int i = 0; i < kTileRows; ++i) {
      const DecodedBlock& d = D[i * nb + b];
      w[i].u = _mm256_load_si256(&d.u);
      if constexpr (T::kSigned) w[i].s = _mm256_load_si256(&d.s);
      w[i].dw = _mm256_load_ps(reinterpret_cast<const float*>(&d.dw));
      if constexpr (T::kAffine) w[i].mw = _mm256_load_ps(reinterpret_cast<const float*>(&d.mw));
    }
#pragma GCC unroll 4
    for (int j = 0; j < kTileCols; ++j)
#pragma GCC unroll 2
      for (int i = 0; i < kTileRows; ++i) acc[j][i] = accumulate<T>(w[i], A[j * nb + b], acc[j][i]);
  }
  for (int j = 0; j < kTileCols; ++j)
    for (int i = 0; i < kTileRows; ++i) out[j * kTileRows + i] = hsum(acc[j][i]);
}

template <typename T>
void gemm(const void* W, size_t row_bytes, const void* X, size_t x_stride, int64_t nx, float* Y, int64_t ldy,
          int64_t r0, int64_t r1, int64_t cols) {
  using Block = typename T::Block;
  const int64_t nb = cols / kBlock32;
  const int64_t nxp = (nx + kTileCols - 1) / kTileCols * kTileCols;  // padding rows are zero
  thread_local std::vector<ActBlock> act;
  thread_local std::vector<DecodedBlock> dec;
  ActBlock* A = scratch(act, size_t(nxp * nb));
  DecodedBlock* D = scratch(dec, size_t(kTileRows * nb));
  const auto* xs = static_cast<const uint8_t*>(X);
  for (int64_t c = 0; c < nx; ++c)
    repack_activations(reinterpret_cast<const BlockQ8x32*>(xs + size_t(c) * x_stride), nb, T::kZeroPoint,
                       T::kAffine, A + c * nb);
  std::memset(static_cast<void*>(A + nx * nb), 0, size_t((nxp - nx) * nb) * sizeof(ActBlock));
  const auto* w = static_cast<const uint8_t*>(W);
  for (int64_t r = r0; r < r1; r += kTileRows) {
    const int nr = int(std::min<int64_t>(kTileRows, r1 - r));
    for (int i = 0; i < kTileRows; ++i) {
      DecodedBlock* out = D + i * nb;
      if (i >= nr) {  // missing row of the last tile: zero scales, so it sums to zero
        std::memset(static_cast<void*>(out), 0, size_t(nb) * sizeof(DecodedBlock));
        continue;
      }
      const auto* row = reinterpret_cast<const Block*>(w + size_t(r + i) * row_bytes);
      for (int64_t b = 0; b < nb; ++b) {
        const Decoded q = T::decode(row[b]);
        _mm256_store_si256(&out[b].u, q.u);
        _mm256_store_si256(&out[b].s, T::kSigned ? q.s : _mm256_setzero_si256());
        _mm256_store_ps(reinterpret_cast<float*>(&out[b].dw), q.dw);
        _mm256_store_ps(reinterpret_cast<float*>(&out[b].mw), T::kAffine ? q.mw : _mm256_setzero_ps());
      }
    }
    for (int64_t c = 0; c < nxp; c += kTileCols) {
      float out[kTileCols * kTileRows];
      tile_kernel<T>(D, A + c * nb, nb, out);
      for (int j = 0; j < kTileCols && c + j < nx; ++j)
        for (int i = 0; i < nr; ++i) Y[(c + j) * ldy + r + i] = out[j * kTileRows + i];
    }
  }
}

// ---- dequantization -------------------------------------------------------------------------------
// The same IEEE operations as the quantizer's dequantize_row (code as float, times d, plus m), so
// the floats are identical.

void check_cols(const char* type, int64_t cols) {
  if (cols < 0 || cols % kBlock32 != 0)
    fail("dequant_row: {}: a row of {} values is not a whole number of 32-value blocks", type, cols);
}

// codes: 32 int8 codes in order; y[i] = (codes[i] - z) * d (+ m when Affine).
template <bool Affine>
inline void store_block(__m256i codes, int z, __m256 d, __m256 m, float* y) {
  const __m256i zv = _mm256_set1_epi32(z);
  for (int i = 0; i < 4; ++i) {
    const __m128i c8 = i < 2 ? _mm256_castsi256_si128(codes) : _mm256_extracti128_si256(codes, 1);
    const __m128i part = (i % 2) ? _mm_srli_si128(c8, 8) : c8;
    const __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepi8_epi32(part), zv));
    _mm256_storeu_ps(y + 8 * i, Affine ? _mm256_add_ps(_mm256_mul_ps(f, d), m) : _mm256_mul_ps(f, d));
  }
}

template <typename T>
void dequant(const void* row, float* y, int64_t cols, const char* name) {
  check_cols(name, cols);
  const auto* b = static_cast<const typename T::Block*>(row);
  for (int64_t i = 0; i < cols / kBlock32; ++i, y += kBlock32) {
    const Decoded q = T::decode(b[i]);
    if constexpr (T::kSigned)
      store_block<false>(q.s, 0, q.dw, q.dw, y);  // iq4_nl: d * level is level * d, one rounding
    else
      store_block<T::kAffine>(q.u, T::kZeroPoint, q.dw, T::kAffine ? q.mw : q.dw, y);
  }
}

void dequant_q8_0(const void* r, float* y, int64_t n) { dequant<Q8_0>(r, y, n, "q8_0"); }
void dequant_q4_0(const void* r, float* y, int64_t n) { dequant<Q4_0>(r, y, n, "q4_0"); }
void dequant_q4_1(const void* r, float* y, int64_t n) { dequant<Q4_1>(r, y, n, "q4_1"); }
void dequant_q5_0(const void* r, float* y, int64_t n) { dequant<Q5_0>(r, y, n, "q5_0"); }
void dequant_q5_1(const void* r, float* y, int64_t n) { dequant<Q5_1>(r, y, n, "q5_1"); }
void dequant_iq4_nl(const void* r, float* y, int64_t n) { dequant<IQ4_NL>(r, y, n, "iq4_nl"); }

template <typename T>
WeightKernels make(void (*dequant_row)(const void*, float*, int64_t)) {
  WeightKernels k;
  k.act = ActFormat::Q8x32;
  k.quantize_act = quantize_act_q8x32;
  k.gemv = gemv<T>;
  k.gemm = gemm<T>;
  k.dequant_row = dequant_row;
  return k;
}

}  // namespace

void register_q32_kernels_avx2(WeightKernelSet& s) {
  entry(s, DType::Q8_0) = make<Q8_0>(dequant_q8_0);
  entry(s, DType::Q4_0) = make<Q4_0>(dequant_q4_0);
  entry(s, DType::Q4_1) = make<Q4_1>(dequant_q4_1);
  entry(s, DType::Q5_0) = make<Q5_0>(dequant_q5_0);
  entry(s, DType::Q5_1) = make<Q5_1>(dequant_q5_1);
  entry(s, DType::IQ4_NL) = make<IQ4_NL>(dequant_iq4_nl);
}

}  // namespace qforge::kernels
