#include "quant/quant_util.h"

#include <cstdlib>
#include <cstring>
#include <string_view>

#include "qforge/error.h"

namespace qforge::quant {

void check_dequantize_args(const char* type, int64_t n, int64_t block) {
  if (n < 0 || n % block != 0) fail("quant: {}: row length {} is not a multiple of the block size {}", type, n, block);
}

void check_quantize_args(const char* type, const float* x, int64_t n, int64_t block, const float* importance,
                         float max_abs) {
  check_dequantize_args(type, n, block);
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) fail("quant: {}: weight {} of the row is {} (not finite)", type, i, x[i]);
    if (std::fabs(x[i]) > max_abs)
      fail("quant: {}: weight {} of the row is {}, beyond the range (+-{}) its f16 block scales can hold", type, i,
           x[i], max_abs);
  }
  if (importance)
    for (int64_t i = 0; i < n; ++i)
      if (!(importance[i] >= 0) || !std::isfinite(importance[i]))
        fail("quant: {}: importance {} of the row is {} (must be finite and >= 0)", type, i, importance[i]);
}

// ---- SIMD twins -------------------------------------------------------------------------------

// The AVX2 twin where the CPU has AVX2, unless QFORGE_ISA=scalar asks for the references everywhere
// (the same switch as the kernels' dispatch table; checked here directly so that the quantizers do not
// depend on src/kernels).
static bool use_avx2_twins() {
  static const bool v = [] {
    const char* isa = std::getenv("QFORGE_ISA");
    return __builtin_cpu_supports("avx2") && !(isa && std::string_view(isa) == "scalar");
  }();
  return v;
}

// ---- symmetric grids ---------------------------------------------------------------------------

namespace {

// The element of largest magnitude (the first one on ties), with its sign.
float signed_peak(int n, const float* x, float* abs_peak) {
  float amax = 0, peak = 0;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > amax) {
      amax = a;
      peak = x[i];
    }
  }
  *abs_peak = amax;
  return peak;
}

// Rounds x * inv_scale onto the symmetric grid [-qhalf, qhalf - 1] and accumulates the weighted
// normal-equation sums: sum_wxl = sum w*x*l, sum_wll = sum w*l*l.
void round_symmetric(int n, int qhalf, const float* x, const float* w, float inv_scale, int8_t* l_out, float* sum_wxl,
                     float* sum_wll) {
  float sxl = 0, sll = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(round_even(inv_scale * x[i]), -qhalf, qhalf - 1);
    l_out[i] = int8_t(l);
    sxl += w[i] * x[i] * l;
    sll += w[i] * l * l;
  }
  *sum_wxl = sxl;
  *sum_wll = sll;
}

}  // namespace

float fit_symmetric(int n, int qhalf, const float* x, const float* w, uint8_t* q) {
  float amax;
  const float peak = signed_peak(n, x, &amax);
  if (amax < kAllZeroLimit) {
    std::memset(q, 0, size_t(n));
    return 0;
  }
  int8_t best_l[kSuperBlock], trial_l[kSuperBlock];
  float sxl, sll;
  round_symmetric(n, qhalf, x, w, -qhalf / peak, best_l, &sxl, &sll);
  float scale = sll ? sxl / sll : 0.0f;
  // The weighted error of the least-squares scale is sum w*x^2 - sxl^2/sll: maximising sxl^2/sll
  // (tracked as scale * sxl) minimises it.
  float best = scale * sxl;
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    const float inv_scale = -(qhalf + 0.1f * step) / peak;
    round_symmetric(n, qhalf, x, w, inv_scale, trial_l, &sxl, &sll);
    if (sll > 0 && sxl * sxl > best * sll) {
      std::memcpy(best_l, trial_l, size_t(n));
      scale = sxl / sll;
      best = scale * sxl;
    }
  }
  for (int i = 0; i < n; ++i) q[i] = uint8_t(best_l[i] + qhalf);
  return scale;
}

// Groups of 1..32 values: the AVX2 twins hold a group in 32 registers, and the scalar fallback's
// scratch is 32 bytes.
static void check_x8_group(const char* who, int n) {
  if (n < 1 || n > 32) fail("quant: {}: groups of {} values (want 1..32)", who, n);
}

