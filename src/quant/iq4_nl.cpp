// iq4_nl: 4-bit non-linear quantization in blocks of 32 (ggml type 20).
//
// Block layout: BlockIQ4_NL in quant/blocks_32.h.
//
// Quantization (the search llama.cpp's quantize_iq4_nl runs, so the bytes match it): the weight of
// largest magnitude m is first put on the level -127 (d = m / 127); every weight then takes its
// nearest level and d is refitted by weighted least squares. Then 15 inverse scales
// (-127 + k) / m, k = -7..7, are tried the same way, keeping the d with the smallest weighted
// error. Finally every weight takes its nearest level under the chosen d. Weights: x^2, or with an
// importance vector importance * sqrt(sigma2 + x^2) (sigma2: twice the block's mean square).
#include <cmath>

#include "quant/blocks_32.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kBlock = 32;
constexpr const float* kLevels = kIQ4NLLevels;  // the 16 levels, ascending

// Weighted normal-equation sums when every weight takes its nearest level at inverse scale `inv`.
void level_sums(const float* x, const float* w, float inv, float* sum_wqx, float* sum_wqq) {
  float sqx = 0, sqq = 0;
  for (int i = 0; i < kBlock; ++i) {
    const float level = kLevels[nearest_code_index(kLevels, 16, inv * x[i])];
    sqx += w[i] * level * x[i];
    sqq += w[i] * level * level;
  }
  *sum_wqx = sqx;
  *sum_wqq = sqq;
}

void quantize_block(const float* x, const float* importance, BlockIQ4_NL* out) {
  float w[kBlock];
  if (importance) {
    const float sigma2 = sum_squares(x, kBlock) * (2.0f / kBlock);
    importance_weights(x, importance, sigma2, kBlock, w);
  } else {
    for (int i = 0; i < kBlock; ++i) w[i] = x[i] * x[i];
  }
  float amax = 0, peak = 0;
  for (int i = 0; i < kBlock; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      peak = x[i];
    }
  float d = 0;
  if (amax >= kAllZeroLimit) {
    float sqx, sqq;
    level_sums(x, w, 1 / (peak / -kLevels[0]), &sqx, &sqq);
    d = sqq > 0 ? sqx / sqq : 0.0f;
    float best = d * sqx;  // sum w*x^2 minus the weighted squared error at the least-squares d
    for (int k = -7; k <= 7; ++k) {
      level_sums(x, w, (k + kLevels[0]) / peak, &sqx, &sqq);
      if (sqq > 0 && sqx * sqx > best * sqq) {
        d = sqx / sqq;
        best = d * sqx;
      }
    }
  }
  out->d = to_half(d);
  const float inv = d ? 1 / d : 0.0f;
  uint8_t q[kBlock];
  for (int i = 0; i < kBlock; ++i) q[i] = uint8_t(nearest_code_index(kLevels, 16, inv * x[i]));
  for (int j = 0; j < kBlock / 2; ++j) out->qs[j] = uint8_t(q[j] | (q[j + kBlock / 2] << 4));
}
}  // namespace

void quantize_iq4_nl(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("iq4_nl", x, n, kBlock, importance);
  auto* y = static_cast<BlockIQ4_NL*>(vy);
  for (int64_t b = 0; b < n / kBlock; ++b)
    quantize_block(x + b * kBlock, importance ? importance + b * kBlock : nullptr, &y[b]);
}

void dequantize_iq4_nl(const void* vx, float* y, int64_t n) {
  check_dequantize_args("iq4_nl", n, kBlock);
  const auto* x = static_cast<const BlockIQ4_NL*>(vx);
  for (int64_t b = 0; b < n / kBlock; ++b, y += kBlock) {
    const float d = from_half(x[b].d);
    for (int j = 0; j < kBlock / 2; ++j) {
      y[j] = d * kLevels[x[b].qs[j] & 15];
      y[j + kBlock / 2] = d * kLevels[x[b].qs[j] >> 4];
    }
  }
}

}  // namespace qforge::quant
