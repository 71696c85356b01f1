// q5_0: 5-bit symmetric quantization in blocks of 32 (ggml type 6).
//
// Block layout: BlockQ5_0 in quant/blocks_32.h.
//
// Without importance: d = m / -16 for the weight m of largest magnitude and q = floor(x / d + 16.5)
// capped at 31 (ggml's reference rule; identical bytes). With importance: weighted scale search.
#include <cmath>
#include <cstring>

#include "quant/blocks_32.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kBlock = 32;

void pack_5bit(const uint8_t* q, BlockQ5_0* blk) {
  uint32_t high = 0;
  for (int j = 0; j < kBlock / 2; ++j) {
    blk->qs[j] = uint8_t((q[j] & 15) | ((q[j + kBlock / 2] & 15) << 4));
    high |= uint32_t(q[j] >> 4) << j;
    high |= uint32_t(q[j + kBlock / 2] >> 4) << (j + kBlock / 2);
  }
  std::memcpy(blk->qh, &high, 4);
}
}  // namespace

void quantize_q5_0(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q5_0", x, n, kBlock, importance);
  auto* y = static_cast<BlockQ5_0*>(vy);
  uint8_t q[kBlock];
  if (!importance) {
    for (int64_t b = 0; b < n / kBlock; ++b, x += kBlock) {
      float amax = 0, peak = 0;
      for (int i = 0; i < kBlock; ++i)
        if (std::fabs(x[i]) > amax) {
          amax = std::fabs(x[i]);
          peak = x[i];
        }
      const float d = peak / -16;
      const float inv = d ? 1.0f / d : 0.0f;
      y[b].d = to_half(d);
      for (int i = 0; i < kBlock; ++i) q[i] = uint8_t(std::min(31, int(x[i] * inv + 16.5f)));
      pack_5bit(q, &y[b]);
    }
    return;
  }
  float sum_x2 = 0;
  for (int64_t i = 0; i < n; ++i) sum_x2 += x[i] * x[i];
  const float sigma2 = sum_x2 / float(n);
  fit_symmetric_blocks(x, importance, sigma2, n / kBlock, 16, [&](int64_t b, float scale, const uint8_t* q) {
    y[b].d = to_half(scale);
    pack_5bit(q, &y[b]);
  });
}

void dequantize_q5_0(const void* vx, float* y, int64_t n) {
  check_dequantize_args("q5_0", n, kBlock);
  const auto* x = static_cast<const BlockQ5_0*>(vx);
  for (int64_t b = 0; b < n / kBlock; ++b, y += kBlock) {
    const float d = from_half(x[b].d);
    uint32_t high;
    std::memcpy(&high, x[b].qh, 4);
    for (int j = 0; j < kBlock / 2; ++j) {
      const int lo = (x[b].qs[j] & 15) | int((high >> j) & 1) << 4;
      const int hi = (x[b].qs[j] >> 4) | int((high >> (j + kBlock / 2)) & 1) << 4;
      y[j] = (lo - 16) * d;
      y[j + kBlock / 2] = (hi - 16) * d;
    }
  }
}

}  // namespace qforge::quant