void fit_symmetric_x8(int n, int qhalf, const float* x, const float* w, uint8_t* q, float* scales) {
  check_x8_group("fit_symmetric_x8", n);
  if (use_avx2_twins()) return fit_symmetric_x8_avx2(n, qhalf, x, w, q, scales);
  for (int j = 0; j < 8; ++j) scales[j] = fit_symmetric(n, qhalf, x + n * j, w + n * j, q + n * j);
}

float fit_symmetric_sweep(int n, int qhalf, const float* x, uint8_t* q) {
  float amax;
  const float peak = signed_peak(n, x, &amax);
  if (amax < kAllZeroLimit) {
    std::memset(q, 0, size_t(n));
    return 0;
  }
  const float inv_scale = -qhalf / peak;
  int8_t l[kSuperBlock];
  float sxl = 0, sll = 0;
  for (int i = 0; i < n; ++i) {
    const int li = clamp_int(round_even(inv_scale * x[i]), -qhalf, qhalf - 1);
    l[i] = int8_t(li);
    const float w = x[i] * x[i];
    sxl += w * x[i] * li;
    sll += w * li * li;
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int moved = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      // Sums without element i; the best level for it is then x[i] / (sxl_rest / sll_rest).
      float sxl_rest = sxl - w * x[i] * l[i];
      if (!(sxl_rest > 0)) continue;
      float sll_rest = sll - w * l[i] * l[i];
      const int li = clamp_int(round_even(x[i] * sll_rest / sxl_rest), -qhalf, qhalf - 1);
      if (li == l[i]) continue;
      sxl_rest += w * x[i] * li;
      sll_rest += w * li * li;
      // Keep the move if it raises sxl^2 / sll (lowers the error), compared without division.
      if (sll_rest > 0 && sxl_rest * sxl_rest * sll > sxl * sxl * sll_rest) {
        l[i] = int8_t(li);
        sxl = sxl_rest;
        sll = sll_rest;
        ++moved;
      }
    }
    if (!moved) break;
  }
  for (int i = 0; i < n; ++i) q[i] = uint8_t(l[i] + qhalf);
  return sll > 0.0f ? sxl / sll : 0.0f;
}

// ---- affine grid with a min --------------------------------------------------------------------

float fit_scale_min(int n, int qmax, const float* x, const float* w, uint8_t* q, float* offset, uint8_t* scratch,
                    ScaleFan fan, ErrorNorm norm) {
  float lo = x[0], hi = x[0];
  float sum_w = w[0];
  float sum_wx = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_wx += w[i] * x[i];
  }
  if (lo > 0) lo = 0;  // keep zero on the grid: the min only ever shifts values down
  if (hi <= lo) {
    std::memset(q, 0, size_t(n));
    *offset = -lo;
    return 0;
  }
  auto error_of = [&](float d) { return norm == ErrorNorm::Absolute ? std::fabs(d) : d * d; };

  float inv_scale = qmax / (hi - lo);
  float scale = 1 / inv_scale;
  float min = lo;
  float best_err = 0;
  for (int i = 0; i < n; ++i) {
    q[i] = uint8_t(clamp_int(round_even(inv_scale * (x[i] - lo)), 0, qmax));
    best_err += w[i] * error_of(scale * q[i] + lo - x[i]);
  }
  if (fan.count < 1) {
    *offset = -min;
    return scale;
  }
  // Each candidate rounds relative to the best min found so far (the grid's anchor moves with the
  // fit), over the range from that min to the largest value.
  for (int k = 0; k <= fan.count; ++k) {
    inv_scale = (fan.first + fan.step * k + qmax) / (hi - min);
    float sum_wl = 0, sum_wll = 0, sum_wxl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(round_even(inv_scale * (x[i] - min)), 0, qmax);
      scratch[i] = uint8_t(l);
      sum_wl += w[i] * l;
      sum_wll += w[i] * l * l;
      sum_wxl += w[i] * l * x[i];
    }
    // Normal equations of min over (s, m) of sum w (s*l + m - x)^2.
    const float det = sum_w * sum_wll - sum_wl * sum_wl;
    if (!(det > 0)) continue;
    float s = (sum_w * sum_wxl - sum_wx * sum_wl) / det;
    float m = (sum_wll * sum_wx - sum_wl * sum_wxl) / det;
    if (m > 0) {  // a positive min would lose zero: refit the scale alone with m = 0
      m = 0;
      s = sum_wxl / sum_wll;
    }
    float err = 0;
    for (int i = 0; i < n; ++i) err += w[i] * error_of(s * scratch[i] + m - x[i]);
    if (err < best_err) {
      std::memcpy(q, scratch, size_t(n));
      best_err = err;
      scale = s;
      min = m;
    }
  }
  *offset = -min;
  return scale;
}

