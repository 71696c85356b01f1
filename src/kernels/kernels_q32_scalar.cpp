// Scalar reference kernels for the 32-weight block types (q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl) with
// activations quantized to BlockQ8x32.
//
// These are the twins the AVX2 / AVX-512 kernels are tested against, so they are written for
// obviousness, not speed. Every block type is read as integer codes c[i] with
//   weight i = d * c[i] + m        (m = 0 for the symmetric types)
// and an activation block as x[i] = dx * qs[i], so the block's contribution to a dot product is
//   d * dx * sum(c[i] * qs[i]) + m * dx * sum(qs[i])
// where the integer sums are exact and the rest is done in double: the only rounding is the final
// one to float, so a row's result equals the double-precision dot product of the dequantized
// weights with the dequantized activations up to a few float ulps of the terms.
//
// quantize_act defines the BlockQ8x32 bytes; the SIMD versions must produce exactly these bytes, so
// every step here is one IEEE operation the vector code repeats lane by lane:
//   amax = largest |x| (NaNs ignored), d = amax / 127, id = d ? 1 / d : 0,
//   v = x * id, clamped to [-127, 127] as v = (v > -127 ? v : -127), v = (v < 127 ? v : 127)
//   (the operand order of vmaxps / vminps, so a NaN becomes -127), qs = v rounded to nearest even.
#include <cmath>
#include <cstring>

#include "kernels/scalar_drivers.h"
#include "kernels/weight_kernels.h"
#include "qforge/dtype.h"
#include "qforge/quant.h"
#include "quant/blocks_32.h"

namespace qforge::kernels {
namespace {

using quant::kBlock32;

void quantize_act_q8x32(const float* x, void* xq, int64_t n) {
  auto* out = static_cast<BlockQ8x32*>(xq);
  for (int64_t b = 0; b < n / kBlock32; ++b, x += kBlock32) {
    float amax = 0;
    for (int i = 0; i < kBlock32; ++i) {
      const float a = std::fabs(x[i]);
      amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int32_t sum = 0;
    for (int i = 0; i < kBlock32; ++i) {
      float v = x[i] * id;
      v = v > -127.0f ? v : -127.0f;
      v = v < 127.0f ? v : 127.0f;
      const int q = int(std::nearbyint(v));
      out[b].qs[i] = int8_t(q);
      sum += q;
    }
    out[b].d = d;
    out[b].sum = sum;
  }
}

// Integer codes, scale and min of one block: weight i = d * c[i] + m.
struct CodesQ8_0 {
  using Block = quant::BlockQ8_0;
  static void read(const Block& b, int* c, float* d, float* m) {
    for (int i = 0; i < kBlock32; ++i) c[i] = b.q[i];
    *d = f16_to_f32(b.d);
    *m = 0;
  }
};

// The low 4 bits of codes 0..31 from the shared nibble packing (see blocks_32.h).
inline int nibble(const uint8_t* qs, int i) { return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4; }
inline int bit4(const uint8_t* qh, int i) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  return int((h >> i) & 1);
}

struct CodesQ4_0 {
  using Block = quant::BlockQ4_0;
  static void read(const Block& b, int* c, float* d, float* m) {
    for (int i = 0; i < kBlock32; ++i) c[i] = nibble(b.qs, i) - 8;
    *d = f16_to_f32(b.d);
    *m = 0;
  }
};

struct CodesQ4_1 {
  using Block = quant::BlockQ4_1;
  static void read(const Block& b, int* c, float* d, float* m) {
    for (int i = 0; i < kBlock32; ++i) c[i] = nibble(b.qs, i);
    *d = f16_to_f32(b.d);
    *m = f16_to_f32(b.m);
  }
};

struct CodesQ5_0 {
  using Block = quant::BlockQ5_0;
  static void read(const Block& b, int* c, float* d, float* m) {
    for (int i = 0; i < kBlock32; ++i) c[i] = (nibble(b.qs, i) | bit4(b.qh, i) << 4) - 16;
    *d = f16_to_f32(b.d);
    *m = 0;
  }
};

struct CodesQ5_1 {
  using Block = quant::BlockQ5_1;
  static void read(const Block& b, int* c, float* d, float* m) {
    for (int i = 0; i < kBlock32; ++i) c[i] = nibble(b.qs, i) | bit4(b.qh, i) << 4;
    *d = f16_to_f32(b.d);
    *m = f16_to_f32(b.m);
  }
};

struct CodesIQ4_NL {
  using Block = quant::BlockIQ4_NL;
  static void read(const Block& b, int* c, float* d, float* m) {
    for (int i = 0; i < kBlock32; ++i) c[i] = int(quant::kIQ4NLLevels[nibble(b.qs, i)]);
    *d = f16_to_f32(b.d);
    *m = 0;
  }
};

template <typename Codes>
float dot_row(const uint8_t* row, const BlockQ8x32* x, int64_t cols) {
  const auto* w = reinterpret_cast<const typename Codes::Block*>(row);
  double s = 0;
  for (int64_t b = 0; b < cols / kBlock32; ++b) {
    int c[kBlock32];
    float d, m;
    Codes::read(w[b], c, &d, &m);
    int64_t dot = 0;
    for (int i = 0; i < kBlock32; ++i) dot += int64_t(c[i]) * x[b].qs[i];
    s += double(d) * double(x[b].d) * double(dot) + double(m) * double(x[b].d) * double(x[b].sum);
  }
  return float(s);
}

template <typename Codes>
WeightKernels make(DType t) {
  return scalar_entry<BlockQ8x32, dot_row<Codes>>(t, ActFormat::Q8x32, quantize_act_q8x32);
}

}  // namespace

void register_q32_kernels_scalar(WeightKernelSet& s) {
  entry(s, DType::Q8_0) = make<CodesQ8_0>(DType::Q8_0);
  entry(s, DType::Q4_0) = make<CodesQ4_0>(DType::Q4_0);
  entry(s, DType::Q4_1) = make<CodesQ4_1>(DType::Q4_1);
  entry(s, DType::Q5_0) = make<CodesQ5_0>(DType::Q5_0);
  entry(s, DType::Q5_1) = make<CodesQ5_1>(DType::Q5_1);
  entry(s, DType::IQ4_NL) = make<CodesIQ4_NL>(DType::IQ4_NL);
}

}  // namespace qforge::kernels
