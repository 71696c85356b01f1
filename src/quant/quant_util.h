// Shared pieces of the per-type quantizers in src/quant/: argument checks, rounding, half floats, and
// the scale searches that several k-quant types use.
//
// The searches follow the approach of llama.cpp's reference quantizers (ggml-quants.c): start from the
// scale that maps the extreme value to the end of the integer range, then try a fan of nearby scales,
// and for each candidate assignment of integers solve the weighted least-squares problem for the
// scale (and min) in closed form, keeping the candidate with the smallest weighted error. Every float
// operation is written in a fixed order and the library is built without FMA contraction, so the
// results are reproducible bit for bit.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "qforge/dtype.h"

namespace qforge::quant {

static_assert(std::endian::native == std::endian::little, "block layouts are little-endian");

inline constexpr int kSuperBlock = 256;         // weights per k-quant super-block
inline constexpr float kAllZeroLimit = 1e-15f;  // a group whose largest |x| is below this is stored as zeros

inline constexpr float kHalfMax = 65504.0f;  // largest finite f16

// Throws qforge::Error unless n >= 0 is a multiple of `block`, every |x| is at most `max_abs` (default:
// the f16 range, since the block scales and mins of the ggml types are f16 and would overflow to
// infinity beyond it) and every importance value (when given) is finite and >= 0. `type` names the
// type in the message.
void check_quantize_args(const char* type, const float* x, int64_t n, int64_t block, const float* importance,
                         float max_abs = kHalfMax);
// Throws unless n >= 0 is a multiple of `block`.
void check_dequantize_args(const char* type, int64_t n, int64_t block);

// Round half to even, to int. Adding and subtracting 1.5 * 2^23 leaves the nearest integer (ties to
// even) for |v| < 2^22, without a libm call; larger magnitudes and NaN saturate to +-(2^22 - 1), which
// every caller clamps further.
inline int round_even(float v) {
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23
  if (!(std::fabs(v) < 4194304.0f)) return v > 0 ? 4194303 : -4194303;
  const float r = (v + kShift) - kShift;
  return static_cast<int>(r);
}

inline int clamp_int(int v, int lo, int hi) { return std::min(hi, std::max(lo, v)); }

inline uint16_t to_half(float f) { return f32_to_f16(f); }
inline float from_half(uint16_t h) { return f16_to_f32(h); }

// Sum of squares of n values, accumulated in float from the first to the last.
inline float sum_squares(const float* x, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

// Weights for an importance-weighted search: importance[i] * sqrt(sigma2 + x[i]^2). The square-root
// term keeps the search caring about large weights (whose absolute error matters most in a dot
// product) while sigma2, the group's mean square, keeps tiny weights from dropping out entirely.
inline void importance_weights(const float* x, const float* importance, float sigma2, int n, float* w) {
  for (int i = 0; i < n; ++i) w[i] = importance[i] * std::sqrt(sigma2 + x[i] * x[i]);
}

// importance_weights over n_sub consecutive sub-blocks of `sub` values (the k-quants with importance),
// plus each sub-block's total weight in sub_weight[j] (summed from the first value to the last).
inline void sub_block_importance(const float* x, const float* importance, float sigma2, int n_sub, int sub, float* w,
                                 float* sub_weight) {
  for (int j = 0; j < n_sub; ++j) {
    importance_weights(x + sub * j, importance + sub * j, sigma2, sub, w + sub * j);
    sub_weight[j] = 0;
    for (int i = 0; i < sub; ++i) sub_weight[j] += w[sub * j + i];
  }
}

// ---- scale searches ----------------------------------------------------------------------------

// Symmetric signed grid: x[i] ~ scale * (q[i] - qhalf) with q[i] in [0, 2*qhalf - 1]. The value of
// largest magnitude is put at the wide end of the range (-qhalf); 18 nearby inverse scales are tried
// and each is refitted by weighted least squares. Returns the scale (negative when the extreme value
// is positive). All-zero input gives q = 0 and scale 0.
float fit_symmetric(int n, int qhalf, const float* x, const float* w, uint8_t* q);

// Eight fit_symmetric calls on n <= 32 values each: group j is x + n j with weights w + n j, its
// integers go to q + n j and its scale to scales[j]. Bit-identical to the scalar calls; AVX2 lanes
// where the CPU has them (fit_symmetric_avx2.cpp) unless QFORGE_ISA=scalar.
void fit_symmetric_x8(int n, int qhalf, const float* x, const float* w, uint8_t* q, float* scales);
void fit_symmetric_x8_avx2(int n, int qhalf, const float* x, const float* w, uint8_t* q,
                           float* scales);  // AVX2 CPUs only

// The importance-weighted symmetric fit of a row's 32-value blocks (q4_0, q5_0 with importance):
// weights importance * sqrt(sigma2 + x^2), then fit_symmetric per block, eight blocks at a time through
// fit_symmetric_x8 (same bytes) and the rest one by one. emit(b, scale, q) stores block b.
template <typename Emit>
void fit_symmetric_blocks(const float* x, const float* importance, float sigma2, int64_t nb, int qhalf, Emit&& emit) {
  constexpr int kBlock = 32;
  float w[8 * kBlock], scales[8];
  uint8_t q[8 * kBlock];
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    for (int j = 0; j < 8; ++j)
      importance_weights(x + kBlock * (b + j), importance + kBlock * (b + j), sigma2, kBlock, w + kBlock * j);
    fit_symmetric_x8(kBlock, qhalf, x + kBlock * b, w, q, scales);
    for (int j = 0; j < 8; ++j) emit(b + j, scales[j], q + kBlock * j);
  }
  for (; b < nb; ++b) {
    importance_weights(x + kBlock * b, importance + kBlock * b, sigma2, kBlock, w);
    emit(b, fit_symmetric(kBlock, qhalf, x + kBlock * b, w, q), q);
  }
}

// Symmetric grid refined one weight at a time: start as fit_symmetric's first guess, then up to five
// sweeps that move single q[i] to the level that is best given all the others, with weights x[i]^2.
// Returns the scale; q as for fit_symmetric.
float fit_symmetric_sweep(int n, int qhalf, const float* x, uint8_t* q);

// Candidate inverse scales for fit_scale_min: (qmax + first + step * k) / (max - min), k = 0..count,
// where min is the best min found so far (it starts at min(0, smallest x)).
struct ScaleFan {
  float first;
  float step;
  int count;
};

enum class ErrorNorm { Squared, Absolute };

// Affine grid with a min: x[i] ~ scale * q[i] - offset, q[i] in [0, qmax], offset >= 0 (the min is
// never above zero, so that zero stays representable). For each candidate inverse scale the integers
// are rounded and (scale, min) solved by weighted least squares; the candidate with the lowest weighted
// error (squared or absolute) wins. Returns the scale and stores the offset; `scratch` holds n bytes.
float fit_scale_min(int n, int qmax, const float* x, const float* w, uint8_t* q, float* offset, uint8_t* scratch,
                    ScaleFan fan, ErrorNorm norm);

// Eight fit_scale_min calls on n <= 32 values each: sub-block j is x + n j with weights w + n j, its
// integers go to q + n j, its scale and offset to scales[j] and offsets[j]. Bit-identical to the
// scalar calls; runs them side by side in AVX2 lanes where the CPU has AVX2 (fit_scale_min_avx2.cpp)
// unless QFORGE_ISA=scalar.
void fit_scale_min_x8(int n, int qmax, const float* x, const float* w, uint8_t* q, float* scales, float* offsets,
                      ScaleFan fan, ErrorNorm norm);
void fit_scale_min_x8_avx2(int n, int qmax, const float* x, const float* w, uint8_t* q, float* scales,
                           float* offsets, ScaleFan fan, ErrorNorm norm);  // AVX2 CPUs only

// Quantizes n non-negative values (sub-block scales or mins) to integers 0..qmax times one common
// scale, minimising the w-weighted squared error: tries 8 scales around max/qmax, then refines single
// integers for up to five sweeps. Returns the common scale (0 when every value is ~0).
float fit_positive_levels(int n, int qmax, const float* x, const float* w, uint8_t* q);

// The header q4_K and q5_K share: 8 sub-blocks of 32 weights, each with a (scale, min) pair on 6-bit
// grids topped by the f16 super-scales d and dmin. Fits every sub-block with fit_scale_min (weights
// sqrt(mean x^2) + |x| and `plain_fan` without importance; importance * sqrt(sigma2 + x^2) and 37
// candidates with it), quantizes the scales and mins, then re-rounds every weight to 0..qmax with the
// scale and min it will really get. Writes d, dmin, the 12 packed scale bytes and q[256].
void fit_scale_min_superblock(const float* x, const float* importance, int qmax, ScaleFan plain_fan, uint16_t* d,
                              uint16_t* dmin, uint8_t* scales12, uint8_t* q);

// ---- shared layouts ----------------------------------------------------------------------------

// q4_K and q5_K keep eight 6-bit scales and eight 6-bit mins in 12 bytes:
//   bytes 0-3:  bits 0-5 = scale[0..3],  bits 6-7 = bits 4-5 of scale[4..7]
//   bytes 4-7:  bits 0-5 = min[0..3],    bits 6-7 = bits 4-5 of min[4..7]
//   bytes 8-11: bits 0-3 = bits 0-3 of scale[4..7], bits 4-7 = bits 0-3 of min[4..7]
void pack_scales_mins_6bit(const uint8_t* scales, const uint8_t* mins, uint8_t* out12);
void unpack_scale_min_6bit(const uint8_t* in12, int j, uint8_t* scale, uint8_t* min);

// Index of the codebook entry (ascending, 16 entries) nearest to v; a value exactly halfway between two
// entries goes to the upper one.
int nearest_code_index(const float* codebook, int size, float v);

}  // namespace qforge::quant
