// fit_scale_min for eight sub-blocks at once (the 32-value sub-blocks of a q4_K / q5_K super-block,
// eight of q2_K's sixteen 16-value ones), one sub-block per AVX2 lane (compiled with -mavx2 -ffp-contract=off only, and called only on CPUs with AVX2).
//
// Why lanes and not a vectorised loop over the 32 values: the scalar search accumulates its sums in
// float from the first value to the last, and llama-quantize produces the very same bytes only with
// that order. A loop over values would have to reorder the additions; here every lane performs the
// scalar's operations in the scalar's order (no fused multiply-adds: -ffp-contract=off), so each lane's
// result is bit-identical to fit_scale_min on that sub-block, while the eight dependency chains run
// side by side instead of one after the other. That took q4_k_m quantization of a 1.1B model from 84
// to ~25 CPU seconds (the search was 83% of the time). tests/unit/test_quant.cpp compares the two bit
// for bit on awkward inputs.
#include <immintrin.h>

#include "quant/lanes_avx2.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kMaxN = 32;
}  // namespace

void fit_scale_min_x8_avx2(int n, int qmax, const float* x, const float* w, uint8_t* q, float* scales,
                           float* offsets, ScaleFan fan, ErrorNorm norm) {
  // Transposed: xt[i] holds value i of every sub-block.
  __m256 xt[kMaxN] = {}, wt[kMaxN] = {};  // 1 <= n <= kMaxN (fit_scale_min_x8 checks)
  lanes::transpose_in(x, n, n, xt);
  lanes::transpose_in(w, n, n, wt);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  auto error_of = [&](__m256 d) {
    return norm == ErrorNorm::Absolute ? _mm256_andnot_ps(sign, d) : _mm256_mul_ps(d, d);
  };
  const __m256 zero = _mm256_setzero_ps();

  __m256 lo = xt[0], hi = xt[0], sum_w = wt[0], sum_wx = _mm256_mul_ps(wt[0], xt[0]);
  for (int i = 1; i < n; ++i) {
    lo = _mm256_min_ps(xt[i], lo);  // = std::min(lo, x): x only if x < lo
    hi = _mm256_max_ps(xt[i], hi);  // = std::max(hi, x): x only if hi < x
    sum_w = _mm256_add_ps(sum_w, wt[i]);
    sum_wx = _mm256_add_ps(sum_wx, _mm256_mul_ps(wt[i], xt[i]));
  }
  lo = _mm256_blendv_ps(lo, zero, _mm256_cmp_ps(lo, zero, _CMP_GT_OQ));
  const __m256 flat = _mm256_cmp_ps(hi, lo, _CMP_LE_OQ);  // no range: q = 0, scale 0, offset -lo

  __m256 inv = _mm256_div_ps(_mm256_set1_ps(float(qmax)), _mm256_sub_ps(hi, lo));
  __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.0f), inv);
  __m256 min = lo;
  __m256 best_err = zero;
  __m256 best_q[kMaxN], cand[kMaxN];
  for (int i = 0; i < n; ++i) {
    best_q[i] = lanes::round_clamp(_mm256_mul_ps(inv, _mm256_sub_ps(xt[i], lo)), 0, qmax);
    const __m256 d = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, best_q[i]), lo), xt[i]);
    best_err = _mm256_add_ps(best_err, _mm256_mul_ps(wt[i], error_of(d)));
  }
  for (int k = 0; k <= fan.count && fan.count >= 1; ++k) {
    inv = _mm256_div_ps(_mm256_set1_ps(fan.first + fan.step * float(k) + float(qmax)), _mm256_sub_ps(hi, min));
    __m256 sum_wl = zero, sum_wll = zero, sum_wxl = zero;
    for (int i = 0; i < n; ++i) {
      cand[i] = lanes::round_clamp(_mm256_mul_ps(inv, _mm256_sub_ps(xt[i], min)), 0, qmax);
      const __m256 wl = _mm256_mul_ps(wt[i], cand[i]);
      sum_wl = _mm256_add_ps(sum_wl, wl);
      sum_wll = _mm256_add_ps(sum_wll, _mm256_mul_ps(wl, cand[i]));
      sum_wxl = _mm256_add_ps(sum_wxl, _mm256_mul_ps(wl, xt[i]));
    }
    const __m256 det = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_wll), _mm256_mul_ps(sum_wl, sum_wl));
    const __m256 solvable = _mm256_cmp_ps(det, zero, _CMP_GT_OQ);
    if (_mm256_movemask_ps(solvable) == 0) continue;
    __m256 s = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sum_wxl), _mm256_mul_ps(sum_wx, sum_wl)), det);
    __m256 m = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_wll, sum_wx), _mm256_mul_ps(sum_wl, sum_wxl)), det);
    const __m256 positive = _mm256_cmp_ps(m, zero, _CMP_GT_OQ);  // refit the scale alone with m = 0
    m = _mm256_blendv_ps(m, zero, positive);
    s = _mm256_blendv_ps(s, _mm256_div_ps(sum_wxl, sum_wll), positive);
    __m256 err = zero;
    for (int i = 0; i < n; ++i) {
      const __m256 d = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(s, cand[i]), m), xt[i]);
      err = _mm256_add_ps(err, _mm256_mul_ps(wt[i], error_of(d)));
    }
    const __m256 better = _mm256_and_ps(solvable, _mm256_cmp_ps(err, best_err, _CMP_LT_OQ));
    if (_mm256_movemask_ps(better) == 0) continue;
    for (int i = 0; i < n; ++i) best_q[i] = _mm256_blendv_ps(best_q[i], cand[i], better);
    best_err = _mm256_blendv_ps(best_err, err, better);
    scale = _mm256_blendv_ps(scale, s, better);
    min = _mm256_blendv_ps(min, m, better);
  }
  // Flat lanes: q = 0, scale 0, offset -lo (the scalar returns before any search).
  scale = _mm256_blendv_ps(scale, zero, flat);
  min = _mm256_blendv_ps(min, lo, flat);
  lanes::store(scales, scale);
  lanes::store(offsets, _mm256_xor_ps(min, _mm256_set1_ps(-0.0f)));  // -min, signed zero included
  for (int i = 0; i < n; ++i) best_q[i] = _mm256_blendv_ps(best_q[i], zero, flat);
  lanes::transpose_out(best_q, n, 0, n, q);
}

}  // namespace qforge::quant
