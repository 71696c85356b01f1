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

#include "quant/blocks_k.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kSub = 32;
constexpr int kNumSub = kSuperBlock / kSub;

void quantize_block(const float* x, const float* importance, BlockQ4_K* out) {
  uint8_t q[kSuperBlock];
  fit_scale_min_superblock(x, importance, 15, {-1.0f, 0.1f, 20}, &out->d, &out->dmin, out->scales, q);
  for (int c = 0; c < kSuperBlock / 64; ++c)
    for (int l = 0; l < 32; ++l) out->qs[32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}
}  // namespace

void quantize_q4_k(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q4_k", x, n, kSuperBlock, importance);
  auto* y = static_cast<BlockQ4_K*>(vy);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    quantize_block(x + b * kSuperBlock, importance ? importance + b * kSuperBlock : nullptr, &y[b]);
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
