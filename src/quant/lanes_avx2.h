// Helpers for the AVX2 twins of the quantizer searches (src/quant/*_avx2.cpp, compiled with -mavx2
// -ffp-contract=off): one independent block per lane, each lane doing exactly what the scalar does.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace qforge::quant::lanes {

constexpr int kLanes = 8;

// round_even(v) (quant_util.h) clamped to [lo, hi], per lane, as float: values too large for the
// shift trick (and NaN) become +-4194303 first, as in the scalar, which the clamp then settles.
inline __m256 round_clamp(__m256 v, int lo, int hi) {
  const __m256 shift = _mm256_set1_ps(12582912.0f);
  const __m256 abs_v = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
  const __m256 small = _mm256_cmp_ps(abs_v, _mm256_set1_ps(4194304.0f), _CMP_LT_OQ);
  const __m256 r = _mm256_sub_ps(_mm256_add_ps(v, shift), shift);
  const __m256 big = _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_set1_epi32(-4194303)),
                                      _mm256_castsi256_ps(_mm256_set1_epi32(4194303)),
                                      _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ));
  __m256i l = _mm256_castps_si256(_mm256_blendv_ps(big, _mm256_castsi256_ps(_mm256_cvttps_epi32(r)), small));
  l = _mm256_min_epi32(_mm256_set1_epi32(hi), _mm256_max_epi32(_mm256_set1_epi32(lo), l));
  return _mm256_cvtepi32_ps(l);
}

// t[i] = lane j holds src[stride * j + i], for i < n (n <= 32): group j's value i.
inline void transpose_in(const float* src, int stride, int n, __m256* t) {
  for (int i = 0; i < n; ++i) {
    alignas(32) float v[kLanes];
    for (int j = 0; j < kLanes; ++j) v[j] = src[stride * j + i];
    t[i] = _mm256_load_ps(v);
  }
}

// dst[stride * j + i] = uint8(lane j of t[i] + bias) for i < n.
inline void transpose_out(const __m256* t, int n, int bias, int stride, uint8_t* dst) {
  for (int i = 0; i < n; ++i) {
    alignas(32) int32_t l[kLanes];
    _mm256_store_si256(reinterpret_cast<__m256i*>(l), _mm256_cvttps_epi32(t[i]));
    for (int j = 0; j < kLanes; ++j) dst[stride * j + i] = uint8_t(l[j] + bias);
  }
}

inline void store(float* dst, __m256 v) { _mm256_storeu_ps(dst, v); }

}  // namespace qforge::quant::lanes
