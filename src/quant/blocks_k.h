// The storage blocks of the k-quant types (q2_K, q3_K, q4_K, q5_K, q6_K), shared by their quantizers
// (src/quant/<type>.cpp) and their integer kernels (src/kernels/kernels_qk_*.cpp).
//
// Byte layouts are ggml's (llama.cpp's block_<type> structs), so GGUF files round-trip unchanged.
// Every field is little-endian; the f16 scales are IEEE half floats stored as raw bits. The structs
// hold only 1- and 2-byte fields, so a block needs 2-byte alignment and blocks pack with no padding.
//
// Every type is a super-block of 256 weights cut into sub-blocks (16 of 16 weights, or 8 of 32) that
// each carry a small integer scale (and, for the affine types, a min) on top of the f16 super-scales.
//
// Two bit-packings recur:
//   "2-bit planes" (q2_K's qs, q3_K's qs, q6_K's qh): the super-block is two halves of 128 weights;
//     in half h, byte 32h + l holds weights 128h + l, +32, +64, +96 (l = 0..31) in bit pairs 0-1,
//     2-3, 4-5, 6-7.
//   "nibble chunks" (q4_K's and q5_K's qs): chunk c (0..3) of 64 weights is bytes 32c .. 32c + 31;
//     byte l holds weight 64c + l in bits 0-3 and weight 64c + 32 + l in bits 4-7.
#pragma once
#include <cstdint>
#include <cstring>

namespace qforge::quant {

inline constexpr int kBlockK = 256;  // weights per k-quant super-block (quant_util.h: kSuperBlock)

// q2_K (ggml type 10). 84 bytes for 256 weights = 2.625 bits per weight:
//   bytes 0-15:  scales[j] for sub-block j of 16 weights: bits 0-3 = scale level, bits 4-7 = min level
//   bytes 16-79: qs, 2-bit codes in the 2-bit planes layout
//   bytes 80-81: d, f16 super-scale of the scale levels
//   bytes 82-83: dmin, f16 super-scale of the min levels
// Weight i of sub-block j = d * (scales[j] & 15) * q[i] - dmin * (scales[j] >> 4), q in 0..3.
struct BlockQ2_K {
  uint8_t scales[16];
  uint8_t qs[64];
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84, "q2_K block must match ggml's block_q2_K");

// q3_K (ggml type 11). 110 bytes for 256 weights = 3.4375 bits per weight:
//   bytes 0-31:    hmask, the third bit: weight i sets bit i / 32 of byte i % 32
//   bytes 32-95:   qs, the low two bits, in the 2-bit planes layout
//   bytes 96-107:  sixteen 6-bit sub-block scales s[j] (stored as s + 32): bytes 0-7 hold the low
//                  four bits, s[j] in the low nibble of byte j and s[j+8] in its high nibble; byte
//                  8 + j % 4 holds the top two bits of s[j] at bit 2 * (j / 4)
//   bytes 108-109: d, f16 super-scale
// Weight i of sub-block j (16 weights) = d * s[j] * (q[i] - 4), q = low two bits + 4 * hmask bit.
struct BlockQ3_K {
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110, "q3_K block must match ggml's block_q3_K");

// q4_K (ggml type 12). 144 bytes for 256 weights = 4.5 bits per weight:
//   bytes 0-1:    d, f16 super-scale of the sub-block scales
//   bytes 2-3:    dmin, f16 super-scale of the sub-block mins
//   bytes 4-15:   eight 6-bit scales and eight 6-bit mins (layout: unpack_scales_mins_6bit below)
//   bytes 16-143: qs, 4-bit codes in the nibble chunks layout
// Weight i of sub-block j (32 weights) = d * scale[j] * q[i] - dmin * min[j], q in 0..15.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ4_K) == 144, "q4_K block must match ggml's block_q4_K");

// q5_K (ggml type 13). 176 bytes for 256 weights = 5.5 bits per weight:
//   bytes 0-1:    d, f16 super-scale of the sub-block scales
//   bytes 2-3:    dmin, f16 super-scale of the sub-block mins
//   bytes 4-15:   eight 6-bit scales and eight 6-bit mins (as q4_K)
//   bytes 16-47:  qh, the fifth bits: weight 64c + l sets bit 2c of byte l, weight 64c + 32 + l sets
//                 bit 2c + 1 of byte l (c = 0..3, l = 0..31)
//   bytes 48-175: qs, the low four bits, in the nibble chunks layout
// Weight i of sub-block j (32 weights) = d * scale[j] * q[i] - dmin * min[j], q in 0..31.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ5_K) == 176, "q5_K block must match ggml's block_q5_K");

// q6_K (ggml type 14). 210 bytes for 256 weights = 6.5625 bits per weight:
//   bytes 0-127:   ql, low four bits. Half h (0..1) of 128 weights uses bytes 64h .. 64h + 63:
//                  byte 64h + l holds weight 128h + l (bits 0-3) and 128h + l + 64 (bits 4-7),
//                  byte 64h + 32 + l holds weight 128h + l + 32 and 128h + l + 96 (l = 0..31)
//   bytes 128-191: qh, top two bits, in the 2-bit planes layout
//   bytes 192-207: scales, int8, one per sub-block of 16
//   bytes 208-209: d, f16 super-scale
// Weight i of sub-block j = d * scales[j] * (q[i] - 32), q in 0..63.
struct BlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210, "q6_K block must match ggml's block_q6_K");

