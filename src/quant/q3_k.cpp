// q3_K: 3-bit k-quant, super-blocks of 256 weights in 16 sub-blocks of 16 (ggml type 11).
//
// Block (110 bytes for 256 weights = 3.4375 bits per weight):
//   bytes 0-31:    hmask, the third bit: weight i sets bit i / 32 of byte i % 32
//   bytes 32-95:   qs, the low two bits, in q2_K's layout (two halves of 128; in half h, byte 32h + l
//                  holds weights 128h + l, +32, +64, +96 in bit pairs 0-1, 2-3, 4-5, 6-7)
//   bytes 96-107:  sixteen 6-bit sub-block scales s[j] (stored as s + 32): bytes 0-7 hold the low
//                  four bits, s[j] in the low nibble of byte j and s[j+8] in its high nibble; byte
//                  8 + j % 4 holds the top two bits of s[j] at bit 2 * (j / 4)
//   bytes 108-109: d, f16 super-scale
// Weight i of sub-block j = d * s[j] * (q[i] - 4), with q = low two bits + 4 * hmask bit (0..7).
//
// Quantization: each sub-block's scale comes from fit_symmetric_sweep (weights x^2, single-level
// refinement), the 16 scales go on a signed 6-bit grid whose extreme is the scale of largest
// magnitude, and every weight is re-rounded with the scale it will really get. With an importance
// vector the sub-block scales come from fit_symmetric with weights importance * sqrt(sigma2 + x^2)
// and the 6-bit grid is itself fitted by fit_symmetric weighted by each sub-block's total weight.
#include <cmath>
#include <cstring>

#include "quant/blocks_k.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kSub = 16;
constexpr int kNumSub = kSuperBlock / kSub;

// Stores sixteen 6-bit values (0..63) in the 12-byte layout above.
void pack_scales(const uint8_t* s, uint8_t* out) {
  std::memset(out, 0, 12);
  for (int j = 0; j < kNumSub; ++j) {
    out[j % 8] |= uint8_t((s[j] & 15) << (j < 8 ? 0 : 4));
    out[8 + j % 4] |= uint8_t((s[j] >> 4) << (2 * (j / 4)));
  }
}

// The signed scale of sub-block j (-32..31).
int unpack_scale(const uint8_t* in, int j) {
  const int low = j < 8 ? in[j] & 15 : in[j - 8] >> 4;
  const int high = (in[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | high << 4) - 32;
}

// Re-rounds every weight with the scale its sub-block stores, then writes hmask and qs. q holds the
// levels 0..7 found by the sub-block fits (kept for sub-blocks whose stored scale is zero).
void finish_block(const float* x, uint8_t* q, BlockQ3_K* out) {
  const float d = from_half(out->d);
  for (int j = 0; j < kNumSub; ++j) {
    const float scale = d * unpack_scale(out->scales, j);
    if (!scale) continue;
    for (int i = 0; i < kSub; ++i) q[kSub * j + i] = uint8_t(clamp_int(round_even(x[kSub * j + i] / scale), -4, 3) + 4);
  }
  std::memset(out->hmask, 0, sizeof out->hmask);
  for (int i = 0; i < kSuperBlock; ++i) {
    if (q[i] > 3) {
      out->hmask[i % 32] |= uint8_t(1 << (i / 32));
      q[i] -= 4;
    }
  }
  for (int h = 0; h < 2; ++h) {
    const uint8_t* src = q + 128 * h;
    for (int l = 0; l < 32; ++l)
      out->qs[32 * h + l] = uint8_t(src[l] | (src[l + 32] << 2) | (src[l + 64] << 4) | (src[l + 96] << 6));
  }
}

void quantize_block_plain(const float* x, BlockQ3_K* out) {
  uint8_t q[kSuperBlock], levels[kNumSub];
  float scales[kNumSub];
  float amax = 0, peak = 0;
  for (int j = 0; j < kNumSub; ++j) {
    scales[j] = fit_symmetric_sweep(kSub, 4, x + kSub * j, q + kSub * j);
    if (std::fabs(scales[j]) > amax) {
      amax = std::fabs(scales[j]);
      peak = scales[j];
    }
  }
  if (peak) {
    const float inv = -32 / peak;
    for (int j = 0; j < kNumSub; ++j) levels[j] = uint8_t(clamp_int(round_even(inv * scales[j]), -32, 31) + 32);
    pack_scales(levels, out->scales);
    out->d = to_half(1 / inv);
  } else {
    std::memset(out->scales, 0, sizeof out->scales);
    out->d = to_half(0.0f);
  }
  finish_block(x, q, out);
}

void quantize_block_weighted(const float* x, const float* importance, BlockQ3_K* out) {
  uint8_t q[kSuperBlock], levels[kNumSub];
  float scales[kNumSub], sub_weight[kNumSub], w[kSuperBlock];
  const float sigma2 = 2 * sum_squares(x, kSuperBlock) / kSuperBlock;
  sub_block_importance(x, importance, sigma2, kNumSub, kSub, w, sub_weight);
  for (int j = 0; j < kNumSub; j += 8)  // eight sub-blocks side by side
    fit_symmetric_x8(kSub, 4, x + kSub * j, w + kSub * j, q + kSub * j, scales + j);
  const float d = fit_symmetric(kNumSub, 32, scales, sub_weight, levels);
  pack_scales(levels, out->scales);
  out->d = to_half(d);
  finish_block(x, q, out);
}
}  // namespace

void quantize_q3_k(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q3_k", x, n, kSuperBlock, importance);
  auto* y = static_cast<BlockQ3_K*>(vy);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    if (importance)
      quantize_block_weighted(x + b * kSuperBlock, importance + b * kSuperBlock, &y[b]);
    else
      quantize_block_plain(x + b * kSuperBlock, &y[b]);
  }
}

void dequantize_q3_k(const void* vx, float* y, int64_t n) {
  check_dequantize_args("q3_k", n, kSuperBlock);
  const auto* x = static_cast<const BlockQ3_K*>(vx);
  for (int64_t b = 0; b < n / kSuperBlock; ++b, y += kSuperBlock) {
    const float d = from_half(x[b].d);
    for (int i = 0; i < kSuperBlock; ++i) {
      const int h = i / 128, pair = (i % 128) / 32;
      const int low = (x[b].qs[32 * h + i % 32] >> (2 * pair)) & 3;
      const int high = (x[b].hmask[i % 32] >> (i / 32)) & 1;
      const float scale = d * unpack_scale(x[b].scales, i / kSub);
      y[i] = scale * (low + 4 * high - 4);
    }
  }
}

}  // namespace qforge::quant
