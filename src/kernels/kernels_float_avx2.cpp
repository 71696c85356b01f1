// AVX2 + FMA + F16C kernels for F16, BF16 and NF4 weights with F32 activations (used only when the
// CPU has them). The weights stay in their stored form in memory; each group of 8 is widened to f32
// in a register right before its multiply-adds:
//   F16:  vcvtph2ps (exact).
//   BF16: zero-extend to 32 bits and shift left 16 (exact: bf16 is the top half of an f32).
//   NF4:  the 16 codebook levels times the block's absmax sit in two ymm registers (levels 0-7 and
//         8-15); vpermps looks a code up in both and bit 3 of the code picks one (vblendvps), so every
//         weight is exactly the float dequantize_nf4 produces (level * absmax, rounded once).
//
// Structure as in kernels_float_avx512.cpp (whose comments give the measurements behind it): GEMV
// streams one weight row at a time, or several at once when the row is too long for x to stay in
// L1; GEMM multiplies tiles of RW weight rows x RC activation rows over L1-sized column panels, so
// each widened weight vector serves RC rows. AVX2 has no masked 16-bit loads: row tails (cols % 8)
// go through a small zero-padded copy.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/weight_kernels.h"
#include "qforge/quant.h"
#include "quant/block_nf4.h"

namespace qforge::kernels {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// A per-thread buffer of n floats, 64-byte aligned (grows to the largest call, never shrinks).
float* scratch(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n + 16) buf.resize(n + 16);
  const auto at = reinterpret_cast<uintptr_t>(buf.data());
  return buf.data() + ((64 - at % 64) % 64) / sizeof(float);
}

// x itself, or an aligned copy of it (see kernels_float_avx512.cpp: loads that straddle cache lines
// cost GEMV a few percent while it streams weights).
const float* aligned_x(const float* x, int64_t cols, int64_t rows) {
  if (reinterpret_cast<uintptr_t>(x) % 64 == 0 || rows < 16) return x;
  float* copy = scratch(size_t(cols));
  std::memcpy(copy, x, size_t(cols) * sizeof(float));
  return copy;
}

// Pointers to activation rows (callers pass a few dozen rows at a time).
const float** row_pointers(int64_t nx) {
  thread_local std::vector<const float*> p;
  if (p.size() < size_t(nx)) p.resize(size_t(nx));
  return p.data();
}

// ---- Weight rows of plain types: 8 weights at a time -----------------------------------------
//
// load(row, i): weights i..i+7 of a row as f32. partial(row, i, n): the n < 8 weights from i,
// zero-padded.

template <typename Widen>
struct Half {
  static constexpr size_t kBytes = 2;
  static __m256 load(const uint8_t* row, int64_t i) {
    return Widen::widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
  }
  static __m256 partial(const uint8_t* row, int64_t i, int64_t n) {
    alignas(16) uint16_t t[8] = {};
    std::memcpy(t, row + 2 * i, size_t(n) * 2);
    return Widen::widen(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
  }
};
struct F16Widen {
  static __m256 widen(__m128i h) { return _mm256_cvtph_ps(h); }
};
struct BF16Widen {
  static __m256 widen(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
};
using F16 = Half<F16Widen>;
using BF16 = Half<BF16Widen>;

// Rows already widened to f32 (the NF4 GEMM's decoded tiles).
struct F32 {
  static constexpr size_t kBytes = 4;
  static __m256 load(const uint8_t* row, int64_t i) { return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i); }
  static __m256 partial(const uint8_t* row, int64_t i, int64_t n) {
    alignas(32) float t[8] = {};
    std::memcpy(t, reinterpret_cast<const float*>(row) + i, size_t(n) * 4);
    return _mm256_load_ps(t);
  }
};

inline __m256 partial_x(const float* x, int64_t i, int64_t n) {
  alignas(32) float t[8] = {};
  std::memcpy(t, x + i, size_t(n) * 4);
  return _mm256_load_ps(t);
}

template <typename T>
float dot_row(const uint8_t* w, const float* x, int64_t cols) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= cols; i += 32) {
    s0 = _mm256_fmadd_ps(T::load(w, i), _mm256_loadu_ps(x + i), s0);
    s1 = _mm256_fmadd_ps(T::load(w, i + 8), _mm256_loadu_ps(x + i + 8), s1);
    s2 = _mm256_fmadd_ps(T::load(w, i + 16), _mm256_loadu_ps(x + i + 16), s2);
    s3 = _mm256_fmadd_ps(T::load(w, i + 24), _mm256_loadu_ps(x + i + 24), s3);
  }
  for (; i + 8 <= cols; i += 8) s0 = _mm256_fmadd_ps(T::load(w, i), _mm256_loadu_ps(x + i), s0);
  if (i < cols) s1 = _mm256_fmadd_ps(T::partial(w, i, cols - i), partial_x(x, i, cols - i), s1);
  return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

