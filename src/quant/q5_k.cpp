// q5_K: 5-bit k-quant, super-blocks of 256 weights in 8 sub-blocks of 32 (ggml type 13).
//
// Block (176 bytes for 256 weights = 5.5 bits per weight):
//   bytes 0-1:    d, f16 super-scale of the sub-block scales
//   bytes 2-3:    dmin, f16 super-scale of the sub-block mins
//   bytes 4-15:   eight 6-bit scales and eight 6-bit mins (layout: pack_scales_mins_6bit)
//   bytes 16-47:  qh, the fifth bits: weight 64c + l sets bit 2c of byte l, weight 64c + 32 + l sets
//                 bit 2c + 1 of byte l (c = 0..3, l = 0..31)
//   bytes 48-175: qs, the low four bits, in q4_K's nibble layout
// Weight i of sub-block j = d * scale[j] * q[i] - dmin * min[j], q in 0..31.
//
// Quantization: as q4_K with a 0..31 grid; the plain search tries 16 candidate scales
// (llama.cpp's reference recipe), the importance-weighted one 37.
#include <cmath>
#include <cstring>

#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kSub = 32;
constexpr int kNumSub = kSuperBlock / kSub;
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kSuperBlock / 8];
  uint8_t qs[kSuperBlock / 2];
};
static_assert(sizeof(BlockQ5_K) == 176, "q5_K block must match ggml's block_q5_K");

void finish_block(const float* x, uint8_t* q, BlockQ5_K* out) {
  const float d = from_half(out->d), dmin = from_half(out->dmin);
  for (int j = 0; j < kNumSub; ++j) {
    uint8_t sc, mn;
    unpack_scale_min_6bit(out->scales, j, &sc, &mn);
    const float scale = d * sc;
    if (!scale) continue;
    const float offset = dmin * mn;
    for (int i = 0; i < kSub; ++i)
      q[kSub * j + i] = uint8_t(clamp_int(round_even((x[kSub * j + i] + offset) / scale), 0, 31));
  }
  std::memset(out->qh, 0, sizeof out->qh);
  for (int c = 0; c < kSuperBlock / 64; ++c) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      out->qs[32 * c + l] = uint8_t((lo & 15) | ((hi & 15) << 4));
      out->qh[l] |= uint8_t(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
    }
  }
}

void quantize_block_plain(const float* x, BlockQ5_K* out) {
  uint8_t q[kSuperBlock], scratch[kSub], scale_q[kNumSub], offset_q[kNumSub];
  float scales[kNumSub], offsets[kNumSub], w[kSub];
  float max_scale = 0, max_offset = 0;
  for (int j = 0; j < kNumSub; ++j) {
    const float* xs = x + kSub * j;
    const float rms = std::sqrt(sum_squares(xs, kSub) / kSub);
    for (int i = 0; i < kSub; ++i) w[i] = rms + std::fabs(xs[i]);
    scales[j] =
        fit_scale_min(kSub, 31, xs, w, q + kSub * j, &offsets[j], scratch, {-0.5f, 0.1f, 15}, ErrorNorm::Squared);
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

void quantize_block_weighted(const float* x, const float* importance, BlockQ5_K* out) {
  uint8_t q[kSuperBlock], scratch[kSub], scale_q[kNumSub], offset_q[kNumSub];
  float scales[kNumSub], offsets[kNumSub], sub_weight[kNumSub], w[kSub];
  const float sigma2 = 2 * sum_squares(x, kSuperBlock) / kSuperBlock;
  for (int j = 0; j < kNumSub; ++j) {
    importance_weights(x + kSub * j, importance + kSub * j, sigma2, kSub, w);
    sub_weight[j] = 0;
    for (int i = 0; i < kSub; ++i) sub_weight[j] += w[i];
    scales[j] = fit_scale_min(kSub, 31, x + kSub * j, w, q + kSub * j, &offsets[j], scratch, {-0.9f, 0.05f, 36},
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

void quantize_q5_k(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q5_k", x, n, kSuperBlock, importance);
  auto* y = static_cast<BlockQ5_K*>(vy);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    if (importance)
      quantize_block_weighted(x + b * kSuperBlock, importance + b * kSuperBlock, &y[b]);
    else
      quantize_block_plain(x + b * kSuperBlock, &y[b]);
  }
}

void dequantize_q5_k(const void* vx, float* y, int64_t n) {
  check_dequantize_args("q5_k", n, kSuperBlock);
  const auto* x = static_cast<const BlockQ5_K*>(vx);
  for (int64_t b = 0; b < n / kSuperBlock; ++b, y += kSuperBlock) {
    const float d = from_half(x[b].d), dmin = from_half(x[b].dmin);
    for (int c = 0; c < kSuperBlock / 64; ++c) {
      for (int half = 0; half < 2; ++half) {
        uint8_t sc, mn;
        unpack_scale_min_6bit(x[b].scales, 2 * c + half, &sc, &mn);
        const float scale = d * sc, offset = dmin * mn;
        for (int l = 0; l < 32; ++l) {
          const int q = ((x[b].qs[32 * c + l] >> (4 * half)) & 15) | (((x[b].qh[l] >> (2 * c + half)) & 1) << 4);
          y[64 * c + 32 * half + l] = scale * q - offset;
        }
      }
    }
  }
}

}  // namespace qforge::quant
