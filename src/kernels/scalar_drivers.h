// The reference twins' GEMV and GEMM for integer weight types, built from one row dot product
// (weight row bytes x quantized activation row): simple loops, so the twin is obviously right.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/weight_kernels.h"
#include "qforge/quant.h"

namespace qforge::kernels {

template <typename Act>
using RowDot = float (*)(const uint8_t* row, const Act* x, int64_t cols);

template <typename Act, RowDot<Act> Dot>
void scalar_gemv(const void* W, size_t row_bytes, const void* xq, float* y, int64_t r0, int64_t r1, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(W);
  const auto* x = static_cast<const Act*>(xq);
  for (int64_t r = r0; r < r1; ++r) y[r] = Dot(w + size_t(r) * row_bytes, x, cols);
}

template <typename Act, RowDot<Act> Dot>
void scalar_gemm(const void* W, size_t row_bytes, const void* X, size_t x_stride, int64_t nx, float* Y, int64_t ldy,
                 int64_t r0, int64_t r1, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(W);
  const auto* xs = static_cast<const uint8_t*>(X);
  for (int64_t c = 0; c < nx; ++c) {
    const auto* x = reinterpret_cast<const Act*>(xs + size_t(c) * x_stride);
    for (int64_t r = r0; r < r1; ++r) Y[c * ldy + r] = Dot(w + size_t(r) * row_bytes, x, cols);
  }
}

// A complete reference entry: activations quantized by quantize_act, rows dequantized by the
// quantizer's own reference.
template <typename Act, RowDot<Act> Dot>
WeightKernels scalar_entry(DType t, ActFormat act, void (*quantize_act)(const float*, void*, int64_t)) {
  WeightKernels k;
  k.act = act;
  k.quantize_act = quantize_act;
  k.gemv = scalar_gemv<Act, Dot>;
  k.gemm = scalar_gemm<Act, Dot>;
  k.dequant_row = quant_type(t).dequantize_row;
  return k;
}

}  // namespace qforge::kernels
