// AVX-512 VNNI kernels for the 32-weight block types (q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl) with
// BlockQ8x32 activations. Registered only when the CPU has AVX512-VNNI; without it the AVX2 entries
// stay in place (registration order scalar -> avx2 -> avx512). Only AVX512 F/BW/VL/DQ + VNNI are
// used (no VBMI), so Cascade Lake runs them too.
//
// The unit of work is a group of 4 consecutive blocks of one weight row, held in two zmm registers
// of unsigned 8-bit codes: `lo` = codes 0-15 of the four blocks (16 bytes each) and `hi` = codes
// 16-31. That split follows the nibble packing (low nibbles are codes 0-15, see blocks_32.h), so a
// 4-bit group decodes with one word permute (vpermt2w over the group's bytes; every field of these
// blocks starts at an even byte) and two ANDs; the activations are rearranged once per call into
// the same order. vpdpbusd then multiplies unsigned weight codes by signed activation codes, 64
// pairs per instruction, into 16 int32 lanes: lanes 4k..4k+3 belong to block k.
//
// Every type is fed to vpdpbusd as unsigned codes u with weight = d * (u - z) + m:
//   q4_0: u = q, z = 8;   q5_0: u = q, z = 16;   q4_1 / q5_1: u = q, z = 0, min m;
//   q8_0: u = q ^ 0x80 = q + 128, z = 128;   iq4_nl: u = level + 128 (table lookup), z = 128.
// The zero point costs nothing per weight: sum((u - z) x) = sum(u x) - z sum(x), with -z * sum(x)
// of each activation block (BlockQ8x32::sum) added to the block's int32 sum. The min of the
// affine types adds m * dx * sum(x) per block. The int32 sums are converted to float and scaled by
// d_w * d_x (f16 scales picked out of the loaded bytes with vpermt2w, widened with vcvtph2ps) into
// float accumulators. Integer sums are exact; only the float accumulation order differs from the
// scalar twin.
//
// Both products work in steps of 16 blocks (see the GEMV section). GEMV (generation, memory-bound)
// walks 4 parts of its rows in step, software-prefetched. GEMM (prompt processing, compute-bound)
// decodes a tile of 4 weight rows into a buffer once, then runs every group of 3 activation rows
// over it with 12 float accumulators in registers.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/weight_kernels.h"
#include "qforge/dtype.h"
#include "qforge/error.h"
#include "quant/blocks_32.h"

namespace qforge::kernels {
namespace {

using quant::kBlock32;
constexpr int kGroupBlocks = 4;  // blocks per zmm group

// ---- activations --------------------------------------------------------------------------------

// Same bytes as the scalar quantize_act (see kernels_q32_scalar.cpp for the exact rule).
void quantize_act_q8x32(const float* x, void* xq, int64_t n) {
  auto* out = static_cast<BlockQ8x32*>(xq);
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  for (int64_t b = 0; b < n / kBlock32; ++b, x += kBlock32) {
    const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
    // max(a, m) returns m when a is NaN, as the scalar `a > m ? a : m` does.
    const __m512 m = _mm512_max_ps(_mm512_and_ps(x1, abs_mask), _mm512_max_ps(_mm512_and_ps(x0, abs_mask), _mm512_setzero_ps()));
    const float amax = _mm512_reduce_max_ps(m);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m512 idv = _mm512_set1_ps(id);
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x0, idv), lo), hi));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x1, idv), lo), hi));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].qs), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].qs + 16), _mm512_cvtepi32_epi8(q1));
    out[b].d = d;
    out[b].sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
  }
}

// ---- weight groups ------------------------------------------------------------------------------

// Byte mask of the first n bytes of a 64-byte load (n may be <= 0 or >= 64).
inline __mmask64 first_bytes(int64_t n) {
  return n >= 64 ? ~__mmask64(0) : n <= 0 ? __mmask64(0) : (__mmask64(1) << n) - 1;
}

// Pins a loaded value to a register. GCC otherwise folds the load into every instruction that uses
// the value (vpermt2w overwrites one operand, so each use reloaded the 64 bytes): pinning made the
// GEMV 17% faster on Zen 4, which loads one zmm per cycle.
template <typename V>
inline V in_register(V v) {
  asm("" : "+v"(v));
  return v;
}

template <bool Masked>
inline __m512i load64(const uint8_t* p, int64_t avail) {
  if constexpr (Masked)
    return in_register(_mm512_maskz_loadu_epi8(first_bytes(avail), p));
  else
    return in_register(_mm512_loadu_si512(p));
}

