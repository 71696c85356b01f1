// AVX-512 kernels for F16, BF16 and NF4 weights with F32 activations (compiled with -mavx512f/bw/vl/dq;
// used only when the CPU has them). The weights stay in their stored form in memory; each group of
// 16 is widened to f32 in a register right before its multiply-adds:
//   F16:  vcvtph2ps zmm (exact).
//   BF16: zero-extend to 32 bits and shift left 16 (exact: bf16 is the top half of an f32).
//   NF4:  the 16 codebook levels times the block's absmax sit in one zmm; vpermps looks up 16
//         weights at once from their 4-bit codes, so every weight is exactly the float that
//         dequantize_nf4 produces (level * absmax, rounded once).
//
// AVX512-BF16 (vdpbf16ps) is deliberately not used: it multiplies bf16 by bf16, so the f32
// activations would have to be rounded to bf16 (relative error 2^-9 per product, ~100x the tolerance
// the tests hold these kernels to). GEMV is bound by memory bandwidth anyway, and in GEMM the shift
// conversion is paid once per weight vector and shared by several activation rows.
//
// GEMV streams one weight row at a time with two accumulators while x fits in L1 beside the row,
// and interleaves several rows per activation load for longer rows (see the GEMV section).
// GEMM works on tiles of RW weight rows x RC activation rows: each widened weight vector feeds RC
// multiply-adds, and the tile's weights (a column panel of RW rows, 16 KiB) stay in L1 while every
// group of activation rows passes over them.
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

inline __mmask16 tail_mask(int64_t n) { return __mmask16((1u << n) - 1); }  // 0 < n < 16

// A per-thread buffer of n floats, 64-byte aligned (grows to the largest call, never shrinks).
float* scratch(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n + 16) buf.resize(n + 16);
  const auto at = reinterpret_cast<uintptr_t>(buf.data());
  return buf.data() + ((64 - at % 64) % 64) / sizeof(float);
}

// x itself, or a 64-byte aligned copy of it: a 64-byte load from an unaligned x touches two cache
// lines. Measured against llama.cpp's F16 GEMV on the same weights (Zen 4, 1 thread, x 48 bytes past
// a line), the copy took qforge/llama.cpp from 0.94 to 1.02 on 2048 x 2048 and from 0.86 to 1.05
// on 2048 x 5632. The copy is one pass over x, shared by all the rows of the call.
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

// ---- Weight rows of plain types: 16 weights at a time ----------------------------------------

struct F16 {
  static constexpr size_t kBytes = 2;
  static __m512 load(const uint8_t* row, int64_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * i)));
  }
  static __m512 load_tail(const uint8_t* row, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * i));
  }
};

struct BF16 {
  static constexpr size_t kBytes = 2;
  static __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m512 load(const uint8_t* row, int64_t i) {
    return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * i)));
  }
  static __m512 load_tail(const uint8_t* row, int64_t i, __mmask16 m) {
    return widen(_mm256_maskz_loadu_epi16(m, row + 2 * i));
  }
};

// Rows already widened to f32 (the NF4 GEMM's decoded tiles).
struct F32 {
  static constexpr size_t kBytes = 4;
  static __m512 load(const uint8_t* row, int64_t i) { return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + i); }
  static __m512 load_tail(const uint8_t* row, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + i);
  }
};

