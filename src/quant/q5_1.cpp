// q5_1: 5-bit affine quantization (scale and min) in blocks of 32 (ggml type 7).
//
// Block layout: BlockQ5_1 in quant/blocks_32.h.
//
// Without importance: m = min(x), d = (max - min) / 31, q = floor((x - m) / d + 0.5) (ggml's reference
// rule; identical bytes). With importance: weighted search over scale and min.
#include <algorithm>
#include <cfloat>
#include <cstring>

#include "quant/blocks_32.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kBlock = 32;

void pack_5bit(const uint8_t* q, BlockQ5_1* blk) {
  uint32_t high = 0;
  for (int j = 0; j < kBlock / 2; ++j) {
    blk->qs[j] = uint8_t((q[j] & 15) | ((q[j + kBlock / 2] & 15) << 4));
    high |= uint32_t(q[j] >> 4) << j;
    high |= uint32_t(q[j + kBlock / 2] >> 4) << (j + kBlock / 2);
  }
  std::memcpy(blk->qh, &high, 4);
}
}  // namespace

void quantize_q5_1(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q5_1", x, n, kBlock, importance);
  auto* y = static_cast<BlockQ5_1*>(vy);
  uint8_t q[kBlock], scratch[kBlock];
  if (!importance) {
    for (int64_t b = 0; b < n / kBlock; ++b, x += kBlock) {
      float lo = FLT_MAX, hi = -FLT_MAX;
      for (int i = 0; i < kBlock; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
      }
      const float d = (hi - lo) / 31;
      const float inv = d ? 1.0f / d : 0.0f;
      y[b].d = to_half(d);
      y[b].m = to_half(lo);
      for (int i = 0; i < kBlock; ++i) q[i] = uint8_t(std::min(31, int((x[i] - lo) * inv + 0.5f)));
      pack_5bit(q, &y[b]);
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
    const float d = fit_scale_min(kBlock, 31, x, w, q, &offset, scratch, {-0.9f, 0.05f, 36}, ErrorNorm::Squared);
    y[b].d = to_half(d);
    y[b].m = to_half(-offset);
    pack_5bit(q, &y[b]);
  }
}

void dequantize_q5_1(const void* vx, float* y, int64_t n) {
  check_dequantize_args("q5_1", n, kBlock);
  const auto* x = static_cast<const BlockQ5_1*>(vx);
  for (int64_t b = 0; b < n / kBlock; ++b, y += kBlock) {
    const float d = from_half(x[b].d), m = from_half(x[b].m);
    uint32_t high;
    std::memcpy(&high, x[b].qh, 4);
    for (int j = 0; j < kBlock / 2; ++j) {
      const int lo = (x[b].qs[j] & 15) | int((high >> j) & 1) << 4;
      const int hi = (x[b].qs[j] >> 4) | int((high >> (j + kBlock / 2)) & 1) << 4;
      y[j] = lo * d + m;
      y[j + kBlock / 2] = hi * d + m;
    }
  }
}

}  // namespace qforge::quant