// Index tables for the permutes over a 128-byte window that starts at the group's first block. Every
// field of these blocks starts at an even byte (block sizes 18-34 and field offsets are even), so the
// word permute vpermt2w (AVX512BW) picks them; no byte permute (AVX512-VBMI) is needed.
using Bytes64 = std::array<uint8_t, 64>;
using Words32 = std::array<uint16_t, 32>;

// Word lane 8k+w: word w of the 16 bytes at `first + S*k`: each block's 16 bytes in its 128-bit lane.
constexpr Words32 block_words_index(int S, int first) {
  Words32 a{};
  for (int k = 0; k < 4; ++k)
    for (int w = 0; w < 8; ++w) a[size_t(8 * k + w)] = uint16_t((first + S * k) / 2 + w);
  return a;
}
// Byte pattern (per 128-bit lane, for vpshufb) that puts byte `b0 + j/8` of the lane at byte j.
constexpr Bytes64 qh_spread(int b0) {
  Bytes64 a{};
  for (int i = 0; i < 64; ++i) a[size_t(i)] = uint8_t(b0 + (i % 16) / 8);
  return a;
}
constexpr Bytes64 qh_bit_select() {
  Bytes64 a{};
  for (int i = 0; i < 64; ++i) a[size_t(i)] = uint8_t(1u << (i % 8));
  return a;
}
// For the 16-block steps (see reduce_blocks): word lane 4k+g holds the d of block k of
// group g, lane 16+4k+g its m. One window covers the scales of G consecutive groups when they lie
// within its 128 bytes (G = 2 for 18-byte blocks); lane 4k+g then takes block 4 * (g % G) + k of
// the window, and step_lanes picks the lanes of the G groups starting at g.
constexpr Words32 step_scale_words_index(int S, int G) {
  Words32 a{};
  for (int k = 0; k < 4; ++k)
    for (int g = 0; g < 4; ++g) {
      const int block = 4 * (g % G) + k;
      a[size_t(4 * k + g)] = uint16_t(S * block / 2);
      a[size_t(16 + 4 * k + g)] = uint16_t((S * block + 2) / 2);
    }
  return a;
}
constexpr __mmask32 step_lanes(int g, int G) {
  uint32_t m = 0;
  for (int j = g; j < g + G; ++j)
    for (int k = 0; k < 4; ++k) m |= (1u << (4 * k + j)) | (1u << (16 + 4 * k + j));
  return __mmask32(m);
}
// Groups whose scales (d, and m for affine types) one 128-byte window holds.
constexpr int scale_groups(int S, bool affine) { return 7 * S + (affine ? 4 : 2) <= 128 ? 2 : 1; }

inline __m512i load_index(const uint8_t* a) { return _mm512_loadu_si512(a); }
inline __m512i load_index(const uint16_t* a) { return _mm512_loadu_si512(a); }

// The bytes of one group as loaded: a 128-byte window from the group's first block (q8_0 also a
// second one 16 bytes further, see Q8_0).
struct Window {
  __m512i w0, w1, w2, w3;
};

// The 4- and 5-bit types: d at byte 0, m at byte 2 (affine), qh at QhAt (5-bit), nibbles at QsAt.
template <int S, int QsAt, int QhAt, bool Affine, int ZeroPoint, bool Lut>
struct NibbleType {
  static constexpr int kBytes = S;
  static constexpr int kSpan = 128;  // bytes the unmasked loads of a group read
  static constexpr bool kAffine = Affine;
  static constexpr int kZeroPoint = ZeroPoint;
  static_assert(S % 2 == 0 && QsAt % 2 == 0 && (QhAt < 0 || QhAt % 2 == 0), "fields must start at even bytes");
  static constexpr Words32 kQs = block_words_index(S, QsAt);
  static constexpr Words32 kQh = block_words_index(S, QhAt < 0 ? 0 : QhAt);  // qh in bytes 0-3 of lane k
  static constexpr Bytes64 kQhLo = qh_spread(0), kQhHi = qh_spread(2);
  static constexpr Bytes64 kBit = qh_bit_select();
  static constexpr int kScaleGroups = scale_groups(S, Affine);
  static constexpr Words32 kStepScales = step_scale_words_index(S, kScaleGroups);

  // avail: bytes of the row from p on (only read when Masked).
  template <bool Masked>
  static inline Window load(const uint8_t* p, int64_t avail) {
    Window w;
    w.w0 = load64<Masked>(p, avail);
    w.w1 = load64<Masked>(p + 64, avail - 64);
    return w;
  }

