// q4_K: 4-bit k-quant, super-blocks of 256 weights in 8 sub-blocks of 32 (ggml type 12).
//
// Block (144 bytes for 256 weights = 4.5 bits per weight):
//   bytes 0-1:    d, f16 super-scale of the sub-block scales
//   bytes 2-3:    dmin, f16 super-scale of the sub-block mins
//   bytes 4-15:   eight 6-bit scales and eight 6-bit mins (layout: pack_scales_mins_6bit)
//   bytes 16-143: qs, nibbles. Chunk c (0..3) of 64 weights uses bytes 16 + 32c .. 16 + 32c + 31:
//                 byte l holds weight 64c + l in bits 0-3 and weight 64c + 32 + l in bits 4-7
// Weight i of sub-block j = d * scale[j] * q[i] - dmin * min[j], q in 0..15.
//
// Quantization: each sub-block's (scale, min) comes from fit_scale_min with weights
// sqrt(mean x^2) + |x| (21 candidate scales, llama.cpp's reference recipe); the 8 scales and 8 mins
// go on 6-bit grids topped by their largest value; every weight is re-rounded with the scale and min
// it will really get. With an importance vector: weights importance * sqrt(sigma2 + x^2), 37
// candidates, and the 6-bit grids fitted by fit_positive_levels weighted by each sub-block's weight.
#include <cmath>

#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kSub = 32;
constexpr int kNumSub = kSuperBlock / kSub;
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kSuperBlock / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "q4_K block must match ggml's block_q4_K");

void finish_block(const float* x, uint8_t* q, BlockQ4_K* out) {
  const float d = from_half(out->d), dmin = from_half(out->dmin);
  for (int j = 0; j < kNumSub; ++j) {
    uint8_t sc, mn;
    unpack_scale_min_6bit(out->scales, j, &sc, &mn);
    const float scale = d * sc;
    if (!scale) continue;
    const float offset = dmin * mn;
    for (int i = 0; i < kSub; ++i)
      q[kSub * j + i] = uint8_t(clamp_int(round_even((x[kSub * j + i] + offset) / scale), 0, 15));
  }
  for (int c = 0; c < kSuperBlock / 64; ++c)
    for (int l = 0; l < 32; ++l) out->qs[32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

void quantize_block_plain(const float* x, BlockQ4_K* out) {
  uint8_t q[kSuperBlock], scratch[kSub], scale_q[kNumSub], offset_q[kNumSub];
  float scales[kNumSub], offsets[kNumSub], w[kSub];
  float max_scale = 0, max_offset = 0;
  for (int j = 0; j < kNumSub; ++j) {
    const float* xs = x + kSub * j;
    const float rms = std::sqrt(sum_squares(xs, kSub) / kSub);
    for (int i = 0; i < kSub; ++i) w[i] = rms + std::fabs(xs[i]);
    scales[j] =
        fit_scale_min(kSub, 15, xs, w, q + kSub * j, &offsets[j], scratch, {-1.0f, 0.1f, 20}, ErrorNorm::Squared);
    max_scale = std::max(max_scale, scales[j]);
    max_offset = std::max(max_offset, offsets[j]);
  }
  const float inv_scale = max_scale > 0 ? 63 / max_scale : 0.0f;
  const float inv_offset = max_offset > 0 ? 63 / max_offset : 0.0f;
  for (int j = 0; j < kNumSub; ++j) {
    scale_q[j] = uint8_t(clamp_int(round_even(inv_scale * scales[j]), 0, 63));
    offset_q[j] = uint8_t(clamp_int(round_even(inv_offset * offsets[j]), 0, 63));
  }
  pack_scales_mins_6bit(scale_q, offset_q, out->scales);
  out->d = to_half(max_scale / 63);
  out->dmin = to_half(max_offset / 63);
  finish_block(x, q, out);
}

void quantize_block_weighted(const float* x, const float* importance, BlockQ4_K* out) {
  uint8_t q[kSuperBlock], scratch[kSub], scale_q[kNumSub], offset_q[kNumSub];
  float scales[kNumSub], offsets[kNumSub], sub_weight[kNumSub], w[kSub];
  const float sigma2 = 2 * sum_squares(x, kSuperBlock) / kSuperBlock;
  for (int j = 0; j < kNumSub; ++j) {
    importance_weights(x + kSub * j, importance + kSub * j, sigma2, kSub, w);
    sub_weight[j] = 0;
    for (int i = 0; i < kSub; ++i) sub_weight[j] += w[i];
    scales[j] = fit_scale_min(kSub, 15, x + kSub * j, w, q + kSub * j, &offsets[j], scratch, {-0.9f, 0.05f, 36},
                              ErrorNorm::Squared);
  }
  const float d = fit_positive_levels(kNumSub, 63, scales, sub_weight, scale_q);
  const float dmin = fit_positive_levels(kNumSub, 63, offsets, sub_weight, offset_q);
  pack_scales_mins_6bit(scale_q, offset_q, out->scales);
  out->d = to_half(d);
  out->dmin = to_half(dmin);
  finish_block(x, q, out);
}
}  // namespace

void quantize_q4_k(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q4_k", x, n, kSuperBlock, importance);
  auto* y = static_cast<BlockQ4_K*>(vy);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    if (importance)
      quantize_block_weighted(x + b * kSuperBlock, importance + b * kSuperBlock, &y[b]);
    else
      quantize_block_plain(x + b * kSuperBlock, &y[b]);
  }
}

void dequantize_q4_k(const void* vx, float* y, int64_t n) {
  check_dequantize_args("q4_k", n, kSuperBlock);
  const auto* x = static_cast<const BlockQ4_K*>(vx);
  for (int64_t b = 0; b < n / kSuperBlock; ++b, y += kSuperBlock) {
    const float d = from_half(x[b].d), dmin = from_half(x[b].dmin);
    for (int c = 0; c < kSuperBlock / 64; ++c) {
      for (int half = 0; half < 2; ++half) {
        uint8_t sc, mn;
        unpack_scale_min_6bit(x[b].scales, 2 * c + half, &sc, &mn);
        const float scale = d * sc, offset = dmin * mn;
        for (int l = 0; l < 32; ++l) {
          const int q = (x[b].qs[32 * c + l] >> (4 * half)) & 15;
          y[64 * c + 32 * half + l] = scale * q - offset;
        }
      }
    }
  }
}

}  // namespace qforge::quant
