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

#include "quant/blocks_k.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kSub = 32;
constexpr int kNumSub = kSuperBlock / kSub;

void quantize_block(const float* x, const float* importance, BlockQ5_K* out) {
  uint8_t q[kSuperBlock];
  fit_scale_min_superblock(x, importance, 31, {-0.5f, 0.1f, 15}, &out->d, &out->dmin, out->scales, q);
  std::memset(out->qh, 0, sizeof out->qh);
  for (int c = 0; c < kSuperBlock / 64; ++c) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      out->qs[32 * c + l] = uint8_t((lo & 15) | ((hi & 15) << 4));
      out->qh[l] |= uint8_t(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
    }
  }
}
}  // namespace

void quantize_q5_k(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q5_k", x, n, kSuperBlock, importance);
  auto* y = static_cast<BlockQ5_K*>(vy);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    quantize_block(x + b * kSuperBlock, importance ? importance + b * kSuperBlock : nullptr, &y[b]);
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