  static inline void codes(const Window& w, __m512i& lo, __m512i& hi) {
    const __m512i nib = _mm512_set1_epi8(0x0f);
    const __m512i q = _mm512_permutex2var_epi16(w.w0, load_index(kQs.data()), w.w1);
    lo = _mm512_and_si512(q, nib);
    hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), nib);
    if constexpr (QhAt >= 0) {
      // Byte j of lane k tests bit j (codes 0-15) or 16+j (codes 16-31) of block k's qh.
      const __m512i bit = load_index(kBit.data()), b4 = _mm512_set1_epi8(0x10);
      const __m512i qh = _mm512_permutex2var_epi16(w.w0, load_index(kQh.data()), w.w1);
      const __mmask64 klo = _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, load_index(kQhLo.data())), bit);
      const __mmask64 khi = _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, load_index(kQhHi.data())), bit);
      lo = _mm512_mask_add_epi8(lo, klo, lo, b4);
      hi = _mm512_mask_add_epi8(hi, khi, hi, b4);
    }
    if constexpr (Lut) {  // iq4_nl: level + 128 for each code
      const __m512i table = _mm512_broadcast_i32x4(_mm_setr_epi8(1, 24, 45, 63, 79, 93, 106, 118, -127, -115, -103,
                                                                 -90, -75, -59, -39, -15));
      lo = _mm512_shuffle_epi8(table, lo);
      hi = _mm512_shuffle_epi8(table, hi);
    }
  }
  // f16 words of groups g..g+kScaleGroups-1 of a step (see step_scale_words_index), zero elsewhere
  // and in the lanes `keep` leaves out.
  static inline __m512i step_scales(const Window& w, int g, __mmask32 keep) {
    return _mm512_maskz_permutex2var_epi16(step_lanes(g, kScaleGroups) & keep, w.w0, load_index(kStepScales.data()),
                                           w.w1);
  }
};

// iq4_nl's table above is kIQ4NLLevels + 128 written as int8 bytes; check it against the levels.
constexpr bool iq4nl_table_matches() {
  constexpr int bytes[16] = {1, 24, 45, 63, 79, 93, 106, 118, -127, -115, -103, -90, -75, -59, -39, -15};
  for (int i = 0; i < 16; ++i)
    if (uint8_t(int(quant::kIQ4NLLevels[i]) + 128) != uint8_t(bytes[i])) return false;
  return true;
}
static_assert(iq4nl_table_matches(), "iq4_nl byte table out of step with kIQ4NLLevels");

using Q4_0 = NibbleType<18, 2, -1, false, 8, false>;
using IQ4_NL = NibbleType<18, 2, -1, false, 128, true>;
using Q4_1 = NibbleType<20, 4, -1, true, 0, false>;
using Q5_0 = NibbleType<22, 6, 2, false, 16, false>;
using Q5_1 = NibbleType<24, 8, 4, true, 0, false>;

// q8_0: 4 blocks are 136 bytes, more than one 128-byte window: codes 0-15 come from [0, 128) and
// codes 16-31 from [16, 144).
struct Q8_0 {
  static constexpr int kBytes = 34;
  static constexpr int kSpan = 144;
  static constexpr bool kAffine = false;
  static constexpr int kZeroPoint = 128;
  static constexpr Words32 kLo = block_words_index(34, 2);
  static constexpr Words32 kHi = block_words_index(34, 18 - 16);
  static constexpr int kScaleGroups = 1;
  static constexpr Words32 kStepScales = step_scale_words_index(34, 1);

  template <bool Masked>
  static inline Window load(const uint8_t* p, int64_t avail) {
    Window w;
    w.w0 = load64<Masked>(p, avail);
    w.w1 = load64<Masked>(p + 64, avail - 64);
    w.w2 = load64<Masked>(p + 16, avail - 16);
    w.w3 = load64<Masked>(p + 80, avail - 80);
    return w;
  }
  static inline void codes(const Window& w, __m512i& lo, __m512i& hi) {
    const __m512i flip = _mm512_set1_epi8(char(0x80));
    lo = _mm512_xor_si512(_mm512_permutex2var_epi16(w.w0, load_index(kLo.data()), w.w1), flip);
    hi = _mm512_xor_si512(_mm512_permutex2var_epi16(w.w2, load_index(kHi.data()), w.w3), flip);
  }
  static inline __m512i step_scales(const Window& w, int g, __mmask32 keep) {
    return _mm512_maskz_permutex2var_epi16(step_lanes(g, 1) & keep, w.w0, load_index(kStepScales.data()), w.w1);
  }
};

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

