// fit_symmetric for eight groups at once, one group per AVX2 lane (compiled with -mavx2
// -ffp-contract=off only, called only on CPUs with AVX2). Each lane performs the scalar search's
// float operations in the scalar's order, so its result is bit-identical to fit_symmetric on that group
// (see fit_scale_min_avx2.cpp for why lanes across groups and not a vector loop over one group's
// values). q6_K runs its sixteen 16-value sub-blocks through this: 72% of its quantization time was the
// scalar search. tests/unit/test_quant.cpp compares the two bit for bit.
#include <immintrin.h>

#include "quant/lanes_avx2.h"
#include "quant/quant_util.h"

namespace qforge::quant {

void fit_symmetric_x8_avx2(int n, int qhalf, const float* x, const float* w, uint8_t* q, float* scales) {
  constexpr int kMax = 32;
  __m256 xt[kMax], wt[kMax], best_l[kMax], trial_l[kMax];
  lanes::transpose_in(x, n, n, xt);
  lanes::transpose_in(w, n, n, wt);
  const __m256 zero = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);

  // signed_peak: the first value of largest magnitude, with its sign.
  __m256 amax = zero, peak = zero;
  for (int i = 0; i < n; ++i) {
    const __m256 a = _mm256_andnot_ps(sign, xt[i]);
    const __m256 larger = _mm256_cmp_ps(a, amax, _CMP_GT_OQ);
    amax = _mm256_blendv_ps(amax, a, larger);
    peak = _mm256_blendv_ps(peak, xt[i], larger);
  }
  const __m256 all_zero = _mm256_cmp_ps(amax, _mm256_set1_ps(kAllZeroLimit), _CMP_LT_OQ);

  // round_symmetric: levels into l, returns the sums w*x*l and w*l*l.
  auto round_sym = [&](__m256 inv_scale, __m256* l, __m256& sxl, __m256& sll) {
    sxl = zero;
    sll = zero;
    for (int i = 0; i < n; ++i) {
      l[i] = lanes::round_clamp(_mm256_mul_ps(inv_scale, xt[i]), -qhalf, qhalf - 1);
      sxl = _mm256_add_ps(sxl, _mm256_mul_ps(_mm256_mul_ps(wt[i], xt[i]), l[i]));
      sll = _mm256_add_ps(sll, _mm256_mul_ps(_mm256_mul_ps(wt[i], l[i]), l[i]));
    }
  };
  __m256 sxl, sll;
  round_sym(_mm256_div_ps(_mm256_set1_ps(float(-qhalf)), peak), best_l, sxl, sll);
  const __m256 sll_nonzero = _mm256_cmp_ps(sll, zero, _CMP_NEQ_UQ);  // `sll ? ... : 0`
  __m256 scale = _mm256_and_ps(_mm256_div_ps(sxl, sll), sll_nonzero);
  __m256 best = _mm256_mul_ps(scale, sxl);
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    const float num = -(float(qhalf) + 0.1f * float(step));
    round_sym(_mm256_div_ps(_mm256_set1_ps(num), peak), trial_l, sxl, sll);
    const __m256 better = _mm256_and_ps(_mm256_cmp_ps(sll, zero, _CMP_GT_OQ),
                                        _mm256_cmp_ps(_mm256_mul_ps(sxl, sxl), _mm256_mul_ps(best, sll), _CMP_GT_OQ));
    if (_mm256_movemask_ps(better) == 0) continue;
    for (int i = 0; i < n; ++i) best_l[i] = _mm256_blendv_ps(best_l[i], trial_l[i], better);
    const __m256 s = _mm256_div_ps(sxl, sll);
    scale = _mm256_blendv_ps(scale, s, better);
    best = _mm256_blendv_ps(best, _mm256_mul_ps(s, sxl), better);
  }
  // All-zero groups: q = 0 (not the grid's zero level) and scale 0, as the scalar returns early.
  const __m256 bias = _mm256_set1_ps(float(qhalf));
  for (int i = 0; i < n; ++i) best_l[i] = _mm256_blendv_ps(_mm256_add_ps(best_l[i], bias), zero, all_zero);
  lanes::store(scales, _mm256_blendv_ps(scale, zero, all_zero));
  lanes::transpose_out(best_l, n, 0, n, q);
}

}  // namespace qforge::quant