// ---- scale unpacking -----------------------------------------------------------------------------

// q4_K / q5_K: the 12 scale bytes hold eight 6-bit scales and eight 6-bit mins:
//   bytes 0-3:  bits 0-5 = scale[0..3],  bits 6-7 = bits 4-5 of scale[4..7]
//   bytes 4-7:  bits 0-5 = min[0..3],    bits 6-7 = bits 4-5 of min[4..7]
//   bytes 8-11: bits 0-3 = bits 0-3 of scale[4..7], bits 4-7 = bits 0-3 of min[4..7]
// All sixteen at once with 32-bit word operations: scales[j] and mins[j] for j = 0..7.
inline void unpack_scales_mins_6bit(const uint8_t* in12, uint8_t* scales, uint8_t* mins) {
  uint32_t w[3];
  std::memcpy(w, in12, 12);
  const uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, top2 = 0x03030303u;
  const uint32_t sc_lo = w[0] & low6, mn_lo = w[1] & low6;
  const uint32_t sc_hi = (w[2] & low4) | (((w[0] >> 6) & top2) << 4);
  const uint32_t mn_hi = ((w[2] >> 4) & low4) | (((w[1] >> 6) & top2) << 4);
  std::memcpy(scales, &sc_lo, 4);
  std::memcpy(scales + 4, &sc_hi, 4);
  std::memcpy(mins, &mn_lo, 4);
  std::memcpy(mins + 4, &mn_hi, 4);
}

// q3_K: the sixteen signed scales s[j] (-32..31) from the 12 bytes described at BlockQ3_K.
inline void unpack_q3_k_scales(const uint8_t* in12, int8_t* s) {
  uint32_t w[3];
  std::memcpy(w, in12, 12);
  const uint32_t low4 = 0x0f0f0f0fu, top2 = 0x03030303u;
  // Byte k of word (j / 4) of the result is s[j]; the top bits of s[4q + k] sit at bit 2q of byte
  // 8 + k, i.e. bits 2q..2q+1 of each byte of w[2].
  const uint32_t out[4] = {
      (w[0] & low4) | ((w[2] & top2) << 4),
      (w[1] & low4) | (((w[2] >> 2) & top2) << 4),
      ((w[0] >> 4) & low4) | (((w[2] >> 4) & top2) << 4),
      ((w[1] >> 4) & low4) | (((w[2] >> 6) & top2) << 4),
  };
  uint8_t u[16];
  std::memcpy(u, out, 16);
  for (int j = 0; j < 16; ++j) s[j] = int8_t(int(u[j]) - 32);
}

}  // namespace qforge::quant