// ---- GEMV -------------------------------------------------------------------------------------
//
// GEMV works in steps of 16 blocks (4 groups). The int32 lanes of the 4 groups are first summed
// per block with an unpack/add tree (reduce_blocks), so the float work (convert, times d_w * d_x,
// accumulate) is done once per 16 blocks instead of once per group: on Zen 4 the vector pipes, not
// the loads, bound this loop, and the float multiplies share pipes with vpdpbusd. The f16 scales of
// the 16 blocks are picked out of the groups' windows straight into the order the tree leaves the
// blocks in. (Measured, q4_0 rows in L2, one thread: 0.66 ns per block with per-group float work,
// 0.56 with steps, i.e. 32 GB/s of weights; q8_0 0.73 ns, 46 GB/s.)

// Activations of one step, in the order dot_step reads them (704 bytes).
struct alignas(64) ActStep {
  int8_t lo[4][64];  // group g, block k: qs[0..15] at [g][16k]
  int8_t hi[4][64];  // qs[16..31]
  int32_t zsum[16];  // lane 4k+g: -z * sum of block 4g+k (types with a zero point)
  float dx[16];      // lane 4k+g: dx of block 4g+k (reduce_blocks' order)
  float dxsum[16];   // lane 4k+g: dx * sum of block 4g+k (affine types)
};
static_assert(sizeof(ActStep) == 704);
constexpr int kStepBlocks = 16;

void repack_step_activations(const BlockQ8x32* x, int64_t nb, int zero_point, bool affine, ActStep* out) {
  const int64_t nsteps = (nb + kStepBlocks - 1) / kStepBlocks;
  std::memset(static_cast<void*>(out), 0, size_t(nsteps) * sizeof(ActStep));
  for (int64_t b = 0; b < nb; ++b) {
    ActStep& s = out[b / kStepBlocks];
    const int g = int(b % kStepBlocks) / 4, k = int(b % 4);
    std::memcpy(s.lo[g] + 16 * k, x[b].qs, 16);
    std::memcpy(s.hi[g] + 16 * k, x[b].qs + 16, 16);
    if (!affine) s.zsum[4 * k + g] = -zero_point * x[b].sum;
    s.dx[4 * k + g] = x[b].d;
    s.dxsum[4 * k + g] = x[b].d * float(x[b].sum);
  }
}

// Per-block sums of 4 groups' int32 lanes: lane 4k+g = the 4 lanes of block k of group g, summed.
inline __m512i reduce_blocks(__m512i t0, __m512i t1, __m512i t2, __m512i t3) {
  const __m512i a = _mm512_add_epi32(_mm512_unpacklo_epi32(t0, t1), _mm512_unpackhi_epi32(t0, t1));
  const __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi32(t2, t3), _mm512_unpackhi_epi32(t2, t3));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}

// Software prefetch into L2, this many bytes ahead of the step being read (every cache line of the
// row once). Measured on Zen 4 streaming from DRAM: 5-20% faster than without; 2 KiB and more
// ahead, or prefetcht0, were slower.
constexpr int64_t kPrefetchAhead = 1024;

// What the rows of one GEMV call share.
struct RowPlan {
  int64_t nsteps = 0;       // steps per row; the last is partial when the row's blocks are not a multiple of 16
  int64_t full_steps = 0;   // steps with 16 blocks
  int64_t row_len = 0;      // bytes of a row's blocks
  int64_t reach = 0;        // bytes from a row's start that its unmasked loads touch (may pass row_len)
  __mmask32 last_keep = 0;  // scale lanes of the partial step that belong to real blocks
};

template <typename T>
RowPlan plan_rows(int64_t nb) {
  RowPlan p;
  p.nsteps = (nb + kStepBlocks - 1) / kStepBlocks;
  p.full_steps = nb / kStepBlocks;
  p.row_len = nb * T::kBytes;
  p.reach = (p.nsteps * kStepBlocks - kGroupBlocks) * T::kBytes + T::kSpan;
  uint32_t keep = 0;
  for (int64_t b = 0; b < nb % kStepBlocks; ++b) {  // block 4g+k of the step sits in lanes 4k+g, 16+4k+g
    const int lane = int(4 * (b % 4) + b / 4);
    keep |= (1u << lane) | (1u << (16 + lane));
  }
  p.last_keep = __mmask32(keep);
  return p;
}