// ---- positive levels (scales of scales) --------------------------------------------------------

float fit_positive_levels(int n, int qmax, const float* x, const float* w, uint8_t* q) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < kAllZeroLimit) {
    std::memset(q, 0, size_t(n));
    return 0;
  }
  auto level = [&](float inv, float v) { return clamp_int(round_even(inv * v), 0, qmax); };

  // Pick the inverse scale with the lowest weighted squared error among max/qmax and 8 neighbours.
  float best_inv = qmax / max;
  float best_mse = 0;
  {
    const float scale = 1 / best_inv;
    for (int i = 0; i < n; ++i) {
      const float d = x[i] - scale * level(best_inv, x[i]);
      best_mse += w[i] * d * d;
    }
  }
  for (int step = -4; step <= 4; ++step) {
    if (step == 0) continue;
    const float inv = (0.1f * step + qmax) / max;
    const float scale = 1 / inv;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const float d = x[i] - scale * level(inv, x[i]);
      mse += w[i] * d * d;
    }
    if (mse < best_mse) {
      best_mse = mse;
      best_inv = inv;
    }
  }

  int l[kSuperBlock];
  float sxl = 0, sll = 0;
  for (int i = 0; i < n; ++i) {
    l[i] = level(best_inv, x[i]);
    sxl += w[i] * x[i] * l[i];
    sll += w[i] * l[i] * l[i];
  }
  // Single-level moves, as in fit_symmetric_sweep.
  for (int sweep = 0; sweep < 5; ++sweep) {
    int moved = 0;
    for (int i = 0; i < n; ++i) {
      float sxl_rest = sxl - w[i] * x[i] * l[i];
      float sll_rest = sll - w[i] * l[i] * l[i];
      if (!(sxl_rest > 0 && sll_rest > 0)) continue;
      const int li = clamp_int(round_even(x[i] * sll_rest / sxl_rest), 0, qmax);
      if (li == l[i]) continue;
      sxl_rest += w[i] * x[i] * li;
      sll_rest += w[i] * li * li;
      if (sxl_rest * sxl_rest * sll > sxl * sxl * sll_rest) {
        l[i] = li;
        sxl = sxl_rest;
        sll = sll_rest;
        ++moved;
      }
    }
    if (!moved) break;
  }
  for (int i = 0; i < n; ++i) q[i] = uint8_t(l[i]);
  return sll > 0.0f ? sxl / sll : 0.0f;
}

// ---- layouts -----------------------------------------------------------------------------------

void pack_scales_mins_6bit(const uint8_t* scales, const uint8_t* mins, uint8_t* out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = uint8_t((scales[j] & 63) | ((scales[j + 4] >> 4) << 6));
    out[j + 4] = uint8_t((mins[j] & 63) | ((mins[j + 4] >> 4) << 6));
    out[j + 8] = uint8_t((scales[j + 4] & 15) | ((mins[j + 4] & 15) << 4));
  }
}

void unpack_scale_min_6bit(const uint8_t* in, int j, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = in[j] & 63;
    *min = in[j + 4] & 63;
  } else {
    *scale = uint8_t((in[j + 4] & 15) | ((in[j - 4] >> 6) << 4));
    *min = uint8_t((in[j + 4] >> 4) | ((in[j] >> 6) << 4));
  }
}

