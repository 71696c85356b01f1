// Scalar reference kernels: the twin every ISA variant is tested against.
#include "kernels/kernels.h"

namespace qforge::kernels {
namespace {

float dot_f32(const float* a, const float* b, int64_t n) {
  // Pairwise-ish accumulation in double keeps the reference tight for long rows.
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return float(s);
}

void gemv_f32(const float* W, int64_t ld, const float* x, float* y, int64_t r0, int64_t r1, int64_t cols) {
  for (int64_t r = r0; r < r1; ++r) y[r - r0] = dot_f32(W + r * ld, x, cols);
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

const Table& table_scalar() {
  static const Table t{"scalar", dot_f32, gemv_f32, axpy_f32};
  return t;
}

}  // namespace qforge::kernels