// acc[i] += the 16 blocks of step s of the row at w[i].
// Loads may run past a row's end into the rows after it: bytes of blocks past the row end meet zero
// activations, and Partial drops their scales (keep), so they add exactly zero. Only the last rows
// of the range, whose loads could pass the end of the matrix, run with MaskLoads: then loads stop at
// `limit` bytes from the row start (the end of the range's last row).
template <typename T, int NR, bool MaskLoads, bool Partial>
inline void dot_step(const uint8_t* const* w, const ActStep& a, int64_t s, int64_t limit, __mmask32 keep,
                     __m512* acc) {
  const int64_t group_bytes = kGroupBlocks * T::kBytes, step_bytes = kStepBlocks * T::kBytes;
  for (int i = 0; i < NR; ++i)
#pragma GCC unroll 16
    for (int64_t o = 0; o < step_bytes; o += 64)  // (past the end of the matrix is harmless: prefetches never fault)
      _mm_prefetch(reinterpret_cast<const char*>(w[i] + s * step_bytes + kPrefetchAhead + o), _MM_HINT_T1);
  __m512i t[NR][4], sc[NR];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const __m512i xl = in_register(_mm512_load_si512(a.lo[g])), xh = in_register(_mm512_load_si512(a.hi[g]));
    const int64_t at = s * step_bytes + g * group_bytes;
#pragma GCC unroll 4
    for (int i = 0; i < NR; ++i) {
      const Window win = MaskLoads && limit - at < T::kSpan ? T::template load<true>(w[i] + at, limit - at)
                                                            : T::template load<false>(w[i] + at, 0);
      __m512i lo, hi;
      T::codes(win, lo, hi);
      t[i][g] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xl), hi, xh);
      if (g % T::kScaleGroups == 0) {
        const __m512i sg = T::step_scales(win, g, Partial ? keep : ~__mmask32(0));
        sc[i] = g == 0 ? sg : _mm512_or_si512(sc[i], sg);
      }
    }
  }
  const __m512 dx = _mm512_load_ps(a.dx);
#pragma GCC unroll 4
  for (int i = 0; i < NR; ++i) {
    const __m512 d = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(sc[i])), dx);
    __m512i dot = reduce_blocks(t[i][0], t[i][1], t[i][2], t[i][3]);
    if constexpr (!T::kAffine) dot = _mm512_add_epi32(dot, _mm512_load_si512(a.zsum));
    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), d, acc[i]);
    if constexpr (T::kAffine)
      acc[i] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(sc[i], 1)), _mm512_load_ps(a.dxsum), acc[i]);
  }
}

// y[i] = dot of the row at w[i] with the activations, for NR rows at once.
template <typename T, int NR, bool MaskLoads>
void dot_rows(const uint8_t* const* w, const ActStep* A, const RowPlan& plan, int64_t limit, float* const* y) {
  static_assert(NR == 1 || !MaskLoads, "masked loads take one row");
  __m512 acc[NR];
  for (int i = 0; i < NR; ++i) acc[i] = _mm512_setzero_ps();
  int64_t s = 0;
  for (; s < plan.full_steps; ++s) dot_step<T, NR, MaskLoads, false>(w, A[s], s, limit, 0, acc);
  if (s < plan.nsteps) dot_step<T, NR, MaskLoads, true>(w, A[s], s, limit, plan.last_keep, acc);
  for (int i = 0; i < NR; ++i) *y[i] = _mm512_reduce_add_ps(acc[i]);
}

