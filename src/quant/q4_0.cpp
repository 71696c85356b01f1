// q4_0: 4-bit symmetric quantization in blocks of 32 (ggml type 2).
//
// Block layout: BlockQ4_0 in quant/blocks_32.h.
//
// Without importance: the weight of largest magnitude m is mapped to -8 (d = m / -8), which uses the
// grid's extra negative level for whichever sign m has; q = floor(x / d + 8.5) capped at 15 — ggml's
// reference rule, so the bytes match llama.cpp's. With importance: a weighted least-squares scale
// search (fit_symmetric), as llama.cpp does when given an importance matrix.
#include <cmath>
#include <cstring>

#include "quant/blocks_32.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kBlock = 32;

void pack_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < kBlock / 2; ++j) qs[j] = uint8_t(q[j] | (q[j + kBlock / 2] << 4));
}
}  // namespace

void quantize_q4_0(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q4_0", x, n, kBlock, importance);
  auto* y = static_cast<BlockQ4_0*>(vy);
  uint8_t q[kBlock];
  if (!importance) {
    for (int64_t b = 0; b < n / kBlock; ++b, x += kBlock) {
      float amax = 0, peak = 0;
      for (int i = 0; i < kBlock; ++i)
        if (std::fabs(x[i]) > amax) {
          amax = std::fabs(x[i]);
          peak = x[i];
        }
      const float d = peak / -8;
      const float inv = d ? 1.0f / d : 0.0f;
      y[b].d = to_half(d);
      // x * inv lies in [-8, 8]; +8.5 then truncation rounds to the nearest level.
      for (int i = 0; i < kBlock; ++i) q[i] = uint8_t(std::min(15, int(x[i] * inv + 8.5f)));
      pack_nibbles(q, y[b].qs);
    }
    return;
  }
  float sum_x2 = 0;
  for (int64_t i = 0; i < n; ++i) sum_x2 += x[i] * x[i];
  const float sigma2 = sum_x2 / float(n);
  fit_symmetric_blocks(x, importance, sigma2, n / kBlock, 8, [&](int64_t b, float scale, const uint8_t* q) {
    y[b].d = to_half(scale);
    pack_nibbles(q, y[b].qs);
  });
}

void dequantize_q4_0(const void* vx, float* y, int64_t n) {
  check_dequantize_args("q4_0", n, kBlock);
  const auto* x = static_cast<const BlockQ4_0*>(vx);
  for (int64_t b = 0; b < n / kBlock; ++b, y += kBlock) {
    const float d = from_half(x[b].d);
    for (int j = 0; j < kBlock / 2; ++j) {
      y[j] = ((x[b].qs[j] & 15) - 8) * d;
      y[j + kBlock / 2] = ((x[b].qs[j] >> 4) - 8) * d;
    }
  }
}

}  // namespace qforge::quant