// One row, for GEMV: two accumulators, 32 weights per iteration. Streaming from memory, this ran at
// 0.99-1.05 of a plain read of the same bytes where four accumulators (64 per iteration) ran at
// 0.84-0.94 and eight at 0.75-0.85 (Zen 4, F16, 2048-wide rows; the same held on 1 and 2 threads).
// Two chains of 4-cycle FMAs still allow ~16 bytes of F16 per cycle, far above memory speed.
template <typename T>
float dot_row(const uint8_t* w, const float* x, int64_t cols) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= cols; i += 32) {
    s0 = _mm512_fmadd_ps(T::load(w, i), _mm512_loadu_ps(x + i), s0);
    s1 = _mm512_fmadd_ps(T::load(w, i + 16), _mm512_loadu_ps(x + i + 16), s1);
  }
  if (i + 16 <= cols) {
    s0 = _mm512_fmadd_ps(T::load(w, i), _mm512_loadu_ps(x + i), s0);
    i += 16;
  }
  if (i < cols) {
    const __mmask16 m = tail_mask(cols - i);
    s1 = _mm512_fmadd_ps(T::load_tail(w, i, m), _mm512_maskz_loadu_ps(m, x + i), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

// Tiles: Y[c * ldy + a] (+)= dot(weight row a, activation row c) over columns [i0, i1), for RW weight
// rows from w (row_bytes apart) and RC activation rows x[0..RC). `add` accumulates into Y (column
// panels after the first).
template <typename T, int RW, int RC>
void tile_plain(const uint8_t* w, size_t row_bytes, const float* const* x, float* Y, int64_t ldy, int64_t i0,
                int64_t i1, bool add) {
  __m512 acc[RW][RC];
  for (int a = 0; a < RW; ++a)
    for (int c = 0; c < RC; ++c) acc[a][c] = _mm512_setzero_ps();
  int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {
    __m512 wv[RW];
    for (int a = 0; a < RW; ++a) wv[a] = T::load(w + size_t(a) * row_bytes, i);
    for (int c = 0; c < RC; ++c) {
      const __m512 xv = _mm512_loadu_ps(x[c] + i);
      for (int a = 0; a < RW; ++a) acc[a][c] = _mm512_fmadd_ps(wv[a], xv, acc[a][c]);
    }
  }
  if (i < i1) {
    const __mmask16 m = tail_mask(i1 - i);
    __m512 wv[RW];
    for (int a = 0; a < RW; ++a) wv[a] = T::load_tail(w + size_t(a) * row_bytes, i, m);
    for (int c = 0; c < RC; ++c) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x[c] + i);
      for (int a = 0; a < RW; ++a) acc[a][c] = _mm512_fmadd_ps(wv[a], xv, acc[a][c]);
    }
  }
  for (int c = 0; c < RC; ++c)
    for (int a = 0; a < RW; ++a) {
      const float s = _mm512_reduce_add_ps(acc[a][c]);
      Y[c * ldy + a] = add ? Y[c * ldy + a] + s : s;
    }
}

// ---- NF4: blocks of 64 -----------------------------------------------------------------------
//
// The nibbles of byte j are weights 2j (high) and 2j+1 (low). Rather than interleave the looked-up
// weights back into order, GEMV rearranges the activations once per call (cost: one pass over x,
// shared by every weight row): each group of 32 becomes [16 even-indexed | 16 odd-indexed], so the
// high nibbles of 16 bytes pair with the first half and the low nibbles with the second.

constexpr int64_t kNf4Block = kNf4BlockElems;

void arrange_x_nf4(const float* x, float* xa, int64_t cols) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int64_t i = 0; i + 32 <= cols; i += 32) {
    const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    _mm512_storeu_ps(xa + i, _mm512_permutex2var_ps(a, even, b));
    _mm512_storeu_ps(xa + i + 16, _mm512_permutex2var_ps(a, odd, b));
  }
}

inline __m512 nf4_codebook_zmm() { return _mm512_loadu_ps(nf4_codebook().data()); }

inline float block_absmax(const BlockNF4* b) {
  float a;
  std::memcpy(&a, &b->absmax, 4);
  return a;
}

// 16 bytes (32 codes) as dwords; vpermps reads only the low 4 bits of each index.
inline __m512i nf4_codes(const uint8_t* qs) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
}
inline __m512 nf4_high(__m512i d, __m512 levels) { return _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), levels); }
inline __m512 nf4_low(__m512i d, __m512 levels) { return _mm512_permutexvar_ps(d, levels); }