int nearest_code_index(const float* codebook, int size, float v) {
  if (v <= codebook[0]) return 0;
  if (v >= codebook[size - 1]) return size - 1;
  // codebook[k - 1] < v < codebook[k] for the first k with v < codebook[k] (v on an entry picks it).
  int k = 1;
  while (k < size - 1 && !(v < codebook[k])) ++k;
  return v - codebook[k - 1] < codebook[k] - v ? k - 1 : k;
}

void fit_scale_min_x8(int n, int qmax, const float* x, const float* w, uint8_t* q, float* scales, float* offsets,
                      ScaleFan fan, ErrorNorm norm) {
  check_x8_group("fit_scale_min_x8", n);
  if (use_avx2_twins()) return fit_scale_min_x8_avx2(n, qmax, x, w, q, scales, offsets, fan, norm);
  uint8_t scratch[32];
  for (int j = 0; j < 8; ++j)
    scales[j] = fit_scale_min(n, qmax, x + n * j, w + n * j, q + n * j, &offsets[j], scratch, fan, norm);
}

void fit_scale_min_superblock(const float* x, const float* importance, int qmax, ScaleFan plain_fan, uint16_t* d,
                              uint16_t* dmin, uint8_t* scales12, uint8_t* q) {
  constexpr int kSub = 32, kNumSub = kSuperBlock / kSub;
  static_assert(kNumSub == 8, "fit_scale_min_x8 fits eight sub-blocks");
  uint8_t scale_q[kNumSub], offset_q[kNumSub];
  float scales[kNumSub], offsets[kNumSub], w[kSuperBlock];
  if (importance) {
    float sub_weight[kNumSub];
    const float sigma2 = 2 * sum_squares(x, kSuperBlock) / kSuperBlock;
    sub_block_importance(x, importance, sigma2, kNumSub, kSub, w, sub_weight);
    fit_scale_min_x8(kSub, qmax, x, w, q, scales, offsets, {-0.9f, 0.05f, 36}, ErrorNorm::Squared);
    *d = to_half(fit_positive_levels(kNumSub, 63, scales, sub_weight, scale_q));
    *dmin = to_half(fit_positive_levels(kNumSub, 63, offsets, sub_weight, offset_q));
  } else {
    for (int j = 0; j < kNumSub; ++j) {
      const float* xs = x + kSub * j;
      const float rms = std::sqrt(sum_squares(xs, kSub) / kSub);
      for (int i = 0; i < kSub; ++i) w[kSub * j + i] = rms + std::fabs(xs[i]);
    }
    fit_scale_min_x8(kSub, qmax, x, w, q, scales, offsets, plain_fan, ErrorNorm::Squared);
    float max_scale = 0, max_offset = 0;
    for (int j = 0; j < kNumSub; ++j) {
      max_scale = std::max(max_scale, scales[j]);
      max_offset = std::max(max_offset, offsets[j]);
    }
    const float inv_scale = max_scale > 0 ? 63 / max_scale : 0.0f;
    const float inv_offset = max_offset > 0 ? 63 / max_offset : 0.0f;
    for (int j = 0; j < kNumSub; ++j) {
      scale_q[j] = uint8_t(clamp_int(round_even(inv_scale * scales[j]), 0, 63));
      offset_q[j] = uint8_t(clamp_int(round_even(inv_offset * offsets[j]), 0, 63));
    }
    *d = to_half(max_scale / 63);
    *dmin = to_half(max_offset / 63);
  }
  pack_scales_mins_6bit(scale_q, offset_q, scales12);
  // Re-round every weight with the scale and min it will really get.
  const float dd = from_half(*d), dm = from_half(*dmin);
  for (int j = 0; j < kNumSub; ++j) {
    uint8_t sc, mn;
    unpack_scale_min_6bit(scales12, j, &sc, &mn);
    const float scale = dd * sc;
    if (!scale) continue;
    const float offset = dm * mn;
    for (int i = 0; i < kSub; ++i)
      q[kSub * j + i] = uint8_t(clamp_int(round_even((x[kSub * j + i] + offset) / scale), 0, qmax));
  }
}

}  // namespace qforge::quant