// Per-thread scratch, 64-byte aligned through the element type.
template <typename E>
E* scratch(std::vector<E>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// A thread's rows are cut into this many parts that are walked in step, one row of each at a time:
// that many sequential streams, each row read start to end. Measured on Zen 4 from DRAM (2048 x
// 2048, q4_0, 1 thread): one stream 15-16 GB/s (the core's compute leaves the prefetchers too few
// misses in flight), two 21-22, four 24-26 GB/s; from cache they share the activation loads, 15%
// faster than one. Neighbouring rows in step (r, r+1) instead halve the speed from DRAM: their
// streams overlap and the prefetchers lose track of them.
constexpr int kGemvStreams = 4;

template <typename T>
void gemv(const void* W, size_t row_bytes, const void* xq, float* y, int64_t r0, int64_t r1, int64_t cols) {
  if (r0 >= r1) return;
  const int64_t nb = cols / kBlock32;
  const RowPlan plan = plan_rows<T>(nb);
  thread_local std::vector<ActStep> act;
  ActStep* A = scratch(act, size_t(plan.nsteps));
  repack_step_activations(static_cast<const BlockQ8x32*>(xq), nb, T::kZeroPoint, T::kAffine, A);
  const auto* w = static_cast<const uint8_t*>(W);
  auto row = [&](int64_t r) { return w + size_t(r) * row_bytes; };
  // Rows from safe_end on could load past the end of the range's last row: they mask their loads.
  const int64_t after = plan.reach > plan.row_len ? (plan.reach - plan.row_len + int64_t(row_bytes) - 1) / int64_t(row_bytes) : 0;
  const int64_t safe_end = std::max(r0, r1 - after);
  auto single = [&](int64_t r) {
    const uint8_t* rows[1] = {row(r)};
    float* ys[1] = {y + r};
    if (r < safe_end)
      dot_rows<T, 1, false>(rows, A, plan, 0, ys);
    else
      dot_rows<T, 1, true>(rows, A, plan, (r1 - 1 - r) * int64_t(row_bytes) + plan.row_len, ys);
  };
  // kGemvStreams parts of `part` rows each, walked in step; the remainder goes after the last part.
  constexpr int P = kGemvStreams;
  const int64_t part = (safe_end - r0) / P;
  for (int64_t i = 0; i < part; ++i) {
    const uint8_t* rows[P];
    float* ys[P];
    for (int k = 0; k < P; ++k) {
      rows[k] = row(r0 + k * part + i);
      ys[k] = y + r0 + k * part + i;
    }
    dot_rows<T, P, false>(rows, A, plan, 0, ys);
  }
  for (int64_t r = r0 + P * part; r < r1; ++r) single(r);
}

// ---- GEMM -------------------------------------------------------------------------------------
//
// A tile of 4 weight rows is decoded once into DecodedSteps (codes and f32 scales, about 1.25 bytes
// per weight: in L1/L2), then every group of 3 activation rows runs over it: each decoded code
// vector feeds 3 vpdpbusd pairs, and the per-block float work is done once per 16 blocks as in
// GEMV. Measured on Zen 4, one thread, 256 x 2048 weights times 96 activation rows: about 200
// GFLOP/s (OpenBLAS SGEMM on dequantized tiles: about 85). Tiles of 4 x 4 were no faster (they
// spill registers), 4 x 2 10% slower.

constexpr int kTileRows = 4;  // weight rows decoded together
constexpr int kTileCols = 3;  // activation rows per register tile

// One step (16 blocks) of a weight row, decoded: codes of the 4 groups and the scales in
// reduce_blocks' order.
struct alignas(64) DecodedStep {
  __m512i lo[4], hi[4];
  __m512 dw, mw;
};

template <typename T>
void decode_row_steps(const uint8_t* row, const RowPlan& plan, DecodedStep* out) {
  const int64_t group_bytes = kGroupBlocks * T::kBytes, step_bytes = kStepBlocks * T::kBytes;
  for (int64_t s = 0; s < plan.nsteps; ++s) {
    const __mmask32 keep = s < plan.full_steps ? ~__mmask32(0) : plan.last_keep;
    __m512i sc = _mm512_setzero_si512();
    for (int g = 0; g < 4; ++g) {
      const int64_t at = s * step_bytes + g * group_bytes;
      const Window win = at + T::kSpan <= plan.row_len ? T::template load<false>(row + at, 0)
                                                       : T::template load<true>(row + at, plan.row_len - at);
      T::codes(win, out[s].lo[g], out[s].hi[g]);
      if (g % T::kScaleGroups == 0) sc = _mm512_or_si512(sc, T::step_scales(win, g, keep));
    }
    out[s].dw = _mm512_cvtph_ps(_mm512_castsi512_si256(sc));
    out[s].mw = T::kAffine ? _mm512_cvtph_ps(_mm512_extracti64x4_epi64(sc, 1)) : _mm512_setzero_ps();
  }
}

// out[j * kTileRows + i] = dot(weight row i of D, activation row j of A) for the whole row.
template <bool Affine, int RC>
void tile_kernel(const DecodedStep* D, const ActStep* A, int64_t nsteps, float* out) {
  __m512 acc[RC][kTileRows];
  for (auto& row : acc)
    for (auto& a : row) a = _mm512_setzero_ps();
  for (int64_t s = 0; s < nsteps; ++s) {
#pragma GCC unroll 4
    for (int i = 0; i < kTileRows; ++i) {
      const DecodedStep& d = D[i * nsteps + s];
      __m512i wl[4], wh[4];
      for (int g = 0; g < 4; ++g) {
        wl[g] = _mm512_load_si512(&d.lo[g]);
        wh[g] = _mm512_load_si512(&d.hi[g]);
      }
      const __m512 dw = _mm512_load_ps(&d.dw);
#pragma GCC unroll 4
      for (int j = 0; j < RC; ++j) {
        const ActStep& a = A[j * nsteps + s];
        __m512i t[4];
        for (int g = 0; g < 4; ++g)
          t[g] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wl[g], _mm512_load_si512(a.lo[g])),
                                     wh[g], _mm512_load_si512(a.hi[g]));
        __m512i dot = reduce_blocks(t[0], t[1], t[2], t[3]);
        if constexpr (!Affine) dot = _mm512_add_epi32(dot, _mm512_load_si512(a.zsum));
        acc[j][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_load_ps(a.dx)), acc[j][i]);
        if constexpr (Affine) acc[j][i] = _mm512_fmadd_ps(_mm512_load_ps(&d.mw), _mm512_load_ps(a.dxsum), acc[j][i]);
      }
    }
  }
  static_assert(kTileRows == 4, "reduce4 stores 4 rows");
  for (int j = 0; j < RC; ++j)
    _mm_storeu_ps(out + j * kTileRows, reduce4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]));
}

