// Scalar reference kernels for the k-quant super-block types (q2_K, q3_K, q4_K, q5_K, q6_K) with
// activations quantized to BlockQ8x256.
//
// These are the twins the AVX2 / AVX-512 kernels are tested against, so they are written for
// obviousness, not speed. Every super-block is read as signed integer codes c[i], one integer scale
// s[j] and one integer min m[j] per sub-block j, and the f16 super-scales d and dmin:
//   weight i of sub-block j = d * s[j] * c[i] - dmin * m[j]        (m = 0 for q3_K and q6_K)
// and an activation super-block as x[i] = dx * qs[i], so the super-block's share of a dot product is
//   d * dx * sum_j s[j] * sum_{i in j} c[i] qs[i]  -  dmin * dx * sum_j m[j] * sum_{i in j} qs[i]
// where the integer sums are exact and the rest is done in double: the only rounding is the final
// one to float, so a row's result equals the double-precision dot product of the dequantized
// weights with the dequantized activations up to a few float ulps of the terms.
//
// quantize_act defines the BlockQ8x256 bytes; the SIMD versions must produce exactly these bytes, so
// every step here is one IEEE operation the vector code repeats lane by lane (the rule of the
// 32-value activation blocks, over 256 values):
//   amax = largest |x| (NaNs ignored), d = amax / 127, id = d ? 1 / d : 0,
//   v = x * id, clamped to [-127, 127] as v = (v > -127 ? v : -127), v = (v < 127 ? v : 127)
//   (the operand order of vmaxps / vminps, so a NaN becomes -127), qs = v rounded to nearest even,
//   bsums[j] = sum of qs[16j .. 16j + 15].
#include <cmath>
#include <cstring>

#include "kernels/scalar_drivers.h"
#include "kernels/weight_kernels.h"
#include "qforge/dtype.h"
#include "qforge/quant.h"
#include "quant/blocks_k.h"
#include "quant/quant_util.h"