// Tiles: Y[c * ldy + a] (+)= dot(weight row a, activation row c) over columns [i0, i1), for RW weight
// rows from w (row_bytes apart) and RC activation rows x[0..RC). `add` accumulates into Y.
template <typename T, int RW, int RC>
void tile_plain(const uint8_t* w, size_t row_bytes, const float* const* x, float* Y, int64_t ldy, int64_t i0,
                int64_t i1, bool add) {
  __m256 acc[RW][RC];
  for (int a = 0; a < RW; ++a)
    for (int c = 0; c < RC; ++c) acc[a][c] = _mm256_setzero_ps();
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    __m256 wv[RW];
    for (int a = 0; a < RW; ++a) wv[a] = T::load(w + size_t(a) * row_bytes, i);
    for (int c = 0; c < RC; ++c) {
      const __m256 xv = _mm256_loadu_ps(x[c] + i);
      for (int a = 0; a < RW; ++a) acc[a][c] = _mm256_fmadd_ps(wv[a], xv, acc[a][c]);
    }
  }
  if (i < i1) {
    __m256 wv[RW];
    for (int a = 0; a < RW; ++a) wv[a] = T::partial(w + size_t(a) * row_bytes, i, i1 - i);
    for (int c = 0; c < RC; ++c) {
      const __m256 xv = partial_x(x[c], i, i1 - i);
      for (int a = 0; a < RW; ++a) acc[a][c] = _mm256_fmadd_ps(wv[a], xv, acc[a][c]);
    }
  }
  for (int c = 0; c < RC; ++c)
    for (int a = 0; a < RW; ++a) {
      const float s = hsum(acc[a][c]);
      Y[c * ldy + a] = add ? Y[c * ldy + a] + s : s;
    }
}

// ---- NF4: blocks of 64 -----------------------------------------------------------------------
//
// The nibbles of byte j are weights 2j (high) and 2j+1 (low). The activations are rearranged once
// per call so that each group of 16 is [8 even-indexed | 8 odd-indexed]: the high nibbles of 8
// bytes pair with the first half, the low nibbles with the second, and no weight shuffling is needed.

constexpr int64_t kNf4Block = kNf4BlockElems;

void arrange_x_nf4(const float* x, float* xa, int64_t cols) {
  for (int64_t i = 0; i + 16 <= cols; i += 16)
    for (int j = 0; j < 8; ++j) {
      xa[i + j] = x[i + 2 * j];
      xa[i + 8 + j] = x[i + 2 * j + 1];
    }
}

inline float block_absmax(const BlockNF4* b) {
  float a;
  std::memcpy(&a, &b->absmax, 4);
  return a;
}

struct Nf4Levels {
  __m256 lo, hi;  // levels 0-7 and 8-15 times the block's absmax
};
inline Nf4Levels nf4_levels(const float* codebook, float absmax) {
  const __m256 s = _mm256_set1_ps(absmax);
  return {_mm256_mul_ps(_mm256_loadu_ps(codebook), s), _mm256_mul_ps(_mm256_loadu_ps(codebook + 8), s)};
}
// 8 bytes (16 codes) as dwords, both nibbles still in each.
inline __m256i nf4_codes(const uint8_t* qs) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs)));
}
// vpermps uses the low 3 bits of each index; the sign bit of `select` (bit 3 of the code, moved up)
// chooses levels 8-15.
inline __m256 nf4_lookup(__m256i idx, __m256i select, const Nf4Levels& l) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(l.lo, idx), _mm256_permutevar8x32_ps(l.hi, idx),
                          _mm256_castsi256_ps(select));
}
inline __m256 nf4_high(__m256i d, const Nf4Levels& l) {
  return nf4_lookup(_mm256_srli_epi32(d, 4), _mm256_slli_epi32(d, 24), l);
}
inline __m256 nf4_low(__m256i d, const Nf4Levels& l) { return nf4_lookup(d, _mm256_slli_epi32(d, 28), l); }

