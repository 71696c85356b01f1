// nf4: bitsandbytes' 4-bit NormalFloat (QLoRA), blocks of 64 with an absmax scale. qforge-only (ggml
// has no such type).
//
// Block layout (BlockNF4, 36 bytes for 64 weights): src/quant/block_nf4.h. Weight i =
// absmax * kNf4[code[i]], kNf4 being 16 levels at quantiles of a normal distribution, scaled to
// [-1, 1] with an exact zero.
//
// Quantization follows bitsandbytes' reference (its "default" backend): each weight is multiplied by
// 1 / absmax, clamped to [-1, 1] and given the nearest level (ties to the lower level). An all-zero
// block stores level 7 (0.0); bitsandbytes' reference computes 0 * inf there and stores level 0
// (-1.0), which decodes to the same zeros.
//
// Double quantization (nf4_double_quantize) codes a tensor's absmax values with bitsandbytes' 8-bit
// signed dynamic map, in groups of 256, after subtracting their mean.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "qforge/error.h"
#include "qforge/quant.h"
#include "quant/block_nf4.h"
#include "quant/quant_util.h"

namespace qforge {

namespace {
constexpr int kBlock = kNf4BlockElems;
// The NF4 levels exactly as bitsandbytes lists them (float32).
constexpr float kNf4[16] = {-1.0f,
                            -0.6961928009986877f,
                            -0.5250730514526367f,
                            -0.39491748809814453f,
                            -0.28444138169288635f,
                            -0.18477343022823334f,
                            -0.09105003625154495f,
                            0.0f,
                            0.07958029955625534f,
                            0.16093020141124725f,
                            0.24611230194568634f,
                            0.33791524171829224f,
                            0.44070982933044434f,
                            0.5626170039176941f,
                            0.7229568362236023f,
                            1.0f};
constexpr int kNf4Zero = 7;

// Index of the entry of `code` nearest to v, the first one on ties (torch.argmin's rule).
int nearest_first(const float* code, int size, float v) {
  int best = 0;
  float best_dist = std::fabs(v - code[0]);
  for (int k = 1; k < size; ++k) {
    const float dist = std::fabs(v - code[k]);
    if (dist < best_dist) {
      best = k;
      best_dist = dist;
    }
  }
  return best;
}

// bitsandbytes' signed dynamic map: for e = 0..6, the midpoints of 2^e + 1 evenly spaced points on
// [0.1, 1], times 10^(e - 6), with both signs; plus 0 and 1; sorted. (bitsandbytes builds the points
// with torch.linspace in float32; here they are computed as start + step * k in float.)
std::array<float, 256> make_dynamic_map() {
  std::array<float, 256> map{};
  int n = 0;
  for (int e = 0; e < 7; ++e) {
    const int points = (1 << e) + 1;
    const float step = (1.0f - 0.1f) / float(points - 1);
    const float magnitude = float(std::pow(10.0, e - 6));
    for (int k = 0; k + 1 < points; ++k) {
      // torch.linspace computes the first half from the start and the second half from the end.
      auto point = [&](int i) { return i < points / 2 ? 0.1f + step * float(i) : 1.0f - step * float(points - 1 - i); };
      const float mid = (point(k) + point(k + 1)) / 2.0f;
      map[size_t(n++)] = magnitude * mid;
      map[size_t(n++)] = -magnitude * mid;
    }
  }
  map[size_t(n++)] = 0.0f;
  map[size_t(n++)] = 1.0f;
  std::sort(map.begin(), map.end());
  return map;
}
}  // namespace

std::span<const float, 256> nf4_dynamic_map() {
  static const std::array<float, 256> map = make_dynamic_map();
  return map;
}

std::span<const float, 16> nf4_codebook() { return std::span<const float, 16>(kNf4, 16); }

namespace quant {

void quantize_nf4(const float* x, void* vy, int64_t n, const float* importance) {
  // The absmax is stored as f32, so any finite weight is representable.
  check_quantize_args("nf4", x, n, kBlock, importance, std::numeric_limits<float>::max());
  auto* y = static_cast<BlockNF4*>(vy);
  for (int64_t b = 0; b < n / kBlock; ++b, x += kBlock) {
    float absmax = 0;
    for (int i = 0; i < kBlock; ++i) absmax = std::max(absmax, std::fabs(x[i]));
    y[b].absmax = absmax;
    uint8_t code[kBlock];
    if (absmax == 0) {
      std::memset(code, kNf4Zero, sizeof code);
    } else {
      const float inv = 1.0f / absmax;
      for (int i = 0; i < kBlock; ++i)
        code[i] = uint8_t(nearest_first(kNf4, 16, std::min(1.0f, std::max(-1.0f, x[i] * inv))));
    }
    for (int j = 0; j < kBlock / 2; ++j) y[b].qs[j] = uint8_t(code[2 * j] << 4 | code[2 * j + 1]);
  }
}

void dequantize_nf4(const void* vx, float* y, int64_t n) {
  check_dequantize_args("nf4", n, kBlock);
  const auto* x = static_cast<const BlockNF4*>(vx);
  for (int64_t b = 0; b < n / kBlock; ++b, y += kBlock) {
    for (int j = 0; j < kBlock / 2; ++j) {
      y[2 * j] = kNf4[x[b].qs[j] >> 4] * x[b].absmax;
      y[2 * j + 1] = kNf4[x[b].qs[j] & 15] * x[b].absmax;
    }
  }
}

}  // namespace quant

std::vector<float> nf4_block_absmax(const void* blocks, int64_t nblocks) {
  const auto* b = static_cast<const BlockNF4*>(blocks);
  std::vector<float> out(size_t(std::max<int64_t>(nblocks, 0)));
  for (size_t i = 0; i < out.size(); ++i) out[i] = b[i].absmax;
  return out;
}

void nf4_set_block_absmax(void* blocks, int64_t nblocks, const float* absmax) {
  auto* b = static_cast<BlockNF4*>(blocks);
  for (int64_t i = 0; i < nblocks; ++i) b[i].absmax = absmax[i];
}

Nf4NestedAbsmax nf4_double_quantize(std::span<const float> absmax) {
  for (size_t i = 0; i < absmax.size(); ++i)
    if (!std::isfinite(absmax[i]))
      fail("quant: nf4: absmax {} is {} (double quantization needs finite values)", i, absmax[i]);
  Nf4NestedAbsmax out;
  if (absmax.empty()) return out;
  double sum = 0;  // bitsandbytes uses torch's float32 mean; a double sum is at least as accurate
  for (float a : absmax) sum += a;
  out.offset = float(sum / double(absmax.size()));

  const auto map = nf4_dynamic_map();
  const int zero_code = nearest_first(map.data(), 256, 0.0f);
  out.codes.resize(absmax.size());
  for (size_t g = 0; g < absmax.size(); g += kNf4NestedGroup) {
    const size_t end = std::min(absmax.size(), g + kNf4NestedGroup);
    float group_max = 0;
    for (size_t i = g; i < end; ++i) group_max = std::max(group_max, std::fabs(absmax[i] - out.offset));
    out.group_scale.push_back(group_max);
    const float inv = group_max ? 1.0f / group_max : 0.0f;
    for (size_t i = g; i < end; ++i) {
      const float v = std::min(1.0f, std::max(-1.0f, (absmax[i] - out.offset) * inv));
      out.codes[i] = uint8_t(group_max ? nearest_first(map.data(), 256, v) : zero_code);
    }
  }
  return out;
}

std::vector<float> nf4_double_dequantize(const Nf4NestedAbsmax& nested) {
  const size_t groups = (nested.codes.size() + kNf4NestedGroup - 1) / kNf4NestedGroup;
  if (nested.group_scale.size() != groups)
    fail("quant: nf4: double-quantized absmax has {} group scales for {} codes (expected {})",
         nested.group_scale.size(), nested.codes.size(), groups);
  const auto map = nf4_dynamic_map();
  std::vector<float> out(nested.codes.size());
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = map[nested.codes[i]] * nested.group_scale[i / kNf4NestedGroup] + nested.offset;
  return out;
}

}  // namespace qforge
