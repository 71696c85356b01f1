// Scalar reference kernels for F16, BF16 and NF4 weights with F32 activations.
//
// These are the twins the AVX2 / AVX-512 variants are tested against, so they favour exactness
// over speed: every weight is converted exactly as convert_to_f32 / dequantize_nf4 convert it,
// and products are summed in double, so their own rounding error (one final rounding to float)
// is far below that of any float-accumulating kernel.
#include <cstring>

#include "kernels/weight_kernels.h"
#include "qforge/dtype.h"
#include "qforge/quant.h"
#include "quant/block_nf4.h"

namespace qforge::kernels {
namespace {

// Converts weight i of a row to f32 exactly as dequant_row does.
struct F16Weights {
  static float at(const void* row, int64_t i) {
    uint16_t h;
    std::memcpy(&h, static_cast<const uint8_t*>(row) + 2 * i, 2);
    return f16_to_f32(h);
  }
  static void row(const void* r, float* y, int64_t cols) { convert_to_f32(DType::F16, r, y, size_t(cols)); }
};

struct BF16Weights {
  static float at(const void* row, int64_t i) {
    uint16_t h;
    std::memcpy(&h, static_cast<const uint8_t*>(row) + 2 * i, 2);
    return bf16_to_f32(h);
  }
  static void row(const void* r, float* y, int64_t cols) { convert_to_f32(DType::BF16, r, y, size_t(cols)); }
};

struct NF4Weights {
  // Weight = codebook level * absmax, rounded to float once (as dequantize_nf4 computes it).
  static float at(const void* row, int64_t i) {
    const auto* b = static_cast<const BlockNF4*>(row) + i / kNf4BlockElems;
    const int k = int(i % kNf4BlockElems);
    const uint8_t byte = b->qs[k / 2];
    const int code = (k % 2 == 0) ? byte >> 4 : byte & 15;
    return nf4_codebook()[size_t(code)] * b->absmax;
  }
  static void row(const void* r, float* y, int64_t cols) {
    for (int64_t i = 0; i < cols; ++i) y[i] = at(r, i);
  }
};

template <typename Weights>
float dot(const void* row, const float* x, int64_t cols) {
  double s = 0;
  for (int64_t i = 0; i < cols; ++i) s += double(Weights::at(row, i)) * double(x[i]);
  return float(s);
}

template <typename Weights>
void gemv(const void* W, size_t row_bytes, const void* xq, float* y, int64_t r0, int64_t r1, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(W);
  const auto* x = static_cast<const float*>(xq);
  for (int64_t r = r0; r < r1; ++r) y[r] = dot<Weights>(w + size_t(r) * row_bytes, x, cols);
}

template <typename Weights>
void gemm(const void* W, size_t row_bytes, const void* X, size_t x_stride, int64_t nx, float* Y, int64_t ldy,
          int64_t r0, int64_t r1, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(W);
  const auto* xs = static_cast<const uint8_t*>(X);
  for (int64_t c = 0; c < nx; ++c) {
    const auto* x = reinterpret_cast<const float*>(xs + size_t(c) * x_stride);
    for (int64_t r = r0; r < r1; ++r) Y[c * ldy + r] = dot<Weights>(w + size_t(r) * row_bytes, x, cols);
  }
}

template <typename Weights>
WeightKernels make() {
  WeightKernels k;
  k.act = ActFormat::F32;
  k.quantize_act = nullptr;
  k.gemv = gemv<Weights>;
  k.gemm = gemm<Weights>;
  k.dequant_row = Weights::row;
  return k;
}

}  // namespace

void register_float_kernels_scalar(WeightKernelSet& s) {
  entry(s, DType::F16) = make<F16Weights>();
  entry(s, DType::BF16) = make<BF16Weights>();
  entry(s, DType::NF4) = make<NF4Weights>();
}

}  // namespace qforge::kernels