float dot_row_nf4(const BlockNF4* b, const float* xa, int64_t nblocks, __m512 cb) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  for (int64_t k = 0; k < nblocks; ++k, xa += kNf4Block) {
    const __m512 levels = _mm512_mul_ps(cb, _mm512_set1_ps(block_absmax(b + k)));
    const __m512i d0 = nf4_codes(b[k].qs), d1 = nf4_codes(b[k].qs + 16);
    s0 = _mm512_fmadd_ps(nf4_high(d0, levels), _mm512_loadu_ps(xa), s0);
    s1 = _mm512_fmadd_ps(nf4_low(d0, levels), _mm512_loadu_ps(xa + 16), s1);
    s2 = _mm512_fmadd_ps(nf4_high(d1, levels), _mm512_loadu_ps(xa + 32), s2);
    s3 = _mm512_fmadd_ps(nf4_low(d1, levels), _mm512_loadu_ps(xa + 48), s3);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

// RW NF4 rows x RC rearranged activation rows over columns [i0, i1) (whole blocks).
template <int RW, int RC>
void tile_nf4(const uint8_t* w, size_t row_bytes, const float* const* xa, float* Y, int64_t ldy, int64_t i0,
              int64_t i1, bool add) {
  const __m512 cb = nf4_codebook_zmm();
  __m512 acc[RW][RC];
  for (int a = 0; a < RW; ++a)
    for (int c = 0; c < RC; ++c) acc[a][c] = _mm512_setzero_ps();
  const BlockNF4* rows[RW];
  for (int a = 0; a < RW; ++a) rows[a] = reinterpret_cast<const BlockNF4*>(w + size_t(a) * row_bytes);
  for (int64_t k = i0 / kNf4Block; k < i1 / kNf4Block; ++k) {
    __m512 levels[RW];
    for (int a = 0; a < RW; ++a) levels[a] = _mm512_mul_ps(cb, _mm512_set1_ps(block_absmax(rows[a] + k)));
    for (int half = 0; half < 2; ++half) {
      __m512 hi[RW], lo[RW];
      for (int a = 0; a < RW; ++a) {
        const __m512i d = nf4_codes(rows[a][k].qs + 16 * half);
        hi[a] = nf4_high(d, levels[a]);
        lo[a] = nf4_low(d, levels[a]);
      }
      const int64_t off = k * kNf4Block + 32 * half;
      for (int c = 0; c < RC; ++c) {
        const __m512 xe = _mm512_loadu_ps(xa[c] + off), xo = _mm512_loadu_ps(xa[c] + off + 16);
        for (int a = 0; a < RW; ++a) acc[a][c] = _mm512_fmadd_ps(lo[a], xo, _mm512_fmadd_ps(hi[a], xe, acc[a][c]));
      }
    }
  }
  for (int c = 0; c < RC; ++c)
    for (int a = 0; a < RW; ++a) {
      const float s = _mm512_reduce_add_ps(acc[a][c]);
      Y[c * ldy + a] = add ? Y[c * ldy + a] + s : s;
    }
}

// ---- Tile driver -----------------------------------------------------------------------------

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

// RC activation rows at most; fewer at the end of X.
template <typename Tile, int RW, int RC>
void tile_upto(int nc, const uint8_t* w, size_t rb, const float* const* x, float* Y, int64_t ldy, int64_t i0,
               int64_t i1, bool add) {
  if constexpr (RC > 1) {
    if (nc < RC) return tile_upto<Tile, RW, RC - 1>(nc, w, rb, x, Y, ldy, i0, i1, add);
  }
  Tile::template run<RW, RC>(w, rb, x, Y, ldy, i0, i1, add);
}

// Y[c * ldy + r] = dot(row r of W, xrows[c]) for r in [r0, r1), c in [0, nx). Weight rows in the
// outer loop, split in column panels of `panel` columns: a panel of RW rows is read from memory once
// and then served from L1 to every group of RC activation rows. Leftover rows go one at a time.
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

// ---- GEMV -----------------------------------------------------------------------------------
//
// Streaming one row at a time reads memory fastest (measured on Zen 4), but only while x and the
// row being streamed fit in L1 together: past that, the weight stream evicts x and every row
// re-reads x from L2, which halved the speed of 2048 x 8192 F16 rows. Long rows therefore go
// through the tile with kLongRowTile weight rows per activation load, which divides the x traffic
// by that many at the cost of interleaving as many streams (measured on 2048 x 8192 F16, 1 thread:
// one row at a time 0.46 of the read bound, 4 rows 0.70, 8 rows 0.92; on 2048-wide rows one at a
// time was best, 1.01 against 0.87 for 8).

// x plus one weight row must fit in this much of L1 (32 KiB on Zen 4, 48 KiB on recent Intel).
constexpr size_t kL1Budget = size_t(24) << 10;
// Weight rows per activation load for long rows: 8 for F16/BF16 (8 accumulators + 8 weight vectors
// in registers); 4 for NF4, whose decoded rows take two registers each plus their levels.
constexpr int kLongRowTile = 8, kLongRowTileNf4 = 4;

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
    const __m512 cb = nf4_codebook_zmm();
    const int64_t nblocks = cols / kNf4Block;
    for (int64_t r = r0; r < r1; ++r)
      y[r] = dot_row_nf4(reinterpret_cast<const BlockNF4*>(w + size_t(r) * row_bytes), xa, nblocks, cb);
    return;
  }
  const float* xr[1] = {xa};
  tile_driver<Nf4Tile, kLongRowTileNf4, 1>(w, row_bytes, xr, 1, y, 0, r0, r1, cols, cols);
}