template <typename T>
void gemm(const void* W, size_t row_bytes, const void* X, size_t x_stride, int64_t nx, float* Y, int64_t ldy,
          int64_t r0, int64_t r1, int64_t cols) {
  const int64_t nb = cols / kBlock32;
  const RowPlan plan = plan_rows<T>(nb);
  const int64_t ns = plan.nsteps;
  thread_local std::vector<ActStep> act;
  thread_local std::vector<DecodedStep> dec;
  ActStep* A = scratch(act, size_t(nx * ns));
  DecodedStep* D = scratch(dec, size_t(kTileRows * ns));
  const auto* xs = static_cast<const uint8_t*>(X);
  for (int64_t c = 0; c < nx; ++c)
    repack_step_activations(reinterpret_cast<const BlockQ8x32*>(xs + size_t(c) * x_stride), nb, T::kZeroPoint,
                            T::kAffine, A + c * ns);
  const auto* w = static_cast<const uint8_t*>(W);
  for (int64_t r = r0; r < r1; r += kTileRows) {
    const int nr = int(std::min<int64_t>(kTileRows, r1 - r));
    for (int i = 0; i < kTileRows; ++i) {
      if (i < nr)
        decode_row_steps<T>(w + size_t(r + i) * row_bytes, plan, D + i * ns);
      else  // missing rows of the last tile: zero scales, so they sum to zero
        std::memset(static_cast<void*>(D + i * ns), 0, size_t(ns) * sizeof(DecodedStep));
    }
    for (int64_t c = 0; c < nx; c += kTileCols) {
      float out[kTileCols * kTileRows];
      const int rc = int(std::min<int64_t>(kTileCols, nx - c));  // the last tile may be narrower
      if (rc == kTileCols)
        tile_kernel<T::kAffine, kTileCols>(D, A + c * ns, ns, out);
      else if (rc == 2)
        tile_kernel<T::kAffine, 2>(D, A + c * ns, ns, out);
      else
        tile_kernel<T::kAffine, 1>(D, A + c * ns, ns, out);
      for (int j = 0; j < rc; ++j)
        for (int i = 0; i < nr; ++i) Y[(c + j) * ldy + r + i] = out[j * kTileRows + i];
    }
  }
}

// ---- dequantization -------------------------------------------------------------------------------
// Each value is computed with the same IEEE operations as the quantizer's dequantize_row (code as
// float, times d, plus m for the affine types), so the floats are identical.

inline __m512 half_to_f32(uint16_t h) { return _mm512_cvtph_ps(_mm256_set1_epi16(short(h))); }

// Codes 0-15 and 16-31 of the shared nibble packing as int32.
inline void nibbles(const uint8_t* qs, __m512i& c0, __m512i& c1) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)), m = _mm_set1_epi8(0x0f);
  c0 = _mm512_cvtepu8_epi32(_mm_and_si128(q, m));
  c1 = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), m));
}
inline void add_bit4(const uint8_t* qh, __m512i& c0, __m512i& c1) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  const __m512i b4 = _mm512_set1_epi32(16);
  c0 = _mm512_mask_add_epi32(c0, __mmask16(h & 0xffff), c0, b4);
  c1 = _mm512_mask_add_epi32(c1, __mmask16(h >> 16), c1, b4);
}

