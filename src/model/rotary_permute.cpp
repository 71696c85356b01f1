#include "model/rotary_permute.h"

#include <cstring>

namespace qforge {

void adjacent_pairs_to_rotate_half(const float* src, float* dst, int n_heads, int head_dim, int64_t cols) {
  const size_t row_bytes = size_t(cols) * sizeof(float);
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    const size_t head_base = size_t(h) * size_t(head_dim);
    for (int i = 0; i < half; ++i) {
      std::memcpy(dst + (head_base + size_t(i)) * size_t(cols), src + (head_base + 2 * size_t(i)) * size_t(cols),
                  row_bytes);
      std::memcpy(dst + (head_base + size_t(i + half)) * size_t(cols),
                  src + (head_base + 2 * size_t(i) + 1) * size_t(cols), row_bytes);
    }
  }
}

}  // namespace qforge
