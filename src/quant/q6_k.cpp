// q6_K: 6-bit k-quant, super-blocks of 256 weights in 16 sub-blocks of 16 (ggml type 14).
//
// Block (210 bytes for 256 weights = 6.5625 bits per weight):
//   bytes 0-127:   ql, low four bits. Half h (0..1) of 128 weights uses bytes 64h .. 64h + 63:
//                  byte 64h + l holds weight 128h + l (bits 0-3) and 128h + l + 64 (bits 4-7),
//                  byte 64h + 32 + l holds weight 128h + l + 32 and 128h + l + 96 (l = 0..31)
//   bytes 128-191: qh, top two bits: byte 32h + l holds those of weights 128h + l, +32, +64, +96 in
//                  bit pairs 0-1, 2-3, 4-5, 6-7
//   bytes 192-207: scales, int8, one per sub-block of 16
//   bytes 208-209: d, f16 super-scale
// Weight i of sub-block j = d * scales[j] * (q[i] - 32), q in 0..63.
//
// Quantization: each sub-block's scale comes from fit_symmetric (weights x^2, or the importance values
// themselves when given, as llama.cpp does for this type); the 16 scales go on a signed 8-bit grid
// whose extreme (-128) is the scale of largest magnitude; every weight is re-rounded with the scale
// it will really get.
#include <cmath>
#include <cstring>

#include "quant/blocks_k.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kSub = 16;
constexpr int kNumSub = kSuperBlock / kSub;

void quantize_block(const float* x, const float* importance, BlockQ6_K* out) {
  uint8_t q[kSuperBlock];
  float scales[kNumSub], w[kSuperBlock];
  if (importance)
    std::memcpy(w, importance, sizeof w);
  else
    for (int i = 0; i < kSuperBlock; ++i) w[i] = x[i] * x[i];
  // Sub-blocks 0-7, then 8-15 (eight at a time: fit_symmetric_x8 runs them side by side).
  for (int j = 0; j < kNumSub; j += 8)
    fit_symmetric_x8(kSub, 32, x + kSub * j, w + kSub * j, q + kSub * j, scales + j);
  float amax = 0, peak = 0;
  for (int j = 0; j < kNumSub; ++j) {
    if (std::fabs(scales[j]) > amax) {
      amax = std::fabs(scales[j]);
      peak = scales[j];
    }
  }
  if (amax < kAllZeroLimit) {
    std::memset(out, 0, sizeof *out);
    return;
  }
  const float inv = -128 / peak;
  out->d = to_half(1 / inv);
  for (int j = 0; j < kNumSub; ++j) out->scales[j] = int8_t(clamp_int(round_even(inv * scales[j]), -128, 127));

  const float d = from_half(out->d);
  for (int j = 0; j < kNumSub; ++j) {
    const float scale = d * out->scales[j];
    if (!scale) continue;
    for (int i = 0; i < kSub; ++i)
      q[kSub * j + i] = uint8_t(clamp_int(round_even(x[kSub * j + i] / scale), -32, 31) + 32);
  }
  for (int h = 0; h < 2; ++h) {
    const uint8_t* src = q + 128 * h;
    for (int l = 0; l < 32; ++l) {
      out->ql[64 * h + l] = uint8_t((src[l] & 15) | ((src[l + 64] & 15) << 4));
      out->ql[64 * h + 32 + l] = uint8_t((src[l + 32] & 15) | ((src[l + 96] & 15) << 4));
      out->qh[32 * h + l] =
          uint8_t((src[l] >> 4) | ((src[l + 32] >> 4) << 2) | ((src[l + 64] >> 4) << 4) | ((src[l + 96] >> 4) << 6));
    }
  }
}
}  // namespace

void quantize_q6_k(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q6_k", x, n, kSuperBlock, importance);
  auto* y = static_cast<BlockQ6_K*>(vy);
  for (int64_t b = 0; b < n / kSuperBlock; ++b)
    quantize_block(x + b * kSuperBlock, importance ? importance + b * kSuperBlock : nullptr, &y[b]);
}

void dequantize_q6_k(const void* vx, float* y, int64_t n) {
  check_dequantize_args("q6_k", n, kSuperBlock);
  const auto* x = static_cast<const BlockQ6_K*>(vx);
  for (int64_t b = 0; b < n / kSuperBlock; ++b, y += kSuperBlock) {
    const float d = from_half(x[b].d);
    for (int i = 0; i < kSuperBlock; ++i) {
      const int h = i / 128, l = i % 32, quarter = (i % 128) / 32;  // quarter: which of +0/+32/+64/+96
      const uint8_t low_byte = x[b].ql[64 * h + 32 * (quarter & 1) + l];
      const int low = (low_byte >> (4 * (quarter >> 1))) & 15;
      const int high = (x[b].qh[32 * h + l] >> (2 * quarter)) & 3;
      y[i] = d * x[b].scales[i / kSub] * ((low | high << 4) - 32);
    }
  }
}

}  // namespace qforge::quant
