// q4_1: 4-bit affine quantization (scale and min) in blocks of 32 (ggml type 3).
//
// Block layout: BlockQ4_1 in quant/blocks_32.h.
//
// Without importance: m = min(x), d = (max - min) / 15, q = floor((x - m) / d + 0.5) capped at 15
// (ggml's reference rule; identical bytes). With importance: weighted search over scale and min.
#include <algorithm>
#include <cfloat>

#include "quant/blocks_32.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kBlock = 32;

void pack_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < kBlock / 2; ++j) qs[j] = uint8_t(q[j] | (q[j + kBlock / 2] << 4));
}
}  // namespace

void quantize_q4_1(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q4_1", x, n, kBlock, importance);
  auto* y = static_cast<BlockQ4_1*>(vy);
  uint8_t q[kBlock], scratch[kBlock];
  if (!importance) {
    for (int64_t b = 0; b < n / kBlock; ++b, x += kBlock) {
      float lo = FLT_MAX, hi = -FLT_MAX;
      for (int i = 0; i < kBlock; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
      }
      const float d = (hi - lo) / 15;
      const float inv = d ? 1.0f / d : 0.0f;
      y[b].d = to_half(d);
      y[b].m = to_half(lo);
      for (int i = 0; i < kBlock; ++i) q[i] = uint8_t(std::min(15, int((x[i] - lo) * inv + 0.5f)));
      pack_nibbles(q, y[b].qs);
    }
    return;
  }
  float sum_x2 = 0;
  for (int64_t i = 0; i < n; ++i) sum_x2 += x[i] * x[i];
  const float sigma2 = sum_x2 / float(n);
  float w[kBlock];
  for (int64_t b = 0; b < n / kBlock; ++b, x += kBlock, importance += kBlock) {
    importance_weights(x, importance, sigma2, kBlock, w);
    float offset;
    const float d = fit_scale_min(kBlock, 15, x, w, q, &offset, scratch, {-0.9f, 0.05f, 36}, ErrorNorm::Squared);
    y[b].d = to_half(d);
    y[b].m = to_half(-offset);
    pack_nibbles(q, y[b].qs);
  }
}

void dequantize_q4_1(const void* vx, float* y, int64_t n) {
  check_dequantize_args("q4_1", n, kBlock);
  const auto* x = static_cast<const BlockQ4_1*>(vx);
  for (int64_t b = 0; b < n / kBlock; ++b, y += kBlock) {
    const float d = from_half(x[b].d), m = from_half(x[b].m);
    for (int j = 0; j < kBlock / 2; ++j) {
      y[j] = (x[b].qs[j] & 15) * d + m;
      y[j + kBlock / 2] = (x[b].qs[j] >> 4) * d + m;
    }
  }
}

}  // namespace qforge::quant