float dot_row_nf4(const BlockNF4* b, const float* xa, int64_t nblocks, const float* codebook) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  for (int64_t k = 0; k < nblocks; ++k) {
    const Nf4Levels l = nf4_levels(codebook, block_absmax(b + k));
    for (int q = 0; q < 4; q += 2, xa += 32) {
      const __m256i d0 = nf4_codes(b[k].qs + 8 * q), d1 = nf4_codes(b[k].qs + 8 * q + 8);
      s0 = _mm256_fmadd_ps(nf4_high(d0, l), _mm256_loadu_ps(xa), s0);
      s1 = _mm256_fmadd_ps(nf4_low(d0, l), _mm256_loadu_ps(xa + 8), s1);
      s2 = _mm256_fmadd_ps(nf4_high(d1, l), _mm256_loadu_ps(xa + 16), s2);
      s3 = _mm256_fmadd_ps(nf4_low(d1, l), _mm256_loadu_ps(xa + 24), s3);
    }
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

// RW NF4 rows x RC rearranged activation rows over columns [i0, i1) (whole blocks). The 16 ymm
// registers allow RW * RC <= 4.
template <int RW, int RC>
void tile_nf4(const uint8_t* w, size_t row_bytes, const float* const* xa, float* Y, int64_t ldy, int64_t i0,
              int64_t i1, bool add) {
  const float* codebook = nf4_codebook().data();
  const BlockNF4* rows[RW];
  for (int a = 0; a < RW; ++a) rows[a] = reinterpret_cast<const BlockNF4*>(w + size_t(a) * row_bytes);
  __m256 acc[RW][RC];
  for (int a = 0; a < RW; ++a)
    for (int c = 0; c < RC; ++c) acc[a][c] = _mm256_setzero_ps();
  for (int64_t k = i0 / kNf4Block; k < i1 / kNf4Block; ++k) {
    Nf4Levels l[RW];
    for (int a = 0; a < RW; ++a) l[a] = nf4_levels(codebook, block_absmax(rows[a] + k));
    for (int q = 0; q < 4; ++q) {
      const int64_t off = k * kNf4Block + 16 * q;
      for (int a = 0; a < RW; ++a) {
        const __m256i d = nf4_codes(rows[a][k].qs + 8 * q);
        const __m256 hi = nf4_high(d, l[a]), lo = nf4_low(d, l[a]);
        for (int c = 0; c < RC; ++c)
          acc[a][c] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xa[c] + off + 8),
                                      _mm256_fmadd_ps(hi, _mm256_loadu_ps(xa[c] + off), acc[a][c]));
      }
    }
  }
  for (int c = 0; c < RC; ++c)
    for (int a = 0; a < RW; ++a) {
      const float s = hsum(acc[a][c]);
      Y[c * ldy + a] = add ? Y[c * ldy + a] + s : s;
    }
}

// ---- Tile driver (as in kernels_float_avx512.cpp) ---------------------------------------------

template <typename T>
struct PlainTile {
  template <int RW, int RC>
  static void run(const uint8_t* w, size_t rb, const float* const* x, float* Y, int64_t ldy, int64_t i0, int64_t i1,
                  bool add) {
    tile_plain<T, RW, RC>(w, rb, x, Y, ldy, i0, i1, add);
  }
};
struct Nf4Tile {
  template <int RW, int RC>
  static void run(const uint8_t* w, size_t rb, const float* const* x, float* Y, int64_t ldy, int64_t i0, int64_t i1,
                  bool add) {
    tile_nf4<RW, RC>(w, rb, x, Y, ldy, i0, i1, add);
  }
};

template <typename Tile, int RW, int RC>
void tile_upto(int nc, const uint8_t* w, size_t rb, const float* const* x, float* Y, int64_t ldy, int64_t i0,
               int64_t i1, bool add) {
  if constexpr (RC > 1) {
    if (nc < RC) return tile_upto<Tile, RW, RC - 1>(nc, w, rb, x, Y, ldy, i0, i1, add);
  }
  Tile::template run<RW, RC>(w, rb, x, Y, ldy, i0, i1, add);
}

