// q2_K: 2-bit k-quant, super-blocks of 256 weights in 16 sub-blocks of 16 (ggml type 10).
//
// Block (84 bytes for 256 weights = 2.625 bits per weight):
//   bytes 0-15:  scales[j] for sub-block j: bits 0-3 = scale level, bits 4-7 = min level
//   bytes 16-79: qs, 2-bit quants. The super-block is two halves of 128; in half h, byte 32h + l
//                holds weight 128h + l in bits 0-1, 128h + l + 32 in bits 2-3, 128h + l + 64 in
//                bits 4-5 and 128h + l + 96 in bits 6-7 (l = 0..31)
//   bytes 80-81: d, f16 super-scale of the scale levels
//   bytes 82-83: dmin, f16 super-scale of the min levels
// Weight i of sub-block j = d * (scales[j] & 15) * q[i] - dmin * (scales[j] >> 4), q in 0..3.
//
// Quantization: each sub-block's (scale, min) is found by fit_scale_min (16 candidate scales,
// weighted by |x| under absolute error, as llama.cpp's reference does), the 16 scales and 16 mins are
// put on 4-bit grids, and every weight is then re-rounded with the scale and min it will really get.
// With an importance vector the sub-block search uses weights importance * sqrt(sigma2 + x^2), squared
// error and 37 candidates, and the 4-bit grids are fitted by fit_positive_levels.
#include <cmath>
#include <cstring>

#include "quant/blocks_k.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kSub = 16;
constexpr int kNumSub = kSuperBlock / kSub;

// Packs 256 2-bit values into the 64-byte qs layout described above.
void pack_2bit(const uint8_t* q, uint8_t* qs) {
  for (int h = 0; h < 2; ++h) {
    const uint8_t* src = q + 128 * h;
    for (int l = 0; l < 32; ++l)
      qs[32 * h + l] = uint8_t(src[l] | (src[l + 32] << 2) | (src[l + 64] << 4) | (src[l + 96] << 6));
  }
}

// Re-rounds every weight with the scale and min its sub-block actually stores.
void requantize(const float* x, const BlockQ2_K& blk, uint8_t* q) {
  const float d = from_half(blk.d), dmin = from_half(blk.dmin);
  for (int j = 0; j < kNumSub; ++j) {
    const float scale = d * (blk.scales[j] & 15);
    if (!scale) continue;  // keep the levels of the sub-block fit
    const float offset = dmin * (blk.scales[j] >> 4);
    for (int i = 0; i < kSub; ++i)
      q[kSub * j + i] = uint8_t(clamp_int(round_even((x[kSub * j + i] + offset) / scale), 0, 3));
  }
}

void quantize_block_plain(const float* x, BlockQ2_K* out) {
  uint8_t q[kSuperBlock];
  float scales[kNumSub], offsets[kNumSub], w[kSuperBlock];
  float max_scale = 0, max_offset = 0;
  for (int i = 0; i < kSuperBlock; ++i) w[i] = std::fabs(x[i]);
  for (int j = 0; j < kNumSub; j += 8)  // eight sub-blocks side by side
    fit_scale_min_x8(kSub, 3, x + kSub * j, w + kSub * j, q + kSub * j, scales + j, offsets + j, {-0.5f, 0.1f, 15},
                     ErrorNorm::Absolute);
  for (int j = 0; j < kNumSub; ++j) {
    max_scale = std::max(max_scale, scales[j]);
    max_offset = std::max(max_offset, offsets[j]);
  }
  // Scales and mins on 4-bit grids whose top level is the largest value.
  std::memset(out->scales, 0, sizeof out->scales);
  out->d = to_half(0.0f);
  out->dmin = to_half(0.0f);
  if (max_scale > 0) {
    const float inv = 15 / max_scale;
    for (int j = 0; j < kNumSub; ++j) out->scales[j] = uint8_t(clamp_int(round_even(inv * scales[j]), 0, 15));
    out->d = to_half(max_scale / 15);
  }
  if (max_offset > 0) {
    const float inv = 15 / max_offset;
    for (int j = 0; j < kNumSub; ++j) out->scales[j] |= uint8_t(clamp_int(round_even(inv * offsets[j]), 0, 15) << 4);
    out->dmin = to_half(max_offset / 15);
  }
  requantize(x, *out, q);
  pack_2bit(q, out->qs);
}

void quantize_block_weighted(const float* x, const float* importance, BlockQ2_K* out) {
  uint8_t q[kSuperBlock], scale_q[kNumSub], offset_q[kNumSub];
  float scales[kNumSub], offsets[kNumSub], sub_weight[kNumSub], w[kSuperBlock];
  const float sigma2 = sum_squares(x, kSuperBlock) / kSuperBlock;
  sub_block_importance(x, importance, sigma2, kNumSub, kSub, w, sub_weight);
  for (int j = 0; j < kNumSub; j += 8)
    fit_scale_min_x8(kSub, 3, x + kSub * j, w + kSub * j, q + kSub * j, scales + j, offsets + j, {-0.9f, 0.05f, 36},
                     ErrorNorm::Squared);
  out->d = to_half(fit_positive_levels(kNumSub, 15, scales, sub_weight, scale_q));
  out->dmin = to_half(fit_positive_levels(kNumSub, 15, offsets, sub_weight, offset_q));
  for (int j = 0; j < kNumSub; ++j) out->scales[j] = uint8_t(scale_q[j] | (offset_q[j] << 4));
  requantize(x, *out, q);
  pack_2bit(q, out->qs);
}
}  // namespace

void quantize_q2_k(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q2_k", x, n, kSuperBlock, importance);
  auto* y = static_cast<BlockQ2_K*>(vy);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    if (importance)
      quantize_block_weighted(x + b * kSuperBlock, importance + b * kSuperBlock, &y[b]);
    else
      quantize_block_plain(x + b * kSuperBlock, &y[b]);
  }
}

void dequantize_q2_k(const void* vx, float* y, int64_t n) {
  check_dequantize_args("q2_k", n, kSuperBlock);
  const auto* x = static_cast<const BlockQ2_K*>(vx);
  for (int64_t b = 0; b < n / kSuperBlock; ++b, y += kSuperBlock) {
    const float d = from_half(x[b].d), dmin = from_half(x[b].dmin);
    for (int i = 0; i < kSuperBlock; ++i) {
      // Weight i sits in half i / 128, byte (i % 32) of that half, bit pair (i % 128) / 32.
      const int h = i / 128, pair = (i % 128) / 32;
      const int q = (x[b].qs[32 * h + i % 32] >> (2 * pair)) & 3;
      const uint8_t sc = x[b].scales[i / kSub];
      y[i] = d * (sc & 15) * q - dmin * (sc >> 4);
    }
  }
}

}  // namespace qforge::quant
