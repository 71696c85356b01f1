// q8_0: 8-bit symmetric quantization in blocks of 32 (ggml type 8).
//
// Block layout: BlockQ8_0 in quant/blocks_32.h.
//
// d = max|x| / 127 and q = round(x / d) with ties away from zero: the same rounding as ggml's
// reference quantizer, so the bytes match llama.cpp's exactly.
#include <cmath>

#include "quant/blocks_32.h"
#include "quant/quant_util.h"

namespace qforge::quant {

namespace {
constexpr int kBlock = 32;
}  // namespace

void quantize_q8_0(const float* x, void* vy, int64_t n, const float* importance) {
  check_quantize_args("q8_0", x, n, kBlock, importance);  // importance cannot help a plain absmax grid
  auto* y = static_cast<BlockQ8_0*>(vy);
  for (int64_t b = 0; b < n / kBlock; ++b, x += kBlock) {
    float amax = 0;
    for (int i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127;
    const float inv = d ? 1.0f / d : 0.0f;
    y[b].d = to_half(d);
    for (int i = 0; i < kBlock; ++i) y[b].q[i] = int8_t(clamp_int(int(std::round(x[i] * inv)), -127, 127));
  }
}

void dequantize_q8_0(const void* vx, float* y, int64_t n) {
  check_dequantize_args("q8_0", n, kBlock);
  const auto* x = static_cast<const BlockQ8_0*>(vx);
  for (int64_t b = 0; b < n / kBlock; ++b, y += kBlock) {
    const float d = from_half(x[b].d);
    for (int i = 0; i < kBlock; ++i) y[i] = x[b].q[i] * d;
  }
}

}  // namespace qforge::quant
