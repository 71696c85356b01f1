// The storage blocks of the 32-weight block types (q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl), shared by
// their quantizers (src/quant/<type>.cpp) and their integer kernels (src/kernels/kernels_q32_*.cpp).
//
// Byte layouts are ggml's (llama.cpp's block_<type> structs), so GGUF files round-trip unchanged.
// Every field is little-endian; the f16 scales are IEEE half floats stored as raw bits. The structs
// hold only 1- and 2-byte fields, so a block needs 2-byte alignment and blocks pack with no padding.
//
// Nibble packing, common to every 4- and 5-bit type here: byte j of qs holds the low 4 bits of code
// j in bits 0-3 and those of code j+16 in bits 4-7 (so the low nibbles are codes 0-15 and the high
// nibbles codes 16-31, not interleaved pairs).
#pragma once
#include <cstdint>

namespace qforge::quant {

inline constexpr int kBlock32 = 32;  // weights per block, every type in this file

// q8_0 (ggml type 8). 34 bytes for 32 weights = 8.5 bits per weight:
//   bytes 0-1:  d, f16 scale
//   bytes 2-33: q[0..31], int8; weight i = d * q[i]
struct BlockQ8_0 {
  uint16_t d;
  int8_t q[kBlock32];
};
static_assert(sizeof(BlockQ8_0) == 34, "q8_0 block must match ggml's block_q8_0");

// q4_0 (ggml type 2). 18 bytes for 32 weights = 4.5 bits per weight:
//   bytes 0-1:  d, f16 scale
//   bytes 2-17: 16 bytes of nibbles; byte j holds q[j] in bits 0-3 and q[j+16] in bits 4-7
// Weight i = d * (q[i] - 8), q in 0..15.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kBlock32 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "q4_0 block must match ggml's block_q4_0");

// q4_1 (ggml type 3). 20 bytes for 32 weights = 5 bits per weight:
//   bytes 0-1:  d, f16 scale
//   bytes 2-3:  m, f16 min
//   bytes 4-19: nibbles; byte j holds q[j] in bits 0-3 and q[j+16] in bits 4-7
// Weight i = d * q[i] + m, q in 0..15.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kBlock32 / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "q4_1 block must match ggml's block_q4_1");

// q5_0 (ggml type 6). 22 bytes for 32 weights = 5.5 bits per weight:
//   bytes 0-1:   d, f16 scale
//   bytes 2-5:   qh, u32 little-endian: bit i = bit 4 of q[i]
//   bytes 6-21:  low nibbles; byte j holds bits 0-3 of q[j] (bits 0-3) and of q[j+16] (bits 4-7)
// Weight i = d * (q[i] - 16), q in 0..31.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kBlock32 / 2];
};
static_assert(sizeof(BlockQ5_0) == 22, "q5_0 block must match ggml's block_q5_0");

// q5_1 (ggml type 7). 24 bytes for 32 weights = 6 bits per weight:
//   bytes 0-1:   d, f16 scale
//   bytes 2-3:   m, f16 min
//   bytes 4-7:   qh, u32 little-endian: bit i = bit 4 of q[i]
//   bytes 8-23:  low nibbles; byte j holds bits 0-3 of q[j] (bits 0-3) and of q[j+16] (bits 4-7)
// Weight i = d * q[i] + m, q in 0..31.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kBlock32 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24, "q5_1 block must match ggml's block_q5_1");

// iq4_nl (ggml type 20). 18 bytes for 32 weights = 4.5 bits per weight:
//   bytes 0-1:  d, f16 scale
//   bytes 2-17: nibbles; byte j holds q[j] in bits 0-3 and q[j+16] in bits 4-7
// Weight i = d * kIQ4NLLevels[q[i]]: 16 fixed levels, denser near zero, that fit the bell-shaped
// distribution of trained weights better than an even grid does. Every level is an integer in
// [-127, 113], which the integer kernels use directly as int8.
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[kBlock32 / 2];
};
static_assert(sizeof(BlockIQ4_NL) == 18, "iq4_nl block must match ggml's block_iq4_nl");

inline constexpr float kIQ4NLLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                           1,    13,   25,  38,  53,  69,  89,  113};

}  // namespace qforge::quant