namespace qforge::kernels {
namespace {

using quant::kBlockK;
static_assert(quant::kBlockK == quant::kSuperBlock, "one super-block size");

void quantize_act_q8x256(const float* x, void* xq, int64_t n) {
  auto* out = static_cast<BlockQ8x256*>(xq);
  for (int64_t b = 0; b < n / kBlockK; ++b, x += kBlockK) {
    float amax = 0;
    for (int i = 0; i < kBlockK; ++i) {
      const float a = std::fabs(x[i]);
      amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 16; ++j) {
      int sum = 0;
      for (int i = 16 * j; i < 16 * j + 16; ++i) {
        float v = x[i] * id;
        v = v > -127.0f ? v : -127.0f;
        v = v < 127.0f ? v : 127.0f;
        const int q = int(std::nearbyint(v));
        out[b].qs[i] = int8_t(q);
        sum += q;
      }
      out[b].bsums[j] = int16_t(sum);
    }
    out[b].d = d;
  }
}

// One super-block read out: weight i = d * s[i / sub] * c[i] - dmin * m[i / sub].
struct Decoded {
  int c[kBlockK];
  int s[16];
  int m[16];
  int sub;  // weights per sub-block: 16 or 32
  float d, dmin;
};

// Bits 2p..2p+1 of the 2-bit planes layout (see blocks_k.h): weight i of a super-block.
inline int plane2(const uint8_t* bytes, int i) {
  const int h = i / 128, p = (i % 128) / 32;
  return (bytes[32 * h + i % 32] >> (2 * p)) & 3;
}
// Weight i of the nibble chunks layout.
inline int chunk_nibble(const uint8_t* qs, int i) {
  const int c = i / 64, half = (i % 64) / 32;
  return (qs[32 * c + i % 32] >> (4 * half)) & 15;
}

struct ReadQ2_K {
  using Block = quant::BlockQ2_K;
  static void read(const Block& b, Decoded& o) {
    o.sub = 16;
    for (int i = 0; i < kBlockK; ++i) o.c[i] = plane2(b.qs, i);
    for (int j = 0; j < 16; ++j) {
      o.s[j] = b.scales[j] & 15;
      o.m[j] = b.scales[j] >> 4;
    }
    o.d = f16_to_f32(b.d);
    o.dmin = f16_to_f32(b.dmin);
  }
};

struct ReadQ3_K {
  using Block = quant::BlockQ3_K;
  static void read(const Block& b, Decoded& o) {
    o.sub = 16;
    for (int i = 0; i < kBlockK; ++i) o.c[i] = plane2(b.qs, i) + 4 * ((b.hmask[i % 32] >> (i / 32)) & 1) - 4;
    for (int j = 0; j < 16; ++j) {
      const int low = j < 8 ? b.scales[j] & 15 : b.scales[j - 8] >> 4;
      const int high = (b.scales[8 + j % 4] >> (2 * (j / 4))) & 3;
      o.s[j] = (low | high << 4) - 32;
      o.m[j] = 0;
    }
    o.d = f16_to_f32(b.d);
    o.dmin = 0;
  }
};

// q4_K and q5_K share the header and the 6-bit scales.
template <typename Block>
void read_scales_mins(const Block& b, Decoded& o) {
  o.sub = 32;
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, mn;
    quant::unpack_scale_min_6bit(b.scales, j, &sc, &mn);
    o.s[j] = sc;
    o.m[j] = mn;
  }
  o.d = f16_to_f32(b.d);
  o.dmin = f16_to_f32(b.dmin);
}

struct ReadQ4_K {
  using Block = quant::BlockQ4_K;
  static void read(const Block& b, Decoded& o) {
    for (int i = 0; i < kBlockK; ++i) o.c[i] = chunk_nibble(b.qs, i);
    read_scales_mins(b, o);
  }
};

struct ReadQ5_K {
  using Block = quant::BlockQ5_K;
  static void read(const Block& b, Decoded& o) {
    for (int i = 0; i < kBlockK; ++i) {
      const int c = i / 64, half = (i % 64) / 32;
      o.c[i] = chunk_nibble(b.qs, i) | ((b.qh[i % 32] >> (2 * c + half)) & 1) << 4;
    }
    read_scales_mins(b, o);
  }
};

struct ReadQ6_K {
  using Block = quant::BlockQ6_K;
  static void read(const Block& b, Decoded& o) {
    o.sub = 16;
    for (int i = 0; i < kBlockK; ++i) {
      const int h = i / 128, l = i % 32, quarter = (i % 128) / 32;  // quarter: +0 / +32 / +64 / +96
      const int low = (b.ql[64 * h + 32 * (quarter & 1) + l] >> (4 * (quarter >> 1))) & 15;
      o.c[i] = (low | plane2(b.qh, i) << 4) - 32;
    }
    for (int j = 0; j < 16; ++j) {
      o.s[j] = b.scales[j];
      o.m[j] = 0;
    }
    o.d = f16_to_f32(b.d);
    o.dmin = 0;
  }
};

template <typename Read>
float dot_row(const uint8_t* row, const BlockQ8x256* x, int64_t cols) {
  const auto* w = reinterpret_cast<const typename Read::Block*>(row);
  double s = 0;
  for (int64_t b = 0; b < cols / kBlockK; ++b) {
    Decoded o;
    Read::read(w[b], o);
    int64_t scaled = 0, mins = 0;
    for (int j = 0; j < kBlockK / o.sub; ++j) {
      int64_t dot = 0, sum = 0;
      for (int i = j * o.sub; i < (j + 1) * o.sub; ++i) {
        dot += int64_t(o.c[i]) * x[b].qs[i];
        sum += x[b].qs[i];
      }
      scaled += o.s[j] * dot;
      mins += o.m[j] * sum;
    }
    const double dx = x[b].d;
    s += double(o.d) * dx * double(scaled) - double(o.dmin) * dx * double(mins);
  }
  return float(s);
}

template <typename Read>
WeightKernels make(DType t) {
  return scalar_entry<BlockQ8x256, dot_row<Read>>(t, ActFormat::Q8x256, quantize_act_q8x256);
}

}  // namespace

void register_qk_kernels_scalar(WeightKernelSet& s) {
  entry(s, DType::Q2_K) = make<ReadQ2_K>(DType::Q2_K);
  entry(s, DType::Q3_K) = make<ReadQ3_K>(DType::Q3_K);
  entry(s, DType::Q4_K) = make<ReadQ4_K>(DType::Q4_K);
  entry(s, DType::Q5_K) = make<ReadQ5_K>(DType::Q5_K);
  entry(s, DType::Q6_K) = make<ReadQ6_K>(DType::Q6_K);
}

}  // namespace qforge::kernels