void check_cols(const char* type, int64_t cols) {
  if (cols < 0 || cols % kBlock32 != 0)
    fail("dequant_row: {}: a row of {} values is not a whole number of 32-value blocks", type, cols);
}

void dequant_q8_0(const void* row, float* y, int64_t cols) {
  check_cols("q8_0", cols);
  const auto* b = static_cast<const quant::BlockQ8_0*>(row);
  for (int64_t i = 0; i < cols / kBlock32; ++i, y += kBlock32) {
    const __m512 d = half_to_f32(b[i].d);
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].q));
    _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q))), d));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1))), d));
  }
}

// Symmetric types: (code - z) * d.
template <typename Block, int Z, bool High>
void dequant_symmetric(const void* row, float* y, int64_t cols, const char* name) {
  check_cols(name, cols);
  const auto* b = static_cast<const Block*>(row);
  const __m512i z = _mm512_set1_epi32(Z);
  for (int64_t i = 0; i < cols / kBlock32; ++i, y += kBlock32) {
    __m512i c0, c1;
    nibbles(b[i].qs, c0, c1);
    if constexpr (High) add_bit4(b[i].qh, c0, c1);
    const __m512 d = half_to_f32(b[i].d);
    _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c0, z)), d));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c1, z)), d));
  }
}

// Affine types: code * d + m (the product is exact, so this is one rounding, as in the scalar code).
template <typename Block, bool High>
void dequant_affine(const void* row, float* y, int64_t cols, const char* name) {
  check_cols(name, cols);
  const auto* b = static_cast<const Block*>(row);
  for (int64_t i = 0; i < cols / kBlock32; ++i, y += kBlock32) {
    __m512i c0, c1;
    nibbles(b[i].qs, c0, c1);
    if constexpr (High) add_bit4(b[i].qh, c0, c1);
    const __m512 d = half_to_f32(b[i].d), m = half_to_f32(b[i].m);
    _mm512_storeu_ps(y, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(c0), d), m));
    _mm512_storeu_ps(y + 16, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(c1), d), m));
  }
}

void dequant_q4_0(const void* r, float* y, int64_t n) { dequant_symmetric<quant::BlockQ4_0, 8, false>(r, y, n, "q4_0"); }
void dequant_q5_0(const void* r, float* y, int64_t n) { dequant_symmetric<quant::BlockQ5_0, 16, true>(r, y, n, "q5_0"); }
void dequant_q4_1(const void* r, float* y, int64_t n) { dequant_affine<quant::BlockQ4_1, false>(r, y, n, "q4_1"); }
void dequant_q5_1(const void* r, float* y, int64_t n) { dequant_affine<quant::BlockQ5_1, true>(r, y, n, "q5_1"); }

void dequant_iq4_nl(const void* row, float* y, int64_t cols) {
  check_cols("iq4_nl", cols);
  const auto* b = static_cast<const quant::BlockIQ4_NL*>(row);
  const __m512 levels = _mm512_loadu_ps(quant::kIQ4NLLevels);
  for (int64_t i = 0; i < cols / kBlock32; ++i, y += kBlock32) {
    __m512i c0, c1;
    nibbles(b[i].qs, c0, c1);
    const __m512 d = half_to_f32(b[i].d);
    _mm512_storeu_ps(y, _mm512_mul_ps(d, _mm512_permutexvar_ps(c0, levels)));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(d, _mm512_permutexvar_ps(c1, levels)));
  }
}

template <typename T>
WeightKernels make(void (*dequant)(const void*, float*, int64_t)) {
  WeightKernels k;
  k.act = ActFormat::Q8x32;
  k.quantize_act = quantize_act_q8x32;
  k.gemv = gemv<T>;
  k.gemm = gemm<T>;
  k.dequant_row = dequant;
  return k;
}

}  // namespace

void register_q32_kernels_avx512(WeightKernelSet& s) {
  // Every kernel here uses vpdpbusd; without VNNI the AVX2 entries registered before stay.
  if (!cpu().avx512vnni) return;
  entry(s, DType::Q8_0) = make<Q8_0>(dequant_q8_0);
  entry(s, DType::Q4_0) = make<Q4_0>(dequant_q4_0);
  entry(s, DType::Q4_1) = make<Q4_1>(dequant_q4_1);
  entry(s, DType::Q5_0) = make<Q5_0>(dequant_q5_0);
  entry(s, DType::Q5_1) = make<Q5_1>(dequant_q5_1);
  entry(s, DType::IQ4_NL) = make<IQ4_NL>(dequant_iq4_nl);
}

}  // namespace qforge::kernels
