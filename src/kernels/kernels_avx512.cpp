// AVX-512 kernels (compiled with -mavx512f/bw/vl/dq; called only when the CPU has them).
#include <immintrin.h>

#include "kernels/kernels.h"

namespace qforge::kernels {
namespace {

float dot_f32(const float* a, const float* b, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  if (i < n) {  // masked tail: no scalar loop
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

// Four rows at a time: each x load feeds four FMAs; two accumulators per row hide FMA latency.
void gemv_f32(const float* W, int64_t ld, const float* x, float* y, int64_t r0, int64_t r1, int64_t cols) {
  int64_t r = r0;
  const int64_t full = cols & ~int64_t(15);
  const __mmask16 tail = __mmask16((1u << (cols - full)) - 1);
  for (; r + 4 <= r1; r += 4) {
    const float* w0 = W + r * ld;
    const float* w1 = w0 + ld;
    const float* w2 = w1 + ld;
    const float* w3 = w2 + ld;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= full; i += 32) {
      __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + i), x0, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + i), x0, a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + i), x0, a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + i), x0, a3);
      b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + i + 16), x1, b0);
      b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + i + 16), x1, b1);
      b2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + i + 16), x1, b2);
      b3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + i + 16), x1, b3);
    }
    for (; i < full; i += 16) {
      __m512 x0 = _mm512_loadu_ps(x + i);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + i), x0, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + i), x0, a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + i), x0, a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + i), x0, a3);
    }
    if (tail) {
      __m512 x0 = _mm512_maskz_loadu_ps(tail, x + i);
      b0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + i), x0, b0);
      b1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w1 + i), x0, b1);
      b2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w2 + i), x0, b2);
      b3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w3 + i), x0, b3);
    }
    y[r - r0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    y[r - r0 + 1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
    y[r - r0 + 2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
    y[r - r0 + 3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
  }
  for (; r < r1; ++r) y[r - r0] = dot_f32(W + r * ld, x, cols);
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  const __m512 av = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

}  // namespace

const Table& table_avx512() {
  static const Table t{"avx512", dot_f32, gemv_f32, axpy_f32};
  return t;
}

}  // namespace qforge::kernels
