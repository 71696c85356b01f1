#include "model/rope.h"

#include <cmath>

#include "qforge/error.h"

namespace qforge {

std::vector<double> rope_frequency_divisors(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  const auto& rs = c.rope_scaling;
  std::vector<double> div(size_t(half), 1.0);
  for (int i = 0; i < half; ++i) {
    const double f = 1.0 / std::pow(double(c.rope_theta), double(2 * i) / double(c.head_dim));
    if (rs.type == RopeScaling::Type::Linear) {
      div[size_t(i)] = rs.factor;
    } else if (rs.type == RopeScaling::Type::Factors) {
      if (rs.freq_factors.size() != size_t(half))
        fail("rope: {} frequency factors for a head size of {} (want {})", rs.freq_factors.size(), c.head_dim, half);
      div[size_t(i)] = rs.freq_factors[size_t(i)];
    } else if (rs.type == RopeScaling::Type::Llama3) {
      // Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
      const double old_ctx = rs.original_max_position_embeddings;
      const double low_wavelen = old_ctx / rs.low_freq_factor;
      const double high_wavelen = old_ctx / rs.high_freq_factor;
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        div[size_t(i)] = rs.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        div[size_t(i)] = f / ((1.0 - smooth) * f / rs.factor + smooth * f);
      }
    }
  }
  return div;
}

Rope::Rope(const ModelConfig& c) : head_dim_(c.head_dim), inv_freq_(size_t(c.head_dim / 2)) {
  const std::vector<double> div = rope_frequency_divisors(c);
  for (int i = 0; i < c.head_dim / 2; ++i)
    inv_freq_[size_t(i)] = 1.0 / std::pow(double(c.rope_theta), double(2 * i) / double(c.head_dim)) / div[size_t(i)];
}

void Rope::apply(float* x, int n_heads, int pos) const {
  const int half = head_dim_ / 2;
  // cos/sin computed once per position and shared by all heads.
  float cs[512], sn[512];
  float* c = cs;
  float* s = sn;
  std::vector<float> big;
  if (half > 512) {
    big.resize(size_t(2 * half));
    c = big.data();
    s = big.data() + half;
  }
  for (int i = 0; i < half; ++i) {
    const double a = double(pos) * inv_freq_[size_t(i)];
    c[i] = float(std::cos(a));
    s[i] = float(std::sin(a));
  }
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + size_t(h) * size_t(head_dim_);
    for (int i = 0; i < half; ++i) {
      const float x0 = v[i], x1 = v[i + half];
      v[i] = x0 * c[i] - x1 * s[i];
      v[i + half] = x1 * c[i] + x0 * s[i];
    }
  }
}

}  // namespace qforge