// ---- GEMM -----------------------------------------------------------------------------------

// A tile's weights for one column panel: kGemmRows rows x this many bytes stay in L1 (half of it).
constexpr int64_t kPanelBytes = int64_t(16) << 10;
constexpr int kGemmRows = 4, kGemmActs = 4;  // 16 accumulators + 4 weight vectors + 1 activation

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

// Decoding 4-bit codes costs about as much as the multiply-adds each decoded vector feeds. Up to
// kNf4RegisterActs activation rows, the decoded vectors are used straight from registers by a 2 x 8
// tile. Beyond that, each tile of kGemmRows weight rows is decoded once (exactly, with dequant_nf4)
// into a small f32 buffer and multiplied with all nx activation rows like F32 weights, so the decode
// is shared by nx rows. Measured on Zen 4, 1 thread, 2048 x 2048, best of 4 runs, GFLOP/s:
// 8 rows: registers 84, buffer 76; 16 rows: buffer 78, registers 59; 32 rows: buffer 94, registers 61.
constexpr int kNf4RegisterActs = 8;

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
    tile_driver<Nf4Tile, 2, kNf4RegisterActs>(static_cast<const uint8_t*>(W), row_bytes, xr, nx, Y, ldy, r0, r1, cols,
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
  for (; i + 16 <= cols; i += 16) _mm512_storeu_ps(y + i, T::load(w, i));
  if (i < cols) {
    const __mmask16 m = tail_mask(cols - i);
    _mm512_mask_storeu_ps(y + i, m, T::load_tail(w, i, m));
  }
}

void dequant_nf4(const void* row, float* y, int64_t cols) {
  const auto* b = static_cast<const BlockNF4*>(row);
  const __m512 cb = nf4_codebook_zmm();
  // Back to element order: high nibble j -> 2j, low nibble j -> 2j + 1.
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
  for (int64_t k = 0; k < cols / kNf4Block; ++k, y += kNf4Block) {
    const __m512 levels = _mm512_mul_ps(cb, _mm512_set1_ps(block_absmax(b + k)));
    for (int half = 0; half < 2; ++half) {
      const __m512i d = nf4_codes(b[k].qs + 16 * half);
      const __m512 hi = nf4_high(d, levels), lo = nf4_low(d, levels);
      _mm512_storeu_ps(y + 32 * half, _mm512_permutex2var_ps(hi, first, lo));
      _mm512_storeu_ps(y + 32 * half + 16, _mm512_permutex2var_ps(hi, second, lo));
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

void register_float_kernels_avx512(WeightKernelSet& s) {
  entry(s, DType::F16) = kernels(gemv_plain<F16>, gemm_plain<F16>, dequant_plain<F16>);
  entry(s, DType::BF16) = kernels(gemv_plain<BF16>, gemm_plain<BF16>, dequant_plain<BF16>);
  entry(s, DType::NF4) = kernels(gemv_nf4, gemm_nf4, dequant_nf4);
}

}  // namespace qforge::kernels
