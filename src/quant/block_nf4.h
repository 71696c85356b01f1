// The NF4 storage block, shared by the quantizer (src/quant/nf4.cpp) and the NF4 kernels
// (src/kernels/kernels_float_*.cpp).
//
// Block (36 bytes for 64 weights = 4.5 bits per weight):
//   bytes 0-3:  absmax, f32: the largest |x| of the block
//   bytes 4-35: 32 bytes of nibbles; byte j holds code[2j] in bits 4-7 and code[2j+1] in bits 0-3
//               (bitsandbytes packs the first of each pair into the high nibble)
// Weight i = absmax * kNf4[code[i]], kNf4 being 16 levels at quantiles of a normal distribution,
// scaled to [-1, 1] with an exact zero (nf4_codebook() in include/qforge/quant.h).
#pragma once
#include <cstdint>

#include "qforge/quant.h"

namespace qforge {

struct BlockNF4 {
  float absmax;
  uint8_t qs[kNf4BlockElems / 2];
};
static_assert(sizeof(BlockNF4) == 36, "nf4 block: f32 absmax + 32 bytes of nibbles");

}  // namespace qforge