// Y[c * ldy + r] = dot(row r of W, xrows[c]) for r in [r0, r1), c in [0, nx): weight rows in the
// outer loop, in column panels of `panel` columns that stay in L1 while every group of RC
// activation rows passes over them. Leftover rows go one at a time.
template <typename Tile, int RW, int RC>
void tile_driver(const uint8_t* W, size_t row_bytes, const float* const* xrows, int64_t nx, float* Y, int64_t ldy,
                 int64_t r0, int64_t r1, int64_t cols, int64_t panel) {
  for (int64_t r = r0; r < r1; r += RW) {
    const int64_t nr = std::min<int64_t>(RW, r1 - r);
    for (int64_t p0 = 0; p0 < cols; p0 += panel) {
      const int64_t p1 = std::min(cols, p0 + panel);
      for (int64_t c = 0; c < nx; c += RC) {
        const int nc = int(std::min<int64_t>(RC, nx - c));
        if (nr == RW) {
          tile_upto<Tile, RW, RC>(nc, W + size_t(r) * row_bytes, row_bytes, xrows + c, Y + c * ldy + r, ldy, p0, p1,
                                  p0 > 0);
        } else {
          for (int64_t a = 0; a < nr; ++a)
            tile_upto<Tile, 1, RC>(nc, W + size_t(r + a) * row_bytes, row_bytes, xrows + c, Y + c * ldy + r + a, ldy,
                                   p0, p1, p0 > 0);
        }
      }
    }
  }
}

// ---- GEMV (see kernels_float_avx512.cpp for why long rows take the multi-row tile) ----------------

constexpr size_t kL1Budget = size_t(16) << 10;  // x plus one weight row must fit in this much of L1
constexpr int kLongRowTile = 8, kLongRowTileNf4 = 2;

template <typename T>
void gemv_plain(const void* W, size_t row_bytes, const void* xq, float* y, int64_t r0, int64_t r1, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(W);
  const float* x = aligned_x(static_cast<const float*>(xq), cols, r1 - r0);
  if (size_t(cols) * (4 + T::kBytes) <= kL1Budget) {
    for (int64_t r = r0; r < r1; ++r) y[r] = dot_row<T>(w + size_t(r) * row_bytes, x, cols);
    return;
  }
  const float* xr[1] = {x};
  tile_driver<PlainTile<T>, kLongRowTile, 1>(w, row_bytes, xr, 1, y, 0, r0, r1, cols, cols);
}

// cols must be a whole number of 64-weight blocks (NF4 rows always are).
void gemv_nf4(const void* W, size_t row_bytes, const void* xq, float* y, int64_t r0, int64_t r1, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(W);
  float* xa = scratch(size_t(cols));
  arrange_x_nf4(static_cast<const float*>(xq), xa, cols);
  if (size_t(cols) * 4 + size_t(cols) / kNf4Block * sizeof(BlockNF4) <= kL1Budget) {
    const float* codebook = nf4_codebook().data();
    const int64_t nblocks = cols / kNf4Block;
    for (int64_t r = r0; r < r1; ++r)
      y[r] = dot_row_nf4(reinterpret_cast<const BlockNF4*>(w + size_t(r) * row_bytes), xa, nblocks, codebook);
    return;
  }
  const float* xr[1] = {xa};
  tile_driver<Nf4Tile, kLongRowTileNf4, 1>(w, row_bytes, xr, 1, y, 0, r0, r1, cols, cols);
}

// ---- GEMM -----------------------------------------------------------------------------------

constexpr int64_t kPanelBytes = int64_t(16) << 10;  // a tile's weights per column panel (half of L1)
constexpr int kGemmRows = 2, kGemmActs = 4;          // 8 accumulators + 2 weight vectors + 1 activation

template <typename T>
void gemm_plain(const void* W, size_t row_bytes, const void* X, size_t x_stride, int64_t nx, float* Y, int64_t ldy,
                int64_t r0, int64_t r1, int64_t cols) {
  const float** xr = row_pointers(nx);
  for (int64_t c = 0; c < nx; ++c)
    xr[c] = reinterpret_cast<const float*>(static_cast<const uint8_t*>(X) + size_t(c) * x_stride);
  const int64_t panel = kPanelBytes / kGemmRows / int64_t(T::kBytes);
  tile_driver<PlainTile<T>, kGemmRows, kGemmActs>(static_cast<const uint8_t*>(W), row_bytes, xr, nx, Y, ldy, r0, r1,
                                                  cols, panel);
}

void dequant_nf4(const void* row, float* y, int64_t cols);

// As in kernels_float_avx512.cpp: a few activation rows use the decoded vectors from registers
// (1 x 4 tile); more rows share one exact decode of each weight-row tile into an f32 buffer.
constexpr int kNf4RegisterActs = 4;

void gemm_nf4(const void* W, size_t row_bytes, const void* X, size_t x_stride, int64_t nx, float* Y, int64_t ldy,
              int64_t r0, int64_t r1, int64_t cols) {
  const float** xr = row_pointers(nx);
  if (nx <= kNf4RegisterActs) {
    float* xa = scratch(size_t(nx) * size_t(cols));
    for (int64_t c = 0; c < nx; ++c) {
      arrange_x_nf4(reinterpret_cast<const float*>(static_cast<const uint8_t*>(X) + size_t(c) * x_stride),
                    xa + c * cols, cols);
      xr[c] = xa + c * cols;
    }
    tile_driver<Nf4Tile, 1, kNf4RegisterActs>(static_cast<const uint8_t*>(W), row_bytes, xr, nx, Y, ldy, r0, r1, cols,
                                              cols);
    return;
  }
  for (int64_t c = 0; c < nx; ++c)
    xr[c] = reinterpret_cast<const float*>(static_cast<const uint8_t*>(X) + size_t(c) * x_stride);
  float* tile = scratch(size_t(kGemmRows) * size_t(cols));
  const auto* w = static_cast<const uint8_t*>(W);
  const int64_t panel = kPanelBytes / kGemmRows / int64_t(F32::kBytes);
  for (int64_t r = r0; r < r1; r += kGemmRows) {
    const int64_t nr = std::min<int64_t>(kGemmRows, r1 - r);
    for (int64_t a = 0; a < nr; ++a) dequant_nf4(w + size_t(r + a) * row_bytes, tile + a * cols, cols);
    tile_driver<PlainTile<F32>, kGemmRows, kGemmActs>(reinterpret_cast<const uint8_t*>(tile), size_t(cols) * 4, xr,
                                                      nx, Y + r, ldy, 0, nr, cols, panel);
  }
}

// ---- dequant_row -----------------------------------------------------------------------------

template <typename T>
void dequant_plain(const void* row, float* y, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(row);
  int64_t i = 0;
  for (; i + 8 <= cols; i += 8) _mm256_storeu_ps(y + i, T::load(w, i));
  if (i < cols) {
    alignas(32) float out[8];
    _mm256_store_ps(out, T::partial(w, i, cols - i));
    std::memcpy(y + i, out, size_t(cols - i) * 4);
  }
}

void dequant_nf4(const void* row, float* y, int64_t cols) {
  const auto* b = static_cast<const BlockNF4*>(row);
  const float* codebook = nf4_codebook().data();
  for (int64_t k = 0; k < cols / kNf4Block; ++k) {
    const Nf4Levels l = nf4_levels(codebook, block_absmax(b + k));
    for (int q = 0; q < 4; ++q, y += 16) {
      const __m256i d = nf4_codes(b[k].qs + 8 * q);
      const __m256 hi = nf4_high(d, l), lo = nf4_low(d, l);
      // Back to element order: [h0 l0 h1 l1 | h4 l4 h5 l5] and [h2 l2 h3 l3 | h6 l6 h7 l7].
      const __m256 a = _mm256_unpacklo_ps(hi, lo), c = _mm256_unpackhi_ps(hi, lo);
      _mm256_storeu_ps(y, _mm256_permute2f128_ps(a, c, 0x20));
      _mm256_storeu_ps(y + 8, _mm256_permute2f128_ps(a, c, 0x31));
    }
  }
}

WeightKernels kernels(decltype(WeightKernels::gemv) gemv, decltype(WeightKernels::gemm) gemm,
                      decltype(WeightKernels::dequant_row) dequant) {
  WeightKernels k;
  k.act = ActFormat::F32;
  k.quantize_act = nullptr;
  k.gemv = gemv;
  k.gemm = gemm;
  k.dequant_row = dequant;
  return k;
}

}  // namespace

void register_float_kernels_avx2(WeightKernelSet& s) {
  entry(s, DType::F16) = kernels(gemv_plain<F16>, gemm_plain<F16>, dequant_plain<F16>);
  entry(s, DType::BF16) = kernels(gemv_plain<BF16>, gemm_plain<BF16>, dequant_plain<BF16>);
  entry(s, DType::NF4) = kernels(gemv_nf4, gemm_nf4, dequant_nf4);
}

}  // namespace qforge::kernels
